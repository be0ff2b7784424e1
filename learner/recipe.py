"""`python -m learner.recipe RECIPE [--out DIR] [--check-only]`: an adopted experiment that
checks its own numbers.

A recipe (`configs/recipes/*.yaml`) names the `learner.experiment` it runs (presets, seeds,
overrides, evaluation size, budget) and the numbers its result must reach. The command runs the
experiment into DIR (default: experiments/<recipe name>; an interrupted one continues),
then checks DIR/summary.json and prints one line a check. `--check-only` checks an
experiment already in DIR without training. Exit 0 when every check holds, 1 when one
does not, 2 for bad input.

A check reads one number of the summary: a preset's `mean` over seeds or its `change`
from the base model, of a metric (`oracle_accuracy`, `clip_score`, `bert_score`,
`diversity`, as fractions: 0.04 is 4 points of accuracy) on a split (`train`, `test`),
and bounds it with `at_least` and / or `at_most`.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from configs.load import ConfigError, read_yaml, resolve_path

Metric = Literal["oracle_accuracy", "clip_score", "bert_score", "diversity"]


class RecipeError(ValueError):
    """A recipe that cannot be read or checked; str() is one line."""


class Check(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    preset: str = Field(description="The preset's name: its file name without .yaml.")
    split: Literal["train", "test"]
    metric: Metric
    of: Literal["mean", "change"] = "change"
    at_least: float | None = None
    at_most: float | None = None

    @model_validator(mode="after")
    def _bounded(self) -> Check:
        if self.at_least is None and self.at_most is None:
            raise ValueError("a check needs at_least or at_most")
        return self

    def describe(self) -> str:
        bounds = []
        if self.at_least is not None:
            bounds.append(f">= {self.at_least:g}")
        if self.at_most is not None:
            bounds.append(f"<= {self.at_most:g}")
        return f"{self.preset} {self.split} {self.metric} {self.of} {' and '.join(bounds)}"


class Recipe(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    description: str
    presets: list[str] = Field(min_length=1)
    seeds: list[int] = Field(min_length=1)
    overrides: list[str] = Field(default_factory=list, description="--set for every preset.")
    images_per_split: int | None = Field(None, ge=1)
    budget: Literal["images", "unet", "seconds"] = Field(
        "images", description="learner.experiment's --budget: what the presets spend equally."
    )
    checks: list[Check] = Field(min_length=1)

    @model_validator(mode="after")
    def _checks_name_presets(self) -> Recipe:
        names = {Path(p).stem for p in self.presets}
        for i, check in enumerate(self.checks):
            if check.preset not in names:
                raise ValueError(
                    f"checks.{i}.preset = {check.preset!r} is not one of the presets "
                    f"({', '.join(sorted(names))})"
                )
        return self


def load_recipe(path: Path) -> Recipe:
    try:
        data = read_yaml(path)
    except ConfigError as exc:
        raise RecipeError(str(exc)) from None
    try:
        recipe = Recipe.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "recipe"
        raise RecipeError(f"{path}: {where}: {err['msg']}") from None
    for preset in recipe.presets:
        if not resolve_path(preset).is_file():
            raise RecipeError(f"{path}: presets: {preset} not found")
    return recipe


@dataclass
class Outcome:
    check: Check
    value: float | None  # None: the summary has no such number
    holds: bool


def check_summary(recipe: Recipe, summary: dict) -> list[Outcome]:
    out = []
    for check in recipe.checks:
        entry = summary.get("presets", {}).get(check.preset, {})
        stats = entry.get("splits", {}).get(check.split, {}).get(check.metric)
        value = None if stats is None else float(stats[check.of])
        holds = value is not None and (
            (check.at_least is None or value >= check.at_least)
            and (check.at_most is None or value <= check.at_most)
        )
        out.append(Outcome(check, value, holds))
    return out


def experiment_args(recipe: Recipe, out: Path) -> list[str]:
    argv = ["--presets", *recipe.presets, "--seeds", *map(str, recipe.seeds), "--out", str(out)]
    if recipe.overrides:
        argv += ["--set", *recipe.overrides]
    if recipe.images_per_split is not None:
        argv += ["--images-per-split", str(recipe.images_per_split)]
    if recipe.budget != "images":
        argv += ["--budget", recipe.budget]
    return argv


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m learner.recipe", description=__doc__.split("\n")[0])
    p.add_argument("recipe", type=Path)
    p.add_argument("--out", type=Path, help="default: experiments/<recipe name>")
    p.add_argument("--check-only", action="store_true", help="check DIR/summary.json only")
    args = p.parse_args(argv)
    try:
        recipe = load_recipe(args.recipe)
    except RecipeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out: Path = args.out or Path("experiments") / args.recipe.stem
    print(f"recipe {args.recipe}: {recipe.description}", flush=True)
    if not args.check_only:
        from learner import experiment

        code = experiment.main(experiment_args(recipe, out))
        if code != 0:
            return code
    try:
        summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        print(f"error: {out / 'summary.json'}: cannot read it ({exc})", file=sys.stderr)
        return 2
    outcomes = check_summary(recipe, summary)
    for o in outcomes:
        got = "missing" if o.value is None else f"{o.value:+.4f}"
        print(f"{'ok  ' if o.holds else 'FAIL'}  {o.check.describe()}: {got}", flush=True)
    failed = sum(not o.holds for o in outcomes)
    print(f"{len(outcomes) - failed} of {len(outcomes)} checks hold ({out / 'summary.json'})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
