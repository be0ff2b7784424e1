"""RL's change of each trained prompt's exact accuracy against the prompt's base rate, over
every recorded run of the B² preset's setting (eleventh session).

    python docs/experiments/2026-11-27-base-range/gain_vs_base.py

Sources (all B² with the toy preset's settings, trained prompts only, "before" and "after" on
the same evaluation noise): the tenth session's three CPU runs on the default prompts
(`learner.experiment`, 103 images a prompt), the ninth session's GPU runs (`rl_check`, 52
images a prompt: default seeds 3-5, `wide`, `wideall`), and this session's CPU runs
(`rl_check`, 120 images a prompt; the shipped CLIP's runs binned, the shape-negatives CLIP's
drawn apart). Writes gain_vs_base.png and gain_vs_base.json here.
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

HERE = Path(__file__).parent
DOCS = HERE.parents[1]
BINS = [(0.0, 0.1), (0.1, 0.2), (0.2, 0.35), (0.35, 1.01)]


def rl_check_points(path: Path) -> list[tuple[float, float, str]]:
    d = json.loads(path.read_text("utf-8"))
    before, after = d["before"]["train"]["per_prompt"], d["after"]["train"]["per_prompt"]
    return [(before[p], after[p] - before[p], p) for p in before]


def experiment_points(evals: Path, base: Path) -> list[tuple[float, float, str]]:
    b = json.loads(base.read_text("utf-8"))["splits"]["train"]["per_prompt"]
    out = []
    for f in sorted(evals.glob("toy_b2-s*_all.json")):
        a = json.loads(f.read_text("utf-8"))["splits"]["train"]["per_prompt"]
        out += [
            (b[p]["oracle_accuracy"], a[p]["oracle_accuracy"] - b[p]["oracle_accuracy"], p)
            for p in b
        ]
    return out


def main() -> None:
    sweep = DOCS / "gpu/2026-11-27-sweep/results"
    rel = DOCS / "experiments/2026-11-27-relations"
    sources = {
        "default prompts, CPU (tenth session)": experiment_points(
            rel / "evals", rel / "base/base_all.json"
        ),
        "default prompts, GPU (ninth)": [
            x for s in (3, 4, 5) for x in rl_check_points(sweep / f"default_b2_s{s}.json")
        ],
        "wide / wideall, GPU (ninth)": [
            x
            for name in ("wide_b2_s0", "wide_b2_s1", "wide_b2_s2", "wideall_b2_s0", "wideall_b2_s1")
            for x in rl_check_points(sweep / f"{name}.json")
        ],
        "this session, CPU": [
            x
            for name in ("y_b2_s0", "mid_b2_s0", "mid_b2_s1")
            for x in rl_check_points(HERE / f"{name}.json")
        ],
    }
    # this session's runs with the shape-negatives CLIP as the reward: drawn, not binned
    shape = [x for f in sorted(HERE.glob("*_b2_shapeclip_s*.json")) for x in rl_check_points(f)]
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    for (label, pts), marker in zip(sources.items(), "osD^", strict=True):
        ax.scatter([p[0] for p in pts], [p[1] for p in pts], label=label, marker=marker, s=18)
    ax.scatter(
        [p[0] for p in shape],
        [p[1] for p in shape],
        label="this session, CPU, shape-negatives CLIP",
        marker="^",
        s=22,
        facecolors="none",
        edgecolors="black",
    )
    ax.axhline(0, color="grey", lw=0.8)
    ax.axvspan(0.2, 0.7, color="tab:green", alpha=0.08, label="issue 3's base range")
    ax.set_xlabel("base exact accuracy of the trained prompt")
    ax.set_ylabel("change after one default-length B² run")
    ax.legend(fontsize=7, loc="lower left")
    ax.set_title("RL's gain by a trained prompt's base rate (toy world, CLIP reward)", fontsize=9)
    fig.tight_layout()
    fig.savefig(HERE / "gain_vs_base.png")
    every = [p for pts in sources.values() for p in pts]
    table = []
    for lo, hi in BINS:
        sel = [p[1] for p in every if lo <= p[0] < hi]
        n = len(sel)
        mean = sum(sel) / n if n else float("nan")
        up = sum(1 for g in sel if g > 0) / n if n else float("nan")
        table.append(
            {
                "base_from": lo,
                "base_to": min(hi, 1.0),
                "prompt_runs": n,
                "mean_change": mean,
                "share_up": up,
            }
        )
        print(
            f"base {lo:.2f}-{min(hi, 1.0):.2f}: {n:3d} prompt-runs, mean change "
            f"{mean:+.3f}, up in {up:.0%}"
        )
    record = {"bins": table, "points": dict(sources), "shape_clip_points": shape}
    (HERE / "gain_vs_base.json").write_text(json.dumps(record, indent=1) + "\n", "utf-8")


if __name__ == "__main__":
    main()
