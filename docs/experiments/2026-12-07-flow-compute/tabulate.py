"""The equal-compute table of docs/RESULTS.md, from this folder's records alone.

    python docs/experiments/2026-12-07-flow-compute/tabulate.py

Reads base/base_all.json and records/<preset>-s<seed>/ (each run's final evaluation,
metrics.jsonl and summary.json, as `learner.experiment` keeps them) and prints one markdown
row per arm: train exact accuracy per seed and its mean with the standard error over seeds
(sample standard deviation / sqrt(seeds); the base's: binomial), held-out exact, train
diversity, the UNet evaluations and images a run spent, and training seconds.
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[2]))
ARMS = {
    "toy_sd3_b2": "B² backward (the paper)",
    "toy_sd3_window": "B² window (4 steps)",
    "toy_sd3_ddpo": "DDPO",
    "toy_sd3_forward": "B² forward",
}


def split(result: dict, name: str, key: str) -> float:
    return 100 * float(result["splits"][name][key])


def run_row(record: Path) -> dict:
    from learner.budget import counted

    spent = counted(record)
    final = sorted((record / "eval").glob("*_all.json"))[-1]
    result = json.loads(final.read_text())
    return {
        "seed": int(record.name.rsplit("-s", 1)[1]),
        "train": split(result, "train", "oracle_accuracy"),
        "test": split(result, "test", "oracle_accuracy"),
        "diversity": float(result["splits"]["train"]["diversity"]),
        "unet": spent["unet"],
        "images": int(spent["images"]),
        "stages": spent["stages"],
        "seconds": float(json.loads((record / "summary.json").read_text())["seconds"]),
    }


def binomial_se(result: dict, name: str) -> float:
    """The binomial standard error of one accuracy, in points."""
    p, n = result["splits"][name]["oracle_accuracy"], result["splits"][name]["images"]
    return 100 * float(np.sqrt(p * (1 - p) / n))


def mean_se(values: list[float]) -> tuple[float, float]:
    v = np.asarray(values)
    return float(v.mean()), float(v.std(ddof=1) / np.sqrt(len(v))) if len(v) > 1 else 0.0


def signed(x: float) -> str:
    return f"{x:+.1f}"


def main() -> None:
    base = json.loads((HERE / "base" / "base_all.json").read_text())
    b_train, b_test = (
        split(base, "train", "oracle_accuracy"),
        split(base, "test", "oracle_accuracy"),
    )
    runs: dict[str, list[dict]] = defaultdict(list)
    for record in sorted((HERE / "records").iterdir()):
        arm = record.name.rsplit("-s", 1)[0]
        if arm in ARMS and list((record / "eval").glob("*_all.json")):
            runs[arm].append(run_row(record))
    print(
        "| arm | seeds | stages / images a run | train exact, each seed | train exact, mean "
        "| held-out exact, mean | diversity, train | training time a run |"
    )
    print("|---|---|---|---|---|---|---|---|")
    b_div = float(base["splits"]["train"]["diversity"])
    b_se = [binomial_se(base, name) for name in ("train", "test")]
    print(
        f"| base | - | - | - | **{b_train:.1f} %** ± {b_se[0]:.1f} "
        f"| {b_test:.1f} % ± {b_se[1]:.1f} | {b_div:.3f} | - |"
    )
    for arm, label in ARMS.items():
        rows = sorted(runs.get(arm, []), key=lambda r: r["seed"])
        if not rows:
            continue
        train, se = mean_se([r["train"] for r in rows])
        test, test_se = mean_se([r["test"] for r in rows])
        each = ", ".join(f"{r['train']:.1f}" for r in rows)
        gains = ", ".join(signed(r["train"] - b_train) for r in rows)
        div = ", ".join(f"{r['diversity']:.3f}" for r in rows)
        secs = [r["seconds"] for r in rows]
        spend = f"{rows[0]['stages']} / {rows[0]['images']:,} ({rows[0]['unet'] / 1e3:,.0f} k UNet)"
        print(
            f"| {label} | {', '.join(str(r['seed']) for r in rows)} | {spend} | {each} ({gains}) "
            f"| **{train:.1f} %** ± {se:.1f} ({signed(train - b_train)}) "
            f"| {test:.1f} % ± {test_se:.1f} ({signed(test - b_test)}) | {div} "
            f"| {min(secs):,.0f}-{max(secs):,.0f} s |"
        )


if __name__ == "__main__":
    main()
