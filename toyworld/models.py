"""The toy diffusion pipeline's parts, built from diffusers / transformers classes.

32 px images; a VAE with one 2x downsampling (4 x 16 x 16 latents); a UNet with plain
ResNet blocks at 16 x 16 and cross-attention only at 8 x 8 (CPU speed: attention over
256 positions is what makes a 32 x 32 latent slow); a small CLIPTextModel read through the
real CLIP BPE tokenizer; the same DDIM scheduler as `diffusion.tiny.tiny_pipeline`.
The builder trains these parts; this module only shapes them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from diffusers import AutoencoderKL, StableDiffusionPipeline, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

from diffusion.tiny import clip_tokenizer, sd_scheduler


@dataclass(frozen=True)
class PipelineSize:
    image_size: int = 32
    vae_channels: tuple[int, ...] = (16, 32)
    unet_channels: tuple[int, ...] = (32, 64)
    unet_layers: int = 1
    attention_head_dim: int = 8
    text_width: int = 32  # also the UNet's cross_attention_dim
    text_layers: int = 2
    max_length: int = 16  # tokens; the longest toy caption needs 11
    top_attention: bool = False  # cross-attention at the full latent resolution too

    @property
    def latent_size(self) -> int:
        return self.image_size // 2 ** (len(self.vae_channels) - 1)

    def as_dict(self) -> dict:
        return asdict(self)


MICRO = PipelineSize(vae_channels=(8, 16), unet_channels=(16, 32), text_width=16, text_layers=1)


def build_vae(size: PipelineSize) -> AutoencoderKL:
    n = len(size.vae_channels)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * n,
        up_block_types=("UpDecoderBlock2D",) * n,
        block_out_channels=size.vae_channels,
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=8,
        sample_size=size.image_size,
        mid_block_add_attention=False,
    )


def build_unet(size: PipelineSize) -> UNet2DConditionModel:
    n = len(size.unet_channels)
    top = "CrossAttn" if size.top_attention else ""
    return UNet2DConditionModel(
        sample_size=size.latent_size,
        in_channels=4,
        out_channels=4,
        block_out_channels=size.unet_channels,
        down_block_types=(top + "DownBlock2D",) + ("CrossAttnDownBlock2D",) * (n - 1),
        up_block_types=("CrossAttnUpBlock2D",) * (n - 1) + (top + "UpBlock2D",),
        layers_per_block=size.unet_layers,
        cross_attention_dim=size.text_width,
        attention_head_dim=size.attention_head_dim,
        norm_num_groups=8,
    )


def build_text_encoder(size: PipelineSize) -> CLIPTextModel:
    return CLIPTextModel(
        CLIPTextConfig(
            vocab_size=49408,  # the CLIP BPE vocabulary: token ids as in Stable Diffusion
            hidden_size=size.text_width,
            intermediate_size=size.text_width * 4,
            num_hidden_layers=size.text_layers,
            num_attention_heads=4,
            max_position_embeddings=size.max_length,
        )
    )


def assemble(
    vae: AutoencoderKL, unet: UNet2DConditionModel, text_encoder: CLIPTextModel, max_length: int
) -> StableDiffusionPipeline:
    for module in (vae, unet, text_encoder):
        module.to(torch.float32).eval()
    return StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=clip_tokenizer(max_length),
        unet=unet,
        scheduler=sd_scheduler(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def parameter_count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def text_encoder_from_clip(
    clip_state: dict[str, torch.Tensor], size: PipelineSize
) -> CLIPTextModel:
    """A CLIPTextModel holding the toy CLIP's text tower (as Stable Diffusion's text encoder
    is a CLIP text tower): open_clip and transformers implement the same transformer
    (pre-LN, causal, quick_gelu, learned positions), so the weights map one to one."""
    model = build_text_encoder(size)
    w = size.text_width
    state = {
        "embeddings.token_embedding.weight": clip_state["token_embedding.weight"],
        "embeddings.position_embedding.weight": clip_state["positional_embedding"],
        "final_layer_norm.weight": clip_state["ln_final.weight"],
        "final_layer_norm.bias": clip_state["ln_final.bias"],
    }
    for i in range(size.text_layers):
        src, dst = f"transformer.resblocks.{i}.", f"encoder.layers.{i}."
        q, k, v = clip_state[src + "attn.in_proj_weight"].split(w)
        qb, kb, vb = clip_state[src + "attn.in_proj_bias"].split(w)
        for name, weight, bias in (("q", q, qb), ("k", k, kb), ("v", v, vb)):
            state[f"{dst}self_attn.{name}_proj.weight"] = weight
            state[f"{dst}self_attn.{name}_proj.bias"] = bias
        pairs = {
            "self_attn.out_proj": "attn.out_proj",
            "layer_norm1": "ln_1",
            "layer_norm2": "ln_2",
            "mlp.fc1": "mlp.c_fc",
            "mlp.fc2": "mlp.c_proj",
        }
        for hf, oc in pairs.items():
            state[f"{dst}{hf}.weight"] = clip_state[f"{src}{oc}.weight"]
            state[f"{dst}{hf}.bias"] = clip_state[f"{src}{oc}.bias"]
    missing, unexpected = model.load_state_dict(
        {k: v.float() for k, v in state.items()}, strict=False
    )
    missing = [m for m in missing if not m.endswith("position_ids")]
    if missing or unexpected:
        raise ValueError(f"text tower mismatch: missing {missing}, unexpected {unexpected}")
    return model


def projected_text_encoder_from_clip(
    clip_state: dict[str, torch.Tensor], size: PipelineSize
) -> CLIPTextModelWithProjection:
    """The toy CLIP's text tower with its text projection (Stable Diffusion 3's text
    encoders are CLIP text towers with projection: the pooled prompt embedding is the
    projected end-of-text state, as in CLIP itself)."""
    tower = text_encoder_from_clip(clip_state, size)
    projection = clip_state["text_projection"].float()  # [width, embed_dim]: x @ projection
    config = CLIPTextConfig(**{**tower.config.to_dict(), "projection_dim": projection.shape[1]})
    model = CLIPTextModelWithProjection(config)
    model.text_model.load_state_dict(tower.state_dict())
    model.text_projection.weight.data.copy_(projection.T)
    return model
