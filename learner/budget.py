"""Equal compute for `learner.experiment --budget unet | seconds`: what one stage of a preset
costs, what a finished run spent, and the stage count that spends a budget.

UNet work is counted as the runs count it (metrics.jsonl): sampling's `unet_evaluations`
(latents through the UNet, x2 with classifier-free guidance) plus the update's
`update_unet_evaluations` (each trained latent's forward and backward, and with a KL
penalty one pretrained-model forward). Before a run trains, a stage's work is predicted:
sampling exactly (`diffusion.sampler.expected_evaluations`), the update as if every row of
the stage were trained. That is exact for `selection.mode: all` (DDPO) and the most an
`extremes` selection can train, so such a preset, sized by prediction, gets at most the
budget; the experiment prints what every run counted.

The experiment's side (`learner.experiment --budget`): `match_budget` sizes the presets after
the first one trained, `probe_rate` measures a preset's seconds per UNet evaluation, and
`spend_lines` states both in the summary.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from configs.load import resolve_path
from configs.schema import Config

BUDGETS = ("images", "unet", "seconds")


def predicted_unet(cfg: Config, trained_share: float = 1.0) -> list[float]:
    """UNet evaluations of each of cfg's stages: sampling exact, the update for
    `trained_share` of the stage's rows (1: every row, B²'s most)."""
    from diffusion.families import denoiser_passes
    from diffusion.sampler import expected_evaluations
    from learner.stage import sampler_settings

    s = cfg.sampling
    guided = denoiser_passes(resolve_path(cfg.model.pretrained), s.guidance_scale)
    rows = s.trunks_per_stage * s.branches
    per_row = cfg.train.epochs * 2 + (1 if cfg.loss.kl_coef > 0 else 0)  # fwd + bwd a epoch
    out = []
    for stage in range(cfg.stages):
        settings = sampler_settings(cfg, stage)
        sampling = expected_evaluations(settings, s.trunks_per_stage, guided)
        out.append(sampling + trained_share * rows * settings.split_step * guided * per_row)
    return out


def counted(run_dir: Path) -> dict[str, float]:
    """What a finished run spent, from its metrics.jsonl: stages, images, UNet evaluations
    (sampling + update) and training seconds (the stages' own, no start-up)."""
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing; the run has no recorded stages")
    stages = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return {
        "stages": len(stages),
        "images": sum(m["images"] for m in stages),
        "unet": sum(m["unet_evaluations"] + m.get("update_unet_evaluations", 0) for m in stages),
        "update": sum(m.get("update_unet_evaluations", 0) for m in stages),
        "seconds": sum(m["seconds_stage"] for m in stages),
    }


def stages_for(cfg: Config, budget: float, cost: Callable[[Config], list[float]]) -> int:
    """The stage count whose predicted total `cost` (per stage, for a run of that many
    stages: a schedule spreads over the run) is nearest `budget`, so the predicted spend is
    within half a stage of it. At least one stage."""
    best, best_gap, n = 1, float("inf"), 1
    while n <= 100_000:
        total = sum(cost(cfg.model_copy(update={"stages": n})))
        if abs(total - budget) < best_gap:
            best, best_gap = n, abs(total - budget)
        if total >= budget:
            break
        n += 1
    return best


UNITS = {"unet": "UNet evaluations", "seconds": "training seconds"}


def probe_rate(arm, seed: int, out: Path, overrides: list[str], log) -> float:
    """Seconds per counted UNet evaluation of `arm` on this machine: its first stage,
    trained once in out/probes and kept (a rerun of the experiment measures nothing again)."""
    import shutil

    from configs.load import load_config
    from learner.preflight import preflight
    from learner.run import execute, prepare

    run_dir = out / "probes" / f"{arm.name}-s{seed}"
    if not (run_dir / "metrics.jsonl").is_file():
        shutil.rmtree(run_dir, ignore_errors=True)  # a probe that died before its stage
        where = [f"seed={seed}", f"output_dir={out / 'probes'}", f"run_name={run_dir.name}"]
        cfg = load_config(arm.path, [*overrides, *where, "logging.mlflow=false"])
        cfg, run_dir, _ = prepare(cfg, None, [], False, check=preflight)
        log(f"{run_dir.name}: one stage to measure its seconds per UNet evaluation")
        execute(cfg, run_dir, False, stop_after=0)
    spent = counted(run_dir)
    return spent["seconds"] / spent["unet"]


def trained_share(cfg: Config, runs: list[Path]) -> float:
    """The share of its rows the update of `runs` (made with cfg) trained: their counted
    update evaluations over the update's prediction for every row."""
    full = sum(predicted_unet(cfg)) - sum(predicted_unet(cfg, 0.0))
    done = sum(counted(d)["update"] for d in runs) / len(runs)
    return done / full if full else 1.0


def match_budget(
    arms: list, seeds: list[int], out: Path, args, reference: list[Path], log
) -> tuple[dict[str, int], dict]:
    """Stage counts for arms[1:] that spend what the first preset's runs (`reference`, one
    a seed) spent, by args.budget; and the budget's description for the summary."""
    kind, ref = args.budget, arms[0]
    target = sum(counted(d)[kind] for d in reference) / len(reference)
    unit = UNITS[kind]
    log(
        f"budget: {target:,.0f} {unit} a run, what {ref.name} spent in {ref.cfg.stages} stages "
        f"(mean over seeds {', '.join(map(str, seeds))}); each other preset gets the stage "
        "count whose predicted spend is nearest it"
    )
    stages = {ref.name: ref.cfg.stages}
    share = trained_share(ref.cfg, reference)
    log(f"budget: {ref.name}'s update trained {share:.0%} of its rows' predicted evaluations")
    for arm in arms[1:]:
        # B² trains only its selected rows: a preset that selects as the reference does is
        # predicted with the reference's measured share, any other with every row
        same = (arm.cfg.algorithm, arm.cfg.selection) == (ref.cfg.algorithm, ref.cfg.selection)
        rate = 1.0 if kind == "unet" else probe_rate(arm, seeds[0], out, args.overrides, log)

        def cost(cfg, rate=rate, s=share if same else 1.0):
            return [rate * w for w in predicted_unet(cfg, s)]

        n = stages_for(arm.cfg, target, cost)
        stages[arm.name] = n
        spend = sum(cost(arm.cfg.model_copy(update={"stages": n})))
        log(f"budget: {arm.name} gets {n} stages (predicted {spend:,.0f} {unit})")
    info = {
        "kind": kind,
        "unit": unit,
        "reference": ref.name,
        "target": target,
        "trained_share": share,
        "stages": stages,
    }
    return stages, info


def spend_lines(summary: dict) -> list[str]:
    """How the budget was matched and what each run counted (metrics.jsonl)."""
    info = summary.get("budget")
    if not info:
        return []
    if info["kind"] == "images":
        how = "Budget: equal images (reward queries), every preset's stages as configured."
    else:
        stages = ", ".join(f"{k} {v}" for k, v in info["stages"].items())
        how = (
            f"Budget: equal {info['unit']}, {info['target']:,.0f} a run, what "
            f"{info['reference']} spent (mean over seeds); stages per preset: {stages}."
        )
    parts = [
        f"{name} "
        + ", ".join(
            f"{s['stages']} stages / {s['images']:,.0f} images / {s['unet']:,.0f} UNet "
            f"evaluations / {s['seconds']:.0f} s"
            for s in entry["spent"]
        )
        for name, entry in summary["presets"].items()
        if entry.get("spent")
    ]
    return [
        how,
        "",
        "Spent per run (metrics.jsonl; UNet evaluations of sampling and update, "
        "forward and backward): " + "; ".join(parts) + ".",
        "",
    ]
