"""Load a diffusers text-to-image pipeline (local directory or hub id) for RL.

The pipeline's family (`diffusion.families`: SD-1.x/2.x, SDXL, SD3 or FLUX) is read from
its model_index.json. Only the parts RL needs are kept (denoiser, text encoders,
tokenizers, VAE) and the scheduler is the family's policy scheduler (DDIM for SD and SDXL,
flow-matching Euler for SD3 and FLUX), built from the pipeline's own scheduler config. The
toy world and every family go through exactly this code.
"""

from __future__ import annotations

import json
import os
import types
from pathlib import Path

import torch
from diffusers import DiffusionPipeline

from configs.load import resolve_path
from configs.schema import ModelConfig
from diffusion.families import Family, UnsupportedFamily, family_for_class, family_of_dir
from diffusion.fetch import node_snapshot
from diffusion.model import DiffusionModel

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
AUTOCAST = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}


class PipelineLoadError(RuntimeError):
    """The model could not be loaded; str() is a one-line message for the user."""


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise PipelineLoadError("model.device = 'cuda' but no CUDA GPU is visible here")
    return torch.device(name)


def _absent(source: str) -> dict[str, None]:
    """Optional components the folder saved as absent (SD3 without T5): diffusers loads them
    only when they are passed as None explicitly."""
    family = family_of_dir(source)
    index = json.loads((Path(source) / "model_index.json").read_text(encoding="utf-8"))
    return {n: None for n in family.optional if index.get(n, [None])[0] is None}


def _from_pretrained(source: str, cfg: ModelConfig, local_only: bool) -> DiffusionPipeline:
    # per-component loading bars from every actor drown the stage progress lines
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    diffusers_logging.disable_progress_bar()
    transformers_logging.disable_progress_bar()
    return DiffusionPipeline.from_pretrained(
        source,
        revision=cfg.revision,
        dtype=DTYPES[cfg.dtype],
        local_files_only=local_only,
        **_absent(source),
    )


def _offline_hint(cfg: ModelConfig) -> str:
    return (
        f"model.pretrained = {cfg.pretrained!r}: the hub model could not be fetched "
        f"(offline?). On a machine with network run `huggingface-cli download "
        f"{cfg.pretrained} --local-dir DIR`, copy DIR here and set model.pretrained=DIR"
    )


def check_source(cfg: ModelConfig) -> Path | None:
    """Validate model.pretrained without loading weights: a local pipeline directory (its
    path is returned) or a hub id that is cached or may still be fetched (None)."""
    path = resolve_path(cfg.pretrained)
    if path.exists():
        if not (path / "model_index.json").is_file():
            raise PipelineLoadError(
                f"model.pretrained = {cfg.pretrained!r}: {path} is not a diffusers pipeline "
                "directory (no model_index.json)"
            )
        return path
    looks_local = cfg.pretrained.startswith((".", "/", "~")) or cfg.pretrained.count("/") != 1
    if looks_local:
        raise PipelineLoadError(f"model.pretrained = {cfg.pretrained!r}: no such directory")
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(cfg.pretrained, "model_index.json", revision=cfg.revision)
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")
    if not isinstance(cached, str) and offline:
        raise PipelineLoadError(_offline_hint(cfg))
    return None


def _family(path: Path, cfg: ModelConfig) -> Family:
    try:
        return family_of_dir(path)
    except UnsupportedFamily as exc:
        raise PipelineLoadError(f"model.pretrained = {cfg.pretrained!r}: {exc}") from None


