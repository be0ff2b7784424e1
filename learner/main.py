"""`python -m learner.main`: B²-DiffuRL training, on a laptop or a Ray cluster.

With no arguments it runs the toy B² preset (configs/toy_b2.yaml) on a local Ray started
on 127.0.0.1. Under `ray job submit` (or with RAY_ADDRESS set) it joins that cluster.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from pathlib import Path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m learner.main", description=__doc__.split("\n")[0])
    p.add_argument("--config", type=Path, help="a YAML preset (default: configs/toy_b2.yaml)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="extend",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="override a config field, e.g. --set stages=2 sampling.branches=4",
    )
    p.add_argument("--resume", type=Path, help="continue a run directory after its last stage")
    p.add_argument("--force", action="store_true", help="resume even if the config differs")
    return p.parse_args(argv)


def user_errors() -> tuple[type[Exception], ...]:
    """Errors a user can fix (bad config, prompts, model, reward, checkpoint, cluster): the
    commands print them as one line and exit 2, with nothing half-written."""
    from configs.load import ConfigError
    from diffusion.lora import LoraShapeError
    from diffusion.pipeline import PipelineLoadError
    from learner.checkpoint import CheckpointError, TrainingDiverged
    from learner.driver import RuntimeSetupError
    from learner.outputs import OutputError
    from learner.prompts import PromptFileError
    from learner.run import ResumeError
    from learner.stage import NonFiniteReward
    from rewards.remote import RemoteRewardError
    from rewards.reward_group import RewardFailure
    from rewards.scorers import RewardSetupError

    return (
        ConfigError,
        PromptFileError,
        PipelineLoadError,
        RewardSetupError,
        LoraShapeError,
        CheckpointError,
        ResumeError,
        OutputError,
        RuntimeSetupError,
        RewardFailure,
        RemoteRewardError,
        NonFiniteReward,
        TrainingDiverged,
    )


class _Signals:
    """SIGTERM (a scheduler, `kill`, a pod stopping) stops the run as Ctrl-C does: Python
    unwinds, actors and Ray are shut down, the checkpoints stay, and the command says how
    to resume. Which signal came is remembered for the exit code."""

    def __init__(self) -> None:
        self.received = "SIGINT"
        self.previous = signal.getsignal(signal.SIGTERM)
        # handlers can be set only from the main thread (main() called from another: not)
        self.active = threading.current_thread() is threading.main_thread()

    def __enter__(self) -> _Signals:
        if self.active:
            signal.signal(signal.SIGTERM, self._terminate)
        return self

    def _terminate(self, signum, frame) -> None:
        if self.received != "SIGTERM":
            self.received = "SIGTERM"
            raise KeyboardInterrupt("SIGTERM")

    def __exit__(self, *exc) -> None:
        if self.active:
            signal.signal(signal.SIGTERM, self.previous)


def _interrupted(sig: str, run_dir: Path | None) -> int:
    from learner import checkpoint

    if run_dir is not None and checkpoint.latest(run_dir) is not None:
        hint = f"continue with: python -m learner.main --resume {run_dir.resolve()}"
    else:
        hint = "no stage had finished; nothing to resume"
    print(f"interrupted ({sig}); {hint}", file=sys.stderr)
    return 143 if sig == "SIGTERM" else 130


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # errors a user can fix: one line, non-zero exit, nothing written
    from configs.load import load_config
    from learner.outputs import check_job_path, describe_uri, resolve_outputs, run_tracking_uri
    from learner.preflight import preflight
    from learner.run import execute, prepare

    def checks(cfg) -> None:
        resolve_outputs(cfg.output_dir)
        preflight(cfg)

    run_dir = None
    with _Signals() as signals:
        try:
            cfg = None
            if args.config is not None or args.resume is None:
                cfg = load_config(args.config, args.overrides)
            if args.resume is not None:
                check_job_path("--resume", args.resume)
            cfg, run_dir, resuming = prepare(
                cfg, args.resume, args.overrides, args.force, check=checks
            )
            outputs = resolve_outputs(cfg.output_dir)
            print(f"run directory: {run_dir.resolve()}", flush=True)
            if cfg.logging.mlflow:
                uri = describe_uri(run_tracking_uri(run_dir, outputs))
                print(f"MLflow: {uri} (experiment {cfg.logging.experiment})", flush=True)
            summary = execute(cfg, run_dir, resuming, outputs=outputs)
        except user_errors() as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            return _interrupted(signals.received, run_dir)
    print(f"\ndone: {summary['stages_completed']} stages in {summary['seconds']:.0f} s")
    print(f"  results:  {summary['run_dir']}  (summary.json, metrics.jsonl, grids/, stages/)")
    print(f"  LoRA:     {summary['lora']}")
    if summary["mlflow_run_id"]:
        from learner.tracking import run_page

        page = run_page(
            summary["mlflow_tracking_uri"],
            summary["mlflow_experiment_id"],
            summary["mlflow_run_id"],
        )
        print("  MLflow:   " + "\n            ".join(page))
    return 0


if __name__ == "__main__":
    sys.exit(main())
