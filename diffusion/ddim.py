"""One DDIM step as a Gaussian policy: the next latent and its log-probability.

Follows diffusers' `DDIMScheduler.step` formula term by term, but takes a batch of
timesteps (training mixes timesteps in one batch) and can score a given next latent
instead of drawing one. The log-probability is the MEAN over latent dimensions: a sum
over thousands of dimensions makes the PPO ratio overflow.
"""

from __future__ import annotations

import math

import torch
from diffusers import DDIMScheduler


def _per_sample(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return values.to(like.dtype).reshape(-1, *([1] * (like.ndim - 1)))


def _alphas_and_std(
    scheduler: DDIMScheduler, t: torch.Tensor, eta: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """alpha_cumprod at t and at the previous inference timestep, and the step's std."""
    prev_t = t - scheduler.config.num_train_timesteps // scheduler.num_inference_steps
    alphas = scheduler.alphas_cumprod.to("cpu", torch.float64)
    final = torch.as_tensor(float(scheduler.final_alpha_cumprod), dtype=torch.float64)
    alpha_t = alphas[t]
    alpha_prev = torch.where(prev_t >= 0, alphas[prev_t.clamp(min=0)], final)
    variance = (1 - alpha_prev) / (1 - alpha_t) * (1 - alpha_t / alpha_prev)
    return alpha_t, alpha_prev, eta * variance.sqrt()


def noise_sensitivity(scheduler: DDIMScheduler, eta: float = 1.0) -> torch.Tensor:
    """|d mean / d eps| / std for every inference step (epsilon prediction), in step order.

    How strongly a step's log-probability reacts to a change of the noise prediction, in
    units of the step's own noise. For SD's schedule with 10 steps it is about 1 everywhere
    except the second-to-last step (8.3: std 0.041 while the mean still moves 0.34 per unit
    of eps), whose policy-gradient term therefore dominates the update's norm.
    """
    if not isinstance(scheduler, DDIMScheduler):
        raise ValueError(
            f"noise step weights are defined for DDIM steps, not {type(scheduler).__name__} "
            "(set loss.step_weight=none)"
        )
    if scheduler.num_inference_steps is None:
        raise ValueError("call scheduler.set_timesteps(num_steps) first")
    t = torch.as_tensor(scheduler.timesteps, device="cpu").long()
    alpha_t, alpha_prev, std = _alphas_and_std(scheduler, t, eta)
    direction = (1 - alpha_prev - std**2).clamp(min=0).sqrt()
    coef = direction - alpha_prev.sqrt() * (1 - alpha_t).sqrt() / alpha_t.sqrt()
    return (coef.abs() / std.clamp(min=1e-12)).float()


def noise_step_weights(scheduler: DDIMScheduler, eta: float = 1.0) -> torch.Tensor:
    """Loss weight per inference step: median sensitivity / own sensitivity, at most 1.

    Steps as sensitive as the typical one keep weight 1; a near-deterministic step that
    reacts k times more strongly than the median is scaled down by k.
    """
    sens = noise_sensitivity(scheduler, eta)
    return (sens.median() / sens).clamp(max=1.0)


def ddim_step_with_logprob(
    scheduler: DDIMScheduler,
    model_output: torch.Tensor,
    timestep: torch.Tensor | int,
    sample: torch.Tensor,
    eta: float = 1.0,
    noise: torch.Tensor | None = None,
    prev_sample: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """x_t -> (x_{t-1}, log pi(x_{t-1} | x_t)) for a batch.

    timestep: a scalar or one timestep per sample. Exactly one of `noise` (draw the next
    latent as mean + std * noise) or `prev_sample` (score this next latent) is given.
    """
    if (noise is None) == (prev_sample is None):
        raise ValueError("give exactly one of noise or prev_sample")
    if scheduler.num_inference_steps is None:
        raise ValueError("call scheduler.set_timesteps(num_steps) first")
    cfg = scheduler.config
    device = sample.device
    t = torch.as_tensor(timestep, device="cpu").long().reshape(-1)
    if t.numel() == 1:
        t = t.expand(sample.shape[0])
    alpha_t, alpha_prev, std = _alphas_and_std(scheduler, t, eta)
    beta_t = 1 - alpha_t

    a_t = _per_sample(alpha_t, sample).to(device)
    b_t = _per_sample(beta_t, sample).to(device)
    a_prev = _per_sample(alpha_prev, sample).to(device)
    std_ = _per_sample(std, sample).to(device)

    if cfg.prediction_type == "epsilon":
        pred_x0 = (sample - b_t.sqrt() * model_output) / a_t.sqrt()
        pred_eps = model_output
    elif cfg.prediction_type == "v_prediction":
        pred_x0 = a_t.sqrt() * sample - b_t.sqrt() * model_output
        pred_eps = a_t.sqrt() * model_output + b_t.sqrt() * sample
    elif cfg.prediction_type == "sample":
        pred_x0 = model_output
        pred_eps = (sample - a_t.sqrt() * pred_x0) / b_t.sqrt()
    else:
        raise ValueError(f"unsupported prediction_type {cfg.prediction_type!r}")
    if cfg.thresholding:
        raise ValueError("DDIM dynamic thresholding is not supported by the log-prob step")
    if cfg.clip_sample:
        pred_x0 = pred_x0.clamp(-cfg.clip_sample_range, cfg.clip_sample_range)

    direction = (1 - a_prev - std_**2).clamp(min=0).sqrt() * pred_eps
    mean = a_prev.sqrt() * pred_x0 + direction
    if prev_sample is None:
        prev_sample = mean + std_ * noise.to(mean.dtype)

    # a zero std (eta = 0, or the last step with set_alpha_to_one) has no density
    std_ = std_.clamp(min=1e-12)
    log_prob = (
        -((prev_sample.detach() - mean) ** 2) / (2 * std_**2)
        - torch.log(std_)
        - math.log(math.sqrt(2 * math.pi))
    )
    return prev_sample, log_prob.mean(dim=tuple(range(1, log_prob.ndim)))
