"""Table of the B² / DDPO comparison on the U prompts from rl_check JSONs.

python docs/experiments/2026-11-26-compare/summarise.py results/*.json
"""

import json
import statistics
import sys
from pathlib import Path

rows: dict[str, list[dict]] = {}
for name in sys.argv[1:]:
    data = json.loads(Path(name).read_text())
    rows.setdefault(Path(name).stem.split("_s")[0], []).append(data)


def spread(values: list[float]) -> str:
    mean = statistics.mean(values)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{100 * mean:.1f} ± {100 * std:.1f}"


base = next(iter(rows.values()))[0]["before"]
train, test = base["train"]["correct"], base["test"]["correct"]
print(f"base: exact train {100 * train:.1f} %, test {100 * test:.1f} %")
for arm, runs in rows.items():
    cells = []
    for split in ("train", "test"):
        for key in ("correct", "partial"):
            cells.append(spread([r["after"][split][key] for r in runs]))
    per_seed = ", ".join(f"{100 * r['after']['train']['correct']:.1f}" for r in runs)
    seconds = statistics.mean(r["seconds"]["train"] for r in runs)
    print(
        f"{arm}: n={len(runs)} train exact/partial, test exact/partial (x100): {cells}; "
        f"train exact per seed {per_seed}; {seconds:.0f} s of training per run"
    )

# per-stage curves: CLIP reward and the checker's exact accuracy of the stage's own images
import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
colours = {"b2": "tab:blue", "ddpo": "tab:orange"}
for arm, runs in rows.items():
    for i, run in enumerate(runs):
        images = [128 * (s["stage"] + 1) for s in run["per_stage"]]
        label = arm if i == 0 else None
        for ax, key in zip(axes, ("reward_mean", "checker_correct"), strict=True):
            ax.plot(
                images,
                [s[key] for s in run["per_stage"]],
                color=colours.get(arm),
                alpha=0.7,
                label=label,
            )
axes[0].set_ylabel("stage CLIP reward (mean)")
axes[1].set_ylabel("stage images exactly right (checker)")
for ax in axes:
    ax.set_xlabel("images sampled (reward queries)")
    ax.grid(alpha=0.3)
    ax.legend()
fig.tight_layout()
out = Path(sys.argv[1]).parent.parent / "u_compare.png"
fig.savefig(out, dpi=110)
print(f"wrote {out}")
