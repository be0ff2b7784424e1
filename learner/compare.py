"""`python -m learner.compare RUN ... [--out DIR]`: runs side by side (DIR: comparison/).

RUN is a run directory or an MLflow run id (resolved through its output_dir / run_name
params). Writes DIR/comparison.md (final training metrics and the evaluation numbers
`learner.evaluate` stored in RUN/eval/, per split, each with its size, seed and standard
errors, and a ranking where the runs' evaluations are paired, `learner.pairing`),
DIR/reward.png (stage reward against images sampled), DIR/eval.png (held-out alignment and
diversity per run, against images sampled where several checkpoints of a run were
evaluated; standard-error bars, axes from 0; one panel more for each configured reward
term the evaluations report, reward_<key>) and DIR/side_by_side.png (the same prompts
and noise, one column per run). Metric names are the ones logged to MLflow, so its own run
comparison lines up with this table.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from configs.load import load_config  # noqa: E402
from learner.eval_stats import stderr  # noqa: E402
from learner.pairing import (  # noqa: E402
    Choice,
    choose,
    describe_eval,
    final_evals,
    pairing,
    ranking,
    stage_of,
)

SPLITS = ("train", "test")


def run_metrics(runs: list[RunData]) -> list[str]:
    """The evaluation metrics, then every reward_<key> any run's evaluations report."""
    from learner.evaluator import metric_names

    return metric_names([s for r in runs for e in r.evals for s in e["splits"].values()])


@dataclass
class RunData:
    label: str
    run_dir: Path
    algorithm: str
    seed: int
    stages: list[dict]
    evals: list[dict] = field(default_factory=list)  # evaluate JSONs, any stage / split

    @property
    def images_per_stage(self) -> float:
        return self.stages[0]["images"] if self.stages else 0.0


def _choose(runs: list[RunData], split: str) -> Choice:
    """`pairing.choose` over the runs' last evaluations."""
    return choose([r.label for r in runs], [final_evals(r.evals, split) for r in runs], split)


def resolve_run(ref: str) -> Path:
    path = Path(ref)
    if (path / "config.yaml").is_file():
        return path
    try:
        import mlflow

        run = mlflow.get_run(ref)
    except Exception as exc:  # noqa: BLE001 - any lookup failure means "not a run"
        raise ValueError(f"{ref}: neither a run directory nor an MLflow run id ({exc})") from None
    params = run.data.params
    path = Path(params["output_dir"]) / (params.get("run_name") or run.info.run_name)
    if not (path / "config.yaml").is_file():
        raise ValueError(f"{ref}: MLflow run points at {path}, which is not a run directory")
    return path


def load_run(path: Path) -> RunData:
    cfg = load_config(path / "config.yaml")
    metrics_path = path / "metrics.jsonl"
    stages = (
        [json.loads(x) for x in metrics_path.read_text().splitlines()]
        if metrics_path.is_file()
        else []
    )
    evals = []
    for f in sorted((path / "eval").glob("*.json")) if (path / "eval").is_dir() else []:
        data = json.loads(f.read_text())
        if "splits" in data:
            evals.append(data)
    return RunData(path.name, path, cfg.algorithm, cfg.seed, stages, evals)


def _cell(split_result: dict | None, metric: str) -> str:
    value = None if split_result is None else split_result.get(metric)
    if value is None:
        return "-"
    se = stderr(split_result, metric)
    return f"{value:.4f}" + ("" if se is None else f" ± {se:.4f}")


def write_table(runs: list[RunData], out: Path) -> Path:
    lines = ["# Run comparison", ""]
    metrics = run_metrics(runs)
    lines.append(
        "| run | algorithm | seed | stages | images | final reward_mean | "
        + " | ".join(f"{s} {c}" for s in SPLITS for c in ("evaluation", *metrics))
        + " |"
    )
    lines.append("|" + "---|" * (6 + 2 * (1 + len(metrics))))
    labels = [r.label for r in runs]
    choices = {split: _choose(runs, split) for split in SPLITS}
    for i, r in enumerate(runs):
        last = r.stages[-1] if r.stages else {}
        images = sum(s.get("images", 0) for s in r.stages)
        reward = last.get("reward_mean")
        cells = []
        for split in SPLITS:
            e = choices[split].evals[i]
            shown = None if e is None else e["splits"][split]
            cells.append("-" if e is None else describe_eval(e, split))
            cells += [_cell(shown, m) for m in metrics]
        lines.append(
            f"| {r.label} | {r.algorithm} | {r.seed} | {len(r.stages)} | {int(images)} | "
            f"{'-' if reward is None else f'{reward:.4f}'} | " + " | ".join(cells) + " |"
        )
    lines += [""]
    for split in SPLITS:
        if line := ranking(labels, split, choices[split]):
            lines += [line, ""]
    lines += [
        "Evaluation numbers come from `python -m learner.evaluate` (the run's last "
        "evaluated checkpoint, of a size and noise seed every run shares where there is "
        "one) with their standard errors; `-` where a run was not evaluated or a metric "
        "does not apply.",
        "",
        "![reward](reward.png)",
        "",
        "![evaluation](eval.png)",
        "",
        "![side by side](side_by_side.png)",
        "",
    ]
    path = out / "comparison.md"
    path.write_text("\n".join(lines))
    return path


