"""Build small Stable-Diffusion-shaped pipelines (SD-1.x, SDXL, SD3) from configs, no download
(FLUX: `diffusion.tiny_flux`).

Used by the test fixtures (random weights) and by the toy world's builder (which then
trains them). Their tokenizers are built offline (`diffusion.tiny_tokenizers`); the CLIP one
is the real CLIP BPE tokenizer, so token ids match Stable Diffusion's.
"""

from __future__ import annotations

import torch
from diffusers import (
    AutoencoderKL,
    DDIMScheduler,
    FlowMatchEulerDiscreteScheduler,
    SD3Transformer2DModel,
    StableDiffusion3Pipeline,
    StableDiffusionPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from transformers import (
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTextModelWithProjection,
    T5Config,
    T5EncoderModel,
)

from diffusion.tiny_tokenizers import clip_tokenizer, tiny_t5_tokenizer


def sd_scheduler(prediction_type: str = "epsilon") -> DDIMScheduler:
    """Stable Diffusion's DDIM scheduler config (scaled-linear betas 0.00085 -> 0.012)."""
    return DDIMScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
        prediction_type=prediction_type,
    )


def tiny_pipeline(
    image_size: int = 32,
    unet_channels: tuple[int, ...] = (32, 64),
    text_width: int = 32,
    text_layers: int = 2,
    max_length: int = 16,
    seed: int = 0,
    prediction_type: str = "epsilon",
) -> StableDiffusionPipeline:
    """A random Stable Diffusion pipeline: VAE with one 2x downsampling (latents image/2,
    4 channels), cross-attention only at the lowest-resolution UNet levels."""
    torch.manual_seed(seed)
    vae = tiny_vae(image_size, latent_channels=4)
    n = len(unet_channels)
    unet = UNet2DConditionModel(
        sample_size=image_size // 2,
        in_channels=4,
        out_channels=4,
        block_out_channels=unet_channels,
        down_block_types=("DownBlock2D",) * (n - 1) + ("CrossAttnDownBlock2D",),
        up_block_types=("CrossAttnUpBlock2D",) + ("UpBlock2D",) * (n - 1),
        layers_per_block=1,
        cross_attention_dim=text_width,
        attention_head_dim=8,
        norm_num_groups=8,
    )
    text_encoder = CLIPTextModel(tiny_clip_config(text_width, max_length, text_layers))
    scheduler = sd_scheduler(prediction_type)
    return StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=clip_tokenizer(max_length),
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def sd3_scheduler(shift: float = 3.0) -> FlowMatchEulerDiscreteScheduler:
    """SD3's flow-matching Euler scheduler config (1000 training steps, shift 3)."""
    return FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=shift)


def tiny_vae(image_size: int, **family) -> AutoencoderKL:
    """A VAE with one 2x downsampling (latents image/2) and the family's latent channels,
    scaling and shift (`family`: AutoencoderKL's arguments)."""
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        block_out_channels=(16, 32),
        layers_per_block=1,
        norm_num_groups=8,
        sample_size=image_size,
        mid_block_add_attention=False,
        **family,
    )


def tiny_vae16(image_size: int, scaling_factor: float, shift_factor: float) -> AutoencoderKL:
    """`tiny_vae` with the 16 latent channels of SD3 and FLUX.1 and no quant convs."""
    return tiny_vae(
        image_size,
        latent_channels=16,
        scaling_factor=scaling_factor,
        shift_factor=shift_factor,
        use_quant_conv=False,
        use_post_quant_conv=False,
    )


def tiny_clip_config(width: int, max_length: int, layers: int = 2, **extra) -> CLIPTextConfig:
    """A small CLIP text encoder's config on CLIP's vocabulary: 4 heads, the feed-forward
    twice the width (`extra`: more CLIPTextConfig arguments, e.g. projection_dim)."""
    return CLIPTextConfig(
        vocab_size=49408,
        hidden_size=width,
        intermediate_size=width * 2,
        num_hidden_layers=layers,
        num_attention_heads=4,
        max_position_embeddings=max_length,
        **extra,
    )


def tiny_t5(width: int, ffn: int) -> T5EncoderModel:
    """A one-layer T5 encoder `width` wide over the 64 ids of `tiny_t5_tokenizer`."""
    return T5EncoderModel(
        T5Config(vocab_size=64, d_model=width, d_kv=8, d_ff=ffn, num_layers=1, num_heads=4)
    )


