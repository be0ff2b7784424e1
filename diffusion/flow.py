"""One flow-matching step as a policy: the deterministic Euler step and the Gaussian SDE step.

A flow-matching model predicts the velocity v = x_1 - x_0 of x_sigma = (1 - sigma) x_0 +
sigma x_1 (x_1 the noise). The Euler step from sigma to the next sigma' is x + (sigma' -
sigma) v: `FlowMatchEulerDiscreteScheduler.step`, the ODE, with no density. For RL the
branches take the reverse-time SDE with the same marginals (the form Flow-GRPO published,
arXiv 2505.05470): with dt = sigma' - sigma < 0 and a noise level a,

    std_sigma = a * sqrt(sigma / (1 - sigma))
    mean      = x + dt * (v + std_sigma^2 / (2 sigma) * (x + (1 - sigma) v))
    x'        = mean + std_sigma * sqrt(-dt) * noise

x + (1 - sigma) v is the predicted noise x_1, so the extra drift is the score term that
keeps the marginals while noise is injected. At sigma = 1 (the first step of a schedule
that starts at pure noise) sigma / (1 - sigma) is infinite; the denominator then uses the
schedule's second sigma, as Flow-GRPO does. With a = 0 the mean is exactly the Euler step.

Timesteps arrive as the integer keys the trajectories store (`scheduler.timesteps.long()`);
they are mapped back to the schedule's step index, so sigma, the next sigma and the float
timestep the transformer sees are exactly the scheduler's. The log-probability is the MEAN
over latent dimensions, as in `diffusion.ddim`. Arithmetic runs in float32 (half-precision
means overflow at sigma near 1); the drawn sample is cast to the input's dtype before it is
scored, so that a later recomputation from the stored sample gives the same log-prob.
"""

from __future__ import annotations

import math

import torch
from diffusers import FlowMatchEulerDiscreteScheduler


def step_indices(scheduler: FlowMatchEulerDiscreteScheduler, timestep, n: int) -> torch.Tensor:
    """The schedule's step index of each integer timestep key (a scalar or one per sample)."""
    if scheduler.timesteps is None or scheduler.sigmas is None:
        raise ValueError("call scheduler.set_timesteps(num_steps) first")
    keys = scheduler.timesteps.long().tolist()
    index = {k: i for i, k in enumerate(keys)}
    if len(index) != len(keys):
        raise ValueError(
            f"{len(keys)} flow-matching steps give two timesteps the same integer key; "
            "use fewer sampling.num_steps"
        )
    t = torch.as_tensor(timestep, device="cpu").long().reshape(-1)
    if t.numel() == 1:
        t = t.expand(n)
    try:
        return torch.tensor([index[k] for k in t.tolist()], dtype=torch.long)
    except KeyError as exc:
        raise ValueError(f"timestep {exc.args[0]} is not in the scheduler's schedule") from None


def model_timesteps(scheduler: FlowMatchEulerDiscreteScheduler, timestep, n: int) -> torch.Tensor:
    """The float timesteps (sigma * 1000) the transformer is called with, for integer keys."""
    return scheduler.timesteps.to("cpu")[step_indices(scheduler, timestep, n)]


