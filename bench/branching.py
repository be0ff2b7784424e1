"""The branch-batched sampler's baseline: the same work, one branch index at a time.

Used by `bench.stage` (CPU, toy preset) and `bench.gpu` (SD 1.5 architecture) to measure
what batching the K branches of every trunk into the same UNet calls buys.
"""

from __future__ import annotations

import torch

from diffusion.ddim import ddim_step_with_logprob
from diffusion.sampler import SamplerSettings, guided_noise


@torch.no_grad()
def per_branch_loop(model, prompts, settings: SamplerSettings, seed: int) -> None:
    """The same work without branch batching: the trunk once, then each branch index in
    its own pass over the trunks (what a loop over branches costs)."""
    T, s = settings.num_steps, settings.split_step
    model.scheduler.set_timesteps(T, device="cpu")
    ts = model.scheduler.timesteps
    g = torch.Generator().manual_seed(seed)
    dev, dt = model.device, model.dtype

    def randn(shape) -> torch.Tensor:  # drawn on the CPU as the sampler draws its noise
        return torch.randn(shape, generator=g).to(dev, dt)

    x = randn((len(prompts), *model.latent_shape))
    cond, uncond = model.encode_prompts(prompts), model.encode_prompts([""])

    def step(lat, t):
        outs = []
        for lo in range(0, len(lat), settings.micro_batch):
            xb = lat[lo : lo + settings.micro_batch]
            eps = guided_noise(
                model.unet,
                xb,
                t.to(dev).expand(len(xb)),
                cond[lo : lo + len(xb)],
                uncond.expand(len(xb), -1, -1),
                settings.guidance_scale,
            )
            outs.append(
                ddim_step_with_logprob(
                    model.scheduler,
                    eps,
                    t,
                    xb,
                    settings.eta,
                    noise=randn(xb.shape),
                )[0]
            )
        return torch.cat(outs)

    for j in range(T - s):
        x = step(x, ts[j])
    for _ in range(settings.branches):
        b = x.clone()
        for j in range(T - s, T):
            b = step(b, ts[j])
        model.decode(b, settings.micro_batch)
