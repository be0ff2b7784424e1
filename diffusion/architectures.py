"""Pipelines of known architectures with random weights, written without a download.

`python -m diffusion.architectures --arch ARCH --out DIR` writes a diffusers pipeline folder
that loads with the project's loader and with the family's stock pipeline:

  sd15          Stable Diffusion 1.5's architecture (`SD15`; about 4.3 GB in float32),
                `StableDiffusionPipeline.from_pretrained(DIR)`
  sd15-reduced  the same block structure at a fraction of the width and 64 px, so that an
                SD-shaped run goes end to end on a CPU (the default):
                python -m learner.main --config configs/sd14_b2.yaml --set model.pretrained=DIR
  sd3-tiny      the tiny SD3 of `diffusion.tiny` (no T5; 32 px, 16-channel 16 x 16 latents),
                `StableDiffusion3Pipeline.from_pretrained(DIR, text_encoder_3=None,
                tokenizer_3=None)`
  sdxl-tiny     the tiny SDXL of `diffusion.tiny` (32 px, 4-channel 16 x 16 latents, DDIM),
                `StableDiffusionXLPipeline.from_pretrained(DIR)`
  flux-tiny     the tiny FLUX.1 of `diffusion.tiny_flux` (guidance-distilled as FLUX.1-dev;
                32 px, 16-channel 16 x 16 latents, 64 packed tokens),
                `FluxPipeline.from_pretrained(DIR)`
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import AutoencoderKL, StableDiffusionPipeline, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel

from diffusion.tiny import clip_tokenizer, sd_scheduler, tiny_sd3_pipeline, tiny_sdxl_pipeline
from diffusion.tiny_flux import tiny_flux_pipeline


@dataclass(frozen=True)
class Networks:
    """The config values of the UNet, the VAE and the CLIP text encoder."""

    image_size: int
    unet_channels: tuple[int, ...]
    unet_down: tuple[str, ...]
    unet_up: tuple[str, ...]
    unet_layers: int
    attention_head_dim: int
    norm_groups: int
    vae_channels: tuple[int, ...]
    vae_layers: int
    vae_mid_attention: bool
    text_width: int
    text_layers: int
    text_heads: int
    text_ffn: int
    max_length: int

    @property
    def latent_size(self) -> int:
        return self.image_size // 2 ** (len(self.vae_channels) - 1)


# Stable Diffusion 1.5 (runwayml/stable-diffusion-v1-5): its unet/, vae/, text_encoder/ configs
SD15 = Networks(
    image_size=512,
    unet_channels=(320, 640, 1280, 1280),
    unet_down=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
    unet_up=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
    unet_layers=2,
    attention_head_dim=8,
    norm_groups=32,
    vae_channels=(128, 256, 512, 512),
    vae_layers=2,
    vae_mid_attention=True,
    text_width=768,
    text_layers=12,
    text_heads=12,
    text_ffn=3072,
    max_length=77,
)

# SD 1.5's blocks, layers and tokenizer at a tenth of the width and 64 px (8 x 8 latents)
SD15_REDUCED = Networks(
    image_size=64,
    unet_channels=(32, 64, 128, 128),
    unet_down=SD15.unet_down,
    unet_up=SD15.unet_up,
    unet_layers=2,
    attention_head_dim=8,
    norm_groups=8,
    vae_channels=(16, 32, 64, 64),
    vae_layers=2,
    vae_mid_attention=True,
    text_width=64,
    text_layers=12,
    text_heads=4,
    text_ffn=256,
    max_length=77,
)

ARCHITECTURES = {"sd15": SD15, "sd15-reduced": SD15_REDUCED}


def build_networks(net: Networks) -> tuple[UNet2DConditionModel, AutoencoderKL, CLIPTextModel]:
    """The three networks with random weights, on the current default device."""
    unet = UNet2DConditionModel(
        sample_size=net.latent_size,
        in_channels=4,
        out_channels=4,
        block_out_channels=net.unet_channels,
        down_block_types=net.unet_down,
        up_block_types=net.unet_up,
        layers_per_block=net.unet_layers,
        cross_attention_dim=net.text_width,
        attention_head_dim=net.attention_head_dim,
        norm_num_groups=net.norm_groups,
        act_fn="silu",
        flip_sin_to_cos=True,
        freq_shift=0,
        downsample_padding=1,
        mid_block_scale_factor=1,
        norm_eps=1e-5,
    )
    n = len(net.vae_channels)
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * n,
        up_block_types=("UpDecoderBlock2D",) * n,
        block_out_channels=net.vae_channels,
        layers_per_block=net.vae_layers,
        latent_channels=4,
        norm_num_groups=net.norm_groups,
        sample_size=net.image_size,
        scaling_factor=0.18215,
        act_fn="silu",
        mid_block_add_attention=net.vae_mid_attention,
    )
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=49408,
            hidden_size=net.text_width,
            intermediate_size=net.text_ffn,
            num_hidden_layers=net.text_layers,
            num_attention_heads=net.text_heads,
            max_position_embeddings=net.max_length,
            hidden_act="quick_gelu",
            layer_norm_eps=1e-5,
            projection_dim=net.text_width,
        )
    )
    return unet, vae, text_encoder


def random_pipeline(net: Networks, seed: int = 0) -> StableDiffusionPipeline:
    """A Stable Diffusion pipeline of `net` with random weights (DDIM, SD's tokenizer)."""
    torch.manual_seed(seed)
    unet, vae, text_encoder = build_networks(net)
    return StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=clip_tokenizer(net.max_length),
        unet=unet,
        scheduler=sd_scheduler(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m diffusion.architectures", description=__doc__.split("\n")[0]
    )
    tiny = {
        "sd3-tiny": tiny_sd3_pipeline,
        "sdxl-tiny": tiny_sdxl_pipeline,
        "flux-tiny": tiny_flux_pipeline,
    }
    p.add_argument("--arch", choices=[*sorted(ARCHITECTURES), *tiny], default="sd15-reduced")
    p.add_argument("--out", type=Path, required=True, help="the pipeline folder to write")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.out.exists() and (not args.out.is_dir() or any(args.out.iterdir())):
        print(f"error: --out {args.out} exists and is not an empty folder", file=sys.stderr)
        return 2
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=args.out.parent, prefix=f".{args.out.name}-") as tmp:
        if args.arch in tiny:
            pipe = tiny[args.arch](seed=args.seed)
        else:
            pipe = random_pipeline(ARCHITECTURES[args.arch], args.seed)
        pipe.save_pretrained(tmp)
        if args.out.exists():
            args.out.rmdir()
        os.rename(tmp, args.out)  # whole or not at all
        Path(tmp).mkdir()  # for the context manager's cleanup
    print(f"wrote a random {args.arch} pipeline to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
