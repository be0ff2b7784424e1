"""model.resolution: the image size sampling uses, whatever the denoiser's sample_size."""

from __future__ import annotations

import pytest

from configs.schema import ModelConfig
from diffusion.pipeline import PipelineLoadError, load_model
from diffusion.sampler import sample_branches
from learner.stage import sampler_settings


def test_a_resolution_sets_the_latents_and_the_images(tiny_pipeline_dir, tiny_cfg):
    native = load_model(ModelConfig(pretrained=tiny_pipeline_dir, device="cpu"))
    model = load_model(ModelConfig(pretrained=tiny_pipeline_dir, device="cpu", resolution=64))
    channels, height, width = native.latent_shape
    image = height * 2 ** (len(native.vae.config.block_out_channels) - 1)
    assert model.latent_shape == (channels, 2 * height, 2 * width) and image * 2 == 64
    batch = sample_branches(model, ["a red circle"], [0], sampler_settings(tiny_cfg, 0), 3, 0)
    assert batch.images.shape[-2:] == (64, 64)
    assert batch.chain.shape[-2:] == (2 * height, 2 * width)


def test_a_resolution_the_vae_cannot_make_is_one_line(tiny_pipeline_dir):
    with pytest.raises(PipelineLoadError, match=r"model.resolution = 40: not a multiple of"):
        load_model(ModelConfig(pretrained=tiny_pipeline_dir, device="cpu", resolution=40))
