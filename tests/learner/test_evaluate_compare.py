"""evaluate and compare on the tiny pipeline with a randomly initialised toy CLIP."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from configs.load import dump_config
from configs.schema import Config
from diffusion.pipeline import load_model
from learner import checkpoint
from learner.compare import main as compare_main
from learner.evaluate import main as evaluate_main
from learner.update import PolicyTrainer


@pytest.fixture(scope="module")
def toy_clip_registered(tmp_path_factory):
    from toyworld.clip import register_toy_clip, toy_clip_config, write_config

    directory = tmp_path_factory.mktemp("clip")
    write_config(directory, toy_clip_config(vision_layers=1, text_layers=1))
    register_toy_clip(directory)
    return directory


def _cfg(tiny_pipeline_dir, tmp_path, seed=0) -> Config:
    return Config.model_validate(
        {
            "seed": seed,
            "stages": 1,
            "output_dir": str(tmp_path),
            "model": {"pretrained": tiny_pipeline_dir, "device": "cpu"},
            "sampling": {"num_steps": 4, "branches": 2, "trunks_per_stage": 2, "micro_batch": 16},
            "schedule": {"kind": "constant", "start": 2, "end": 2},
            "prompts": {
                "train": "toyworld/prompts/binding_train.txt",
                "test": "toyworld/prompts/binding_test.txt",
            },
            "rewards": [{"name": "clip_score", "model": "toy-clip"}],
            "logging": {"mlflow": False},
        }
    )


def _fake_run(cfg: Config, name: str, shift: float):
    """A run directory with one stage checkpoint whose LoRA is moved away from zero."""
    run = tmp = Path(cfg.output_dir) / name
    tmp.mkdir(parents=True)
    (tmp / "config.yaml").write_text(dump_config(cfg))
    trainer = PolicyTrainer(load_model(cfg.model), cfg)
    g = torch.Generator().manual_seed(int(shift * 100))
    trainer.load_weights(
        {k: v + shift * torch.randn(v.shape, generator=g) for k, v in trainer.weights().items()}
    )
    from learner.advantages import Advantages

    state = checkpoint.LearnerState(
        0,
        2,
        1,
        trainer.weights(),
        trainer.optimizer.state_dict(),
        Advantages(cfg.advantage).state_dict(),
        torch.get_rng_state(),
    )
    checkpoint.save(tmp, state)
    (tmp / "metrics.jsonl").write_text(
        json.dumps({"step": 0, "images": 4, "reward_mean": shift}) + "\n"
    )
    return run


def test_evaluate_base_and_checkpoint_and_compare(
    toy_clip_registered, tiny_pipeline_dir, tmp_path, capsys
):
    cfg = _cfg(tiny_pipeline_dir, tmp_path)
    cfg_path = tmp_path / "cfg.yaml"
    cfg_path.write_text(dump_config(cfg))
    out1, out2 = tmp_path / "base1.json", tmp_path / "base2.json"
    for out in (out1, out2):
        torch.manual_seed(0)  # the test's toy CLIP is randomly initialised
        assert (
            evaluate_main(
                [
                    "--checkpoint",
                    "base",
                    "--config",
                    str(cfg_path),
                    "--images-per-prompt",
                    "2",
                    "--json",
                    str(out),
                ]
            )
            == 0
        )
    a, b = json.loads(out1.read_text()), json.loads(out2.read_text())
    assert a["splits"] == b["splits"]  # same seed, same numbers
    for split in ("train", "test"):
        r = a["splits"][split]
        for key in ("clip_score", "bert_score", "diversity", "oracle_accuracy"):
            assert math.isfinite(r[key]), (split, key)
            first = next(iter(r["per_prompt"].values()))
            assert key in first
        assert r["images"] == 2 * len(r["per_prompt"])
        assert all(math.isfinite(v) and v >= 0 for v in r["stderr"].values()), r["stderr"]
    assert "open_clip toy-clip image embedding" in a["diversity_embedding"]

    run_a = _fake_run(cfg, "run_a", 0.5)
    torch.manual_seed(0)
    assert (
        evaluate_main(["--checkpoint", str(run_a), "--images-per-prompt", "2", "--split", "test"])
        == 0
    )
    stage_dir = run_a / "stages" / "stage_0000"
    torch.manual_seed(0)
    assert (
        evaluate_main(
            [
                "--checkpoint",
                str(stage_dir),
                "--images-per-prompt",
                "2",
                "--split",
                "test",
                "--json",
                str(tmp_path / "stage.json"),
            ]
        )
        == 0
    )
    stage_json = json.loads((tmp_path / "stage.json").read_text())
    assert stage_json["stage"] == 0
    assert stage_json["splits"]["test"] != a["splits"]["test"]  # the LoRA changes the images
    capsys.readouterr()

    run_b = _fake_run(cfg, "run_b", 0.2)
    out = tmp_path / "cmp"
    assert compare_main([str(run_a), str(run_b), "--out", str(out)]) == 0
    table = (out / "comparison.md").read_text()
    assert "| run_a |" in table and "| run_b |" in table
    assert "| run_a | b2 | 0 | 1 | 4 | 0.5000 | - |" in table  # not evaluated on train
    for name in ("reward.png", "eval.png", "side_by_side.png"):
        assert (out / name).stat().st_size > 1000, name

    # run_b at another size: shown with its size, and not ranked against run_a
    test_prompts = len(a["splits"]["test"]["per_prompt"])
    for size in ("1", "2"):
        torch.manual_seed(0)
        argv = ["--checkpoint", str(run_b), "--split", "test", "--images-per-prompt", size]
        assert evaluate_main(argv) == 0
        assert compare_main([str(run_a), str(run_b), "--out", str(out), "--no-images"]) == 0
        table = (out / "comparison.md").read_text()
        assert f"{test_prompts * int(size)} images ({size} a prompt), seed 1234" in table
        if size == "1":
            assert "Not ranked: the test evaluations differ in size (run_a: " in table
            assert "Ranking on" not in table
    # the size-2 evaluation sits beside the size-1 one, and the shared size is ranked
    assert len(list((run_b / "eval").glob("*.json"))) == 2
    assert "Not ranked" not in table and "Ranking on test by oracle_accuracy" in table
    assert "1 a prompt" not in table


def test_evaluate_refuses_bad_checkpoint(tmp_path, capsys):
    assert evaluate_main(["--checkpoint", str(tmp_path)]) == 2
    assert "neither 'base'" in capsys.readouterr().err


def test_lora_of_the_wrong_shape_is_refused(
    toy_clip_registered, tiny_pipeline_dir, tmp_path, capsys
):
    cfg = _cfg(tiny_pipeline_dir, tmp_path)
    run = _fake_run(cfg, "bad", 0.1)
    stage = run / "stages" / "stage_0000"
    state = checkpoint.load(stage)
    name = next(iter(state.lora))
    state.lora[name] = torch.zeros(7, 3)
    checkpoint.save(run, state)
    assert evaluate_main(["--checkpoint", str(run), "--split", "test"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"LoRA tensor {name} has shape (7, 3)" in err[0], err


def test_images_per_split_spreads_evenly_over_each_splits_prompts(
    toy_clip_registered, tiny_pipeline_dir, tmp_path, capsys
):
    cfg = _cfg(tiny_pipeline_dir, tmp_path)
    cfg_path = tmp_path / "cfg.yaml"
    cfg_path.write_text(dump_config(cfg))
    out = tmp_path / "even.json"
    argv = ["--checkpoint", "base", "--config", str(cfg_path), "--json", str(out), "--no-mlflow"]
    # 5 train prompts, 10 held-out ones: 10 images a split is 2 a prompt, then 1
    five = ["--set", "prompts.train=toyworld/prompts/unusual_train.txt"]
    assert evaluate_main([*argv, *five, "--images-per-split", "10"]) == 0
    result = json.loads(out.read_text())
    assert result["images_per_prompt"] == {"train": 2, "test": 1}
    assert {s: r["images"] for s, r in result["splits"].items()} == {"train": 10, "test": 10}
    assert "images per prompt: train 2, test 1" in capsys.readouterr().out

    assert evaluate_main([*argv, "--images-per-split", "0"]) == 2
    assert capsys.readouterr().err.strip() == "error: --images-per-split 0: must be >= 1"
    with pytest.raises(SystemExit):  # argparse: one way to size the splits at a time
        evaluate_main([*argv, "--images-per-split", "8", "--images-per-prompt", "2"])


def test_evaluating_base_at_another_size_keeps_the_earlier_one(
    toy_clip_registered, tiny_pipeline_dir, tmp_path, capsys
):
    cfg = _cfg(tiny_pipeline_dir, tmp_path)
    cfg_path = tmp_path / "cfg.yaml"
    cfg_path.write_text(dump_config(cfg))
    argv = ["--checkpoint", "base", "--config", str(cfg_path), "--split", "test", "--no-mlflow"]
    assert evaluate_main([*argv, "--images-per-prompt", "1"]) == 0
    first = tmp_path / "eval" / "base_1-per-prompt_seed1234_test.json"
    before = first.read_text()
    assert evaluate_main([*argv, "--images-per-split", "40"]) == 0
    second = tmp_path / "eval" / "base_40-per-split_seed1234_test.json"
    assert first.read_text() == before
    assert json.loads(second.read_text())["images_per_prompt"] == {"test": 4}
    assert f"wrote {second}" in capsys.readouterr().out


def test_evaluation_reports_configured_rewards_and_blip_bert_score_off_the_toy_world(
    toy_clip_registered, tiny_pipeline_dir, tmp_path, capsys
):
    """Prompts outside the toy grammar: bert_score comes from the config's BLIP captioner,
    every other configured term is reported as reward_<key>, and compare tabulates and
    plots them."""
    from PIL import Image

    from rewards.tiny import save_tiny_blip

    prompts = tmp_path / "photos.txt"
    prompts.write_text("a photo of a cat on a sofa\nan oil painting of a harbour\n")
    blip = save_tiny_blip(tmp_path / "blip")
    cfg = Config.model_validate(
        {
            **_cfg(tiny_pipeline_dir, tmp_path).model_dump(),
            "prompts": {"train": str(prompts), "test": str(prompts)},
            "rewards": [
                {"name": "clip_score", "model": "toy-clip"},
                {"name": "jpeg_compressibility", "weight": 0.1},
                {"name": "jpeg_compressibility", "label": "jpeg_b", "weight": 0.0},
                {
                    "name": "bert_score",
                    "captioner": str(blip),
                    "weight": 0.5,
                    "options": {"captioner_max_tokens": 4},
                },
            ],
        }
    )
    run = _fake_run(cfg, "photos", 0.3)
    argv = ["--checkpoint", str(run), "--split", "test", "--images-per-prompt", "2"]
    assert evaluate_main([*argv, "--no-mlflow"]) == 0
    assert "reward_jpeg_compressibility" in capsys.readouterr().out  # the printed table
    (path,) = (run / "eval").glob("*.json")
    r = json.loads(path.read_text())["splits"]["test"]
    assert r["oracle_accuracy"] is None  # not toy prompts
    assert 0.0 < r["bert_score"] <= 1.0 and r["stderr"]["bert_score"] >= 0.0
    for key in ("reward_jpeg_compressibility", "reward_jpeg_b"):
        assert r[key] < 0.0 and r["stderr"][key] >= 0.0  # minus kB of JPEG
        assert all(key in p for p in r["per_prompt"].values())
    assert r["reward_jpeg_b"] == r["reward_jpeg_compressibility"]
    # the clip_score and bert_score terms are metrics already: not repeated as rewards
    assert [k for k in r if k.startswith("reward_")] == [
        "reward_jpeg_compressibility",
        "reward_jpeg_b",
    ]

    out = tmp_path / "cmp"
    assert compare_main([str(run), "--out", str(out), "--no-images"]) == 0
    table = (out / "comparison.md").read_text()
    assert "test reward_jpeg_compressibility | test reward_jpeg_b |" in table
    assert f"{r['reward_jpeg_b']:.4f} ± {r['stderr']['reward_jpeg_b']:.4f}" in table
    with Image.open(out / "eval.png") as im:
        assert im.width == 4 * 5 * 120  # alignment, diversity and the two reward panels
