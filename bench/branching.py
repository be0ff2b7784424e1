"""The branch-batched sampler's baseline: the same work, one branch index at a time.

Used by `bench.stage` (CPU, toy preset) and `bench.gpu` (SD-1.5, SD3.5-Medium, FLUX.1) to
measure what batching the K branches of every trunk into the same denoiser calls buys. The
steps are the family's (`DiffusionModel.predict` and `step`), taken as the sampler takes
them: the trunk unrecorded, the interval's steps recorded, the rest unrecorded.
"""

from __future__ import annotations

import torch

from diffusion.sampler import SamplerSettings


@torch.no_grad()
def per_branch_loop(model, prompts, settings: SamplerSettings, seed: int) -> None:
    """The same work without branch batching: the trunk once, then each branch index in
    its own pass over the trunks (what a loop over branches costs)."""
    T = settings.num_steps
    start, end = settings.interval
    model.scheduler.set_timesteps(T, device="cpu")
    ts = model.scheduler.timesteps.long()
    g = torch.Generator().manual_seed(seed)
    dev, dt = model.device, model.dtype

    def randn(shape) -> torch.Tensor:  # drawn on the CPU as the sampler draws its noise
        return torch.randn(shape, generator=g).to(dev, dt)

    x = randn((len(prompts), *model.latent_shape)) * getattr(
        model.scheduler, "init_noise_sigma", 1.0
    )
    cond, uncond = model.encode_prompts(prompts), model.encode_prompts([""])

    def step(lat, t, recorded: bool):
        outs = []
        for lo in range(0, len(lat), settings.micro_batch):
            xb = lat[lo : lo + settings.micro_batch]
            out = model.predict(
                xb,
                t.to(dev).expand(len(xb)),
                cond[lo : lo + len(xb)],
                uncond.expand(len(xb), -1, -1),
                settings.guidance_scale,
            )
            nxt, _ = model.step(out, t, xb, settings.eta, noise=randn(xb.shape), recorded=recorded)
            outs.append(nxt)
        return torch.cat(outs)

    for j in range(start):
        x = step(x, ts[j], recorded=False)
    for _ in range(settings.branches):
        b = x.clone()
        for j in range(start, T):
            b = step(b, ts[j], recorded=start <= j < end)
        model.decode(b, settings.micro_batch)
