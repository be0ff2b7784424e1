"""Random-weight pipelines of bench.gpu's architectures, as the project's DiffusionModel.

The transformer architectures (SD3.5-Medium, FLUX.1) are built directly on the device in
the benchmark's dtype (`torch.device` and the default dtype set while the modules are
made), so that FLUX's 12 billion parameters never exist in float32 or on the CPU: on a GPU
that takes seconds, where building on the CPU and copying would take minutes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from diffusers import (
    AutoencoderKL,
    FlowMatchEulerDiscreteScheduler,
    FluxPipeline,
    FluxTransformer2DModel,
    SD3Transformer2DModel,
    StableDiffusion3Pipeline,
)
from transformers import (
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTextModelWithProjection,
    T5Config,
    T5EncoderModel,
)

from bench.gpu.archs import Arch
from bench.gpu.networks import TransformerNetworks
from diffusion.architectures import random_pipeline
from diffusion.pipeline import DiffusionModel, from_pipeline
from diffusion.tiny import clip_tokenizer, tiny_t5_tokenizer

MODULES = ("unet", "vae", "text_encoder", "text_encoder_2", "text_encoder_3")


@contextmanager
def building(device: torch.device, dtype: torch.dtype) -> Iterator[None]:
    """New modules are made on `device` in `dtype` (floating parameters and buffers)."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            yield
    finally:
        torch.set_default_dtype(old)


def t5_tokenizer(max_length: int):
    """The offline unigram tokenizer of diffusion.tiny at T5's padded length: the ids are
    few, but every prompt is padded to the family's T5 length, so the encoder's work is a
    real T5's."""
    tok = tiny_t5_tokenizer()
    tok.model_max_length = max_length
    return tok


def sd3_pipeline(net: TransformerNetworks, scheduler) -> StableDiffusion3Pipeline:
    """SD3 / SD3.5 of `net`: MM-DiT, two CLIP encoders with projection, T5, 16-channel VAE."""
    clip_l, clip_g = (CLIPTextModelWithProjection(CLIPTextConfig(**c)) for c in net.clip)
    tokenizer = clip_tokenizer(net.clip_length)
    return StableDiffusion3Pipeline(
        transformer=SD3Transformer2DModel(**net.transformer),
        scheduler=scheduler,
        vae=AutoencoderKL(**net.vae),
        text_encoder=clip_l,
        tokenizer=tokenizer,
        text_encoder_2=clip_g,
        tokenizer_2=tokenizer,
        text_encoder_3=T5EncoderModel(T5Config(**net.t5)),
        tokenizer_3=t5_tokenizer(net.t5_length),
    )


def flux_pipeline(net: TransformerNetworks, scheduler) -> FluxPipeline:
    """FLUX.1 of `net`: the double / single-stream transformer, CLIP-L, T5, 16-channel VAE."""
    (clip_l,) = net.clip
    return FluxPipeline(
        scheduler=scheduler,
        vae=AutoencoderKL(**net.vae),
        text_encoder=CLIPTextModel(CLIPTextConfig(**clip_l)),
        tokenizer=clip_tokenizer(net.clip_length),
        text_encoder_2=T5EncoderModel(T5Config(**net.t5)),
        tokenizer_2=t5_tokenizer(net.t5_length),
        transformer=FluxTransformer2DModel(**net.transformer),
    )


PIPELINES = {"sd3": sd3_pipeline, "flux": flux_pipeline}


def pipeline(arch: Arch, device: torch.device, dtype: torch.dtype, seed: int = 0):
    """The diffusers pipeline of `arch` with random weights, on `device`."""
    torch.manual_seed(seed)
    if arch.family == "sd":
        try:
            with torch.device(device):  # initialise on the card: much faster than on the CPU
                return random_pipeline(arch.net, seed)
        except (RuntimeError, NotImplementedError, TypeError):
            return random_pipeline(arch.net, seed)
    # the schedule's tensors stay float32 on the CPU, as the sampler expects them
    scheduler = FlowMatchEulerDiscreteScheduler(**arch.net.scheduler)
    with building(device, dtype):
        return PIPELINES[arch.family](arch.net, scheduler)


def build_model(arch: Arch, device: torch.device, dtype: torch.dtype) -> DiffusionModel:
    """Random-weight pipeline of `arch` as the project's DiffusionModel, at `arch`'s image
    size (the transformers' own is larger)."""
    model = from_pipeline(pipeline(arch, device, dtype), device, dtype)
    model.latent_size = (arch.net.image_size // model.vae_scale_factor,) * 2
    return with_dtype(model, dtype)


def with_dtype(model: DiffusionModel, dtype: torch.dtype) -> DiffusionModel:
    for name in MODULES:
        module = getattr(model, name)
        if module is not None and next(module.parameters()).dtype != dtype:
            module.to(dtype=dtype)
    return dataclasses.replace(model, dtype=dtype)


def param_count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def parameters(model: DiffusionModel) -> dict[str, int]:
    """Parameters per network ('unet': the denoiser, whatever its architecture)."""
    return {n: param_count(getattr(model, n)) for n in MODULES if getattr(model, n) is not None}