def _load(cfg: ModelConfig) -> DiffusionPipeline:
    path = check_source(cfg)
    if path is not None:
        _family(path, cfg)  # an unsupported class fails before any weights load
        try:
            return _from_pretrained(str(path), cfg, local_only=True)
        except (OSError, ValueError, TypeError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise PipelineLoadError(
                f"model.pretrained = {cfg.pretrained!r}: cannot load pipeline from {path}: {first}"
            ) from None
    try:  # a hub id: one download per node, every process on it loads the local copy
        path = node_snapshot(cfg.pretrained, cfg.revision)
    except (OSError, ValueError):
        raise PipelineLoadError(_offline_hint(cfg)) from None
    _family(path, cfg)
    try:
        return _from_pretrained(str(path), cfg, local_only=True)
    except (OSError, ValueError):
        raise PipelineLoadError(_offline_hint(cfg)) from None


def set_tf32(device: torch.device, allow: bool) -> None:
    """Whether float32 matmuls and cuDNN convolutions on CUDA may use TF32 (model.allow_tf32).

    Process-wide PyTorch flags, set by every process that loads the policy (rollout actors,
    learner); nothing changes on the CPU. With TF32, the log-prob that training recomputes for
    a sampled transition differs from the sampler's by up to 2.8e-3 on the toy model (2.3e-6
    without), where PPO's premise is a ratio of exactly 1 at unchanged weights."""
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = allow
        torch.backends.cudnn.allow_tf32 = allow


def set_autocast(unet: torch.nn.Module, device: torch.device, dtype: torch.dtype | None) -> None:
    """Run every forward of `unet` under `torch.autocast(device, dtype)` (None: plain).

    On the module, not around call sites, so that the sampler, the learner's recomputation
    and evaluation compute the policy with the same arithmetic (PPO's ratio is 1 at
    unchanged weights only then). Bound as a method, so that a deep copy runs its own copy."""
    unet.__dict__.pop("forward", None)
    if dtype is None:
        return

    def forward(self, *args, **kwargs):
        with torch.autocast(device.type, dtype=dtype):
            return type(self).forward(self, *args, **kwargs)

    unet.forward = types.MethodType(forward, unet)


def load_model(cfg: ModelConfig, device: torch.device | None = None) -> DiffusionModel:
    """Load the pipeline named by the config, on `device` (default: model.device)."""
    device = device or pick_device(cfg.device)
    set_tf32(device, cfg.allow_tf32)
    pipe = _load(cfg)
    family = _family_of_pipe(pipe, cfg.pretrained)
    missing = [n for n in family.components if getattr(pipe, n, None) is None]
    if missing:
        raise PipelineLoadError(
            f"model.pretrained = {cfg.pretrained!r}: not a text-to-image pipeline "
            f"(missing {', '.join(missing)})"
        )
    model = from_pipeline(pipe, device, DTYPES[cfg.dtype], AUTOCAST[cfg.autocast])
    if cfg.resolution is not None:
        model.latent_size = _latent_size(model, cfg.resolution)
    model.max_sequence_length = cfg.max_sequence_length
    return model


def _latent_size(model: DiffusionModel, resolution: int) -> tuple[int, int]:
    """model.resolution in latents."""
    scale = model.vae_scale_factor
    if resolution % (scale * 8):
        raise PipelineLoadError(
            f"model.resolution = {resolution}: not a multiple of {scale * 8} (this VAE "
            f"downsamples by {scale}, and the denoiser needs latents in multiples of 8)"
        )
    return resolution // scale, resolution // scale


def _family_of_pipe(pipe: DiffusionPipeline, source: str | None = None) -> Family:
    try:
        return family_for_class(type(pipe).__name__)
    except UnsupportedFamily as exc:
        where = f"model.pretrained = {source!r}: " if source else ""
        raise PipelineLoadError(f"{where}{exc}") from None


def from_pipeline(
    pipe: DiffusionPipeline,
    device: torch.device,
    dtype: torch.dtype,
    autocast: torch.dtype | None = None,
) -> DiffusionModel:
    family = _family_of_pipe(pipe)
    try:
        scheduler = family.scheduler(pipe.scheduler.config)
    except UnsupportedFamily as exc:
        raise PipelineLoadError(str(exc)) from None
    denoiser = getattr(pipe, family.denoiser)
    optional = {
        n: getattr(pipe, n, None)
        for n in ("text_encoder_2", "tokenizer_2", "text_encoder_3", "tokenizer_3")
    }
    modules = [denoiser, pipe.vae, pipe.text_encoder]
    modules += [m for n, m in optional.items() if n.startswith("text_encoder") and m is not None]
    for module in modules:
        module.to(device)
        module.requires_grad_(False)
        module.eval()
    set_autocast(denoiser, device, autocast)
    return DiffusionModel(
        unet=denoiser,
        vae=pipe.vae,
        text_encoder=pipe.text_encoder,
        tokenizer=pipe.tokenizer,
        scheduler=scheduler,
        device=device,
        dtype=dtype,
        autocast=autocast,
        family=family,
        zero_empty_prompt=bool(pipe.config.get("force_zeros_for_empty_prompt", False)),
        **optional,
    )


def is_pipeline_dir(path: str | Path) -> bool:
    return (Path(path) / "model_index.json").is_file()
