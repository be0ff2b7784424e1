"""The stages of a run on its cluster, from the first one left to the last: the tracker
and run.json, each stage (a lost learner rank rebuilt from the last checkpoint and the stage
run again), its grid, the check that it stayed finite, its checkpoint and metrics, then the
exported LoRA and summary.json. `learner.run` prepares the run directory and Ray around it."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import ray

from configs.schema import Config
from diffusion.lora import LoraShapeError, export_lora
from learner import checkpoint, onpolicy
from learner.advantages import convert_prompt_memory
from learner.checkpoint import LearnerState, TrainingDiverged
from learner.driver import Cluster
from learner.learner_group import LearnerLost
from learner.outputs import run_tracking_uri
from learner.progress import Progress
from learner.prompts import load_prompts
from learner.resume import save_config
from learner.schedule import split_step
from learner.stage import run_stage, stage_rows
from learner.tracking import Tracker
from learner.training_grid import save_training_grid


def run_stages(cfg, run_dir, state, last, start_stage, on_submit, stop_after, outputs) -> dict:
    """Stages `start_stage` to the last (`stop_after`, else the config's) on a new cluster,
    from `state` (restored from checkpoint `last`; None: the run's first stage). Returns
    the summary it writes to summary.json."""
    train_prompts = load_prompts(cfg.prompts.train, "prompts.train")
    cluster = Cluster(cfg, on_submit)
    save_config(run_dir, cfg, start_stage)
    info_path = run_dir / "run.json"
    info = json.loads(info_path.read_text()) if info_path.is_file() else {}
    info["run_name"] = run_dir.name
    info_path.write_text(json.dumps(info, indent=2))
    # the tracker records its MLflow run (id and store) in run.json once it has one
    tracker = Tracker(
        cfg,
        run_dir,
        run_dir.name,
        info.get("mlflow_run_id"),
        run_tracking_uri(run_dir, outputs),
        outputs.artifact_location,
    )
    tracker.artifact(run_dir / "config.yaml")
    if state is not None:
        try:
            cluster.learner.restore(state, str(last))
        except ray.exceptions.RayTaskError as exc:
            cluster.shutdown()
            cause = getattr(exc, "cause", None)
            raise (cause if isinstance(cause, LoraShapeError) else exc) from None
        print(f"resuming {run_dir} after stage {state.stage}", flush=True)

    status, metrics, t_run = "FAILED", {}, time.perf_counter()
    print(
        f"b2-diffurl: {cfg.algorithm} on {cfg.model.pretrained}, {cfg.stages} stages x "
        f"{cfg.sampling.trunks_per_stage} trunks x {cfg.sampling.branches} branches; "
        f"{cfg.runtime.rollout_actors} rollout + {cfg.runtime.reward_actors} reward actors",
        flush=True,
    )
    try:
        last_stage = cfg.stages - 1 if stop_after is None else min(stop_after, cfg.stages - 1)
        progress = Progress(start_stage, last_stage)
        onpolicy_warned = False
        for stage in range(start_stage, last_stage + 1):
            t0 = time.perf_counter()
            grid = cfg.logging.grid_every > 0 and (
                stage % cfg.logging.grid_every == 0 or stage == cfg.stages - 1
            )
            record, state_now = _run_stage(cfg, cluster, train_prompts, run_dir, stage, grid)
            t1 = time.perf_counter()
            metrics = record.metrics()
            if record.grid_images is not None:
                path = run_dir / "grids" / f"stage_{stage:04d}.png"
                save_training_grid(record.grid_images, record.grid_prompts, path)
                tracker.artifact(path, "grids")
            check_finite(cfg, run_dir, stage, metrics, state_now)
            checkpoint.save(run_dir, state_now)
            metrics["seconds_log_checkpoint"] = time.perf_counter() - t1
            metrics["seconds_stage"] = time.perf_counter() - t0
            tracker.metrics(stage, metrics)
            print(
                f"stage {stage + 1:>3}/{cfg.stages}  split {int(metrics['split_step']):>2}  "
                f"images {int(metrics['images'])}  reward {metrics['reward_mean']:.4f}"
                f" ± {metrics['reward_std']:.4f}  +{int(metrics['positives'])}/"
                f"-{int(metrics['negatives'])}  loss {metrics['loss']:+.4f}  "
                f"kl {metrics['approx_kl']:.2e}  "
                + (f"kl_base {metrics['kl_base']:.2e}  " if cfg.loss.kl_coef > 0 else "")
                + f"{metrics['seconds_stage']:.1f}s  {progress.times(stage)}",
                flush=True,
            )
            warning = progress.idle_warning(stage, metrics)
            if warning:
                print(warning, file=sys.stderr, flush=True)
            note = None if onpolicy_warned else onpolicy.warning(metrics, cfg)
            if note:  # once a run: its causes are the run's settings
                print(note, file=sys.stderr, flush=True)
                onpolicy_warned = True
        lora_dir = run_dir / "lora"
        final = cluster.learner.ema_weights()  # train.ema's average, else the trained LoRA
        export_lora(final, cfg.train.lora, lora_dir)
        tracker.artifact(lora_dir, "lora")
        status = "FINISHED"
    finally:
        tracker.finish(status)
        cluster.shutdown()
    summary = {
        "run_dir": str(run_dir),
        "stages_completed": last_stage + 1,
        "final_metrics": metrics,
        "mlflow_run_id": tracker.run_id,
        "mlflow_experiment_id": tracker.experiment_id,
        "mlflow_tracking_uri": tracker.tracking_uri,
        "seconds": time.perf_counter() - t_run,
        "lora": str(run_dir / "lora" / "pytorch_lora_weights.safetensors"),
        "split_step": split_step(cfg.schedule, last_stage, cfg.stages, cfg.sampling.num_steps),
    }
    tmp = run_dir / "summary.json.tmp"
    tmp.write_text(json.dumps(summary, indent=2))
    os.replace(tmp, run_dir / "summary.json")
    return summary


def _run_stage(cfg, cluster, train_prompts, run_dir, stage, grid):
    """One stage and the learner state it ends in. A learner rank lost on the way (its node
    gone, its process killed) costs a rebuilt learner group, restored from the last
    checkpoint, and the stage run again: its samples depend only on the seeds, so the run
    ends as if nothing had happened."""
    for attempt in range(cfg.runtime.max_restarts + 1):
        try:
            record = run_stage(cluster.groups, cfg, train_prompts, stage, grid)
            record.learner_rebuilds = attempt
            return record, cluster.learner.state(stage, record.split_step)
        except LearnerLost as exc:
            if attempt == cfg.runtime.max_restarts:
                raise LearnerLost(
                    f"{exc}; gave up after {attempt} rebuilds (runtime.max_restarts)"
                ) from None
            last = checkpoint.latest(run_dir)
            print(
                f"  stage {stage + 1}: {exc}; rebuilding the learner from "
                f"{last or 'its initial state'} and running the stage again",
                flush=True,
            )
            cluster.rebuild_learner(None if last is None else load_state(cfg, last), str(last))
    raise AssertionError("unreachable")


def check_finite(cfg: Config, run_dir: Path, stage: int, metrics: dict, state) -> None:
    """Stop a diverged run before its non-finite LoRA is saved or exported."""
    what = checkpoint.non_finite(
        float(metrics.get("loss", 0.0)), state.lora, cfg.model.autocast == "fp16"
    )
    if what is None:
        return
    last = checkpoint.latest(run_dir)
    raise TrainingDiverged(
        f"stage {stage + 1}: training diverged, {what}; the run stopped"
        + (f", its last good checkpoint is {last}" if last else " before any checkpoint")
        + f"; lower train.lr (now {cfg.train.lr:g}) or loss.clip_range"
    )


def load_state(cfg: Config, path: Path) -> LearnerState:
    """Checkpoint `path` as the learner restores it: B²'s memory in the older per-prompt
    form is converted to the per-stage one (exact for this run's own sampling)."""
    state = checkpoint.load(path)
    train = load_prompts(cfg.prompts.train, "prompts.train")
    state.advantages = convert_prompt_memory(
        state.advantages,
        state.stage,
        cfg.advantage.history,
        lambda i: stage_rows(cfg, train, i),
        str(path),
    )
    return state
