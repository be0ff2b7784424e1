"""Train the toy VAE on renders, and encode a data set into scaled latents.

Flat shapes on white are easy to reconstruct: pixel MSE plus a small KL term (which keeps
the latents bounded and the decoder tolerant of the imprecise latents a diffusion model
makes) converges in a few minutes on a CPU.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import numpy as np
import torch
from diffusers import AutoencoderKL
from tqdm import tqdm


@dataclass(frozen=True)
class VaeTraining:
    steps: int = 500
    batch_size: int = 32
    lr: float = 2e-3
    # per latent element, against per-pixel MSE: strong enough to centre the latents
    # (the background codes near zero) and to make the decoder snap noisy codes to clean
    # colours; reconstructions still pass the checker (99 %)
    kl_weight: float = 2e-3


def to_model_space(images: np.ndarray) -> torch.Tensor:
    """uint8 [N, H, W, 3] -> float [N, 3, H, W] in [-1, 1]."""
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float()
    return x / 127.5 - 1.0


def optimiser_step(opt: torch.optim.Optimizer, loss: torch.Tensor, params) -> None:
    """zero_grad, backward, clip the gradient norm to 1, step: every toy trainer's update."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()


def smoothed(running: float | None, value: float) -> float:
    """The progress bar's running loss: an exponential average (weight 0.02 on the new value)."""
    return value if running is None else 0.98 * running + 0.02 * value


def lr_at(step: int, steps: int, lr: float, warmup: int = 50) -> float:
    """Linear warm-up, then cosine decay to a tenth."""
    if step < warmup:
        return lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


class Ema:
    """An exponential moving average of `modules`' weights (the copies in `shadow` are what
    the toy trainers save); the decay ramps up over the first steps."""

    def __init__(self, modules: list[torch.nn.Module], decay: float):
        self.decay = decay
        self.shadow = [copy.deepcopy(m).eval().requires_grad_(False) for m in modules]
        self.count = 0

    @torch.no_grad()
    def update(self, modules: list[torch.nn.Module]) -> None:
        self.count += 1
        d = min(self.decay, (1 + self.count) / (10 + self.count))
        for shadow, live in zip(self.shadow, modules, strict=True):
            for s, p in zip(shadow.parameters(), live.parameters(), strict=True):
                s.lerp_(p, 1 - d)


def train_vae(
    vae: AutoencoderKL, images: np.ndarray, cfg: VaeTraining, seed: int, progress: bool = True
) -> dict[str, float]:
    """Train in place; returns the final running reconstruction loss."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    data = to_model_space(images).contiguous(memory_format=torch.channels_last)
    vae.to(memory_format=torch.channels_last)  # about 1.4x faster convolutions on a CPU
    opt = torch.optim.AdamW(vae.parameters(), lr=cfg.lr, weight_decay=0.0)
    vae.train()
    running = None
    bar = tqdm(range(cfg.steps), desc="vae", disable=not progress, mininterval=2)
    for step in bar:
        for group in opt.param_groups:
            group["lr"] = lr_at(step, cfg.steps, cfg.lr)
        x = data[torch.randint(len(data), (cfg.batch_size,), generator=gen)]
        posterior = vae.encode(x).latent_dist
        z = posterior.mean + posterior.std * torch.randn(posterior.mean.shape, generator=gen)
        recon = vae.decode(z).sample
        mse = torch.nn.functional.mse_loss(recon, x)
        kl = 0.5 * (posterior.mean**2 + posterior.var - 1 - posterior.logvar).mean()
        loss = mse + cfg.kl_weight * kl
        optimiser_step(opt, loss, vae.parameters())
        running = smoothed(running, float(mse.detach()))
        if step % 50 == 0:
            bar.set_postfix(mse=f"{running:.5f}")
    vae.to(memory_format=torch.contiguous_format).eval()
    return {"vae_mse": float(running or 0.0)}


@torch.no_grad()
def encode_moments(
    vae: AutoencoderKL, images: np.ndarray, batch: int = 256
) -> tuple[torch.Tensor, torch.Tensor]:
    """Posterior mean and std of every image, unscaled: [N, 4, h, w] each."""
    means, stds = [], []
    for lo in range(0, len(images), batch):
        dist = vae.encode(to_model_space(images[lo : lo + batch])).latent_dist
        means.append(dist.mean)
        stds.append(dist.std)
    return torch.cat(means), torch.cat(stds)


def set_scaling_factor(vae: AutoencoderKL, means: torch.Tensor) -> float:
    """scaling_factor = 1 / std of the latents the UNet learns (posterior means), so it
    sees unit variance. The KL term keeps their mean near zero (no shift needed)."""
    factor = 1.0 / float(means.std())
    vae.register_to_config(scaling_factor=factor)
    return factor


@torch.no_grad()
def reconstruct(vae: AutoencoderKL, images: np.ndarray, batch: int = 256) -> np.ndarray:
    """uint8 [N, H, W, 3] through encode (mean) and decode."""
    out = []
    for lo in range(0, len(images), batch):
        z = vae.encode(to_model_space(images[lo : lo + batch])).latent_dist.mean
        img = vae.decode(z).sample
        img = ((img / 2 + 0.5).clamp(0, 1) * 255).round().to(torch.uint8)
        out.append(img.permute(0, 2, 3, 1).numpy())
    return np.concatenate(out)
