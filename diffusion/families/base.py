"""What every model family shares: the one-line error, tokenising, classifier-free guidance,
packing the conditioning rows, and the interface `Family` with the defaults a family
overrides."""

from __future__ import annotations

import diffusers
import torch
import torch.nn.functional as F


class UnsupportedFamily(ValueError):
    """A pipeline of a class no family handles; str() is a one-line message."""


def tokens(tokenizer, prompts: list[str], max_length: int, device) -> torch.Tensor:
    return tokenizer(
        list(prompts),
        padding="max_length",
        max_length=max_length,
        truncation=True,
        return_tensors="pt",
    ).input_ids.to(device)


def t5_length(model, default: int) -> int:
    """The T5 tokens of the text sequence: model.max_sequence_length, else the family's."""
    length = getattr(model, "max_sequence_length", None)
    return default if length is None else length


def cfg_call(call, latents, timesteps, cond, uncond, guidance_scale):
    """Classifier-free guidance around `call(latents, timesteps, cond)`; uncond first."""
    if guidance_scale == 1.0:
        return call(latents, timesteps, cond)
    out = call(
        torch.cat([latents, latents]),
        torch.cat([timesteps, timesteps]),
        torch.cat([uncond, cond]),
    )
    out_uncond, out_cond = out.chunk(2)
    return out_uncond + guidance_scale * (out_cond - out_uncond)


def with_pooled_row(states: torch.Tensor, pooled: torch.Tensor) -> torch.Tensor:
    """[N, L + 1, max(D, P)]: the token states [N, L, D] and, as the last row, the pooled
    embedding [N, P], both zero-padded to the wider of the two."""
    width = max(states.shape[-1], pooled.shape[-1])
    return torch.cat(
        [
            F.pad(states, (0, width - states.shape[-1])),
            F.pad(pooled, (0, width - pooled.shape[-1]))[:, None],
        ],
        dim=1,
    )


class Family:
    """The interface `DiffusionModel` calls, with the defaults most families keep. `model`
    is always the `DiffusionModel`; its denoiser is `model.unet` whatever its architecture."""

    name: str
    pipeline_classes: tuple[str, ...]  # the first is the one that saves the family's LoRA
    denoiser: str  # the pipeline's attribute: "unet" or "transformer"
    components: tuple[str, ...]
    optional: tuple[str, ...] = ()  # components a folder may leave out
    lora_targets: tuple[str, ...]

    def scheduler(self, config):
        """The policy scheduler, built from the pipeline's scheduler config."""
        raise NotImplementedError

    def bind(self, model) -> None:
        """Links a family needs between the model's parts, made once the model exists."""

    def latent_shape(self, model) -> tuple[int, int, int]:
        """(channels, height, width) of one latent as the sampler draws and stores it:
        model.resolution's size, else the denoiser's sample_size."""
        size = model.latent_size or model.unet.config.sample_size
        size = (size, size) if isinstance(size, int) else tuple(size)
        return (model.unet.config.in_channels, *size)

    def passes(self, denoiser_config, guidance_scale: float) -> int:
        """Latents through the denoiser per latent and step, given its config: two with
        classifier-free guidance (the unconditional and the conditional), else one."""
        return 1 if guidance_scale == 1.0 else 2

    def encode(self, model, prompts: list[str]) -> torch.Tensor:
        """The conditioning [N, L, D] of the prompts, one tensor (layout: the family's)."""
        raise NotImplementedError

    def predict(self, model, latents, timesteps, cond, uncond, guidance_scale) -> torch.Tensor:
        """The guided denoiser output for `latents` at the integer `timesteps`."""
        raise NotImplementedError

    def step(
        self, model, output, timestep, sample, eta, noise=None, prev_sample=None, recorded=True
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """One policy step: (next latent, its log-prob [N] or None when not recorded)."""
        raise NotImplementedError

    def noise_step_weights(self, scheduler, eta: float) -> torch.Tensor:
        """loss.step_weight=noise: the weight of every inference step of `scheduler`."""
        raise NotImplementedError

    def save_lora(self, layers: dict[str, torch.Tensor], metadata: dict, out_dir, name) -> None:
        """Write the denoiser's LoRA `layers` and its PEFT `metadata` as the diffusers file
        `out_dir`/`name` that the family's stock pipeline loads."""
        raise NotImplementedError

    def owns_lora_key(self, key: str) -> bool:
        """Whether a LoRA tensor name belongs to this family's denoiser."""
        raise NotImplementedError

    def pipeline_class(self) -> type:
        """The diffusers pipeline class that saves this family's LoRA files."""
        return getattr(diffusers, self.pipeline_classes[0])
