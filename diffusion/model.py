"""The loaded text-to-image model as sampling and training address it: the denoiser, text
encoders, VAE and policy scheduler, with the family doing what differs between
architectures (`diffusion.pipeline` builds it from a diffusers pipeline)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from diffusion.families import Family, SDFamily


@dataclass
class DiffusionModel:
    """The pieces of a text-to-image pipeline that sampling and training use.

    `unet` is the denoiser whatever its architecture (SD3, FLUX: the transformer), so that
    LoRA, autocast and checkpointing code addresses one module; `family` does what differs."""

    unet: torch.nn.Module
    vae: torch.nn.Module
    text_encoder: torch.nn.Module
    tokenizer: object
    scheduler: object  # the family's: DDIM (sd, sdxl), flow-matching Euler (sd3, flux)
    device: torch.device
    dtype: torch.dtype
    autocast: torch.dtype | None = None  # what the denoiser computes in under torch.autocast
    family: Family = field(default_factory=SDFamily)
    text_encoder_2: torch.nn.Module | None = None
    tokenizer_2: object = None
    text_encoder_3: torch.nn.Module | None = None
    tokenizer_3: object = None
    # the pipeline's force_zeros_for_empty_prompt (SDXL): the empty prompt encodes to zeros
    zero_empty_prompt: bool = False
    latent_size: tuple[int, int] | None = None  # model.resolution's; None: the denoiser's
    max_sequence_length: int | None = None  # model.max_sequence_length; None: the family's

    @property
    def compute_dtype(self) -> torch.dtype:
        """The precision of the UNet's arithmetic: the autocast type, else the weights'."""
        return self.autocast or self.dtype

    def __post_init__(self) -> None:
        self.family.bind(self)

    @property
    def vae_scale_factor(self) -> int:
        """Pixels per latent along a side: the VAE downsamples by 2 per block after the first."""
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        """One latent as the sampler draws it and the trajectories store it (the family's)."""
        return self.family.latent_shape(self)

    def passes(self, guidance_scale: float) -> int:
        """Latents through the denoiser per latent and step at this guidance scale."""
        return self.family.passes(self.unet.config, guidance_scale)

    @torch.no_grad()
    def encode_prompts(self, prompts: list[str]) -> torch.Tensor:
        """The conditioning [N, L, D] of the denoiser (its layout: `diffusion.families`)."""
        return self.family.encode(self, prompts)

    def predict(
        self,
        latents: torch.Tensor,
        timesteps: torch.Tensor,
        cond: torch.Tensor,
        uncond: torch.Tensor,
        guidance_scale: float,
    ) -> torch.Tensor:
        """The guided denoiser output at the given (integer) timesteps: classifier-free
        guidance, or FLUX.1-dev's guidance embedding."""
        return self.family.predict(self, latents, timesteps, cond, uncond, guidance_scale)

    def step(
        self,
        output: torch.Tensor,
        timestep: torch.Tensor | int,
        sample: torch.Tensor,
        eta: float,
        noise: torch.Tensor | None = None,
        prev_sample: torch.Tensor | None = None,
        recorded: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """One policy step: (next latent, its log-prob [N], mean over dims). Recorded steps
        are the ones trained; a family may take unrecorded ones deterministically (the
        log-prob is then None). `eta`: DDIM's eta (sd, sdxl), the SDE noise level (sd3, flux)."""
        return self.family.step(
            self,
            output,
            timestep,
            sample,
            eta,
            noise=noise,
            prev_sample=prev_sample,
            recorded=recorded,
        )

    def noise_step_weights(self, eta: float) -> torch.Tensor:
        """loss.step_weight=noise: the weight of every inference step (timesteps set)."""
        return self.family.noise_step_weights(self.scheduler, eta)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor, micro_batch: int = 32) -> torch.Tensor:
        """Latents -> uint8 images [N, 3, H, W]."""
        out = []
        scale = self.vae.config.scaling_factor
        shift = getattr(self.vae.config, "shift_factor", None) or 0.0
        for chunk in latents.split(micro_batch):
            img = self.vae.decode(chunk.to(self.vae.dtype) / scale + shift).sample
            out.append(((img.float() / 2 + 0.5).clamp(0, 1) * 255).round().to(torch.uint8))
        return torch.cat(out).cpu()
