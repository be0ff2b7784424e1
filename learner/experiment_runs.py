"""Training and evaluation for `learner.experiment`: every planned run trained, resumed or
kept, at equal images or equal compute, and each checkpoint evaluated once on both splits."""

from __future__ import annotations

import json
from pathlib import Path

from configs.load import load_config
from configs.schema import Config
from learner.experiment_plan import SPLITS, Arm, ExperimentError, Planned, plan


def train(run: Planned, log) -> Path:
    """The run of one preset and seed: trained, resumed, or (complete) left as it is."""
    from learner.experiment_records import has_checkpoint
    from learner.preflight import preflight
    from learner.run import execute, prepare

    if run.complete:
        how = "" if has_checkpoint(run.run_dir) else " (from its record, no checkpoints)"
        log(f"{run.run_dir.name}: complete, kept{how}")
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
    prompt, seed and the prompts of both splits) is reused, checkpoint or not."""
    from learner.eval_report import save_result
    from learner.evaluate import evaluate
    from learner.evaluator import resolve
    from learner.experiment_records import has_checkpoint

    cfg, label = _describe(ref, config, overrides)
    path = out_dir / f"{label.replace('@', '_')}_all.json"
    old = _recorded(path, cfg, per_prompt, seed)
    if old is not None:
        log(f"{label}: evaluation kept")
        return old
    if ref != "base" and not has_checkpoint(Path(ref)):
        raise ExperimentError(
            f"{ref}: no checkpoint (restored from its record) and no recorded evaluation "
            f"with these settings (images per prompt {per_prompt}, eval seed {seed}, these "
            "prompts); evaluate it as recorded, or remove it to train it again"
        )
    counts = ", ".join(f"{s} {n}" for s, n in per_prompt.items())
    log(f"{label}: evaluating, images per prompt {counts}, seed {seed}")
    target = resolve(ref, config, overrides)
    return save_result(target, evaluate(target, list(SPLITS), per_prompt, seed), path)


def _describe(ref: str, config: Path | None, overrides: list[str]) -> tuple[Config, str]:
    """The config and label `learner.evaluator.resolve` gives `ref`, without loading its
    weights: a run's last stage from its checkpoints, or from its summary without them."""
    from learner.checkpoint import STAGE_PREFIX, latest

    if ref == "base":
        return load_config(config, overrides), "base"
    run_dir = Path(ref)
    stage = latest(run_dir)
    if stage is None:
        done = json.loads((run_dir / "summary.json").read_text())["stages_completed"]
        name = f"{STAGE_PREFIX}{done - 1:04d}"
    else:
        name = stage.name
    return load_config(config or run_dir / "config.yaml", overrides), f"{run_dir.name}@{name}"


def _recorded(path: Path, cfg: Config, per_prompt: dict[str, int], seed: int) -> dict | None:
    from learner.prompts import load_prompts

    if not path.is_file():
        return None
    old = json.loads(path.read_text())
    same_prompts = all(
        set(old.get("splits", {}).get(s, {}).get("per_prompt", {}))
        == set(load_prompts(getattr(cfg.prompts, s), f"prompts.{s}"))
        for s in SPLITS
    )
    if old.get("images_per_prompt") == per_prompt and old.get("seed") == seed and same_prompts:
        return old
    return None
