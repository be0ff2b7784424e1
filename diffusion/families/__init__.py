"""Model families behind one interface: what differs between SD-1.x, SDXL, SD3 and FLUX.

A family knows its pipeline class, the components RL needs, its scheduler, how prompts
become one conditioning tensor, how the denoiser is called (with classifier-free guidance
or, for FLUX, the guidance embedding), the latent shape the sampler draws, its policy step
with log-probability and per-step loss weights, its attention projections for LoRA and the
diffusers LoRA format. The sampler and the learner call these through `DiffusionModel`
and never branch on the family.

Conditioning is always ONE tensor [N, L, D] so that the callers can index, stack, expand
and repeat it without knowing the family; each family's module documents its layout
(`sd`, `sdxl`, `sd3`, `flux`).

LoRA tensor names: SDXL's UNet names are SD's (`family_of_lora` reads them as `sd`), and a
FLUX LoRA on the double-stream blocks only has SD3's names (read as `sd3`); in both cases
the two families write the same diffusers file, which either stock pipeline loads.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from diffusion.families.base import Family, UnsupportedFamily
from diffusion.families.flux import FluxFamily
from diffusion.families.sd import SDFamily
from diffusion.families.sd3 import SD3_T5_LENGTH, SD3Family
from diffusion.families.sdxl import SDXLFamily

__all__ = [
    "FAMILIES",
    "SD3_T5_LENGTH",
    "Family",
    "FluxFamily",
    "SD3Family",
    "SDFamily",
    "SDXLFamily",
    "UnsupportedFamily",
    "denoiser_passes",
    "family_for_class",
    "family_of_dir",
    "family_of_lora",
]

FAMILIES: dict[str, Family] = {
    f.name: f for f in (SDFamily(), SD3Family(), SDXLFamily(), FluxFamily())
}


def family_for_class(class_name: str, source: str = "") -> Family:
    """The family of a diffusers pipeline class name; `source` names where it was read."""
    for family in FAMILIES.values():
        if class_name in family.pipeline_classes:
            return family
    supported = ", ".join(c for f in FAMILIES.values() for c in f.pipeline_classes)
    where = f"{source}: " if source else ""
    raise UnsupportedFamily(
        f"{where}pipeline class {class_name!r} is not supported (supported: {supported})"
    )


def family_of_dir(path: str | Path) -> Family:
    """The family of a local pipeline folder, from model_index.json's `_class_name`."""
    index = Path(path) / "model_index.json"
    try:
        class_name = json.loads(index.read_text(encoding="utf-8")).get("_class_name")
    except (OSError, ValueError, AttributeError) as exc:
        raise UnsupportedFamily(f"{index}: unreadable ({type(exc).__name__})") from None
    return family_for_class(str(class_name), str(index))


def denoiser_passes(path: str | Path, guidance_scale: float) -> int:
    """Denoiser passes per latent and step (`Family.passes`) of the pipeline folder at
    `path`, read from its model_index.json and its denoiser's config.json without loading
    weights; a path that is no local folder (a hub id) counts as classifier-free guidance."""
    path = Path(path)
    if not (path / "model_index.json").is_file():
        return FAMILIES["sd"].passes({}, guidance_scale)
    family = family_of_dir(path)
    config = path / family.denoiser / "config.json"
    try:
        denoiser = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise UnsupportedFamily(f"{config}: unreadable") from None
    return family.passes(denoiser, guidance_scale)


def family_of_lora(state: dict[str, torch.Tensor]) -> Family:
    """The family whose denoiser the LoRA tensor names belong to."""
    for family in FAMILIES.values():
        if state and all(family.owns_lora_key(k) for k in state):
            return family
    first = next(iter(state), "<empty>")
    raise UnsupportedFamily(f"LoRA tensor {first}: names no supported family's denoiser")
