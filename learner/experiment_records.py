"""The record of a finished run in a `learner.experiment` folder: DIR/records/<run>/ holds
the run's config, summary, per-stage metrics and evaluations, not its checkpoints (tens of
kilobytes where the run directory holds megabytes to gigabytes). It is small enough to keep
next to the experiment's summary, in git for instance; a run directory deleted to free the
disk, or not carried to another machine, is restored from it, so that a later call reports
the run, and trains other seeds or presets beside it, without training it again."""

from __future__ import annotations

import shutil
from pathlib import Path

from learner import checkpoint

FILES = ("config.yaml", "summary.json", "metrics.jsonl")


def record_dir(out: Path, run_name: str) -> Path:
    return out / "records" / run_name


def keep(run_dir: Path, out: Path) -> Path:
    """Write (or refresh) the record of `run_dir`, whole or not at all."""
    dest = record_dir(out, run_dir.name)
    tmp, old = dest.with_name(f".{dest.name}.tmp"), dest.with_name(f".{dest.name}.old")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "eval").mkdir(parents=True)
    for name in FILES:
        if (run_dir / name).is_file():
            shutil.copy2(run_dir / name, tmp / name)
    for result in sorted((run_dir / "eval").glob("*_all.json")):
        shutil.copy2(result, tmp / "eval" / result.name)
    shutil.rmtree(old, ignore_errors=True)
    if dest.exists():
        dest.rename(old)
    tmp.rename(dest)
    shutil.rmtree(old, ignore_errors=True)
    return dest


def restore(run_dir: Path, out: Path) -> bool:
    """Recreate a missing run directory from its record (without checkpoints); False if
    the directory exists or no finished run is recorded."""
    src = record_dir(out, run_dir.name)
    if run_dir.exists() or not (src / "summary.json").is_file():
        return False
    shutil.copytree(src, run_dir)
    return True


def has_checkpoint(run_dir: Path) -> bool:
    return checkpoint.latest(run_dir) is not None
