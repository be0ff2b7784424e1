"""The config values of SD3.5-Medium's and FLUX.1-dev's networks, and tiny twins of them.

Written out from the published configs (the source is named at each), so nothing is
downloaded. The tiny twins keep every class and option (dual attention, QK norm, the
guidance embedding, T5) at test size: 32 px images, 16 x 16 latents.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass


@dataclass(frozen=True)
class TransformerNetworks:
    """The config values of a transformer pipeline's networks, as diffusers and transformers
    take them: the denoiser, the VAE, the CLIP encoders in pipeline order and T5."""

    image_size: int  # the side bench.gpu samples at (the transformer's own may be larger)
    transformer: dict
    vae: dict
    clip: tuple[dict, ...]
    t5: dict
    clip_length: int  # CLIP tokens
    t5_length: int  # the T5 tokenizer's model_max_length
    scheduler: dict  # FlowMatchEulerDiscreteScheduler's config


# The 16-channel VAE of SD3 / SD3.5 and FLUX.1 (their vae/config.json: 4 levels 128-512
# wide, two ResNet layers each, no quant convs); scaling and shift differ per family.
_VAE16 = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ("DownEncoderBlock2D",) * 4,
    "up_block_types": ("UpDecoderBlock2D",) * 4,
    "block_out_channels": (128, 256, 512, 512),
    "layers_per_block": 2,
    "latent_channels": 16,
    "norm_num_groups": 32,
    "act_fn": "silu",
    "sample_size": 1024,
    "use_quant_conv": False,
    "use_post_quant_conv": False,
    "mid_block_add_attention": True,
}
# CLIP ViT-L/14's text tower (openai/clip-vit-large-patch14): SD3's text_encoder, FLUX's
_CLIP_L = {
    "vocab_size": 49408,
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "max_position_embeddings": 77,
    "hidden_act": "quick_gelu",
    "projection_dim": 768,
}
# OpenCLIP ViT-bigG/14's text tower (laion/CLIP-ViT-bigG-14): SD3's text_encoder_2
_CLIP_G = {
    "vocab_size": 49408,
    "hidden_size": 1280,
    "intermediate_size": 5120,
    "num_hidden_layers": 32,
    "num_attention_heads": 20,
    "max_position_embeddings": 77,
    "hidden_act": "gelu",
    "projection_dim": 1280,
}
# T5 v1.1 XXL's encoder (google/t5-v1_1-xxl): SD3's text_encoder_3, FLUX's text_encoder_2
_T5_XXL = {
    "vocab_size": 32128,
    "d_model": 4096,
    "d_kv": 64,
    "d_ff": 10240,
    "num_layers": 24,
    "num_heads": 64,
    "feed_forward_proj": "gated-gelu",
    "relative_attention_num_buckets": 32,
    "relative_attention_max_distance": 128,
    "layer_norm_epsilon": 1e-6,
    "tie_word_embeddings": False,
}

# Stable Diffusion 3.5 Medium (stabilityai/stable-diffusion-3.5-medium, its transformer/,
# vae/, text_encoder*/ and scheduler/ configs; the transformer's values as two public
# reproductions restate its config.json, the hub file itself was not read here):
# MMDiT-X, 24 blocks 1,536 wide (24 heads of 64), dual attention in blocks 0-12, RMS
# QK-norm; 2,243,171,520 transformer parameters. Sampled at 512 px (1,024 image tokens and
# 77 + 256 text tokens), as configs/sd35m_b2.yaml trains; the transformer's own size is 1024.
SD35M = TransformerNetworks(
    image_size=512,
    transformer={
        "sample_size": 128,
        "patch_size": 2,
        "in_channels": 16,
        "out_channels": 16,
        "num_layers": 24,
        "attention_head_dim": 64,
        "num_attention_heads": 24,
        "joint_attention_dim": 4096,
        "caption_projection_dim": 1536,
        "pooled_projection_dim": 2048,
        "pos_embed_max_size": 384,
        "dual_attention_layers": tuple(range(13)),
        "qk_norm": "rms_norm",
    },
    vae={**_VAE16, "scaling_factor": 1.5305, "shift_factor": 0.0609},
    clip=(_CLIP_L, _CLIP_G),
    t5=_T5_XXL,
    clip_length=77,
    t5_length=256,
    scheduler={"num_train_timesteps": 1000, "shift": 3.0},
)

# FLUX.1-dev (black-forest-labs/FLUX.1-dev, its transformer/, vae/, text_encoder*/ and
# scheduler/ configs): 19 double-stream and 38 single-stream blocks 3,072 wide (24 heads of
# 128), 2 x 2 latent patches packed into 64 channels, the guidance embedding (guidance-
# distilled: one transformer row per latent, no CFG); 11,901,408,320 transformer
# parameters. CLIP-L gives the pooled embedding, T5-XXL (512 tokens) the sequence. Sampled
# at 512 px (1,024 image tokens and 512 text tokens).
FLUX = TransformerNetworks(
    image_size=512,
    transformer={
        "patch_size": 1,
        "in_channels": 64,
        "out_channels": None,
        "num_layers": 19,
        "num_single_layers": 38,
        "attention_head_dim": 128,
        "num_attention_heads": 24,
        "joint_attention_dim": 4096,
        "pooled_projection_dim": 768,
        "guidance_embeds": True,
        "axes_dims_rope": (16, 56, 56),
    },
    vae={**_VAE16, "scaling_factor": 0.3611, "shift_factor": 0.1159},
    clip=(_CLIP_L,),
    t5=_T5_XXL,
    clip_length=77,
    t5_length=512,
    scheduler={
        "num_train_timesteps": 1000,
        "shift": 3.0,
        "use_dynamic_shifting": True,
        "base_shift": 0.5,
        "max_shift": 1.15,
        "base_image_seq_len": 256,
        "max_image_seq_len": 4096,
    },
)


def _tiny_clip(clip: dict) -> dict:
    return {
        **clip,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "max_position_embeddings": 16,
        "projection_dim": 32,
    }


_T5_TINY = {
    **_T5_XXL,
    "vocab_size": 64,
    "d_model": 64,
    "d_kv": 8,
    "d_ff": 64,
    "num_layers": 1,
    "num_heads": 4,
}
_VAE16_TINY = {  # one 2x downsampling: 32 px images, 16 x 16 latents
    "down_block_types": ("DownEncoderBlock2D",) * 2,
    "up_block_types": ("UpDecoderBlock2D",) * 2,
    "block_out_channels": (16, 32),
    "layers_per_block": 1,
    "norm_num_groups": 8,
    "sample_size": 32,
    "mid_block_add_attention": False,
}
_TINY_TEXT = {"t5": _T5_TINY, "clip_length": 16, "t5_length": 16, "image_size": 32}

SD35M_TINY = dataclasses.replace(
    SD35M,
    transformer={
        **SD35M.transformer,
        "sample_size": 16,
        "num_layers": 2,
        "attention_head_dim": 8,
        "num_attention_heads": 4,
        "joint_attention_dim": 64,  # the two CLIP widths side by side, and T5's
        "caption_projection_dim": 32,
        "pooled_projection_dim": 64,
        "pos_embed_max_size": 16,
        "dual_attention_layers": (0,),
    },
    vae={**SD35M.vae, **_VAE16_TINY},
    clip=tuple(_tiny_clip(c) for c in SD35M.clip),
    **_TINY_TEXT,
)
FLUX_TINY = dataclasses.replace(
    FLUX,
    transformer={
        **FLUX.transformer,
        "num_layers": 1,
        "num_single_layers": 2,
        "attention_head_dim": 16,
        "num_attention_heads": 2,
        "joint_attention_dim": 64,  # T5's width
        "pooled_projection_dim": 32,  # CLIP's
        "axes_dims_rope": (4, 6, 6),
    },
    vae={**FLUX.vae, **_VAE16_TINY},
    clip=(_tiny_clip(_CLIP_L),),
    **_TINY_TEXT,
)
