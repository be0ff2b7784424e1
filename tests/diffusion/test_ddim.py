import math

import pytest
import torch
from diffusers import DDIMScheduler

from diffusion.ddim import ddim_step_with_logprob, noise_sensitivity


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_step_matches_diffusers_per_sample(prediction_type):
    sched = DDIMScheduler(
        beta_schedule="scaled_linear",
        beta_start=0.00085,
        beta_end=0.012,
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
        prediction_type=prediction_type,
    )
    sched.set_timesteps(20)
    g = torch.Generator().manual_seed(0)
    ts = sched.timesteps[torch.tensor([0, 5, 13, 19])]
    x = torch.randn(4, 4, 8, 8, generator=g)
    out = torch.randn(4, 4, 8, 8, generator=g)
    noise = torch.randn(4, 4, 8, 8, generator=g)
    nxt, lp = ddim_step_with_logprob(sched, out, ts, x, eta=1.0, noise=noise)
    for i, t in enumerate(ts):
        ref = sched.step(out[i : i + 1], t, x[i : i + 1], eta=1.0, variance_noise=noise[i : i + 1])
        assert torch.allclose(nxt[i : i + 1], ref.prev_sample, atol=1e-5)
    # scoring the drawn latent gives the same log-prob
    _, lp2 = ddim_step_with_logprob(sched, out, ts, x, eta=1.0, prev_sample=nxt)
    assert torch.allclose(lp, lp2, atol=1e-6)


def test_log_prob_is_mean_gaussian_density():
    sched = DDIMScheduler(
        beta_schedule="scaled_linear",
        beta_start=0.00085,
        beta_end=0.012,
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    sched.set_timesteps(10)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, 4, 6, 6, generator=g, dtype=torch.float64)
    out = torch.randn(3, 4, 6, 6, generator=g, dtype=torch.float64)
    target = torch.randn(3, 4, 6, 6, generator=g, dtype=torch.float64)
    t = sched.timesteps[4]
    zero, _ = ddim_step_with_logprob(sched, out, t, x, noise=torch.zeros_like(x))  # the mean
    _, lp = ddim_step_with_logprob(sched, out, t, x, prev_sample=target)
    one, _ = ddim_step_with_logprob(sched, out, t, x, noise=torch.ones_like(x))
    std = (one - zero)[0, 0, 0, 0]
    ref = torch.distributions.Normal(zero, std).log_prob(target).mean(dim=(1, 2, 3))
    assert torch.allclose(lp, ref, atol=1e-10)
    assert not math.isnan(float(lp.sum()))


def test_needs_exactly_one_of_noise_or_prev_sample():
    sched = DDIMScheduler()
    sched.set_timesteps(5)
    x = torch.zeros(1, 4, 2, 2)
    with pytest.raises(ValueError):
        ddim_step_with_logprob(sched, x, sched.timesteps[0], x)


@pytest.mark.parametrize("num_steps", [10, 20])
def test_noise_sensitivity_is_the_mean_shift_per_unit_eps_over_std(num_steps):
    from diffusion.tiny import sd_scheduler

    sched = sd_scheduler()
    sched.set_timesteps(num_steps)
    got = noise_sensitivity(sched, eta=1.0)
    x = torch.randn(1, 4, 4, 4, generator=torch.Generator().manual_seed(1))
    eps = torch.zeros_like(x)
    zero = torch.zeros_like(x)
    for j, t in enumerate(sched.timesteps):
        t = t.reshape(1)
        # with zero noise the step returns its mean: move eps by 1 and measure the mean's move
        m0, _ = ddim_step_with_logprob(sched, eps, t, x.double(), noise=zero.double())
        m1, _ = ddim_step_with_logprob(
            sched, (eps + 1).double(), t, x.double(), noise=zero.double()
        )
        shift = float((m1 - m0).abs().mean())
        # the std from the log-density of a point one unit of noise away from the mean
        _, lp_at_mean = ddim_step_with_logprob(sched, eps, t, x, prev_sample=m0.float())
        _, lp_one_std = ddim_step_with_logprob(sched, eps, t, x, prev_sample=m0.float() + 1)
        std = 1 / math.sqrt(2 * float(lp_at_mean - lp_one_std))
        assert float(got[j]) == pytest.approx(shift / std, rel=1e-3)
    # SD's 10-step grid: the second-to-last step stands out (std 0.041, mean shift 0.34)
    if num_steps == 10:
        assert float(got[8]) > 5 * float(torch.cat([got[:8], got[9:]]).max())
