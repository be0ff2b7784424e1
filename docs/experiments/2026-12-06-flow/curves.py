"""Exact accuracy on the train prompts against UNet evaluations spent, for every run here.

    python docs/experiments/2026-12-06-flow/curves.py [--dir DIR] [--images-per-split 512]

For each run in DIR/runs/ (named <preset>-s<seed>, as `learner.experiment` names them), the
checkpoints at a quarter, half and three quarters of its stages are evaluated on the train
split (`learner.evaluate`, eval seed 1234, about 512 images; cached in DIR/curves/); the base
model and the final LoRA come from the experiment's 2,048-image evaluations
(base/base_all.json, runs/<run>/eval/<run>_stage_<last>_all.json). x: the UNet
evaluations the run had spent by then, sampling plus update, as the code counted them
(metrics.jsonl). The figure shows each arm's mean over seeds with the standard error over
seeds; the points' x are the seeds' mean spend. Written: DIR/curves.json, DIR/curves.png.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[2]))

FRACTIONS = (0.25, 0.5, 0.75)
ARMS = {
    "toy_sd3_b2": "B² backward (the paper)",
    "toy_sd3_forward": "B² forward",
    "toy_sd3_window": "B² window (4 steps)",
    "toy_sd3_ddpo": "DDPO",
}
EVAL_SEED = 1234


def spent(run: Path) -> np.ndarray:
    """Cumulative UNet evaluations after each stage."""
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line]
    per_stage = [m["unet_evaluations"] + m.get("update_unet_evaluations", 0) for m in rows]
    return np.cumsum(per_stage)


def accuracy(result: dict) -> float:
    return float(result["splits"]["train"]["oracle_accuracy"])


def checkpoint_accuracy(root: Path, run: Path, stage: int, per_split: int) -> float:
    from learner.eval_report import save_result
    from learner.evaluate import evaluate, images_per_prompt
    from learner.evaluator import resolve

    cache = root / "curves" / f"{run.name}_stage{stage:04d}_{per_split}.json"
    if cache.is_file():
        return accuracy(json.loads(cache.read_text()))
    target = resolve(str(run / "stages" / f"stage_{stage:04d}"), None, [])
    per_prompt = images_per_prompt(target.cfg, ["train"], None, per_split)
    cache.parent.mkdir(exist_ok=True)
    result = save_result(target, evaluate(target, ["train"], per_prompt, EVAL_SEED), cache)
    print(f"{run.name} stage {stage}: train exact {accuracy(result):.3f}", flush=True)
    return accuracy(result)


def curves(root: Path, per_split: int) -> dict[str, list[list[tuple[float, float]]]]:
    """{arm: [one run's [(UNet evaluations, train exact accuracy)], ...]}."""
    base = accuracy(json.loads((root / "base" / "base_all.json").read_text()))
    out = defaultdict(list)
    for run in sorted((root / "runs").iterdir()):
        arm = run.name.rsplit("-s", 1)[0]
        cum = spent(run)
        final = run / "eval" / f"{run.name}_stage_{len(cum) - 1:04d}_all.json"
        if arm not in ARMS or not final.is_file():
            continue
        points = [(0.0, base)]
        for f in FRACTIONS:
            stage = round(f * len(cum)) - 1
            points.append((float(cum[stage]), checkpoint_accuracy(root, run, stage, per_split)))
        points.append((float(cum[-1]), accuracy(json.loads(final.read_text()))))
        out[arm].append(points)
    return out


def plot(data: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for arm, runs in data.items():
        xy = np.array(runs)  # [seeds, points, 2]
        x = xy[:, :, 0].mean(0) / 1e6
        y = 100 * xy[:, :, 1]
        mean = y.mean(0)
        se = y.std(0, ddof=1) / np.sqrt(len(y)) if len(y) > 1 else np.zeros_like(mean)
        seeds = f"{len(y)} seed" + ("s" if len(y) > 1 else "")
        ax.plot(x, mean, marker="o", label=f"{ARMS[arm]} ({seeds})")
        ax.fill_between(x, mean - se, mean + se, alpha=0.2)
    ax.set_xlabel("UNet evaluations spent, millions (sampling + update)")
    ax.set_ylabel("train prompts, exact accuracy (%)")
    ax.margins(y=0.12)
    ax.text(
        0.01,
        0.98,
        "bands: standard error over seeds; one inner point 512 images (binomial se ~2 points), "
        "an end 2,048 (~1)",
        transform=ax.transAxes,
        va="top",
        fontsize=7,
        color="grey",
    )
    ax.set_title("Toy flow world: exact accuracy at equal compute")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"wrote {path}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dir", type=Path, default=HERE, help="the experiment's --out")
    p.add_argument("--images-per-split", type=int, default=512)
    args = p.parse_args()
    data = curves(args.dir, args.images_per_split)
    (args.dir / "curves.json").write_text(json.dumps(data, indent=1) + "\n")
    plot(data, args.dir / "curves.png")


if __name__ == "__main__":
    main()
