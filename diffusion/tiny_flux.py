"""A tiny random FLUX.1 pipeline from configs, no download (the other families:
`diffusion.tiny`)."""

from __future__ import annotations

import torch
from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
from transformers import CLIPTextModel

from diffusion.tiny import clip_tokenizer, tiny_clip_config, tiny_t5, tiny_t5_tokenizer, tiny_vae16


def flux_scheduler() -> FlowMatchEulerDiscreteScheduler:
    """FLUX.1's scheduler config: 1000 training steps, the shift mu computed from the image
    sequence length (dynamic shifting between 0.5 at 256 tokens and 1.15 at 4096)."""
    return FlowMatchEulerDiscreteScheduler(
        num_train_timesteps=1000,
        shift=3.0,
        use_dynamic_shifting=True,
        base_image_seq_len=256,
        max_image_seq_len=4096,
        base_shift=0.5,
        max_shift=1.15,
    )


def tiny_flux_pipeline(
    image_size: int = 32,
    heads: int = 2,
    head_dim: int = 16,
    layers: int = 1,
    single_layers: int = 1,
    text_width: int = 32,
    max_length: int = 16,
    seed: int = 0,
    guidance_embeds: bool = True,
) -> FluxPipeline:
    """A random FLUX.1 pipeline: FluxTransformer2DModel (double- and single-stream blocks,
    the guidance embedding of FLUX.1-dev unless `guidance_embeds` is False, as schnell), a
    VAE with FLUX's 16 latent channels, scaling and shift and one 2x downsampling (latents
    image/2, 2x2-packed into (image/4)^2 tokens of 64 channels), a CLIP text encoder (its
    pooled output the pooled projection) and a one-layer T5 encoder of the joint attention
    width; CLIP's BPE tokenizer (`clip_tokenizer`) and the tiny T5 tokenizer."""
    torch.manual_seed(seed)
    vae = tiny_vae16(image_size, scaling_factor=0.3611, shift_factor=0.1159)
    # rotary axes (index, row, column) of the head width, as FLUX.1's (16, 56, 56) of 128
    rope = (head_dim // 4, 3 * head_dim // 8, 3 * head_dim // 8)
    transformer = FluxTransformer2DModel(
        patch_size=1,
        in_channels=64,
        num_layers=layers,
        num_single_layers=single_layers,
        attention_head_dim=head_dim,
        num_attention_heads=heads,
        joint_attention_dim=text_width,
        pooled_projection_dim=text_width,
        guidance_embeds=guidance_embeds,
        axes_dims_rope=rope,
    )
    return FluxPipeline(
        scheduler=flux_scheduler(),
        vae=vae,
        text_encoder=CLIPTextModel(tiny_clip_config(text_width, max_length)),
        tokenizer=clip_tokenizer(max_length),
        text_encoder_2=tiny_t5(text_width, ffn=2 * text_width),
        tokenizer_2=tiny_t5_tokenizer(),
        transformer=transformer,
    )
