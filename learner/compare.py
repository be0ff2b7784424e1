"""`python -m learner.compare RUN ... --out DIR`: runs side by side.

RUN is a run directory or an MLflow run id (resolved through its output_dir / run_name
params). Writes DIR/comparison.md (final training metrics and the evaluation numbers
`learner.evaluate` stored in RUN/eval/, per split), DIR/reward.png (stage reward against
images sampled), DIR/eval.png (held-out alignment and diversity per run, against images
sampled where several checkpoints of a run were evaluated) and DIR/side_by_side.png (the
same prompts and noise, one column per run). Metric names are the ones logged to MLflow,
so its own run comparison lines up with this table.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from configs.load import load_config  # noqa: E402


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

    def final_eval(self, split: str) -> dict | None:
        found = [e for e in self.evals if split in e["splits"]]
        if not found:
            return None
        return max(found, key=lambda e: -1 if e["stage"] is None else e["stage"])["splits"][split]


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


def _fmt(v) -> str:
    return "-" if v is None else f"{v:.4f}"


def write_table(runs: list[RunData], out: Path) -> Path:
    cols = ["clip_score", "bert_score", "diversity", "oracle_accuracy"]
    lines = ["# Run comparison", ""]
    lines.append(
        "| run | algorithm | seed | stages | images | final reward_mean | "
        + " | ".join(f"{s} {c}" for s in ("train", "test") for c in cols)
        + " |"
    )
    lines.append("|" + "---|" * (6 + 2 * len(cols)))
    for r in runs:
        last = r.stages[-1] if r.stages else {}
        images = sum(s.get("images", 0) for s in r.stages)
        cells = []
        for split in ("train", "test"):
            e = r.final_eval(split) or {}
            cells += [_fmt(e.get(c)) for c in cols]
        lines.append(
            f"| {r.label} | {r.algorithm} | {r.seed} | {len(r.stages)} | {int(images)} | "
            f"{_fmt(last.get('reward_mean'))} | " + " | ".join(cells) + " |"
        )
    lines += [
        "",
        "Evaluation numbers come from `python -m learner.evaluate` (the run's last "
        "evaluated checkpoint); `-` where a run was not evaluated or a metric does not "
        "apply.",
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
    fig, ax = plt.subplots(figsize=(6, 4))
    for r in runs:
        xs, total = [], 0.0
        for s in r.stages:
            total += s["images"]
            xs.append(total)
        ax.plot(xs, [s["reward_mean"] for s in r.stages], label=r.label, marker=".")
    ax.set_xlabel("images sampled (reward queries)")
    ax.set_ylabel("stage reward_mean")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path = out / "reward.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_eval(runs: list[RunData], out: Path) -> Path:
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for r in runs:
        pts = sorted(
            (
                (0 if e["stage"] is None else (e["stage"] + 1) * r.images_per_stage),
                e["splits"]["test"],
            )
            for e in r.evals
            if "test" in e["splits"]
        )
        if not pts:
            continue
        xs = [p[0] for p in pts]
        key = "oracle_accuracy" if pts[0][1].get("oracle_accuracy") is not None else "clip_score"
        axes[0].plot(xs, [p[1][key] for p in pts], marker="o", label=r.label)
        axes[0].set_ylabel(f"held-out {key}")
        axes[1].plot(xs, [p[1]["diversity"] for p in pts], marker="o", label=r.label)
    axes[1].set_ylabel("held-out diversity")
    for ax in axes:
        ax.set_xlabel("images sampled")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
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
) -> Path:
    """The same test prompts and noise for every run: rows are prompts, columns runs. The
    prompts: the given ones, else the first run's held-out (test) prompts."""
    from learner.evaluate import Evaluator, resolve
    from learner.grid import save_grid
    from learner.prompts import load_prompts

    columns = []
    if prompts is not None:
        prompts = prompts[:n_prompts]
    for r in runs:
        ev = Evaluator(resolve(str(r.run_dir), None, []))
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
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--no-images", action="store_true", help="skip the side-by-side grid")
    args = p.parse_args(argv)
    try:
        runs = [load_run(resolve_run(r)) for r in args.runs]
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    plot_reward(runs, args.out)
    plot_eval(runs, args.out)
    if not args.no_images:
        side_by_side(runs, args.out)
    path = write_table(runs, args.out)
    print(path.read_text())
    print(
        f"wrote {args.out}/comparison.md, reward.png, eval.png"
        + ("" if args.no_images else ", side_by_side.png")
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
