"""Recipes: adopted experiments with the numbers they must reach."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from learner import recipe

RECIPES = sorted(Path("configs/recipes").glob("*.yaml"))


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_shipped_recipes_load_and_their_presets_compare(path):
    from learner.experiment_plan import load_arms

    r = recipe.load_recipe(path)
    load_arms([Path(p) for p in r.presets], r.overrides, r.budget)  # comparable, valid overrides
    argv = recipe.experiment_args(r, Path("out"))
    assert argv[:2] == ["--presets", r.presets[0]] and "--out" in argv
    assert ("--budget" in argv) == (r.budget != "images")


def _summary(train_change: float, diversity: float) -> dict:
    def stats(mean, change):
        return {"mean": mean, "std": 0.01, "values": [mean], "change": change}

    return {
        "presets": {
            "toy_b2": {
                "splits": {
                    "train": {
                        "oracle_accuracy": stats(0.3 + train_change, train_change),
                        "diversity": stats(diversity, 0.0),
                    },
                    "test": {"oracle_accuracy": stats(0.08, 0.01)},
                }
            }
        }
    }


def test_checks_read_the_summary_and_report_what_fails(tmp_path, capsys):
    path = tmp_path / "r.yaml"
    path.write_text(
        "description: d\npresets: [configs/toy_b2.yaml]\nseeds: [0]\nchecks:\n"
        "  - {preset: toy_b2, split: train, metric: oracle_accuracy, at_least: 0.02}\n"
        "  - {preset: toy_b2, split: train, metric: diversity, of: mean, at_least: 0.3,"
        " at_most: 0.5}\n"
        "  - {preset: toy_b2, split: test, metric: clip_score, at_least: 0.0}\n"
    )
    out = tmp_path / "exp"
    out.mkdir()
    (out / "summary.json").write_text(json.dumps(_summary(0.03, 0.37)))
    assert recipe.main([str(path), "--out", str(out), "--check-only"]) == 1  # clip missing
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].startswith("ok") and "+0.0300" in lines[1]
    assert lines[2].startswith("ok") and lines[3].startswith("FAIL") and "missing" in lines[3]
    assert lines[-1].startswith("2 of 3 checks hold")

    r = recipe.load_recipe(path)
    got = recipe.check_summary(r, _summary(0.01, 0.6))
    assert [o.holds for o in got] == [False, False, False]
    assert got[0].value == pytest.approx(0.01) and got[1].value == pytest.approx(0.6)


@pytest.mark.parametrize(
    "body, needle",
    [
        ("presets: [configs/toy_b2.yaml]\nseeds: [0]\nchecks: []\n", "description"),
        (
            "description: d\npresets: [configs/toy_b2.yaml]\nseeds: [0]\nchecks:\n"
            "  - {preset: toy_ddpo, split: train, metric: oracle_accuracy, at_least: 0}\n",
            "checks.0.preset = 'toy_ddpo' is not one of the presets (toy_b2)",
        ),
        (
            "description: d\npresets: [configs/none.yaml]\nseeds: [0]\nchecks:\n"
            "  - {preset: none, split: train, metric: oracle_accuracy, at_least: 0}\n",
            "presets: configs/none.yaml not found",
        ),
        (
            "description: d\npresets: [configs/toy_b2.yaml]\nseeds: [0]\nchecks:\n"
            "  - {preset: toy_b2, split: train, metric: oracle_accuracy}\n",
            "a check needs at_least or at_most",
        ),
    ],
)
def test_a_bad_recipe_is_one_line(tmp_path, capsys, body, needle):
    path = tmp_path / "bad.yaml"
    path.write_text(body)
    assert recipe.main([str(path), "--check-only"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and needle in err and "\n" not in err
