"""The architectures bench.gpu builds, with the run sizes and the time budget of each, and
the config that runs them.

Networks are written out from their published config values (`diffusion.architectures`
for SD-1.5, `bench.gpu.networks` for SD3.5-Medium and FLUX.1-dev); weights are random.
Every architecture has a tiny twin of the same classes and options for the CPU.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch

from bench.gpu import networks
from bench.gpu.networks import TransformerNetworks
from configs.schema import Config
from diffusion.architectures import SD15 as SD15_NETWORKS
from diffusion.architectures import Networks
from diffusion.families import FAMILIES


@dataclass(frozen=True)
class Arch:
    """A network configuration and the run sizes that go with it."""

    name: str
    family: str  # the diffusion family that samples and trains it: sd, sd3, flux
    net: Networks | TransformerNetworks
    num_steps: int
    split_step: int
    trunks: int
    branches: int
    micro_batch: int
    train_batch: int
    grad_accum: int
    train_micro_batch: int  # trajectories per forward / backward (0: the whole batch)
    gradient_checkpointing: bool  # in the update, as the preset trains
    guidance_scale: float
    eta: float  # DDIM's eta (sd), the SDE noise level (sd3, flux)
    lora_rank: int
    matmul_n: int
    cuda_dtypes: tuple[str, ...]  # the train dtype (the weights' in the update) last
    budget_s: float  # the default wall-clock budget on a GPU, counted after the imports
    train_cap: int  # the largest micro-batches the searches try
    sampling_cap: int

    def as_dict(self) -> dict:
        """The network's config values and the run sizes, one flat mapping."""
        run = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "net"}
        return {**run, **dataclasses.asdict(self.net)}


# Stable Diffusion 1.5. Run sizes follow configs/sd14_b2.yaml: 20 steps, K = 5, micro-batch
# 16, the first stage's split step 14, train batch 32 in training micro-batches of 16.
SD15 = Arch(
    name="sd15",
    family="sd",
    net=SD15_NETWORKS,
    num_steps=20,
    split_step=14,
    trunks=8,
    branches=5,
    micro_batch=16,
    train_batch=32,
    grad_accum=1,
    train_micro_batch=16,
    gradient_checkpointing=False,
    guidance_scale=5.0,
    eta=1.0,
    lora_rank=4,
    matmul_n=8192,
    cuda_dtypes=("bfloat16", "float16"),
    budget_s=420.0,
    train_cap=256,
    sampling_cap=512,
)

# Stable Diffusion 3.5 Medium at 512 px. Run sizes follow configs/sd35m_b2.yaml: 10 steps,
# the first stage's split step 7, CFG 4.5, noise level 0.7, micro-batch 8, training
# micro-batches of 4 with gradient checkpointing, LoRA rank 32 on both streams' attention
# projections; bf16 only (T5 overflows in fp16).
SD35M = Arch(
    name="sd35m",
    family="sd3",
    net=networks.SD35M,
    num_steps=10,
    split_step=7,
    trunks=8,
    branches=5,
    micro_batch=8,
    train_batch=16,
    grad_accum=1,
    train_micro_batch=4,
    gradient_checkpointing=True,
    guidance_scale=4.5,
    eta=0.7,
    lora_rank=32,
    matmul_n=8192,
    cuda_dtypes=("bfloat16",),
    budget_s=300.0,
    train_cap=128,
    sampling_cap=256,
)

# FLUX.1-dev at 512 px. Run sizes follow configs/flux_b2.yaml: 6 steps, the first stage's
# split step 4, guidance 3.5 through the guidance embedding (one transformer row per
# latent), noise level 0.9, K = 5, micro-batch 8, training micro-batches of 2 with gradient
# checkpointing, LoRA rank 64; fewer trunks than sd35m (a row costs 9x SD3.5-M's); bf16 only.
FLUX = Arch(
    name="flux",
    family="flux",
    net=networks.FLUX,
    num_steps=6,
    split_step=4,
    trunks=4,
    branches=5,
    micro_batch=8,
    train_batch=8,
    grad_accum=1,
    train_micro_batch=2,
    gradient_checkpointing=True,
    guidance_scale=3.5,
    eta=0.9,
    lora_rank=64,
    matmul_n=8192,
    cuda_dtypes=("bfloat16",),
    budget_s=300.0,
    train_cap=32,
    sampling_cap=64,
)

# test sizes: 32 px images, 16 x 16 latents, few steps, so that a CPU run takes seconds
_TINY_RUN = {
    "num_steps": 4,
    "split_step": 2,
    "trunks": 2,
    "branches": 2,
    "micro_batch": 4,
    "train_batch": 2,
    "train_micro_batch": 0,
    "lora_rank": 4,
    "matmul_n": 512,
}
# the test pipeline's size (diffusion.tiny.tiny_pipeline): cross-attention at 8 x 8 only
SD15_TINY = dataclasses.replace(
    SD15,
    name="sd15-tiny",
    net=Networks(
        image_size=32,
        unet_channels=(32, 64),
        unet_down=("DownBlock2D", "CrossAttnDownBlock2D"),
        unet_up=("CrossAttnUpBlock2D", "UpBlock2D"),
        unet_layers=1,
        attention_head_dim=8,
        norm_groups=8,
        vae_channels=(16, 32),
        vae_layers=1,
        vae_mid_attention=False,
        text_width=32,
        text_layers=2,
        text_heads=4,
        text_ffn=64,
        max_length=16,
    ),
    **_TINY_RUN,
)
SD35M_TINY = dataclasses.replace(SD35M, name="sd35m-tiny", net=networks.SD35M_TINY, **_TINY_RUN)
FLUX_TINY = dataclasses.replace(FLUX, name="flux-tiny", net=networks.FLUX_TINY, **_TINY_RUN)

ARCHS = {a.name: a for a in (SD15, SD35M, FLUX)}
TINY = {"sd15": SD15_TINY, "sd35m": SD35M_TINY, "flux": FLUX_TINY}


def bench_config(arch: Arch, train_dtype: str, device: torch.device, out: Path) -> Config:
    """The project's config that samples and trains `arch` at its run sizes (LoRA on the
    family's attention projections, a JPEG reward that needs no download)."""
    return Config.model_validate(
        {
            "seed": 0,
            "stages": 1,
            "output_dir": str(out / "runs"),
            "model": {
                "pretrained": f"bench.gpu random {arch.name} (built in memory)",
                "dtype": train_dtype,
                "device": device.type,
            },
            "sampling": {
                "num_steps": arch.num_steps,
                "eta": arch.eta,
                "guidance_scale": arch.guidance_scale,
                "branches": arch.branches,
                "trunks_per_stage": arch.trunks,
                "micro_batch": arch.micro_batch,
            },
            "schedule": {"kind": "constant", "start": arch.split_step, "end": arch.split_step},
            "selection": {"mode": "extremes", "tau_pos": 0.5, "tau_neg": -0.5},
            "loss": {"name": "ppo_clip", "clip_range": 0.1},
            "train": {
                "epochs": 1,
                "batch_size": arch.train_batch,
                "grad_accum": arch.grad_accum,
                "micro_batch": arch.train_micro_batch,
                "gradient_checkpointing": arch.gradient_checkpointing,
                "lora": {
                    "rank": arch.lora_rank,
                    "targets": list(FAMILIES[arch.family].lora_targets),
                },
            },
            "rewards": [{"name": "jpeg_compressibility"}],
            "logging": {"mlflow": False},
        }
    )
