"""`python -m learner.experiment`: train, evaluate and compare presets over seeds, end to end.

    python -m learner.experiment [--presets FILE ...] [--seeds N ...] [--set KEY=VALUE ...]
        [--images-per-split N | --images-per-prompt N] [--eval-seed N] [--out DIR]
        [--results FILE] [--budget images|unet|seconds]

For every preset and seed it trains a run (the path `learner.main` takes: a local Ray on
127.0.0.1, or the cluster in RAY_ADDRESS) into DIR/runs/<preset>-s<seed>, skipping runs
that are complete and resuming those that are not, so an interrupted experiment continues
where it stopped (the held-out prompts are not part of a run: `--set prompts.test=FILE`
evaluates finished runs on other held-out prompts without training them again). Every
evaluated run also leaves its record, DIR/records/<preset>-s<seed> (config, summary,
per-stage metrics, evaluations; no checkpoints): a run directory deleted since is restored
from it, so the experiment grows by seeds or presets over several calls, on several
machines, keeping only the records (`learner.experiment_records`). It then
evaluates every final checkpoint and the untrained base model on the train and test prompts
with the same noise (`learner.evaluate`, about 2,048 images in each split by default, so
the small train split is measured as finely as the larger held-out one; the numbers also go
to each run's MLflow run), and writes
- DIR/comparison.md, reward.png, eval.png, side_by_side.png (`learner.compare`);
- DIR/summary.md and summary.json: per preset the mean and spread over seeds of every
  evaluation metric, and its change from the base model.
With `--results FILE` the summary also replaces the block between the markers in FILE
(`learner.experiment_report.BEGIN` and `END`; appended if FILE has none), so a hand-written
results page keeps its text around it.

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
import os
import shlex
import sys
import time
from pathlib import Path

from configs.load import DEFAULT_PRESET
from learner import experiment_records as records
from learner.experiment_plan import SPLITS, ExperimentError, load_arms, plan
from learner.experiment_report import (
    replace_block,
    run_seconds,
    summarise,
    summary_markdown,
    write_atomic,
)
from learner.experiment_runs import evaluate_once, train_runs

DDPO_PRESET = Path(DEFAULT_PRESET).with_name("toy_ddpo.yaml")
# per split: one accuracy near 30 % then has a standard error of 1 point (2 at 512 images,
# where the noise seed alone moves the toy base model by several points)
IMAGES_PER_SPLIT = 2048


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
    # a run made with another config stops here
    planned = plan(arms, args.seeds, out, args.overrides)
    out.mkdir(parents=True, exist_ok=True)
    import ray

    # one Ray for all runs; none where nothing trains (every run at equal images complete)
    done = args.budget == "images" and all(run.complete for run in planned)
    started = False if done else connect(arms[0].cfg)
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
            records.keep(run_dir, out)
            results.setdefault(arm.name, []).append((seed, r))
    runs = [compare.load_run(d) for arm in arms for _, d in run_dirs[arm.name]]
    for r in runs:  # every curve starts at the base model
        r.evals = [base, *(e for e in r.evals if e.get("seed") == args.eval_seed)]
    compare.plot_reward(runs, out)
    compare.plot_eval(runs, out)
    held_out = load_prompts(arms[0].cfg.prompts.test, "prompts.test")
    drawn = [r for r in runs if records.has_checkpoint(r.run_dir)]
    if len(drawn) < len(runs):
        left = ", ".join(r.label for r in runs if not records.has_checkpoint(r.run_dir))
        log(f"side_by_side.png leaves out the runs without checkpoints: {left}")
    if drawn:
        compare.side_by_side(drawn, out, seed=args.eval_seed, prompts=held_out)
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
