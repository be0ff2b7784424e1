"""Train the toy SD3-architecture transformer by flow matching on VAE latents of renders.

The interpolant is Stable Diffusion 3's: x_sigma = (1 - sigma) x_0 + sigma noise, and the
transformer predicts the velocity noise - x_0 at timestep sigma * 1000. Sigmas are drawn
half the time from the sampling schedule (the shifted grid the preset samples on, so the
steps B² trains are the steps pretraining saw most) and half from a logit-normal, SD3's
density, which puts most of the mass at middle noise. ~10 % empty captions make
classifier-free guidance work; an exponential moving average of the weights is what is
saved. The text encoders stay frozen: every caption is encoded once.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel
from tqdm import tqdm

from toyworld.train_vae import Ema, lr_at, optimiser_step, smoothed


@dataclass(frozen=True)
class FlowTraining:
    steps: int = 4000
    batch_size: int = 64
    lr: float = 1e-3
    caption_dropout: float = 0.1
    grid_share: float = 0.5  # share of sigmas drawn from the sampling schedule
    grid_steps: int = 10  # the sampling schedule's steps (the preset's sampling.num_steps)
    ema_decay: float = 0.995


def sampling_grid(scheduler: FlowMatchEulerDiscreteScheduler, steps: int) -> torch.Tensor:
    """The sigmas a `steps`-step sampler visits (the last, 0, is the clean image: left out)."""
    scheduler.set_timesteps(steps)
    return scheduler.sigmas[:-1].float()


def sigmas_for(
    grid: torch.Tensor, shift: float, n: int, cfg: FlowTraining, gen: torch.Generator
) -> torch.Tensor:
    """`n` training sigmas: the sampling `grid`'s with probability `grid_share`, else the
    logit-normal (mean 0, std 1) moved by the scheduler's `shift` as sampling moves its grid."""
    on_grid = grid[torch.randint(len(grid), (n,), generator=gen)]
    u = torch.sigmoid(torch.randn(n, generator=gen))
    shifted = shift * u / (1 + (shift - 1) * u)
    pick = torch.rand(n, generator=gen) < cfg.grid_share
    return torch.where(pick, on_grid, shifted)


def train_flow(
    transformer: SD3Transformer2DModel,
    scheduler: FlowMatchEulerDiscreteScheduler,
    latents: torch.Tensor,
    captions: list[str],
    encode,
    cfg: FlowTraining,
    seed: int,
    progress: bool = True,
    desc: str = "transformer",
) -> tuple[SD3Transformer2DModel, dict[str, float]]:
    """latents: scaled posterior means [N, C, h, w] of the images whose captions are
    `captions`. encode(list of captions) -> (sequence embeddings [n, L, J], pooled [n, P]),
    the pipeline's own prompt encoding. Returns the EMA copy of the transformer."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    unique = sorted(set(captions))
    index = {c: i for i, c in enumerate(unique)}
    caption_ids = torch.tensor([index[c] for c in captions])
    with torch.no_grad():
        seq, pooled = encode([*unique, ""])  # the last row: the empty caption
    transformer.train()
    params = list(transformer.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=1e-2)
    ema = Ema([transformer], cfg.ema_decay)
    grid = sampling_grid(scheduler, cfg.grid_steps)
    shift = float(scheduler.config.shift)
    running = None
    bar = tqdm(range(cfg.steps), desc=desc, disable=not progress, mininterval=2)
    for step in bar:
        for group in opt.param_groups:
            group["lr"] = lr_at(step, cfg.steps, cfg.lr, warmup=100)
        rows = torch.randint(len(caption_ids), (cfg.batch_size,), generator=gen)
        x0 = latents[rows]
        noise = torch.randn(x0.shape, generator=gen)
        sigma = sigmas_for(grid, shift, cfg.batch_size, cfg, gen)
        s = sigma.view(-1, 1, 1, 1)
        xt = (1 - s) * x0 + s * noise
        drop = torch.rand(cfg.batch_size, generator=gen) < cfg.caption_dropout
        which = torch.where(drop, len(unique), caption_ids[rows])
        pred = transformer(
            hidden_states=xt,
            timestep=sigma * scheduler.config.num_train_timesteps,
            encoder_hidden_states=seq[which],
            pooled_projections=pooled[which],
            return_dict=False,
        )[0]
        per_sample = ((pred - (noise - x0)) ** 2).mean(dim=(1, 2, 3))
        loss = per_sample.mean()
        optimiser_step(opt, loss, params)
        ema.update([transformer])
        running = smoothed(running, float(loss.detach()))
        if step % 25 == 0:
            bar.set_postfix(mse=f"{running:.4f}")
    return ema.shadow[0], {"transformer_mse": float(running or 0.0)}
