"""The toy world in flow form: a micro build loads in the project and in stock diffusers;
its text encoders are the toy CLIP's text tower with projection."""

from __future__ import annotations

import json

import open_clip
import pytest
import torch
from diffusers import StableDiffusion3Pipeline
from safetensors.torch import load_file

from configs.load import PROJECT_ROOT, load_config
from configs.schema import ModelConfig
from diffusion.pipeline import load_model
from diffusion.tiny import clip_tokenizer
from learner.preflight import preflight
from toyworld import build, models
from toyworld.clip import ARCH, ASSETS_DIR, CHECKPOINT_NAME, register_toy_clip


def stock_pipeline(path) -> StableDiffusion3Pipeline:
    """The folder in stock diffusers; the pipeline has no T5, which diffusers wants said."""
    return StableDiffusion3Pipeline.from_pretrained(
        str(path), torch_dtype=torch.float32, text_encoder_3=None, tokenizer_3=None
    )


@pytest.fixture(scope="module")
def flow_build(tmp_path_factory):
    out = tmp_path_factory.mktemp("flow") / "sd3"
    build.main(["--family", "sd3", "--out", str(out), "--micro", "--quiet", "--seed", "3"])
    return out


def test_micro_flow_build_writes_a_loadable_sd3_pipeline(flow_build):
    model = load_model(
        ModelConfig(pretrained=str(flow_build / "pipeline"), device="cpu", max_sequence_length=0)
    )
    assert model.family.name == "sd3" and model.latent_shape == (4, 16, 16)
    assert model.text_encoder.dtype == torch.float32  # stored in half precision, loaded as asked
    stock = stock_pipeline(flow_build / "pipeline")
    assert stock.vae.config.shift_factor == 0.0
    record = json.loads((flow_build / "baselines.json").read_text())
    assert record["seed"] == 3 and "--family sd3" in record["command"]
    assert set(record["measured"]) == {
        "sampler",
        "all_train",
        "all_test",
        "preset_train",
        "preset_test",
    }
    assert record["measured"]["preset_train"]["images"] == 8
    assert record["times_s"]["exposure"] > 0
    assert (flow_build / "BUILD.md").read_text().startswith("# Toy flow world build record")


def test_the_project_encodes_prompts_as_stock_sd3_without_t5_places(flow_build):
    """model.max_sequence_length = 0: the joint sequence is the CLIP tokens alone, as stock
    encode_prompt makes it with max_sequence_length=0."""
    path = str(flow_build / "pipeline")
    model = load_model(ModelConfig(pretrained=path, device="cpu", max_sequence_length=0))
    stock = stock_pipeline(path)
    prompts = ["a red circle above a blue square", ""]
    seq, _, pooled, _ = stock.encode_prompt(
        prompts, None, None, do_classifier_free_guidance=False, max_sequence_length=0
    )
    with torch.no_grad():
        packed = model.family.encode(model, prompts)
    emb, pool = model.family.unpack(model, packed)
    assert emb.shape == seq.shape == (2, 16, 64)
    torch.testing.assert_close(emb, seq, rtol=0, atol=1e-6)
    torch.testing.assert_close(pool, pooled, rtol=0, atol=1e-6)


def test_projected_text_encoder_is_open_clips_text_embedding():
    state = load_file(str(ASSETS_DIR / "clip" / CHECKPOINT_NAME))
    encoder = models.projected_text_encoder_from_clip(state, models.PipelineSize()).eval()
    register_toy_clip()
    clip = open_clip.create_model(ARCH, pretrained=str(ASSETS_DIR / "clip" / CHECKPOINT_NAME))
    ids = clip_tokenizer(16)(
        ["two green stars left of a yellow triangle"],
        padding="max_length",
        max_length=16,
        return_tensors="pt",
    ).input_ids
    with torch.no_grad():
        ours = encoder(ids).text_embeds
        theirs = clip.eval().encode_text(ids)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-5)


def test_the_flow_preset_trains_the_shipped_flow_world_in_process(two_b2_stages):
    """configs/toy_sd3_b2.yaml passes preflight on the shipped flow world, and two B² stages
    (smaller than the preset's) train its LoRA on-policy through the usual code path."""
    cfg = load_config(PROJECT_ROOT / "configs" / "toy_sd3_b2.yaml")
    preflight(cfg)
    small = cfg.model_copy(
        update={
            "sampling": cfg.sampling.model_copy(
                update={"num_steps": 6, "trunks_per_stage": 4, "branches": 3, "micro_batch": 12}
            ),
            "schedule": cfg.schedule.model_copy(update={"start": 2, "end": 4, "stages": 2}),
            "train": cfg.train.model_copy(update={"batch_size": 3, "epochs": 1}),
        }
    )
    two_b2_stages(load_model(small.model), small)