def tiny_sd3_pipeline(
    image_size: int = 32,
    width: int = 32,
    layers: int = 2,
    text_width: int = 32,
    max_length: int = 16,
    seed: int = 0,
    t5: bool = False,
) -> StableDiffusion3Pipeline:
    """A random SD3 pipeline: MM-DiT transformer (patch 2), a VAE with SD3's 16 latent
    channels, scaling and shift and one 2x downsampling (latents image/2), two CLIP text
    encoders with projection (their widths side by side fill the joint attention width;
    their pooled outputs the pooled projection) and, with `t5`, a one-layer T5 encoder of
    the joint attention width (else none, as diffusers allows)."""
    torch.manual_seed(seed)
    vae = tiny_vae16(image_size, scaling_factor=1.5305, shift_factor=0.0609)
    heads = 4
    transformer = SD3Transformer2DModel(
        sample_size=image_size // 2,
        patch_size=2,
        in_channels=16,
        out_channels=16,
        num_layers=layers,
        attention_head_dim=width // heads,
        num_attention_heads=heads,
        joint_attention_dim=2 * text_width,
        caption_projection_dim=width,
        pooled_projection_dim=2 * text_width,
        pos_embed_max_size=image_size // 2,
    )
    encoders = [
        CLIPTextModelWithProjection(
            tiny_clip_config(text_width, max_length, projection_dim=text_width)
        )
        for _ in range(2)
    ]
    text_encoder_3 = tokenizer_3 = None
    if t5:
        text_encoder_3 = tiny_t5(2 * text_width, ffn=2 * text_width)
        tokenizer_3 = tiny_t5_tokenizer()
    tokenizer = clip_tokenizer(max_length)  # SD3's two CLIP tokenizers are the same BPE
    return StableDiffusion3Pipeline(
        transformer=transformer,
        scheduler=sd3_scheduler(),
        vae=vae,
        text_encoder=encoders[0],
        tokenizer=tokenizer,
        text_encoder_2=encoders[1],
        tokenizer_2=tokenizer,
        text_encoder_3=text_encoder_3,
        tokenizer_3=tokenizer_3,
    )


def tiny_sdxl_pipeline(
    image_size: int = 32,
    unet_channels: tuple[int, ...] = (32, 64),
    text_widths: tuple[int, int] = (32, 48),
    projection_dim: int = 40,
    time_embed_dim: int = 8,
    max_length: int = 16,
    seed: int = 0,
) -> StableDiffusionXLPipeline:
    """A random SDXL pipeline: SDXL's UNet layout (text_time added conditioning, linear
    attention projections, two transformer layers at the lowest level), a VAE with SDXL's
    scaling and one 2x downsampling (latents image/2, 4 channels), CLIPTextModel and
    CLIPTextModelWithProjection of different widths (their states side by side are the
    cross-attention width; the second's projection the pooled embedding), DDIM."""
    torch.manual_seed(seed)
    vae = tiny_vae(image_size, latent_channels=4, scaling_factor=0.13025)
    n = len(unet_channels)
    unet = UNet2DConditionModel(
        sample_size=image_size // 2,
        in_channels=4,
        out_channels=4,
        block_out_channels=unet_channels,
        down_block_types=("DownBlock2D",) * (n - 1) + ("CrossAttnDownBlock2D",),
        up_block_types=("CrossAttnUpBlock2D",) + ("UpBlock2D",) * (n - 1),
        layers_per_block=1,
        transformer_layers_per_block=(1,) * (n - 1) + (2,),
        cross_attention_dim=sum(text_widths),
        attention_head_dim=8,
        norm_num_groups=8,
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=time_embed_dim,
        projection_class_embeddings_input_dim=6 * time_embed_dim + projection_dim,
    )
    clip = [tiny_clip_config(w, max_length, projection_dim=projection_dim) for w in text_widths]
    return StableDiffusionXLPipeline(
        vae=vae,
        text_encoder=CLIPTextModel(clip[0]),
        text_encoder_2=CLIPTextModelWithProjection(clip[1]),
        tokenizer=clip_tokenizer(max_length),
        tokenizer_2=clip_tokenizer(max_length, pad_token="!"),
        unet=unet,
        scheduler=sd_scheduler(),
        force_zeros_for_empty_prompt=True,
        add_watermarker=False,
    )
