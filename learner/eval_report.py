"""Where an evaluation's result goes (`learner.evaluate`): the JSON file, its default name
and a check that it can be written before any image is sampled; the table on stdout; MLflow,
into the run that made the checkpoint (metrics and image grids)."""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

from learner.evaluator import Target, metric_names


def result_name(label: str, args: argparse.Namespace) -> str:
    """The default JSON name: checkpoint, size, noise seed and split, so an evaluation of
    another size or seed (of `base` above all, whose results share one folder) is written
    beside the earlier ones rather than over them."""
    size = (
        f"{args.images_per_prompt}-per-prompt"
        if args.images_per_prompt is not None
        else f"{args.images_per_split}-per-split"
    )
    return f"{label.replace('@', '_')}_{size}_seed{args.seed}_{args.split}.json"


def writable_error(json_path: Path) -> str | None:
    """Why the result could not be written to `json_path` (None: it can), found before
    any image is sampled: its folder is made and a scratch file written and removed."""
    if json_path.is_dir():
        return f"{json_path}: is a directory; --json takes a file name"
    try:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=json_path.parent, prefix=".probe-"):
            pass
    except OSError as exc:
        return f"{json_path.parent}: cannot write the evaluation there ({exc.strerror or exc})"
    return None


def print_table(result: dict) -> None:
    counts = ", ".join(f"{k} {v}" for k, v in result["images_per_prompt"].items())
    print(f"\n{result['checkpoint']}  (images per prompt: {counts}; seed {result['seed']})")
    metrics = metric_names(list(result["splits"].values()))
    head = f"{'split':<6} {'images':>6} " + " ".join(f"{m:>15}" for m in metrics)
    print(head)
    print("-" * len(head))
    for split, r in result["splits"].items():
        cells = " ".join(f"{'-' if r.get(m) is None else format(r[m], '.4f'):>15}" for m in metrics)
        print(f"{split:<6} {r['images']:>6} {cells}")


def save_result(target: Target, result: dict, json_path: Path, mlflow: bool = True) -> dict:
    """Log `result` to MLflow (metrics and image grids; where the config enables it and
    `mlflow`), then write it without its grids to `json_path` atomically (the grids go next
    to it as PNGs). Returns what was written, with `mlflow_run_id` where logged."""
    out_dir = json_path.parent
    out_dir.mkdir(parents=True, exist_ok=True)
    if mlflow and target.cfg.logging.mlflow:
        result["mlflow_run_id"] = log_to_mlflow(target, result, out_dir)
    result.pop("grids", None)
    tmp = json_path.with_name(json_path.name + ".tmp")
    tmp.write_text(json.dumps(result, indent=2))
    os.replace(tmp, json_path)
    return result


def log_to_mlflow(target: Target, result: dict, out_dir: Path) -> str | None:
    """Into the run that made the checkpoint, else a new evaluation run."""
    from learner.grid import save_grid
    from learner.tracking import Tracker

    run_id, uri = None, None
    if target.run_dir is not None and (target.run_dir / "run.json").is_file():
        info = json.loads((target.run_dir / "run.json").read_text())
        run_id, uri = info.get("mlflow_run_id"), info.get("mlflow_tracking_uri")
    tracker = Tracker(
        target.cfg,
        out_dir,
        f"eval-{target.label}",
        run_id,
        os.environ.get("MLFLOW_TRACKING_URI") or uri,
    )
    metrics = {
        f"eval_{split}_{m}": r[m]
        for split, r in result["splits"].items()
        for m in metric_names([r])
        if r[m] is not None
    }
    tracker.metrics(target.stage if target.stage is not None else 0, metrics)
    for split, (images, captions) in result["grids"].items():
        path = save_grid(images, captions, out_dir / f"eval_grid_{target.label}_{split}.png")
        tracker.artifact(path, "eval")
    tracker.finish()
    return tracker.run_id
