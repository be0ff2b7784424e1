"""The runs of `learner.experiment`: the presets it compares, the budgets they must share,
and the run directory and config of every preset x seed, checked before anything trains."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from configs.load import load_config
from configs.schema import Config
from learner import experiment_records as records

SPLITS = ("train", "test")


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
            records.restore(run_dir, out)  # a deleted run directory, from its record
            runs.append(Planned(arm, seed, cfg, run_dir, _complete(run_dir, cfg)))
    return runs
