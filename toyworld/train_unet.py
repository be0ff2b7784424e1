"""Train the toy UNet (and optionally the text encoder) on VAE latents of captioned renders.

Epsilon prediction with Stable Diffusion's noise schedule. What makes a few CPU minutes go
far: min-SNR loss weights (no step is drowned by the easy low-noise ones), timesteps drawn
half the time from the DDIM grids that sampling uses, an exponential moving average of the
weights (what is saved), and ~10 % empty captions so that classifier-free guidance works.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers import DDIMScheduler, UNet2DConditionModel
from tqdm import tqdm
from transformers import CLIPTextModel

from toyworld.train_vae import Ema, lr_at, optimiser_step, smoothed


@dataclass(frozen=True)
class UnetTraining:
    steps: int = 2000
    batch_size: int = 64
    lr: float = 1e-3
    caption_dropout: float = 0.1
    min_snr_gamma: float = 5.0
    grid_share: float = 0.5  # share of timesteps drawn from the 10- and 20-step DDIM grids
    ema_decay: float = 0.995
    text_lr_scale: float = 0.0  # 0: the text encoder stays frozen (Stable Diffusion's recipe)
    focus_share: float = 0.0  # share of each batch drawn from the `focus` captions


def _tokens(tokenizer, captions: list[str]) -> torch.Tensor:
    return tokenizer(
        captions,
        padding="max_length",
        max_length=tokenizer.model_max_length,
        truncation=True,
        return_tensors="pt",
    ).input_ids


def _timesteps(
    scheduler: DDIMScheduler, n: int, grid_share: float, gen: torch.Generator
) -> torch.Tensor:
    total = scheduler.config.num_train_timesteps
    uniform = torch.randint(0, total, (n,), generator=gen)
    offset = scheduler.config.steps_offset
    grid = torch.arange(0, total, total // 20) + offset  # contains the 10-step grid
    on_grid = grid[torch.randint(len(grid), (n,), generator=gen)]
    pick = torch.rand(n, generator=gen) < grid_share
    return torch.where(pick, on_grid, uniform).clamp(max=total - 1)


def train_unet(
    unet: UNet2DConditionModel,
    text_encoder: CLIPTextModel,
    tokenizer,
    scheduler: DDIMScheduler,
    latents: torch.Tensor,
    captions: list[str],
    cfg: UnetTraining,
    seed: int,
    focus: list[str] | None = None,
    progress: bool = True,
    desc: str = "unet",
) -> tuple[UNet2DConditionModel, CLIPTextModel, dict[str, float]]:
    """latents: scaled posterior means [N, 4, h, w] of the images whose captions are
    `captions` (the means: the decoder was trained on noisier codes and snaps them back).
    focus: captions drawn `focus_share` of the time (the RL train prompts: "few and fixed"
    prompts are learnt well, the held-out ones stay harder).
    Returns the EMA copies of the UNet and the text encoder."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    unique = sorted(set(captions))
    index = {c: i for i, c in enumerate(unique)}
    caption_ids = torch.tensor([index[c] for c in captions])
    focus_rows = torch.tensor([i for i, c in enumerate(captions) if c in set(focus or [])])
    if cfg.focus_share > 0 and len(focus_rows) == 0:
        raise ValueError("focus_share > 0 but none of the focus captions is in the data")
    tokens = _tokens(tokenizer, unique)
    empty = _tokens(tokenizer, [""])
    alphas = scheduler.alphas_cumprod.float()
    snr = alphas / (1 - alphas)
    weight = torch.clamp(snr, max=cfg.min_snr_gamma) / snr  # min-SNR for epsilon targets

    unet.to(memory_format=torch.channels_last).train()
    train_text = cfg.text_lr_scale > 0
    all_tokens = torch.cat([tokens, empty])
    modules = [unet, text_encoder] if train_text else [unet]
    text_encoder.train(train_text).requires_grad_(train_text)
    if not train_text:  # frozen: encode every caption once
        with torch.no_grad():
            frozen = text_encoder(all_tokens)[0]
    groups = [{"params": list(unet.parameters()), "scale": 1.0}]
    if train_text:
        groups.append({"params": list(text_encoder.parameters()), "scale": cfg.text_lr_scale})
    params = [p for g in groups for p in g["params"]]
    opt = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=1e-2)
    ema = Ema(modules, cfg.ema_decay)
    running = None
    bar = tqdm(range(cfg.steps), desc=desc, disable=not progress, mininterval=2)
    for step in bar:
        for group in opt.param_groups:
            group["lr"] = group["scale"] * lr_at(step, cfg.steps, cfg.lr, warmup=100)
        rows = torch.randint(len(caption_ids), (cfg.batch_size,), generator=gen)
        if cfg.focus_share > 0:
            pick = torch.rand(cfg.batch_size, generator=gen) < cfg.focus_share
            focused = focus_rows[torch.randint(len(focus_rows), (cfg.batch_size,), generator=gen)]
            rows = torch.where(pick, focused, rows)
        x0 = latents[rows]
        noise = torch.randn(x0.shape, generator=gen)
        t = _timesteps(scheduler, cfg.batch_size, cfg.grid_share, gen)
        a = alphas[t].view(-1, 1, 1, 1)
        xt = (a.sqrt() * x0 + (1 - a).sqrt() * noise).contiguous(memory_format=torch.channels_last)
        drop = torch.rand(cfg.batch_size, generator=gen) < cfg.caption_dropout
        which = torch.where(drop, len(unique), caption_ids[rows])  # last row: ""
        cond = text_encoder(all_tokens[which])[0] if train_text else frozen[which]
        pred = unet(xt, t, encoder_hidden_states=cond).sample
        per_sample = ((pred - noise) ** 2).mean(dim=(1, 2, 3))
        loss = (weight[t] * per_sample).mean()
        optimiser_step(opt, loss, params)
        ema.update(modules)
        running = smoothed(running, float(per_sample.mean().detach()))
        if step % 25 == 0:
            bar.set_postfix(mse=f"{running:.4f}")
    ema_unet = ema.shadow[0].to(memory_format=torch.contiguous_format)
    ema_text = ema.shadow[1] if train_text else text_encoder.eval()
    return ema_unet, ema_text, {"unet_mse": float(running or 0.0)}
