"""Stable Diffusion XL: UNet with added conditioning, two CLIP encoders, DDIM with eta.

Conditioning [N, L + 1, max(D, P)]: the two CLIP encoders' penultimate states side by side
(D, the UNet's cross-attention width) and, as the last row, the second encoder's projected
pooled embedding (width P), zero-padded. With the pipeline's force_zeros_for_empty_prompt
the empty prompt (the unconditional one) is all zeros, as StableDiffusionXLPipeline's
default negative conditioning is.
"""

from __future__ import annotations

import torch

from diffusion.families.base import cfg_call, tokens, with_pooled_row
from diffusion.families.sd import SDFamily


class SDXLFamily(SDFamily):
    """Stable Diffusion XL: UNet with added conditioning (the pooled text embedding and the
    size / crop time ids), two CLIP encoders; DDIM with eta, the step and its log-prob as
    SD's. Its UNet's LoRA names and file are SD's: `family_of_lora` reads them as `sd`, and
    either family's export loads in StableDiffusionXLPipeline."""

    name = "sdxl"
    pipeline_classes = ("StableDiffusionXLPipeline",)
    components = ("unet", "vae", "text_encoder", "tokenizer", "text_encoder_2", "tokenizer_2")

    def encode(self, model, prompts: list[str]) -> torch.Tensor:
        states = []
        for tok, enc in (
            (model.tokenizer, model.text_encoder),
            (model.tokenizer_2, model.text_encoder_2),
        ):
            ids = tokens(tok, prompts, tok.model_max_length, model.device)
            out = enc(ids, output_hidden_states=True)
            states.append(out.hidden_states[-2])
        # pooled: the last encoder's (CLIPTextModelWithProjection) projected text embedding
        packed = with_pooled_row(torch.cat(states, dim=-1), out[0])
        if model.zero_empty_prompt:
            empty = torch.tensor([p == "" for p in prompts], device=packed.device)
            packed = packed.masked_fill(empty[:, None, None], 0.0)
        return packed.to(model.dtype)

    @staticmethod
    def unpack(model, cond: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(prompt embeddings [N, L, D], pooled [N, P]) from the packed conditioning."""
        cfg = model.unet.config
        pooled = cfg.projection_class_embeddings_input_dim - 6 * cfg.addition_time_embed_dim
        return cond[:, :-1, : cfg.cross_attention_dim], cond[:, -1, :pooled]

    @staticmethod
    def time_ids(model, latents: torch.Tensor) -> torch.Tensor:
        """[N, 6]: original size, crop top-left (0, 0), target size, in pixels: the image
        size the latents decode to, as the stock pipeline's defaults."""
        scale = model.vae_scale_factor
        h, w = latents.shape[-2] * scale, latents.shape[-1] * scale
        ids = torch.tensor([h, w, 0, 0, h, w], device=latents.device, dtype=latents.dtype)
        return ids.expand(latents.shape[0], 6)

    def predict(self, model, latents, timesteps, cond, uncond, guidance_scale) -> torch.Tensor:
        def call(x, t, c):
            emb, pooled = self.unpack(model, c)
            extra = {"text_embeds": pooled, "time_ids": self.time_ids(model, x).to(pooled)}
            return model.unet(x, t, encoder_hidden_states=emb, added_cond_kwargs=extra).sample

        return cfg_call(call, latents, timesteps, cond, uncond, guidance_scale)
