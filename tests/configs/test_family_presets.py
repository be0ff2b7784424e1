"""The SD3.5-Medium, SDXL and FLUX.1-dev presets: they load, and pointed at the tiny random
pipeline of their family with tiny sizes they pass the driver's preflight."""

from __future__ import annotations

import pytest

from configs.load import PRESET_DIR, load_config
from diffusion.families import family_of_dir
from diffusion.pipeline import load_model
from learner.preflight import preflight
from learner.update import PolicyTrainer

# a CPU-sized run: what the presets leave are the model-specific settings
TINY = [
    "model.dtype=float32",
    "model.autocast=none",
    "model.device=cpu",
    "stages=2",
    "sampling.num_steps=4",
    "sampling.trunks_per_stage=2",
    "sampling.branches=3",
    "sampling.micro_batch=4",
    "schedule.start=2",
    "schedule.end=3",
    "train.batch_size=3",
    "train.micro_batch=2",
    "rewards=[{name: jpeg_compressibility}]",
    "runtime.rollout_actors=1",
    "runtime.learner_workers=1",
    "runtime.reward_actors=1",
    "runtime.rollout_gpus=0",
    "runtime.learner_gpus=0",
    "runtime.reward_gpus=0",
]


@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory) -> dict[str, str]:
    from diffusion.architectures import main

    dirs = {}
    for family, arch in (("sd3", "sd3-tiny"), ("sdxl", "sdxl-tiny"), ("flux", "flux-tiny")):
        path = tmp_path_factory.mktemp(arch) / "pipeline"
        assert main(["--arch", arch, "--out", str(path)]) == 0
        dirs[family] = str(path)
    return dirs


def test_sd35m_preset_values():
    cfg = load_config(PRESET_DIR / "sd35m_b2.yaml")
    assert cfg.model.pretrained == "stabilityai/stable-diffusion-3.5-medium"
    assert (cfg.sampling.num_steps, cfg.sampling.eta, cfg.sampling.guidance_scale) == (10, 0.7, 4.5)
    assert (cfg.model.dtype, cfg.model.autocast) == ("bfloat16", "bf16")
    assert cfg.train.gradient_checkpointing and cfg.train.micro_batch >= 1
    assert {"add_q_proj", "to_add_out"} <= set(cfg.train.lora.targets)


def test_sdxl_preset_values():
    cfg = load_config(PRESET_DIR / "sdxl_b2.yaml")
    assert cfg.model.pretrained == "stabilityai/stable-diffusion-xl-base-1.0"
    assert (cfg.sampling.num_steps, cfg.sampling.eta) == (20, 1.0)
    assert (cfg.model.dtype, cfg.model.autocast) == ("bfloat16", "bf16")
    assert cfg.train.gradient_checkpointing and cfg.train.micro_batch >= 1


def test_flux_preset_values():
    cfg = load_config(PRESET_DIR / "flux_b2.yaml")
    assert cfg.model.pretrained == "black-forest-labs/FLUX.1-dev"
    assert cfg.model.resolution == 512
    assert (cfg.sampling.num_steps, cfg.sampling.eta, cfg.sampling.guidance_scale) == (6, 0.9, 3.5)
    assert (cfg.model.dtype, cfg.model.autocast) == ("bfloat16", "bf16")
    assert cfg.train.gradient_checkpointing and cfg.train.micro_batch >= 1
    assert (cfg.train.lora.rank, cfg.train.lora.alpha) == (64, 128)
    assert {"add_q_proj", "to_add_out", "ff.net.2"} <= set(cfg.train.lora.targets)


@pytest.mark.parametrize(
    ("preset", "family"), [("sd35m_b2", "sd3"), ("sdxl_b2", "sdxl"), ("flux_b2", "flux")]
)
def test_preset_on_the_tiny_pipeline_of_its_family_passes_preflight(preset, family, tiny_dirs):
    overrides = [f"model.pretrained={tiny_dirs[family]}", *TINY]
    cfg = load_config(PRESET_DIR / f"{preset}.yaml", overrides)
    preflight(cfg)  # raises on anything the driver would refuse
    assert family_of_dir(cfg.model.pretrained).name == family
    # what the preset sets for its model survives the tiny overrides
    preset_cfg = load_config(PRESET_DIR / f"{preset}.yaml")
    assert cfg.sampling.eta == preset_cfg.sampling.eta
    assert cfg.train.lora == preset_cfg.train.lora
    assert cfg.train.gradient_checkpointing
    # and the policy builds from it: the preset's LoRA targets exist in the family's denoiser
    trainer = PolicyTrainer(load_model(cfg.model), cfg)
    assert trainer.model.family.name == family
    assert sum(p.numel() for p in trainer.weights().values()) > 0
