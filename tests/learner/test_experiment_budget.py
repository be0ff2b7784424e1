"""learner.experiment --budget unet: presets of different UNet cost per image get stage
counts that equalise the UNet work their runs count (tiny pipeline, local Ray)."""

from __future__ import annotations

import json

import pytest

from configs.load import DEFAULT_PRESET, load_config
from learner.budget import counted, predicted_unet, stages_for, trained_share
from learner.experiment import DDPO_PRESET, parse_args
from learner.experiment_plan import load_arms
from learner.experiment_runs import train_runs

TINY = [
    "sampling.num_steps=4",
    "sampling.micro_batch=16",
    "schedule.end=4",
    "train.epochs=1",
    "train.lora.rank=2",
    "runtime.rollout_actors=1",
    "logging.mlflow=false",
    "logging.grid_every=0",
    "prompts.train=toyworld/prompts/binding_train.txt",
    "prompts.test=toyworld/prompts/binding_test.txt",
]


@pytest.fixture()
def presets(tmp_path):
    """The shipped presets with few trunks: B² (the reference) 4 stages of 2 trunks x 4
    branches, DDPO 8 trunks of the whole trajectory (about 3x B²'s UNet work an image)."""
    b2 = tmp_path / "toy_b2.yaml"
    text = DEFAULT_PRESET.read_text().replace("trunks_per_stage: 32", "trunks_per_stage: 2")
    b2.write_text(text.replace("stages: 96", "stages: 4"))
    ddpo = tmp_path / "toy_ddpo.yaml"
    text = DDPO_PRESET.read_text().replace("trunks_per_stage: 128", "trunks_per_stage: 8")
    ddpo.write_text(text.replace("start: 10", "start: 4").replace("end: 10", "end: 4"))
    return b2, ddpo


def test_stages_for_is_nearest_the_budget():
    cfg = load_config(DEFAULT_PRESET, ["stages=12"])
    per_run = sum(predicted_unet(cfg))
    assert stages_for(cfg, per_run, predicted_unet) == cfg.stages
    assert stages_for(cfg, 1.0, predicted_unet) == 1


def _train(tiny_pipeline_dir, tmp_path, presets, budget: str):
    from learner.run import connect

    out = tmp_path / "exp"
    argv = ["--presets", *map(str, presets), "--seeds", "7", "--budget", budget]
    argv += ["--out", str(out), "--set", f"model.pretrained={tiny_pipeline_dir}", *TINY]
    args = parse_args(argv)
    arms = load_arms(args.presets, args.overrides, args.budget)
    lines: list[str] = []
    import ray

    started = connect(arms[0].cfg)
    try:
        run_dirs, info = train_runs(arms, args, lines.append)
    finally:
        if started:
            ray.shutdown()
    return run_dirs["toy_b2"][0][1], run_dirs["toy_ddpo"][0][1], info, lines


def test_budget_unet_equalises_counted_unet_work(tiny_pipeline_dir, tmp_path, presets):
    b2_dir, ddpo_dir, info, lines = _train(tiny_pipeline_dir, tmp_path, presets, "unet")
    b2, ddpo = counted(b2_dir), counted(ddpo_dir)
    assert info["kind"] == "unet" and info["target"] == b2["unet"]
    assert b2["stages"] == 4 and ddpo["stages"] == info["stages"]["toy_ddpo"]
    assert ddpo["stages"] < b2["stages"] and ddpo["images"] != b2["images"]
    stages = [json.loads(x) for x in (ddpo_dir / "metrics.jsonl").read_text().splitlines()]
    one_stage = max(m["unet_evaluations"] + m["update_unet_evaluations"] for m in stages)
    assert abs(ddpo["unet"] - b2["unet"]) <= one_stage
    # DDPO trains every row: its prediction is what the run counted
    assert sum(predicted_unet(load_config(ddpo_dir / "config.yaml"))) == ddpo["unet"]
    assert any(line.startswith("budget: ") and "UNet evaluations a run" in line for line in lines)
    # B² trains its selected rows only: the share its prediction for a preset that selects
    # as it does is scaled by is what the run counted over its every-row prediction
    b2_cfg = load_config(b2_dir / "config.yaml")
    full = sum(predicted_unet(b2_cfg)) - sum(predicted_unet(b2_cfg, 0.0))
    assert 0 < info["trained_share"] == trained_share(b2_cfg, [b2_dir]) == b2["update"] / full <= 1
    assert sum(predicted_unet(b2_cfg, info["trained_share"])) == pytest.approx(b2["unet"])


@pytest.mark.slow  # about 50 s: seven tiny stages through a local Ray
def test_budget_seconds_sizes_by_a_measured_probe(tiny_pipeline_dir, tmp_path, presets):
    b2_dir, ddpo_dir, info, lines = _train(tiny_pipeline_dir, tmp_path, presets, "seconds")
    b2, ddpo = counted(b2_dir), counted(ddpo_dir)
    assert info["kind"] == "seconds" and info["target"] == b2["seconds"] > 0
    probe = counted(tmp_path / "exp" / "probes" / "toy_ddpo-s7")
    assert probe["stages"] == 1
    rate = probe["seconds"] / probe["unet"]
    cfg = load_config(ddpo_dir / "config.yaml")
    expected = stages_for(cfg, b2["seconds"], lambda c: [rate * w for w in predicted_unet(c)])
    assert ddpo["stages"] == info["stages"]["toy_ddpo"] == expected
    assert any("training seconds a run" in line for line in lines)


def test_the_summary_states_how_the_budget_was_matched():
    from learner.budget import spend_lines as _spend

    spent = {"stages": 2, "images": 16.0, "unet": 512.0, "seconds": 6.6}
    summary = {
        "budget": {
            "kind": "unet",
            "unit": "UNet evaluations",
            "reference": "toy_b2",
            "target": 568.0,
            "stages": {"toy_b2": 4, "toy_ddpo": 2},
        },
        "presets": {"toy_ddpo": {"spent": [spent]}},
    }
    text = "\n".join(_spend(summary))
    assert "Budget: equal UNet evaluations, 568 a run, what toy_b2 spent" in text
    assert "stages per preset: toy_b2 4, toy_ddpo 2" in text
    assert "toy_ddpo 2 stages / 16 images / 512 UNet evaluations / 7 s" in text