def plot_reward(runs: list[RunData], out: Path) -> Path:
    """Each stage's reward_mean with a band of reward_std / sqrt(images), its standard
    error were the images independent (branches of one trunk are not: a lower bound)."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for r in runs:
        xs = np.cumsum([s["images"] for s in r.stages])
        mean = np.array([s["reward_mean"] for s in r.stages])
        se = np.array([s.get("reward_std", 0.0) / math.sqrt(s["images"]) for s in r.stages])
        (line,) = ax.plot(xs, mean, label=r.label, marker=".")
        ax.fill_between(xs, mean - se, mean + se, color=line.get_color(), alpha=0.2, lw=0)
    ax.set_xlabel("images sampled (reward queries)")
    ax.set_ylabel("stage reward_mean (± standard error)")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path = out / "reward.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_eval(runs: list[RunData], out: Path) -> Path:
    """Held-out alignment and diversity of each run's evaluations (those paired with the
    one `choose` shows) against images sampled, with standard-error bars and axes from 0,
    so a difference within the noise does not fill the plot: alignment, diversity, then
    one panel per configured reward term the evaluations report."""
    choice = _choose(runs, "test")
    shown = [e["splits"]["test"] for e in choice.evals if e is not None]
    toy = bool(shown) and shown[0].get("oracle_accuracy") is not None
    key = "oracle_accuracy" if toy else "clip_score"
    from learner.evaluator import REWARD_PREFIX, metric_names

    panels = [key, "diversity", *(m for m in metric_names(shown) if m.startswith(REWARD_PREFIX))]
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4), squeeze=False)
    axes = axes[0]
    for r, chosen in zip(runs, choice.evals, strict=True):
        if chosen is None:
            continue
        pts = sorted(
            ((stage_of(e) + 1) * r.images_per_stage, e["splits"]["test"])
            for e in r.evals
            if "test" in e["splits"] and pairing(e, "test") == pairing(chosen, "test")
        )
        for ax, metric in zip(axes, panels, strict=True):
            have = [(x, s) for x, s in pts if s.get(metric) is not None]
            if not have:
                continue
            errors = [stderr(s, metric) for _, s in have]
            ax.errorbar(
                [x for x, _ in have],
                [s[metric] for _, s in have],
                yerr=None if None in errors else errors,
                marker="o",
                capsize=3,
                label=r.label,
            )
    for ax, metric in zip(axes, panels, strict=True):
        ax.set_ylabel(f"held-out {metric} (± standard error)")
    for ax in axes:
        ax.set_xlabel("images sampled")
        ax.set_ylim(bottom=min(0.0, ax.get_ylim()[0]))  # 0 in view, as the scale
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:  # a run with no evaluation draws nothing
            ax.legend(fontsize=7)
    if choice.problem:
        fig.suptitle("held-out evaluations of different size or noise: not paired", fontsize=9)
    fig.tight_layout()
    path = out / "eval.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def side_by_side(
    runs: list[RunData],
    out: Path,
    n_prompts: int = 6,
    seed: int = 1234,
    prompts: list[str] | None = None,
    targets: list | None = None,
) -> Path:
    """The same test prompts and noise for every run: rows are prompts, columns runs. The
    prompts: the given ones, else the first run's held-out (test) prompts. `targets`: the
    runs' checkpoints as `learner.evaluator.resolve` gives them (default: resolved here)."""
    from learner.evaluator import Evaluator, resolve
    from learner.grid import save_grid
    from learner.prompts import load_prompts

    columns = []
    if prompts is not None:
        prompts = prompts[:n_prompts]
    targets = targets or [resolve(str(r.run_dir), None, []) for r in runs]
    for target in targets:
        ev = Evaluator(target)
        if prompts is None:
            prompts = load_prompts(ev.target.cfg.prompts.test)[:n_prompts]
        images, _ = ev.sample(prompts, 1, seed)
        columns.append(images)
    tiles = torch.stack(columns, dim=1).flatten(0, 1)  # row-major: prompt, then run
    captions = [f"{r.label}: {p}" for p in prompts for r in runs]
    return save_grid(tiles, captions, out / "side_by_side.png", columns=len(runs))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m learner.compare", description=__doc__.split("\n")[0]
    )
    p.add_argument("runs", nargs="+", help="run directories or MLflow run ids")
    p.add_argument("--out", type=Path, default=Path("comparison"), help="default: comparison/")
    p.add_argument("--no-images", action="store_true", help="skip the side-by-side grid")
    args = p.parse_args(argv)
    from learner.evaluator import resolve
    from learner.main import user_errors

    if args.out.exists() and not args.out.is_dir():
        print(f"error: --out {args.out}: is a file; give a directory", file=sys.stderr)
        return 2
    made = not args.out.exists()
    try:
        runs = [load_run(resolve_run(r)) for r in args.runs]
        # every checkpoint read (and its checksums checked) before anything is drawn
        targets = None if args.no_images else [resolve(str(r.run_dir), None, []) for r in runs]
        write_all(runs, args.out, targets)
    except (ValueError, FileNotFoundError, *user_errors()) as exc:
        return _failed(str(exc), args.out, made)
    except OSError as exc:
        return _failed(f"--out {args.out}: cannot write the comparison ({exc})", args.out, made)
    print((args.out / "comparison.md").read_text())
    print(
        f"wrote {args.out}/comparison.md, reward.png, eval.png"
        + ("" if args.no_images else ", side_by_side.png")
    )
    return 0


def write_all(runs: list[RunData], out: Path, targets: list | None) -> None:
    """Every file of the comparison, made in a scratch folder inside `out` and moved into
    place only when all are made: a failure half-way leaves `out` as it was."""
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out, prefix=".comparison-") as scratch:
        staged = Path(scratch)
        plot_reward(runs, staged)
        plot_eval(runs, staged)
        if targets is not None:
            side_by_side(runs, staged, targets=targets)
        write_table(runs, staged)
        for f in sorted(staged.iterdir()):
            os.replace(f, out / f.name)


def _failed(message: str, out: Path, made: bool) -> int:
    if made and out.is_dir() and not any(out.iterdir()):
        out.rmdir()  # the folder this call made, still empty
    print(f"error: {message}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
