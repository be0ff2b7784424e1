"""FLUX.1: a guidance-distilled MM-DiT (FluxTransformer2DModel) over 2x2-packed latents,
a CLIP encoder (pooled) and T5 (the token sequence), flow matching with a schedule shifted
by the image's size.

Latents are stored UNPACKED, [N, C, H, W] as the VAE makes them (C = 16 for FLUX.1): the
sampler draws them, the trajectories keep them and the VAE decodes them like every other
family's (divided by scaling_factor, plus shift_factor). The family packs them into the
transformer's [N, H/2 * W/2, 4C] tokens (FluxPipeline's 2x2 patches, channel-major within
a patch) around each forward and unpacks its output; packing only reorders elements, so
the flow step, its log-probability (a mean over elements) and the noise are those of the
packed latents FluxPipeline steps. Image token positions (`img_ids`) and the zero text
positions (`txt_ids`) are FluxPipeline's.

Conditioning [N, L + 1, max(J, P)]: the T5 states (width J; L = model.max_sequence_length,
else FluxPipeline's default 512) and, as the last row, CLIP's pooled output (width P),
zero-padded.

Guidance: a transformer with guidance_embeds (FLUX.1-dev) takes sampling.guidance_scale
as its guidance embedding in one forward, with no unconditional pass, as FluxPipeline
does; one without (FLUX.1-schnell) takes classifier-free guidance against the empty
prompt (FluxPipeline's true_cfg_scale with negative_prompt=""), one forward at 1.0.

Schedule: FluxPipeline's. `set_timesteps(num_steps)` uses the sigmas linspace(1, 1/N, N)
(the scheduler's own with use_flow_sigmas) and, with use_dynamic_shifting (FLUX.1's
config), the shift mu that `calculate_shift` gives for the image sequence length of the
model's latent size.
"""

from __future__ import annotations

import numpy as np
import torch
from diffusers import FlowMatchEulerDiscreteScheduler

from diffusion.families.base import cfg_call, t5_length, tokens, with_pooled_row
from diffusion.families.flowmatch import FlowFamily
from diffusion.flow import model_timesteps

# FluxPipeline's default T5 length (`max_sequence_length`)
FLUX_T5_LENGTH = 512


