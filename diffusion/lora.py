"""LoRA on the denoiser's attention projections (peft), its transport and its export.

Transport is a flat {name: tensor} dict of the LoRA parameters only (what the learner
`ray.put`s); export is diffusers' own format (`pytorch_lora_weights.safetensors`), which
the stock pipeline of the model's family reads with `load_lora_weights`
(`StableDiffusionPipeline`, `StableDiffusionXLPipeline`, `StableDiffusion3Pipeline`,
`FluxPipeline`).
"""

from __future__ import annotations

from pathlib import Path

import torch
from peft import LoraConfig as PeftLoraConfig

from configs.schema import LoraConfig
from diffusion.families import UnsupportedFamily, family_of_lora

LORA_WEIGHTS_NAME = "pytorch_lora_weights.safetensors"


class LoraShapeError(ValueError):
    """LoRA weights that do not fit the model; str() names the tensor."""


def attach_lora(unet: torch.nn.Module, cfg: LoraConfig, seed: int = 0) -> None:
    """Freeze the denoiser and add a trainable LoRA adapter.

    B starts at zero, so the adapted denoiser equals the base model until the first update;
    the seed fixes A so that every process builds the same adapter.
    """
    unet.requires_grad_(False)
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        unet.add_adapter(peft_config(cfg))
    finally:
        torch.random.set_rng_state(state)


def lora_parameters(unet: torch.nn.Module) -> list[torch.nn.Parameter]:
    return [p for n, p in unet.named_parameters() if "lora_" in n]


def lora_state(unet: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The LoRA parameters as a flat CPU tensor dict (for transport and checkpoints)."""
    return {n: p.detach().to("cpu", copy=True) for n, p in unet.named_parameters() if "lora_" in n}


@torch.no_grad()
def load_lora_state(
    unet: torch.nn.Module, state: dict[str, torch.Tensor], source: str = ""
) -> None:
    """Copy a flat LoRA dict into the UNet's adapter; refuses missing, extra or misshapen keys."""
    where = f"{source}: " if source else ""
    params = {n: p for n, p in unet.named_parameters() if "lora_" in n}
    missing = sorted(set(params) - set(state))
    extra = sorted(set(state) - set(params))
    if missing or extra:
        name = (missing or extra)[0]
        what = "missing" if missing else "not in the model"
        raise LoraShapeError(
            f"{where}LoRA tensor {name} is {what} ({len(missing)} missing, {len(extra)} extra)"
        )
    for name, p in params.items():
        t = state[name]
        if tuple(t.shape) != tuple(p.shape):
            raise LoraShapeError(
                f"{where}LoRA tensor {name} has shape {tuple(t.shape)}, "
                f"the model needs {tuple(p.shape)}"
            )
        p.copy_(t.to(p.device, p.dtype))


def peft_config(cfg: LoraConfig) -> PeftLoraConfig:
    return PeftLoraConfig(
        r=cfg.rank,
        lora_alpha=cfg.alpha if cfg.alpha is not None else cfg.rank,
        init_lora_weights="gaussian",
        target_modules=list(cfg.targets),
    )


def export_lora(
    state: dict[str, torch.Tensor], cfg: LoraConfig, out_dir: str | Path, family=None
) -> Path:
    """Write a flat LoRA dict as `pytorch_lora_weights.safetensors` in diffusers' format.

    Works without the model, so the driver can export what the learner published; the
    family (`diffusion.families`) is read off the tensor names unless given.
    """
    if family is None:
        try:
            family = family_of_lora(state)
        except UnsupportedFamily as exc:
            raise LoraShapeError(str(exc)) from None
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # peft names carry the adapter ("...to_q.lora_A.default.weight"); the file does not
    plain = {k.replace(".default.", "."): v.contiguous() for k, v in state.items()}
    # rank and alpha travel in the file's metadata, so a scale alpha/rank != 1 survives
    family.save_lora(plain, peft_config(cfg).to_dict(), out_dir, LORA_WEIGHTS_NAME)
    return out_dir / LORA_WEIGHTS_NAME
