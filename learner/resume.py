"""Continuing a run: what may change, config.yaml, metrics.jsonl, nothing left to train."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from configs.load import ConfigError, dump_config, load_config
from configs.schema import Config
from diffusion.lora import export_lora
from learner.checkpoint import LearnerState
from learner.outputs import write_synced

# config keys a resumed run may change without --force (how long and where to log)
RESUMABLE_KEYS = {"stages", "logging", "runtime", "output_dir", "run_name"}


def _training_view(cfg: Config) -> dict:
    """The config as training sees it: the held-out prompts (prompts.test) are read only
    by evaluation, so a run stays the same run when they change."""
    d = cfg.model_dump(mode="json")
    d["prompts"] = {k: v for k, v in d["prompts"].items() if k != "test"}
    return d


def config_diff(a: Config, b: Config) -> str | None:
    """The first top-level key at which two configs train differently (None: the same run,
    up to RESUMABLE_KEYS and the held-out prompts)."""
    da, db = _training_view(a), _training_view(b)
    for key in da:
        if key not in RESUMABLE_KEYS and da[key] != db[key]:
            return key
    return None


def save_config(run_dir: Path, cfg: Config, start_stage: int) -> None:
    """config.yaml is the config of the run's latest stages: a resume that changes how it
    trains (--force) keeps the one before as config.until_stage_NNNN.yaml."""
    path = run_dir / "config.yaml"
    if path.is_file() and start_stage > 0:
        try:
            key = config_diff(load_config(path), cfg)
        except ConfigError:
            key = "(unreadable)"
        if key:
            keep = run_dir / f"config.until_stage_{start_stage - 1:04d}.yaml"
            os.replace(path, keep)
            print(f"config.yaml: the training config changes at '{key}'; the one before is {keep}")
    write_synced(path, dump_config(cfg))


def already_trained(cfg: Config, run_dir: Path, state: LearnerState) -> dict:
    """A resume with no stage left to run (the run finished, or stages below what it has
    done): no Ray; the LoRA of the last checkpoint is exported and the summary says what
    the run has done, not what the config asks for."""
    t0 = time.perf_counter()
    print(f"{run_dir}: {state.stage + 1} stages done, none left to run (stages={cfg.stages})")
    export_lora(state.evaluated, cfg.train.lora, run_dir / "lora")  # train.ema's, if on
    try:
        before = json.loads((run_dir / "summary.json").read_text())
    except (OSError, ValueError):
        before = {}
    summary = {
        "mlflow_run_id": None,
        "mlflow_experiment_id": None,
        "mlflow_tracking_uri": None,
        **(before if isinstance(before, dict) else {}),
        "run_dir": str(run_dir),
        "stages_completed": state.stage + 1,
        "final_metrics": last_record(run_dir / "metrics.jsonl", state.stage),
        "seconds": time.perf_counter() - t0,
        "lora": str(run_dir / "lora" / "pytorch_lora_weights.safetensors"),
        "split_step": state.split_step,
    }
    write_synced(run_dir / "summary.json", json.dumps(summary, indent=2))
    return summary


def repair_metrics(path: Path, last_stage: int) -> int:
    """Before a resume appends to `path` (metrics.jsonl): keep the complete records of the
    stages up to `last_stage` (the checkpoint resumed from), dropping a last line a crash
    cut short and records of stages that will run again. The number of lines dropped."""
    if not path.is_file():
        return 0
    raw = path.read_bytes()
    lines = raw.split(b"\n")
    kept = []
    for line in lines:
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            continue
        step = record.get("step") if isinstance(record, dict) else None
        if isinstance(step, int) and step <= last_stage:
            kept.append(line)
    dropped = sum(1 for line in lines if line.strip()) - len(kept)
    if dropped or (raw and not raw.endswith(b"\n")):
        write_synced(path, b"".join(line + b"\n" for line in kept).decode("utf-8"))
    return dropped


def last_record(path: Path, stage: int) -> dict:
    """Stage `stage`'s record in metrics.jsonl without its step ({} if there is none)."""
    found: dict = {}
    if path.is_file():
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and record.get("step") == stage:
                found = {k: v for k, v in record.items() if k != "step"}
    return found
