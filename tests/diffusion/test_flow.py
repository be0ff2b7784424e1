import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler

from diffusion.flow import euler_step, flow_step_with_logprob, model_timesteps, sde_std


def _scheduler(steps=6):
    sched = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0)
    sched.set_timesteps(steps, device="cpu")
    return sched


def _inputs(n=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 16, 8, 8, generator=g)
    v = torch.randn(n, 16, 8, 8, generator=g)
    return x, v


def test_noise_level_zero_is_the_stock_euler_step():
    sched = _scheduler()
    x, v = _inputs()
    keys = sched.timesteps.long()
    for i, t in enumerate(sched.timesteps):
        stock = FlowMatchEulerDiscreteScheduler.from_config(sched.config)
        stock.set_timesteps(6, device="cpu")
        stock._step_index = i
        expected = stock.step(v, t, x, return_dict=False)[0]
        mean, _ = flow_step_with_logprob(
            sched, v, keys[i], x, noise_level=0.0, noise=torch.zeros_like(x)
        )
        assert torch.equal(mean, expected)
        assert torch.equal(euler_step(sched, v, keys[i], x), expected)
    # the transformer sees the scheduler's own float timesteps, not the integer keys
    assert torch.equal(model_timesteps(sched, keys, 6), sched.timesteps)


@pytest.mark.parametrize("level", [0.3, 0.7, 1.0])
def test_log_prob_is_the_gaussian_density_of_the_published_sde(level):
    sched = _scheduler()
    x, v = _inputs(n=6)
    keys = sched.timesteps.long()  # one per sample: the first (sigma = 1) to the last step
    g = torch.Generator().manual_seed(1)
    noise = torch.randn(x.shape, generator=g)
    nxt, lp = flow_step_with_logprob(sched, v, keys, x, level, noise=noise)

    # independent: the SDE's mean and std written out per sample, density from torch
    for i in range(6):
        s, s_next = float(sched.sigmas[i]), float(sched.sigmas[i + 1])
        ratio = s / (1 - (float(sched.sigmas[1]) if s == 1 else s))
        std_s = level * ratio**0.5
        dt = s_next - s
        mean = x[i] * (1 + std_s**2 / (2 * s) * dt) + v[i] * (1 + std_s**2 * (1 - s) / (2 * s)) * dt
        std = std_s * (-dt) ** 0.5
        assert torch.allclose(nxt[i], mean + std * noise[i], atol=1e-5)
        density = torch.distributions.Normal(mean, std).log_prob(nxt[i]).mean()
        assert torch.allclose(lp[i], density, atol=1e-4, rtol=1e-5)
    std_s, sqrt_dt = sde_std(sched, keys, x, level)
    assert torch.all(std_s > 0) and torch.all(sqrt_dt > 0)


def test_rescoring_the_drawn_sample_gives_ratio_one():
    sched = _scheduler(10)
    x, v = _inputs(n=4, seed=2)
    keys = sched.timesteps.long()[[0, 3, 7, 9]]
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(3))
    nxt, lp = flow_step_with_logprob(sched, v, keys, x, 0.7, noise=noise)
    again, lp2 = flow_step_with_logprob(sched, v, keys, x, 0.7, prev_sample=nxt)
    assert again is nxt and torch.equal(torch.exp(lp2 - lp), torch.ones(4))
    # a velocity that moves the mean by a good part of a std scores the sample lower
    _, worse = flow_step_with_logprob(sched, v + 20.0, keys, x, 0.7, prev_sample=nxt)
    assert torch.all(worse < lp)


def test_bad_calls_are_refused():
    sched = _scheduler()
    x, v = _inputs(n=1)
    with pytest.raises(ValueError, match="exactly one"):
        flow_step_with_logprob(sched, v, 1000, x, 0.7)
    with pytest.raises(ValueError, match="timestep 500 is not in"):
        flow_step_with_logprob(sched, v, 500, x, 0.7, noise=torch.zeros_like(x))
    fresh = FlowMatchEulerDiscreteScheduler()
    fresh.timesteps = None
    with pytest.raises(ValueError, match="set_timesteps"):
        euler_step(fresh, v, 1000, x)


def test_noise_step_weights_follow_the_step_sensitivity():
    from diffusion.flow import noise_sensitivity, noise_step_weights

    sched = _scheduler(10)
    sens = noise_sensitivity(sched, 0.7)
    # recomputed from the drawn samples of two velocities: d mean / d v over the step's std
    x, v = _inputs(n=10)
    keys = sched.timesteps.long()
    zero = torch.zeros_like(x)
    m0, _ = flow_step_with_logprob(sched, v, keys, x, 0.7, noise=zero)
    m1, _ = flow_step_with_logprob(sched, v + 1.0, keys, x, 0.7, noise=zero)
    std_s, sqrt_dt = sde_std(sched, keys, x, 0.7)
    measured = (m1 - m0).flatten(1).mean(1).abs() / (std_s * sqrt_dt).flatten()
    assert torch.allclose(sens, measured, rtol=1e-4)
    w = noise_step_weights(sched, 0.7)
    assert w.max() == 1 and torch.all(w[1:] <= w[:-1])  # later steps react more