def pack_latents(latents: torch.Tensor) -> torch.Tensor:
    """[N, C, H, W] -> [N, H/2 * W/2, 4C]: 2x2 patches in row-major order."""
    n, c, h, w = latents.shape
    x = latents.reshape(n, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(n, (h // 2) * (w // 2), c * 4)


def unpack_latents(packed: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """The inverse of `pack_latents` for latents of height x width."""
    n, _, d = packed.shape
    x = packed.reshape(n, height // 2, width // 2, d // 4, 2, 2).permute(0, 3, 1, 4, 2, 5)
    return x.reshape(n, d // 4, height, width)


def image_ids(height: int, width: int, device, dtype) -> torch.Tensor:
    """[H/2 * W/2, 3]: each packed token's (0, row, column), FluxPipeline's img_ids."""
    rows = torch.arange(height // 2)[:, None].expand(height // 2, width // 2)
    cols = torch.arange(width // 2)[None, :].expand(height // 2, width // 2)
    ids = torch.stack([torch.zeros_like(rows), rows, cols], dim=-1).reshape(-1, 3)
    return ids.to(device=device, dtype=dtype)


def calculate_shift(config, image_seq_len: int) -> float:
    """mu, linear in the image sequence length between the config's (base_image_seq_len,
    base_shift) and (max_image_seq_len, max_shift), as FluxPipeline computes it."""
    lo, hi = config.get("base_image_seq_len", 256), config.get("max_image_seq_len", 4096)
    base, top = config.get("base_shift", 0.5), config.get("max_shift", 1.15)
    m = (top - base) / (hi - lo)
    return image_seq_len * m + (base - m * lo)


class FluxScheduler(FlowMatchEulerDiscreteScheduler):
    """FlowMatchEulerDiscreteScheduler whose `set_timesteps(num_steps)` makes FluxPipeline's
    schedule for `model`'s latent size (explicit sigmas or mu pass through unchanged)."""

    model = None  # the DiffusionModel whose latent_shape sets the image sequence length

    def set_timesteps(
        self, num_inference_steps=None, device=None, sigmas=None, mu=None, timesteps=None
    ):
        if sigmas is None and timesteps is None and mu is None:
            n = num_inference_steps
            if not self.config.get("use_flow_sigmas", False):
                sigmas = np.linspace(1.0, 1 / n, n)
            if self.config.use_dynamic_shifting:
                if self.model is None:
                    raise ValueError("the FLUX schedule needs the model's latent size")
                _, h, w = self.model.latent_shape
                mu = calculate_shift(self.config, (h // 2) * (w // 2))
        super().set_timesteps(
            num_inference_steps, device, sigmas=sigmas, mu=mu, timesteps=timesteps
        )


class FluxFamily(FlowFamily):
    """FLUX.1 (dev, schnell): FluxTransformer2DModel, CLIP (pooled) + T5, flow matching.
    The trunk follows the ODE; recorded steps take the SDE (noise level = sampling.eta)."""

    name = "flux"
    pipeline_classes = ("FluxPipeline",)
    components = (
        "transformer",
        "vae",
        "text_encoder",
        "tokenizer",
        "text_encoder_2",
        "tokenizer_2",
    )
    scheduler_class = FluxScheduler

    def bind(self, model) -> None:
        model.scheduler.model = model

    def latent_shape(self, model) -> tuple[int, int, int]:
        """(C, H, W) unpacked: the transformer's in_channels / 4; model.resolution's size,
        else the VAE's sample_size (FLUX.1's 1024 px, FluxPipeline's default)."""
        size = model.latent_size or model.vae.config.sample_size // model.vae_scale_factor
        size = (size, size) if isinstance(size, int) else tuple(size)
        return (model.unet.config.in_channels // 4, *size)

    def passes(self, denoiser_config, guidance_scale: float) -> int:
        if denoiser_config.get("guidance_embeds"):
            return 1
        return super().passes(denoiser_config, guidance_scale)

    def encode(self, model, prompts: list[str]) -> torch.Tensor:
        dev = model.device
        clip_ids = tokens(model.tokenizer, prompts, model.tokenizer.model_max_length, dev)
        pooled = model.text_encoder(clip_ids, output_hidden_states=False).pooler_output
        t5_ids = tokens(model.tokenizer_2, prompts, t5_length(model, FLUX_T5_LENGTH), dev)
        states = model.text_encoder_2(t5_ids, output_hidden_states=False)[0]
        return with_pooled_row(states, pooled.to(states)).to(model.dtype)

    def predict(self, model, latents, timesteps, cond, uncond, guidance_scale) -> torch.Tensor:
        t = model_timesteps(model.scheduler, timesteps.cpu(), latents.shape[0])
        t = t.to(latents.device)
        _, _, h, w = latents.shape
        img_ids = image_ids(h, w, latents.device, latents.dtype)
        distilled = model.unet.config.guidance_embeds

        def call(x, ts, c):
            emb, pooled = self.unpack(model, c)
            guidance = None
            if distilled:
                guidance = torch.full((x.shape[0],), guidance_scale, device=x.device)
            out = model.unet(
                hidden_states=pack_latents(x),
                timestep=ts.to(x.dtype) / 1000,
                guidance=guidance,
                pooled_projections=pooled,
                encoder_hidden_states=emb,
                txt_ids=torch.zeros(emb.shape[1], 3, device=x.device, dtype=x.dtype),
                img_ids=img_ids,
                return_dict=False,
            )[0]
            return unpack_latents(out, h, w)

        if distilled:
            return call(latents, t, cond)
        return cfg_call(call, latents, t, cond, uncond, guidance_scale)

    def owns_lora_key(self, key: str) -> bool:
        return key.startswith(("transformer_blocks.", "single_transformer_blocks."))
