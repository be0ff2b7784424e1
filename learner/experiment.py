"""`python -m learner.experiment`: train, evaluate and compare presets over seeds, end to end.

    python -m learner.experiment [--presets FILE ...] [--seeds N ...] [--set KEY=VALUE ...]
        [--images-per-split N | --images-per-prompt N] [--eval-seed N] [--out DIR]
        [--results FILE] [--budget images|unet|seconds]

For every preset and seed it trains a run (the path `learner.main` takes: a local Ray on
127.0.0.1, or the cluster in RAY_ADDRESS) into DIR/runs/<preset>-s<seed>, skipping runs
that are complete and resuming those that are not, so an interrupted experiment continues
where it stopped (the held-out prompts are not part of a run: `--set prompts.test=FILE`
evaluates finished runs on other held-out prompts without training them again). It then
evaluates every final checkpoint and the untrained base model on the train and test prompts
with the same noise (`learner.evaluate`, about 2,048 images in each split by default, so
the small train split is measured as finely as the larger held-out one; the numbers also go
to each run's MLflow run), and writes
- DIR/comparison.md, reward.png, eval.png, side_by_side.png (`learner.compare`);
- DIR/summary.md and summary.json: per preset the mean and spread over seeds of every
  evaluation metric, and its change from the base model.
With `--results FILE` the summary also replaces the block between the markers below in FILE
(appended if FILE has none), so a hand-written results page keeps its text around it.

The presets must spend equal budgets: the same model, prompts and sampler, and (`--budget
images`, the default) the same number of reward queries (stages x trunks x branches);
`--set` applies to every preset. `--budget unet` or `seconds` compares them at equal compute
instead: the first preset trains its configured stages and what its runs spent (their mean
over seeds: UNet evaluations of sampling and update as metrics.jsonl counts them, or the
stages' training seconds) is the budget; every other preset gets the stage count whose
predicted spend is nearest it (`learner.budget`; for seconds, at the rate of seconds per
UNet evaluation its own first stage, trained once in DIR/probes, measured on this machine).
The budget, the stage counts and what every run counted go to the log and the summary.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from configs.load import DEFAULT_PRESET, load_config
from configs.schema import Config

BEGIN = "<!-- learner.experiment: begin (generated; edits inside are overwritten) -->"
END = "<!-- learner.experiment: end -->"
DDPO_PRESET = Path(DEFAULT_PRESET).with_name("toy_ddpo.yaml")
METRICS = ("oracle_accuracy", "clip_score", "bert_score", "diversity")
SPLITS = ("train", "test")
# per split: one accuracy near 30 % then has a standard error of 1 point (2 at 512 images,
# where the noise seed alone moves the toy base model by several points)
IMAGES_PER_SPLIT = 2048


class ExperimentError(ValueError):
    """Presets that cannot be compared, or a bad argument; str() is one line."""


@dataclass
class Arm:
    """One preset: its name, config file and the config its seeds share."""

    name: str
    path: Path
    cfg: Config


def budget(cfg: Config) -> dict:
    """What must match for a fair comparison (ALGORITHM.md: same sampler, same number of
    images, i.e. reward queries)."""
    s = cfg.sampling
    return {
        "model.pretrained": str(cfg.model.pretrained),
        "prompts.train": str(cfg.prompts.train),
        "prompts.test": str(cfg.prompts.test),
        "sampling.num_steps": s.num_steps,
        "sampling.eta": s.eta,
        "sampling.guidance_scale": s.guidance_scale,
        "reward queries (stages x trunks x branches)": cfg.stages * s.trunks_per_stage * s.branches,
    }


def check_budgets(arms: list[Arm], kind: str = "images") -> None:
    """Equal budgets; at equal compute (`kind` unet or seconds) the images may differ."""
    first = budget(arms[0].cfg)
    for arm in arms[1:]:
        other = budget(arm.cfg)
        for key, value in first.items():
            if kind != "images" and key.startswith("reward queries"):
                continue
            if other[key] != value:
                raise ExperimentError(
                    f"presets {arms[0].path} and {arm.path} differ in {key}: "
                    f"{value} vs {other[key]}; a comparison needs equal budgets"
                )


def load_arms(presets: list[Path], overrides: list[str], kind: str = "images") -> list[Arm]:
    arms, names = [], set()
    for path in presets:
        name = path.stem
        if name in names:
            raise ExperimentError(f"preset {path}: two presets named {name!r}")
        names.add(name)
        arms.append(Arm(name, path, load_config(path, overrides)))
    check_budgets(arms, kind)
    return arms


def _complete(run_dir: Path, cfg: Config) -> bool:
    """True if run_dir finished all of cfg's stages; an existing run made with another
    config (not a matter of length or logging) is an error, never a silent reuse."""
    from learner.run import config_diff

    saved = run_dir / "config.yaml"
    if saved.is_file():
        key = config_diff(cfg, load_config(saved))
        if key:
            raise ExperimentError(
                f"{run_dir}: made with another config (it differs at '{key}'); "
                "remove it or choose another --out"
            )
    path = run_dir / "summary.json"
    if not path.is_file():
        return False
    return json.loads(path.read_text()).get("stages_completed") == cfg.stages


@dataclass
class Planned:
    """One preset x seed: its config, run directory and whether it already finished."""

    arm: Arm
    seed: int
    cfg: Config
    run_dir: Path
    complete: bool


def plan(
    arms: list[Arm],
    seeds: list[int],
    out: Path,
    overrides: list[str],
    stages: dict[str, int] | None = None,
) -> list[Planned]:
    """Every run's config, checked against what is already in out/runs before anything
    trains (a run made with another config stops the experiment here); `stages`: the
    stage count of some presets (a compute budget's)."""
    runs = []
    for arm in arms:
        for seed in seeds:
            run_dir = out / "runs" / f"{arm.name}-s{seed}"
            where = [f"seed={seed}", f"output_dir={out / 'runs'}", f"run_name={run_dir.name}"]
            if stages and arm.name in stages:
                where.append(f"stages={stages[arm.name]}")
            cfg = load_config(arm.path, [*overrides, *where])
            runs.append(Planned(arm, seed, cfg, run_dir, _complete(run_dir, cfg)))
    return runs


def train(run: Planned, log) -> Path:
    """The run of one preset and seed: trained, resumed, or (complete) left as it is."""
    from learner.preflight import preflight
    from learner.run import execute, prepare

    if run.complete:
        log(f"{run.run_dir.name}: complete, kept")
        return run.run_dir
    resuming = run.run_dir.exists()
    if resuming:
        cfg, run_dir, _ = prepare(run.cfg, run.run_dir, [], False, check=preflight)
        log(f"{run_dir.name}: resuming")
    else:
        cfg, run_dir, _ = prepare(run.cfg, None, [], False, check=preflight)
        log(f"{run_dir.name}: training {cfg.stages} stages")
    execute(cfg, run_dir, resuming)
    return run_dir


def train_runs(arms: list[Arm], args, log) -> tuple[dict[str, list[tuple[int, Path]]], dict]:
    """Train (or keep, or resume) every preset x seed into args.out/runs at the budget of
    args.budget; ({preset: [(seed, run_dir)]}, the budget). Runs in the caller's Ray."""
    from learner.budget import match_budget

    kind, out = args.budget, args.out
    first = arms if kind == "images" else arms[:1]
    planned = plan(first, args.seeds, out, args.overrides)
    run_dirs: dict[str, list[tuple[int, Path]]] = {}
    info: dict = {"kind": "images", "unit": "images (reward queries)"}

    def run_all(planned: list[Planned]) -> None:
        for i, run in enumerate(planned):
            log(f"[{i + 1}/{len(planned)}] {run.arm.name} seed {run.seed}")
            run_dirs.setdefault(run.arm.name, []).append((run.seed, train(run, log)))

    run_all(planned)
    if kind != "images" and len(arms) > 1:
        reference = [d for _, d in run_dirs[arms[0].name]]
        stages, info = match_budget(arms, args.seeds, out, args, reference, log)
        run_all(plan(arms[1:], args.seeds, out, args.overrides, stages))
    return run_dirs, info


def evaluate_once(
    ref: str,
    config: Path | None,
    overrides: list[str],
    out_dir: Path,
    per_prompt: dict[str, int],
    seed: int,
    log,
) -> dict:
    """learner.evaluate of both splits, stored as out_dir/<label>_all.json (where
    `learner.compare` finds it); an existing result with the same settings (images per
    prompt, seed and the prompts of both splits) is reused."""
    from learner.eval_report import save_result
    from learner.evaluate import evaluate
    from learner.evaluator import resolve
    from learner.prompts import load_prompts

    target = resolve(ref, config, overrides)
    path = out_dir / f"{target.label.replace('@', '_')}_all.json"
    if path.is_file():
        old = json.loads(path.read_text())
        same_prompts = all(
            set(old.get("splits", {}).get(s, {}).get("per_prompt", {}))
            == set(load_prompts(getattr(target.cfg.prompts, s), f"prompts.{s}"))
            for s in SPLITS
        )
        if old.get("images_per_prompt") == per_prompt and old.get("seed") == seed and same_prompts:
            log(f"{target.label}: evaluation kept")
            return old
    counts = ", ".join(f"{s} {n}" for s, n in per_prompt.items())
    log(f"{target.label}: evaluating, images per prompt {counts}, seed {seed}")
    return save_result(target, evaluate(target, list(SPLITS), per_prompt, seed), path)


def _stats(values: list[float]) -> dict:
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return {"mean": mean, "std": std, "values": values}


def summarise(arms: list[Arm], runs: dict[str, list[tuple[int, dict]]], base: dict) -> dict:
    """Per preset and split: mean, spread (sample std over seeds) and change from base."""
    out = {"base": {}, "presets": {}}
    for split in SPLITS:
        b = base["splits"][split]
        out["base"][split] = {m: b[m] for m in METRICS if b[m] is not None}
        out["base"][split]["images"] = b["images"]
    for arm in arms:
        entry = {"config": str(arm.path), "algorithm": arm.cfg.algorithm, "seeds": [], "splits": {}}
        entry["seeds"] = [seed for seed, _ in runs[arm.name]]
        for split in SPLITS:
            row = {}
            for m in METRICS:
                values = [r["splits"][split][m] for _, r in runs[arm.name]]
                if any(v is None for v in values):
                    continue
                row[m] = _stats(values)
                row[m]["change"] = row[m]["mean"] - out["base"][split][m]
            row["images"] = runs[arm.name][0][1]["splits"][split]["images"]
            entry["splits"][split] = row
        out["presets"][arm.name] = entry
    return out


def _pct(metric: str) -> bool:
    return metric == "oracle_accuracy"


def _cell(metric: str, stats: dict) -> str:
    scale, unit, digits = (100, " %", 1) if _pct(metric) else (1, "", 3)
    mean, std, change = stats["mean"] * scale, stats["std"] * scale, stats["change"] * scale
    return f"{mean:.{digits}f} ± {std:.{digits}f}{unit} ({change:+.{digits}f})"


def _plain(metric: str, value: float) -> str:
    return f"{value * 100:.1f} %" if _pct(metric) else f"{value:.3f}"


def _training_times(summary: dict) -> list[str]:
    parts = [
        f"{name} {', '.join(f'{t:.0f}' for t in entry['train_seconds'])} s"
        for name, entry in summary["presets"].items()
        if entry.get("train_seconds") and None not in entry["train_seconds"]
    ]
    if not parts:
        return []
    return ["Training time per run (each run's summary.json): " + "; ".join(parts) + ".", ""]


def run_seconds(run_dir: Path) -> float | None:
    path = run_dir / "summary.json"
    return json.loads(path.read_text()).get("seconds") if path.is_file() else None


def summary_markdown(summary: dict, command: str, images_dir: str, seconds: float) -> str:
    from learner.budget import spend_lines

    metrics = [m for m in METRICS if m in summary["base"]["train"]]
    lines = [
        "### Presets compared over seeds (`learner.experiment`)",
        "",
        f"Command: `{command}` (this invocation: {seconds / 60:.1f} min; runs and evaluations"
        " kept from an earlier invocation are not counted in it).",
        "",
        *_training_times(summary),
        *spend_lines(summary),
        "| preset | seeds | split | " + " | ".join(metrics) + " |",
        "|" + "---|" * (3 + len(metrics)),
    ]
    base = summary["base"]
    for split in SPLITS:
        cells = " | ".join(_plain(m, base[split][m]) for m in metrics)
        lines.append(f"| base | - | {split} | {cells} |")
    for name, entry in summary["presets"].items():
        seeds = ", ".join(str(s) for s in entry["seeds"])
        for split in SPLITS:
            row = entry["splits"][split]
            cells = " | ".join(_cell(m, row[m]) if m in row else "-" for m in metrics)
            lines.append(f"| {name} ({entry['algorithm']}) | {seeds} | {split} | {cells} |")
    sizes = {split: base[split]["images"] for split in SPLITS}
    n = sizes["train"]
    per_split = (
        f"{n} images per split"
        if len(set(sizes.values())) == 1
        else ", ".join(f"{v} {k} images" for k, v in sizes.items())
    )
    acc = base["train"].get("oracle_accuracy")
    se = (
        f" (binomial standard error of one accuracy near {acc * 100:.0f} % on {n} images: "
        f"{100 * math.sqrt(acc * (1 - acc) / n):.1f} points)"
        if acc is not None
        else ""
    )
    lines += [
        "",
        f"Mean ± sample standard deviation over seeds (change from base in brackets); "
        f"{per_split}, the same noise for every checkpoint{se}. "
        f"diversity: {summary['diversity_embedding']}.",
        "",
        f"![reward per stage]({images_dir}/reward.png)",
        "",
        f"![held-out alignment and diversity]({images_dir}/eval.png)",
        "",
        f"![the same test prompts and noise, one column per run]({images_dir}/side_by_side.png)",
    ]
    return "\n".join(lines) + "\n"


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def replace_block(path: Path, block: str) -> None:
    """FILE with the generated block between BEGIN and END replaced (or appended)."""
    text = path.read_text(encoding="utf-8") if path.is_file() else ""
    wrapped = f"{BEGIN}\n{block}{END}\n"
    if BEGIN in text and END in text and text.index(BEGIN) < text.index(END):
        before, rest = text.split(BEGIN, 1)
        after = rest.split(END, 1)[1].lstrip("\n")
        text = before + wrapped + ("\n" + after if after else "")
    else:
        text = (text.rstrip("\n") + "\n\n" if text else "") + wrapped
    write_atomic(path, text)


def run_experiment(args: argparse.Namespace, log=print) -> dict:
    from learner import compare
    from learner.budget import counted
    from learner.evaluate import images_per_prompt
    from learner.prompts import load_prompts
    from learner.run import connect

    t0 = time.perf_counter()
    arms = load_arms(args.presets, args.overrides, args.budget)
    per_prompt = images_per_prompt(
        arms[0].cfg, list(SPLITS), args.images_per_prompt, args.images_per_split
    )
    out: Path = args.out
    plan(arms, args.seeds, out, args.overrides)  # a run made with another config stops here
    out.mkdir(parents=True, exist_ok=True)
    import ray

    started = connect(arms[0].cfg)  # one Ray for all runs
    try:
        run_dirs, budget_info = train_runs(arms, args, log)
    finally:
        if started:
            ray.shutdown()
    base = evaluate_once(
        "base", arms[0].path, args.overrides, out / "base", per_prompt, args.eval_seed, log
    )
    results: dict[str, list[tuple[int, dict]]] = {}
    for arm in arms:
        for seed, run_dir in run_dirs[arm.name]:
            # on the experiment's held-out prompts, which may be newer than the run's
            test = [f"prompts.test={arm.cfg.prompts.test}"]
            r = evaluate_once(
                str(run_dir), None, test, run_dir / "eval", per_prompt, args.eval_seed, log
            )
            results.setdefault(arm.name, []).append((seed, r))
    runs = [compare.load_run(d) for arm in arms for _, d in run_dirs[arm.name]]
    for r in runs:  # every curve starts at the base model
        r.evals = [base, *(e for e in r.evals if e.get("seed") == args.eval_seed)]
    compare.plot_reward(runs, out)
    compare.plot_eval(runs, out)
    held_out = load_prompts(arms[0].cfg.prompts.test, "prompts.test")
    compare.side_by_side(runs, out, seed=args.eval_seed, prompts=held_out)
    compare.write_table(runs, out)
    summary = summarise(arms, results, base)
    for arm in arms:
        entry = summary["presets"][arm.name]
        entry["train_seconds"] = [run_seconds(d) for _, d in run_dirs[arm.name]]
        dirs = [d for _, d in run_dirs[arm.name] if (d / "metrics.jsonl").is_file()]
        entry["spent"] = [counted(d) for d in dirs]
    summary["budget"] = budget_info
    summary["diversity_embedding"] = base["diversity_embedding"]
    summary["images_per_prompt"] = per_prompt
    summary["eval_seed"] = args.eval_seed
    summary["command"] = args.command
    seconds = time.perf_counter() - t0
    summary["seconds"] = seconds
    write_atomic(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    results_file: Path | None = args.results
    rel = os.path.relpath(out, results_file.parent if results_file else out)
    markdown = summary_markdown(summary, args.command, rel if results_file else ".", seconds)
    write_atomic(out / "summary.md", markdown)
    if results_file is not None:
        replace_block(results_file, markdown)
        log(f"wrote the summary into {results_file}")
    log(markdown)
    log(f"wrote {out}/summary.md, summary.json, comparison.md and the plots")
    return summary


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    from learner.budget import BUDGETS
    from learner.evaluate import add_size_flags

    p = argparse.ArgumentParser(
        prog="python -m learner.experiment", description=__doc__.split("\n")[0]
    )
    p.add_argument("--presets", type=Path, nargs="+", default=[DEFAULT_PRESET, DDPO_PRESET])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--set", dest="overrides", action="extend", nargs="+", default=[])
    add_size_flags(p, IMAGES_PER_SPLIT)
    p.add_argument("--eval-seed", type=int, default=1234)
    p.add_argument("--out", type=Path, default=Path("experiment"))
    p.add_argument("--results", type=Path, help="also write the summary into this markdown file")
    p.add_argument(
        "--budget",
        choices=BUDGETS,
        default="images",
        help="compare at equal images (the presets' stages as configured), equal UNet "
        "evaluations or equal training seconds (the first preset's spend sets the others' "
        "stage counts)",
    )
    args = p.parse_args(argv)
    args.command = "python -m learner.experiment " + " ".join(
        shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])
    )
    return args


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    args = parse_args(argv)
    from learner.evaluate import size_error
    from learner.main import user_errors

    if err := size_error(args):
        print(f"error: {err}", file=sys.stderr)
        return 2
    if len(set(args.seeds)) != len(args.seeds):
        print(f"error: --seeds {args.seeds}: a seed appears twice", file=sys.stderr)
        return 2
    try:
        run_experiment(args)
    except (ExperimentError, *user_errors()) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"interrupted; run the same command again to continue ({args.out})", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
