"""Branch-based sampling: one trunk per prompt sample, K branches after the split point.

For B trunks: denoise B latents from x_T to the split point (the interval's first step;
T - s steps for the paper's interval, the last s), copy each into K branches, and advance
all B*K branches together for the s interval steps, then, for an interval that ends before
the last step, on to x_0 unrecorded. Every UNet call takes up to `micro_batch` latents,
whatever trunk or branch they belong to. DDPO is the same sampler with K = 1 and s = T.
The step is the model family's (`DiffusionModel.step`): DDIM with eta at every step for
SD; for flow-matching models the trunk and the unrecorded finishing steps follow the ODE
and only the recorded (trained) steps the SDE.

All noise (x_T, trunk noise, branch noise) comes from generators seeded by
(run seed, stage, trunk index[, branch]), drawn on the CPU, so a trunk's samples do not
depend on which worker runs it or with which other trunks.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace

import torch

from diffusion.pipeline import DiffusionModel
from diffusion.trajectory import TrajectoryBatch


@dataclass(frozen=True)
class SamplerSettings:
    num_steps: int
    split_step: int  # s: the number of interval steps
    branches: int
    guidance_scale: float
    eta: float
    micro_batch: int
    # the step index the interval ends before; None: num_steps (the interval is the last s)
    interval_end: int | None = None

    @property
    def interval(self) -> tuple[int, int]:
        """[start, end) of the denoising step indices (0 = from x_T) that are recorded."""
        end = self.num_steps if self.interval_end is None else self.interval_end
        return end - self.split_step, end


@dataclass
class UNetCounter:
    calls: int = 0  # UNet forward invocations
    evaluations: int = 0  # latents passed through the UNet (x2 with CFG)


def derive_seed(*parts: int) -> int:
    """A 63-bit seed from integers; stable across processes and Python versions."""
    digest = hashlib.sha256(",".join(str(int(p)) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def _randn(seed: int, shape: tuple[int, ...]) -> torch.Tensor:
    gen = torch.Generator(device="cpu").manual_seed(seed)
    return torch.randn(shape, generator=gen, dtype=torch.float32)


def guided_noise(
    unet: torch.nn.Module,
    latents: torch.Tensor,
    timesteps: torch.Tensor,
    cond: torch.Tensor,
    uncond: torch.Tensor,
    guidance_scale: float,
) -> torch.Tensor:
    """Classifier-free guided model output; the same function serves sampling and training."""
    if guidance_scale == 1.0:
        return unet(latents, timesteps, encoder_hidden_states=cond).sample
    out = unet(
        torch.cat([latents, latents]),
        torch.cat([timesteps, timesteps]),
        encoder_hidden_states=torch.cat([uncond, cond]),
    ).sample
    out_uncond, out_cond = out.chunk(2)
    return out_uncond + guidance_scale * (out_cond - out_uncond)


@torch.no_grad()
def _advance(
    model: DiffusionModel,
    latents: torch.Tensor,
    t: torch.Tensor,
    cond: torch.Tensor,
    uncond: torch.Tensor,
    noise: torch.Tensor,
    settings: SamplerSettings,
    counter: UNetCounter,
    recorded: bool = True,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One denoising step for all latents, in micro-batches (log-probs None when the
    family takes this unrecorded step deterministically)."""
    nexts, log_probs = [], []
    mb = settings.micro_batch
    for lo in range(0, latents.shape[0], mb):
        x = latents[lo : lo + mb]
        ts = t.expand(x.shape[0]).to(model.device)
        eps = model.predict(
            x,
            ts,
            cond[lo : lo + mb],
            uncond.expand(x.shape[0], -1, -1),
            settings.guidance_scale,
        )
        counter.calls += 1
        counter.evaluations += x.shape[0] * model.passes(settings.guidance_scale)
        nxt, lp = model.step(eps, t, x, settings.eta, noise=noise[lo : lo + mb], recorded=recorded)
        nexts.append(nxt)
        log_probs.append(lp)
    return torch.cat(nexts), None if log_probs[0] is None else torch.cat(log_probs)


