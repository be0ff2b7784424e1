"""A training run's lifecycle around its stages: the run directory (claimed for a new run,
checked for a resume), Ray (the cluster the run was submitted to, else a local one), the
stages themselves (`learner.stage_loop`), and on failure no half-written directory left."""

from __future__ import annotations

import os
import shutil
import signal
import sys
import threading
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import ray

from configs.load import dump_config, load_config
from configs.schema import Config
from learner import checkpoint
from learner.outputs import WRITE_ERRNOS, OutputError, Outputs, claim_run_dir, resolve_outputs
from learner.prompts import load_prompts
from learner.resume import RESUMABLE_KEYS, already_trained, config_diff, repair_metrics
from learner.stage_loop import load_state, run_stages


class ResumeError(RuntimeError):
    """A run directory that cannot be resumed; str() is one line."""


def connect(cfg: Config) -> bool:
    """Join the cluster we run in (RAY_ADDRESS, `ray job submit`), else start one locally
    on loopback with enough logical CPUs for the configured actors. True if this call
    connected (and so should disconnect at the end)."""
    if ray.is_initialized():
        return False
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    # ray.init installs its own SIGTERM handler (a C++ stack dump, no cleanup); a handler
    # the command set (learner.main: stop cleanly, say how to resume) is put back
    handler = signal.getsignal(signal.SIGTERM)
    try:
        if os.environ.get("RAY_ADDRESS"):
            ray.init(log_to_driver=True)
        else:
            from learner.ray_auth import private_token_file

            private_token_file()  # before ray.init writes one any user could read
            _init_local(cfg)
    finally:
        if callable(handler) and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, handler)
    return True


def _init_local(cfg: Config) -> None:
    # a local Ray that is not told it is a single machine binds its ports on every
    # interface (measured on Ray 2.60, `_node_ip_address` notwithstanding). Ray reads the
    # switch once, at import, in the driver, so it is set there too: every port stays on
    # 127.0.0.1 (and no other node can join). RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=1 opts out.
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    if os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] == "0":
        from ray._private import ray_constants

        ray_constants.ENABLE_RAY_CLUSTER = False
    rt = cfg.runtime
    cpus = (
        rt.rollout_actors * rt.rollout_cpus
        + rt.reward_actors * rt.reward_cpus
        + rt.learner_workers * rt.learner_cpus
    )
    ray.init(
        address="local",
        num_cpus=max(int(-(-cpus // 1)), os.cpu_count() or 1),
        include_dashboard=False,
        _node_ip_address="127.0.0.1",
        log_to_driver=True,
        configure_logging=True,
        logging_level="warning",
    )


def prepare(
    cfg: Config | None,
    resume: Path | None,
    overrides: list[str],
    force: bool,
    check: Callable[[Config], None] | None = None,
) -> tuple[Config, Path, bool]:
    """Validate what can be checked before anything is written (`check`: the command's
    further checks), then claim a new run's directory. On resume, the training config (all
    but RESUMABLE_KEYS) changes only with `force`, from --config or from --set alike."""
    if resume is not None:
        saved = resume / "config.yaml"
        if not saved.is_file():
            raise ResumeError(f"--resume {resume}: no config.yaml there; not a run directory")
        resumed = load_config(saved, overrides)
        if not force and cfg is not None:
            key = config_diff(cfg, resumed)
            if key:
                raise ResumeError(
                    f"--resume {resume}: its config differs from the given one at '{key}'; "
                    "pass --force to resume anyway"
                )
        if not force and cfg is None:
            key = config_diff(load_config(saved), resumed)
            if key:
                raise ResumeError(
                    f"--resume {resume}: --set changes how it trains, at '{key}' (a resume "
                    f"may change {', '.join(sorted(RESUMABLE_KEYS))}); pass --force to "
                    "resume anyway"
                )
        cfg = cfg if cfg is not None and force else resumed
        if check is not None:
            check(cfg)
        return cfg, resume, True
    assert cfg is not None
    if check is not None:
        check(cfg)
    generated = not cfg.run_name
    name = cfg.run_name or (
        f"{cfg.algorithm}-{datetime.now(timezone.utc).strftime('%Y%m%d-%H%M%S')}-s{cfg.seed}"
    )
    return cfg, claim_run_dir(cfg.output_dir, name, generated, dump_config(cfg)), False


def execute(
    cfg: Config,
    run_dir: Path,
    resuming: bool,
    on_submit: Callable | None = None,
    stop_after: int | None = None,
    outputs: Outputs | None = None,
) -> dict:
    """Run (or continue) the stages. `stop_after` ends early after that stage (tests);
    `outputs` (default: resolved from the config) says where MLflow logs."""
    outputs = outputs or resolve_outputs(cfg.output_dir)
    load_prompts(cfg.prompts.test, "prompts.test")
    start_stage, state, last = 0, None, None
    last_stage = cfg.stages - 1 if stop_after is None else min(stop_after, cfg.stages - 1)
    if resuming:
        last = checkpoint.latest(run_dir, lambda why: print(f"warning: {why}", file=sys.stderr))
        if last is not None:
            state = load_state(cfg, last)
            start_stage = state.stage + 1
        dropped = repair_metrics(run_dir / "metrics.jsonl", start_stage - 1)
        if dropped:
            print(
                f"warning: {run_dir / 'metrics.jsonl'}: dropped {dropped} record(s) cut short "
                f"or of stages after the checkpoint resumed from ({last})",
                file=sys.stderr,
            )
    started = False
    try:
        if state is not None and start_stage > last_stage:
            return already_trained(cfg, run_dir, state)
        started = connect(cfg)
        return run_stages(cfg, run_dir, state, last, start_stage, on_submit, stop_after, outputs)
    except BaseException as exc:
        if not resuming and checkpoint.latest(run_dir) is None:
            shutil.rmtree(run_dir, ignore_errors=True)  # nothing half-written stays behind
        if isinstance(exc, OSError) and exc.errno in WRITE_ERRNOS:
            kept = checkpoint.latest(run_dir)
            raise OutputError(
                f"{exc.filename or run_dir}: {exc.strerror}; the run stopped"
                + (f"; continue with --resume {run_dir} once it is fixed" if kept else "")
            ) from None
        raise
    finally:
        if started:
            ray.shutdown()