def _sigmas(
    scheduler: FlowMatchEulerDiscreteScheduler, timestep, like: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    idx = step_indices(scheduler, timestep, like.shape[0])
    sigmas = scheduler.sigmas.to("cpu", torch.float32)
    shape = (-1, *([1] * (like.ndim - 1)))
    return sigmas[idx].reshape(shape), sigmas[idx + 1].reshape(shape)


def euler_step(
    scheduler: FlowMatchEulerDiscreteScheduler,
    model_output: torch.Tensor,
    timestep,
    sample: torch.Tensor,
) -> torch.Tensor:
    """The deterministic (ODE) step x + (sigma' - sigma) v, in the sample's dtype."""
    sigma, sigma_next = _sigmas(scheduler, timestep, sample)
    dt = (sigma_next - sigma).to(sample.device)
    return (sample.float() + dt * model_output.float()).to(sample.dtype)


def sde_std(scheduler: FlowMatchEulerDiscreteScheduler, timestep, like, noise_level: float):
    """(std_sigma, sqrt(-dt)) of the SDE step per sample, shaped to broadcast over `like`."""
    sigma, sigma_next = _sigmas(scheduler, timestep, like)
    second = float(scheduler.sigmas[1])
    denom = 1 - torch.where(sigma == 1, torch.full_like(sigma, second), sigma)
    return noise_level * (sigma / denom).sqrt(), (sigma - sigma_next).sqrt()


def flow_step_with_logprob(
    scheduler: FlowMatchEulerDiscreteScheduler,
    model_output: torch.Tensor,
    timestep,
    sample: torch.Tensor,
    noise_level: float,
    noise: torch.Tensor | None = None,
    prev_sample: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """x_sigma -> (x_sigma', log pi(x_sigma' | x_sigma)) by the SDE step, for a batch.

    timestep: integer key(s), a scalar or one per sample. Exactly one of `noise` (draw
    mean + std * noise) or `prev_sample` (score this next latent) is given.
    """
    if (noise is None) == (prev_sample is None):
        raise ValueError("give exactly one of noise or prev_sample")
    device = sample.device
    sigma, sigma_next = (s.to(device) for s in _sigmas(scheduler, timestep, sample))
    std_sigma, sqrt_dt = (s.to(device) for s in sde_std(scheduler, timestep, sample, noise_level))
    x, v = sample.float(), model_output.float()
    dt = sigma_next - sigma
    mean = x + dt * (v + std_sigma**2 / (2 * sigma) * (x + (1 - sigma) * v))
    std = std_sigma * sqrt_dt
    if prev_sample is None:
        prev_sample = (mean + std * noise.to(device, torch.float32)).to(sample.dtype)

    # a zero noise level has no density; clamp as the DDIM step does
    std = std.clamp(min=1e-12)
    log_prob = (
        -((prev_sample.detach().float() - mean) ** 2) / (2 * std**2)
        - torch.log(std)
        - math.log(math.sqrt(2 * math.pi))
    )
    return prev_sample, log_prob.mean(dim=tuple(range(1, log_prob.ndim)))


def noise_sensitivity(scheduler: FlowMatchEulerDiscreteScheduler, noise_level: float):
    """|d mean / d v| / std of the SDE step for every inference step, in step order: how
    strongly a step's log-probability reacts to a change of the velocity, in units of the
    step's own noise (`diffusion.ddim.noise_sensitivity` for epsilon and DDIM)."""
    if scheduler.timesteps is None:
        raise ValueError("call scheduler.set_timesteps(num_steps) first")
    keys = scheduler.timesteps.long()
    like = torch.zeros(len(keys), 1)
    sigma, _ = _sigmas(scheduler, keys, like)
    std_sigma, sqrt_dt = sde_std(scheduler, keys, like, noise_level)
    # d mean / d v = dt (1 + std_sigma^2 (1 - sigma) / (2 sigma)); std = std_sigma sqrt(-dt)
    gain = 1 + std_sigma**2 * (1 - sigma) / (2 * sigma)
    return (sqrt_dt * gain / std_sigma.clamp(min=1e-12)).flatten()


def noise_step_weights(scheduler: FlowMatchEulerDiscreteScheduler, noise_level: float):
    """Loss weight per inference step by the rule of `diffusion.ddim.noise_step_weights`:
    median sensitivity / own sensitivity, at most 1. Flow sensitivities grow steadily
    towards x_0 (SD3's shift-3 schedule, 20 steps, a = 0.7: 0.026 at the first step, 1.77
    at the last), so the later half of the steps is scaled down, the last by about 9x."""
    sens = noise_sensitivity(scheduler, noise_level)
    return (sens.median() / sens).clamp(max=1.0)
