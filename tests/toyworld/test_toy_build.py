"""A micro build runs end to end and its outputs load; the report prints."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from configs.load import DEFAULT_PRESET, PROJECT_ROOT, load_config
from configs.schema import ModelConfig
from diffusion.pipeline import load_model
from toyworld import build, build_models, build_settings, report
from toyworld.clip import ASSETS_DIR, CHECKPOINT_NAME, ToyClipScorer, register_toy_clip
from toyworld.grammar import parse
from toyworld.prompts import load_prompts
from toyworld.render import sample_scene
from toyworld.scenes import scene_truth
from toyworld.train_clip import (
    MISS_KINDS,
    MISS_WEIGHTS,
    ClipTraining,
    _near_miss_image,
    miss_weights,
)


@pytest.fixture(scope="module")
def micro_build(tmp_path_factory):
    out = tmp_path_factory.mktemp("toyworld") / "assets"
    build.main(["--out", str(out), "--micro", "--quiet", "--seed", "3"])
    yield out
    register_toy_clip()  # later tests expect the shipped architecture under `toy-clip`


def test_micro_build_writes_loadable_assets(micro_build):
    out = micro_build
    model = load_model(ModelConfig(pretrained=str(out / "pipeline"), device="cpu"))
    assert model.latent_shape == (4, 16, 16)
    scorer = ToyClipScorer(out / "clip")
    scores = scorer.score(torch.zeros(2, 3, 32, 32, dtype=torch.uint8), ["a red circle"] * 2)
    assert scores.shape == (2,)
    assert (out / "clip" / CHECKPOINT_NAME).is_file()
    b = json.loads((out / "baselines.json").read_text())
    assert b["seed"] == 3 and "--micro" in b["command"]
    assert set(b["pipeline"]) == {"train", "test"}
    default = b["default_prompts"]  # the default preset's own prompt files
    assert default["train"]["file"].endswith("_train.txt") and default["test"]["images"] == 8
    for key in ("top1", "hard_negatives"):
        assert key in b["clip"]
    # the micro settings run the late exposure on the default preset's train prompts
    assert b["times_s"]["exposure"] > 0
    shown = b["training"]["pipeline"]["exposed_prompts"]
    assert shown == load_prompts(PROJECT_ROOT / load_config(DEFAULT_PRESET).prompts.train)
    assert (out / "BUILD.md").read_text().startswith("# Toy world build record")


def test_micro_build_text_encoder_is_the_clip_text_tower(micro_build):
    from safetensors.torch import load_file

    clip = load_file(str(micro_build / "clip" / CHECKPOINT_NAME))
    model = load_model(ModelConfig(pretrained=str(micro_build / "pipeline"), device="cpu"))
    emb = model.text_encoder.get_input_embeddings().weight
    assert torch.equal(emb, clip["token_embedding.weight"].float())


def test_report_prints_a_table(micro_build, capsys, tmp_path):
    report.main(["--dir", str(micro_build), "--json", str(tmp_path / "r.json")])
    text = capsys.readouterr().out
    assert "exact" in text and "CLIP top-1" in text
    assert json.loads((tmp_path / "r.json").read_text())["baselines"]["seed"] == 3


def test_report_of_the_shipped_assets_prints(capsys):
    report.main(["--dir", str(ASSETS_DIR)])
    text = capsys.readouterr().out
    assert "pipeline, train prompts" in text
    assert "pipeline, default preset's test prompts (relations_test.txt, 520 images)" in text


def test_baselines_only_measures_an_existing_build_again(micro_build, capsys):
    args = ["--out", str(micro_build), "--quiet", "--baselines-only"]
    before = json.loads((micro_build / "baselines.json").read_text())
    build.main([*args, "--micro", "--seed", "3"])
    after = json.loads((micro_build / "baselines.json").read_text())
    assert "measured" in capsys.readouterr().out
    # same models, same noise: the same numbers; the build's own record is kept
    for key in ("pipeline", "default_prompts", "clip", "training", "command", "date", "times_s"):
        assert after[key] == before[key], key
    assert "--baselines-only" in after["remeasured"]["command"]
    assert "measured again" in (micro_build / "BUILD.md").read_text()
    with pytest.raises(SystemExit, match="seed 3, not --seed 4"):
        build.main([*args, "--micro", "--seed", "4"])
    with pytest.raises(SystemExit, match="other settings"):
        build.main([*args, "--seed", "3"])


def test_latent8_world_shapes():
    """The 8 x 8 experiment (--latent-size 8): the VAE halves twice, the UNet attends at both
    levels, and the two fit together."""
    import torch

    from toyworld import models
    from toyworld.build_settings import LATENT8

    size = LATENT8.pipeline
    vae, unet = models.build_vae(size), models.build_unet(size)
    with torch.no_grad():
        latents = vae.encode(torch.zeros(1, 3, 32, 32)).latent_dist.mean
        assert tuple(latents.shape) == (1, 4, 8, 8) and size.latent_size == 8
        out = unet(latents, 10, encoder_hidden_states=torch.zeros(1, 3, size.text_width)).sample
    assert out.shape == latents.shape
    assert unet.config.down_block_types == ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D")


def test_clip_shape_negatives_are_off_by_default():
    assert (ClipTraining().reshape_share, ClipTraining().shape_weight) == (0.0, 1.0)
    # the shipped recipe's probabilities, written out: its draws must not change
    shipped = np.array([1, 1, 1, 1, 1, 1, 1, 3, 1.5]) / 11.5
    assert MISS_KINDS[7] == "mirror"
    assert np.array_equal(miss_weights(), shipped) and np.array_equal(MISS_WEIGHTS, shipped)
    w = dict(zip(MISS_KINDS, miss_weights(3.0), strict=True))
    assert w["shape"] == pytest.approx(3 * w["colour"])
    pool = type("Pool", (), {})()  # reshape_share 1: never reaches the pool
    spec = parse("a red circle and a blue square")
    scene = sample_scene(spec, np.random.default_rng(0))
    image, truth = _near_miss_image(pool, spec, scene, np.random.default_rng(1), reshape_share=1.0)
    assert image.shape == (32, 32, 3) and truth != scene_truth(scene)


def test_exposure_trains_the_frozen_pretrained_unet_further():
    """The UNet pretraining returns is a frozen EMA copy; the exposure must still train it."""
    from diffusion.tiny import clip_tokenizer
    from toyworld import models
    from toyworld.render import make_dataset

    s = build_settings.MICRO
    torch.manual_seed(0)
    vae, unet = models.build_vae(s.pipeline), models.build_unet(s.pipeline)
    text = models.build_text_encoder(s.pipeline)
    unet.requires_grad_(False)
    before = {k: v.clone() for k, v in unet.state_dict().items()}
    images, labels = make_dataset(["a red circle", "a blue square"], 2, seed=0)
    tokenizer = clip_tokenizer(s.pipeline.max_length)
    out, _, stats = build_models.expose(unet, text, tokenizer, vae, images, labels, s, 0, False)
    assert any(not torch.equal(before[k], v) for k, v in out.state_dict().items())
    assert stats["exposed_prompts"] == load_prompts(
        PROJECT_ROOT / load_config(DEFAULT_PRESET).prompts.train
    )
