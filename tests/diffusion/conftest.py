"""Tiny random SD3 (no T5), SDXL and FLUX pipeline folders and the project's models loaded
from them."""

from __future__ import annotations

import copy

import pytest
import torch


def _load_on_cpu(path: str):
    from configs.schema import ModelConfig
    from diffusion.pipeline import load_model

    return load_model(ModelConfig(pretrained=path), torch.device("cpu"))


def _smaller_on(tiny_cfg, pretrained: str, **sampling):
    """The tiny SD world's config on the pipeline at `pretrained`, smaller: 4 steps, 2 trunks
    x 3 branches, two stages training the last 2, then 3 steps; `sampling`: more values."""
    sampling = {"num_steps": 4, "trunks_per_stage": 2, "branches": 3, **sampling}
    return tiny_cfg.model_copy(
        update={
            "stages": 2,
            "model": tiny_cfg.model.model_copy(update={"pretrained": pretrained}),
            "sampling": tiny_cfg.sampling.model_copy(update=sampling),
            "schedule": tiny_cfg.schedule.model_copy(update={"start": 2, "end": 3}),
        }
    )


@pytest.fixture(scope="session")
def tiny_sd3_dir(tmp_path_factory) -> str:
    from diffusion.tiny import tiny_sd3_pipeline

    path = tmp_path_factory.mktemp("tiny_sd3") / "pipeline"
    tiny_sd3_pipeline(seed=0).save_pretrained(str(path))
    return str(path)


@pytest.fixture(scope="session")
def _tiny_sd3_once(tiny_sd3_dir):
    return _load_on_cpu(tiny_sd3_dir)


@pytest.fixture()
def tiny_sd3(_tiny_sd3_once):
    """A fresh copy per test: trainers attach LoRA to the transformer in place."""
    return copy.deepcopy(_tiny_sd3_once)


@pytest.fixture()
def sd3_cfg(tiny_cfg, tiny_sd3_dir):
    """The tiny SD world's smaller config on the SD3 pipeline, flow noise level 0.7."""
    return _smaller_on(tiny_cfg, tiny_sd3_dir, eta=0.7)


@pytest.fixture(scope="session")
def tiny_sdxl_dir(tmp_path_factory) -> str:
    """The tiny random SDXL pipeline, written by `python -m diffusion.architectures`."""
    from diffusion.architectures import main

    path = tmp_path_factory.mktemp("tiny_sdxl") / "pipeline"
    assert main(["--arch", "sdxl-tiny", "--out", str(path)]) == 0
    return str(path)


@pytest.fixture(scope="session")
def _tiny_sdxl_once(tiny_sdxl_dir):
    return _load_on_cpu(tiny_sdxl_dir)


@pytest.fixture()
def tiny_sdxl(_tiny_sdxl_once):
    """A fresh copy per test: trainers attach LoRA to the UNet in place."""
    return copy.deepcopy(_tiny_sdxl_once)


@pytest.fixture()
def sdxl_cfg(tiny_cfg, tiny_sdxl_dir):
    """The tiny SD world's smaller config on the SDXL pipeline, DDIM eta 1."""
    return _smaller_on(tiny_cfg, tiny_sdxl_dir, eta=1.0)


@pytest.fixture(scope="session")
def tiny_flux_dir(tmp_path_factory) -> str:
    """The tiny random FLUX.1 pipeline, written by `python -m diffusion.architectures`."""
    from diffusion.architectures import main

    path = tmp_path_factory.mktemp("tiny_flux") / "pipeline"
    assert main(["--arch", "flux-tiny", "--out", str(path)]) == 0
    return str(path)


@pytest.fixture(scope="session")
def _tiny_flux_once(tiny_flux_dir):
    return _load_on_cpu(tiny_flux_dir)


@pytest.fixture()
def tiny_flux(_tiny_flux_once):
    """A fresh copy per test: trainers attach LoRA to the transformer in place."""
    return copy.deepcopy(_tiny_flux_once)


@pytest.fixture()
def flux_cfg(tiny_cfg, tiny_flux_dir):
    """The tiny SD world's smaller config on the FLUX pipeline, flow noise level 0.9 and
    guidance 3.5 (as the guidance embedding)."""
    return _smaller_on(tiny_cfg, tiny_flux_dir, eta=0.9, guidance_scale=3.5)