@torch.no_grad()
def sample_branches(
    model: DiffusionModel,
    prompts: list[str],
    trunk_ids: list[int],
    settings: SamplerSettings,
    seed: int,
    stage: int,
    counter: UNetCounter | None = None,
) -> TrajectoryBatch:
    """Sample B trunks x K branches; returns the interval part of every branch."""
    if len(prompts) != len(trunk_ids):
        raise ValueError("one trunk id per prompt")
    counter = counter if counter is not None else UNetCounter()
    T, s, K = settings.num_steps, settings.split_step, settings.branches
    start, end = settings.interval
    if not (s >= 1 and start >= 0 and end <= T):
        raise ValueError(f"interval [{start}, {end}) must be a non-empty part of 0..{T}")
    model.scheduler.set_timesteps(T, device="cpu")
    timesteps = model.scheduler.timesteps.long()
    shape = model.latent_shape
    dev, dtype = model.device, model.dtype
    B = len(prompts)

    x0_noise, trunk_noise, branch_noise = [], [], []
    for tid in trunk_ids:
        draw = _randn(derive_seed(seed, stage, tid), (1 + start, *shape))
        x0_noise.append(draw[0])
        trunk_noise.append(draw[1:])
        branch_noise.append(  # each branch's steps from the split point to x_0
            torch.stack(
                [
                    _randn(derive_seed(seed, stage, tid, k + 1), (T - start, *shape))
                    for k in range(K)
                ]
            )
        )
    # flow-matching schedulers start at pure noise (sigma 1) and have no init_noise_sigma
    sigma_T = getattr(model.scheduler, "init_noise_sigma", 1.0)
    latents = torch.stack(x0_noise).to(dev, dtype) * sigma_T
    trunk_noise_t = torch.stack(trunk_noise).to(dev, dtype)  # [B, start, ...]
    branch_noise_t = torch.cat(branch_noise).to(dev, dtype)  # [B*K, T - start, ...]

    cond = model.encode_prompts(prompts)
    uncond = model.encode_prompts([""])

    for j in range(start):
        latents, _ = _advance(
            model,
            latents,
            timesteps[j],
            cond,
            uncond,
            trunk_noise_t[:, j],
            settings,
            counter,
            recorded=False,
        )

    latents = latents.repeat_interleave(K, dim=0)
    cond_k = cond.repeat_interleave(K, dim=0)
    chain = [latents]
    log_probs = []
    for j in range(T - start):
        latents, lp = _advance(
            model,
            latents,
            timesteps[start + j],
            cond_k,
            uncond,
            branch_noise_t[:, j],
            settings,
            counter,
            recorded=j < s,
        )
        if j < s:  # steps after an interval that ends early only finish the image
            chain.append(latents)
            log_probs.append(lp)

    images = model.decode(latents, settings.micro_batch)
    return TrajectoryBatch(
        prompts=[p for p in prompts for _ in range(K)],
        trunk_ids=torch.as_tensor(trunk_ids, dtype=torch.long).repeat_interleave(K),
        branch_ids=torch.arange(K).repeat(B),
        timesteps=timesteps[start:end].clone(),
        chain=torch.stack(chain, dim=1).cpu(),
        log_probs=torch.stack(log_probs, dim=1).float().cpu(),
        images=images,
    )


def expected_evaluations(settings: SamplerSettings, trunks: int, passes: int | None = None) -> int:
    """UNet evaluations the method costs: per trunk start + K * (T - start) steps (the
    paper's interval, the last s steps: (T - s) + K * s), each `passes` denoiser passes per
    latent (`DiffusionModel.passes`; by default two with CFG, else one)."""
    start = settings.interval[0]
    per_trunk = start + settings.branches * (settings.num_steps - start)
    if passes is None:
        passes = 1 if settings.guidance_scale == 1.0 else 2
    return trunks * per_trunk * passes


def sample_images(
    model: DiffusionModel,
    prompts: list[str],
    settings: SamplerSettings,
    seed: int,
    stage: int,
    progress: bool = False,
    desc: str = "sample",
) -> torch.Tensor:
    """Plain sampling (one branch, the whole trajectory) of one image per prompt, in
    chunks of `settings.micro_batch`; image i's noise derives from (seed, stage, i), so two
    models sampled with the same arguments start from the same noise (paired evaluation)."""
    from tqdm import tqdm

    plain = replace(settings, split_step=settings.num_steps, branches=1, interval_end=None)
    step = max(1, plain.micro_batch)
    chunks = []
    for lo in tqdm(range(0, len(prompts), step), desc=desc, disable=not progress, mininterval=2):
        ids = list(range(lo, min(lo + step, len(prompts))))
        chunks.append(
            sample_branches(model, [prompts[i] for i in ids], ids, plain, seed, stage).images
        )
    return torch.cat(chunks)
