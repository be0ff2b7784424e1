"""The headline figure of docs/RESULTS.md from this experiment's recorded evaluations: exact
accuracy on the train and held-out prompts and diversity, for the base model, B² (st96, three
seeds) and DDPO (ddpo96, two seeds) at 12,288 images a run.

    python docs/experiments/2026-12-03-adopted/headline.py [--out docs/headline.png]

Accuracies as in tabulate.py (train: four eval seeds, 2,060 images; held-out: 2,060 images);
each dot is a seed, the bar its mean, the whisker the standard error over seeds; the base
model's line carries the binomial standard error of one 2,060-image accuracy.
"""

import argparse
import json
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

D = Path(__file__).parent
ARMS = {"B²": ["st96-s0", "st96-s1", "st96-s2"], "DDPO": ["ddpo96-s0", "ddpo96-s1"]}
COLOURS = {"B²": "tab:blue", "DDPO": "tab:orange"}


def diversity(name: str) -> dict[str, float]:
    path = (
        D / "base" / "base_all.json"
        if name == "base"
        else next((D / "evals").glob(f"{name}_stage_*_all.json"))
    )
    splits = json.loads(path.read_text())["splits"]
    return {split: splits[split]["diversity"] for split in ("train", "test")}


def _panel(ax, title: str, base: float, base_se: float | None, values: dict, unit: str) -> None:
    ax.axhline(base, color="grey", lw=1)
    if base_se is not None:
        ax.axhspan(base - base_se, base + base_se, color="grey", alpha=0.2, lw=0)
    for i, (arm, vals) in enumerate(values.items()):
        mean = sum(vals) / len(vals)
        se = math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1) / len(vals))
        ax.bar(i, mean, 0.6, color=COLOURS[arm], alpha=0.35)
        ax.errorbar(i, mean, yerr=se, color=COLOURS[arm], capsize=6, lw=2)
        ax.plot([i] * len(vals), vals, "o", color=COLOURS[arm])
    ax.set_xticks(range(len(values)), list(values))
    ax.set_title(title)
    ax.set_ylabel(unit)
    ax.set_ylim(bottom=0)
    ax.text(len(values) - 0.5, base, " base", va="bottom", ha="right", color="grey")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=D.parents[1] / "headline.png")
    args = p.parse_args()
    table = json.loads((D / "tabulate.json").read_text())
    n = table["base"]["train_images"]
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.6))
    splits = (("train", "train prompts"), ("test", "held-out"))
    for ax, (split, title) in zip(axes[:2], splits, strict=True):
        base = table["base"][split] * 100
        se = math.sqrt(base * (100 - base) / n)
        vals = {arm: [table[r][split] * 100 for r in runs] for arm, runs in ARMS.items()}
        _panel(ax, f"exact accuracy, {title}", base, se, vals, "%")
    div = {arm: [diversity(r)["test"] for r in runs] for arm, runs in ARMS.items()}
    _panel(axes[2], "diversity, held-out", diversity("base")["test"], None, div, "1 - cosine")
    fig.suptitle("toy world, 12,288 images a run (96 stages x 32 trunks x 4 branches)")
    fig.tight_layout()
    fig.savefig(args.out, dpi=120)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
