"""Stable Diffusion 1.x / 2.x: UNet, one CLIP text encoder, DDIM with eta.

Conditioning: the text encoder's last hidden state [N, L, D].
"""

from __future__ import annotations

import torch
from diffusers import DDIMScheduler
from diffusers.utils import convert_state_dict_to_diffusers

from diffusion import ddim
from diffusion.ddim import ddim_step_with_logprob
from diffusion.families.base import Family, cfg_call, tokens


class SDFamily(Family):
    """Stable Diffusion 1.x / 2.x: UNet, one CLIP text encoder, DDIM with eta."""

    name = "sd"
    pipeline_classes = ("StableDiffusionPipeline",)
    denoiser = "unet"
    components = ("unet", "vae", "text_encoder", "tokenizer")
    lora_targets = ("to_q", "to_k", "to_v", "to_out.0")

    def scheduler(self, config) -> DDIMScheduler:
        return DDIMScheduler.from_config(config)

    def encode(self, model, prompts: list[str]) -> torch.Tensor:
        ids = tokens(model.tokenizer, prompts, model.tokenizer.model_max_length, model.device)
        return model.text_encoder(ids)[0].to(model.dtype)

    def predict(self, model, latents, timesteps, cond, uncond, guidance_scale) -> torch.Tensor:
        def call(x, t, c):
            return model.unet(x, t, encoder_hidden_states=c).sample

        return cfg_call(call, latents, timesteps, cond, uncond, guidance_scale)

    def step(
        self, model, output, timestep, sample, eta, noise=None, prev_sample=None, recorded=True
    ):
        # every DDIM step is stochastic (eta), recorded or not
        return ddim_step_with_logprob(
            model.scheduler,
            output,
            timestep,
            sample,
            eta=eta,
            noise=noise,
            prev_sample=prev_sample,
        )

    def noise_step_weights(self, scheduler, eta: float) -> torch.Tensor:
        return ddim.noise_step_weights(scheduler, eta)

    def save_lora(self, layers: dict[str, torch.Tensor], metadata: dict, out_dir, name) -> None:
        self.pipeline_class().save_lora_weights(
            save_directory=str(out_dir),
            unet_lora_layers=convert_state_dict_to_diffusers(layers),
            safe_serialization=True,
            weight_name=name,
            unet_lora_adapter_metadata=metadata,
        )

    def owns_lora_key(self, key: str) -> bool:
        return key.startswith(("down_blocks.", "mid_block.", "up_blocks."))
