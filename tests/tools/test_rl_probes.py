"""The RL probes (tools.rl_check, tools.grad_signal) run on the shipped toy world with tiny
settings."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from configs.load import DEFAULT_PRESET, load_config
from diffusion.pipeline import load_model
from learner.prompts import load_prompts
from learner.update import PolicyTrainer
from tools import grad_signal, rl_check

TINY = [
    "sampling.num_steps=3",
    "sampling.branches=2",
    "sampling.trunks_per_stage=2",
    "train.batch_size=2",
    "schedule.start=1",
    "schedule.end=3",
]


def test_grad_signal_reports_every_step(tmp_path):
    out = tmp_path / "g.json"
    grad_signal.main(
        ["--trunks", "2", "--batches", "2", "--json", str(out)]
        + [x for s in TINY for x in ("--set", s)]
    )
    r = json.loads(out.read_text())
    assert [s["step"] for s in r["steps"]] == [0, 1, 2]
    for s in r["steps"]:
        assert np.isfinite(s["grad_norm"]) and s["grad_norm"] > 0
        assert -1.0 <= s["cosine_between_batches"] <= 1.0
    assert [f["steps"] for f in r["first_steps"]] == [1, 2, 3]
    # the first step alone is the same vector as the per-step one
    assert r["first_steps"][0]["cosine_between_batches"] == pytest.approx(
        r["steps"][0]["cosine_between_batches"], abs=1e-6
    )
    assert r["all_steps_cosine"] == r["first_steps"][-1]["cosine_between_batches"]


def test_step_test_moves_the_lora_along_the_ascent_and_a_random_direction(tmp_path):
    """Finite differences of the reward: size 0 changes nothing (paired noise, same
    parameters), a step changes the images; the LoRA is put back afterwards."""
    out = tmp_path / "g.json"
    grad_signal.main(
        ["--trunks", "2", "--batches", "2", "--reward", "brightness", "--json", str(out)]
        + ["--step-test", "0,3"]
        + [x for s in TINY for x in ("--set", s)]
    )
    fd = json.loads(out.read_text())["step_test"]
    assert [(f["direction"], f["size"]) for f in fd] == [
        ("ascent", 0.0),
        ("ascent", 3.0),
        ("random", 0.0),
        ("random", 3.0),
    ]
    for f in fd:
        assert f["images"] == 4 and np.isfinite(f["reward_diff"])
        if f["size"] == 0.0:
            assert f["reward_diff"] == 0.0 and f["reward_plus"] == f["reward_minus"]
    assert any(f["reward_diff"] != 0.0 for f in fd if f["size"] > 0)
    # the random direction's size 0 comes after the ascent's steps: the LoRA was put back
    assert fd[2]["reward_plus"] == fd[0]["reward_plus"]


def test_brightness_reward_is_mean_intensity():
    cfg = load_config(DEFAULT_PRESET, TINY)
    fn = rl_check.reward_function("brightness", cfg)
    images = torch.zeros(2, 3, 4, 4, dtype=torch.uint8)
    images[1] = 255
    assert fn(images, ["a", "b"]).tolist() == [0.0, 1.0]
    dark = rl_check.reward_function("darkness", cfg)
    assert dark(images, ["a", "b"]).tolist() == [-0.0, -1.0]


def test_checker_rewards_are_its_partial_credit_and_its_verdict():
    """`exact` is the checker's 0/1 verdict (it alone sees relations), `partial` its dense
    per-object credit: a render of the prompt gets 1 from both; the flipped relation keeps
    full partial credit but loses the verdict; a blank image gets 0 from both."""
    from toyworld.grammar import parse
    from toyworld.render import render, sample_scene

    cfg = load_config(DEFAULT_PRESET, TINY)
    prompt = "a red circle left of a blue square"
    image = render(sample_scene(parse(prompt), np.random.default_rng(0)))
    images = torch.from_numpy(np.stack([image, np.full_like(image, 255)])).permute(0, 3, 1, 2)
    flipped = "a red circle right of a blue square"
    exact = rl_check.reward_function("exact", cfg)
    partial = rl_check.reward_function("partial", cfg)
    assert exact(images, [prompt, prompt]).tolist() == [1.0, 0.0]
    assert partial(images, [prompt, prompt]).tolist() == [1.0, 0.0]
    assert exact(images[:1], [flipped]).tolist() == [0.0]
    assert partial(images[:1], [flipped]).tolist() == [1.0]


def test_shuffled_verdict_keeps_each_trunks_count_and_forgets_which_branch():
    """The verdict's control: a trunk of TINY's two branches, one a render of the prompt
    and one blank, keeps one paid branch per trunk, but which one is a coin flip."""
    from toyworld.grammar import parse
    from toyworld.render import render, sample_scene

    cfg = load_config(DEFAULT_PRESET, TINY)
    prompt = "a red circle"
    image = render(sample_scene(parse(prompt), np.random.default_rng(0)))
    pair = np.stack([image, np.full_like(image, 255)])  # trunk: right branch, then blank
    images = torch.from_numpy(np.concatenate([pair] * 8)).permute(0, 3, 1, 2)
    fn = rl_check.reward_function("shuffled", cfg)
    paid = np.stack([fn(images, [prompt] * 16).reshape(8, 2) for _ in range(8)])
    assert (paid.sum(axis=2) == 1.0).all()  # every trunk still has exactly one paid branch
    first = paid[..., 0].mean()
    assert 0.25 < first < 0.75  # the render is paid about half the time, not always


def test_random_reward_ignores_the_image_and_repeats_per_seed():
    cfg = load_config(DEFAULT_PRESET, TINY)
    images = torch.zeros(64, 3, 4, 4, dtype=torch.uint8)
    a, b = rl_check.reward_function("random", cfg), rl_check.reward_function("random", cfg)
    first = a(images, ["x"] * 64)
    assert first.tolist() == b(images, ["x"] * 64).tolist()  # same seed, same draws
    assert first.min() >= 0.0 and first.max() < 1.0 and first.std() > 0.2
    assert a(images, ["x"] * 64).tolist() != first.tolist()  # fresh draws per call


def test_rl_check_runs_two_tiny_stages(tmp_path):
    out = tmp_path / "rl.json"
    rl_check.main(
        [
            "--reward",
            "brightness",
            "--images",
            "4",
            "--stages",
            "2",
            "--threads",
            "1",
            "--out",
            str(out),
            "--lora-out",
            str(tmp_path / "lora.safetensors"),
        ]
        + [x for s in TINY for x in ("--set", s)]
    )
    r = json.loads(out.read_text())
    assert len(r["per_stage"]) == 2
    # the trained LoRA loads back into a fresh adapter, and training (brightness always
    # separates two branches, so every trunk gives a pair) moved it off zero
    lora = load_file(str(tmp_path / "lora.safetensors"))
    cfg = load_config(DEFAULT_PRESET, TINY)
    PolicyTrainer(load_model(cfg.model), cfg).load_weights(lora, "lora.safetensors")
    assert any(v.abs().sum() > 0 for k, v in lora.items() if "lora_B" in k)
    assert all(0.0 <= m["reward_within_trunk"] <= 1.0 for m in r["per_stage"])
    for split in ("train", "test"):
        assert r["after"][split]["images"] == 4
        per_prompt = r["after"][split]["per_prompt"]  # the first four prompts, one image each
        first_four = load_prompts(getattr(load_config(DEFAULT_PRESET).prompts, split))[:4]
        assert list(per_prompt) == first_four and set(per_prompt.values()) <= {0.0, 1.0}


def test_recorded_baseline_is_reused_only_for_the_same_prompts():
    cfg = load_config(DEFAULT_PRESET)
    assert rl_check.reusable_before(cfg, 520, 0) is not None  # what the build measured
    packaged = [f"prompts.{x}=toyworld/prompts/all_{x}.txt" for x in ("train", "test")]
    assert rl_check.reusable_before(load_config(DEFAULT_PRESET, packaged), 520, 0) is not None
    other = load_config(DEFAULT_PRESET, ["prompts.train=toyworld/prompts/binding_train.txt"])
    assert rl_check.reusable_before(other, 520, 0) is None
    assert (
        rl_check.reusable_before(cfg, 64, 0) is None
        and rl_check.reusable_before(cfg, 520, 1) is None
    )
