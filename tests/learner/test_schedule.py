"""schedule.kind: which denoising steps each stage trains, and the sampler and trainer on an
interval that does not end at the last step."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from configs.load import PRESET_DIR, ConfigError, load_config
from configs.schema import Config, ScheduleConfig
from diffusion.sampler import SamplerSettings, UNetCounter, expected_evaluations, sample_branches
from learner.advantages import Advantages
from learner.schedule import interval, split_step
from learner.stage import run_in_process, sampler_settings
from learner.update import PolicyTrainer


def _intervals(cfg: ScheduleConfig, stages: int, steps: int) -> list[tuple[int, int]]:
    return [interval(cfg, i, stages, steps) for i in range(stages)]


def test_backward_forward_and_window_intervals_per_stage():
    # ramp 1 -> 4 over 6 stages: s_i = 1 + floor(4 i / 6) = 1, 1, 2, 3, 3, 4
    backward = ScheduleConfig(kind="backward", start=1, end=4)
    assert _intervals(backward, 6, 6) == [(5, 6), (5, 6), (4, 6), (3, 6), (3, 6), (2, 6)]
    forward = ScheduleConfig(kind="forward", start=1, end=4)
    assert _intervals(forward, 6, 6) == [(0, 1), (0, 1), (0, 2), (0, 3), (0, 3), (0, 4)]
    # width 2 of 6 steps: first index 0 .. 4, floor(5 i / 10), two stages at each
    window = ScheduleConfig(kind="window", width=2)
    assert _intervals(window, 10, 6) == [
        (0, 2), (0, 2), (1, 3), (1, 3), (2, 4), (2, 4), (3, 5), (3, 5), (4, 6), (4, 6)
    ]  # fmt: skip
    # over `stages` stages (first index floor(3 i / 4)), then held at the clean end
    assert _intervals(ScheduleConfig(kind="window", width=3, stages=4), 6, 5) == [
        (0, 3), (0, 3), (1, 4), (2, 5), (2, 5), (2, 5)
    ]  # fmt: skip
    # list and constant keep the paper's placement: the last s steps
    assert _intervals(ScheduleConfig(kind="list", values=[2, 5]), 3, 6) == [(4, 6), (1, 6), (1, 6)]
    assert _intervals(ScheduleConfig(kind="constant", start=6, end=6), 2, 6) == [(0, 6), (0, 6)]
    for cfg in (backward, forward, window):
        assert [split_step(cfg, i, 6, 6) for i in range(6)] == [
            e - s for s, e in _intervals(cfg, 6, 6)
        ]


def test_linear_is_backward_and_the_presets_keep_their_schedules():
    linear = ScheduleConfig(kind="linear", start=14, end=20)
    assert linear == ScheduleConfig(kind="backward", start=14, end=20)
    assert _intervals(linear, 100, 20)[::33] == [(6, 20), (4, 20), (2, 20), (0, 20)]
    assert load_config(PRESET_DIR / "sd14_b2.yaml").schedule.kind == "backward"
    assert load_config(None).schedule == ScheduleConfig(kind="backward", start=3, end=10)


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        (["schedule.kind=window"], "schedule.width is the interval of kind=window"),
        (["schedule.width=3"], "schedule.width is the interval of kind=window"),
        (["schedule.kind=window", "schedule.width=11"], "width=11 exceeds sampling.num_steps=10"),
        (["schedule.kind=forward", "schedule.end=12"], "schedule.end=12 exceeds"),
        (["schedule.kind=sideways"], "schedule.kind = 'sideways'"),
    ],
)
def test_bad_schedules_are_one_line(override, needle):
    with pytest.raises(ConfigError, match=needle) as err:
        load_config(None, override)
    assert "\n" not in str(err.value)


def test_an_interval_that_ends_early_shares_the_trunk_and_first_steps(tiny_model):
    """[1, 3) of 6 steps: the trunk runs step 0, the branches record steps 1-2 and finish
    steps 3-5 unrecorded. Its trunk and recorded steps are those of the interval [1, 6)
    (the same noise), so only what is recorded differs."""
    prompts, ids = ["a red circle", "a blue square"], [0, 4]
    early = SamplerSettings(6, 2, 3, 3.0, 1.0, 5, interval_end=3)
    to_end = SamplerSettings(6, 5, 3, 3.0, 1.0, 5)
    assert early.interval == (1, 3) and to_end.interval == (1, 6)
    counter = UNetCounter()
    a = sample_branches(tiny_model, prompts, ids, early, seed=2, stage=1, counter=counter)
    b = sample_branches(tiny_model, prompts, ids, to_end, seed=2, stage=1)
    tiny_model.scheduler.set_timesteps(6, device="cpu")
    assert torch.equal(a.timesteps, tiny_model.scheduler.timesteps[1:3].long())
    assert a.chain.shape[1] == 3 and a.log_probs.shape == (6, 2)
    assert torch.equal(a.chain, b.chain[:, :3]) and torch.equal(a.log_probs, b.log_probs[:, :2])
    assert torch.equal(a.images, b.images)  # the same steps to x_0, recorded or not
    for t in (0, 4):
        rows = (a.trunk_ids == t).nonzero().flatten()
        assert torch.equal(a.chain[rows, 0], a.chain[rows[:1], 0].expand(3, -1, -1, -1))
        assert not torch.equal(a.images[rows[0]], a.images[rows[1]])
    # per trunk: 1 trunk step + 3 branches x 5 steps, x2 with guidance
    assert counter.evaluations == expected_evaluations(early, 2) == 2 * 2 * (1 + 3 * 5)


def _cfg_with(tiny_cfg: Config, schedule: dict) -> Config:
    return Config.model_validate({**tiny_cfg.model_dump(), "schedule": schedule})


def test_the_default_schedule_keeps_the_sampler_settings(tiny_cfg):
    """backward (the paper) leaves interval_end unset: the settings, and so the samples,
    are those of the last-s-steps sampler."""
    for stage in range(tiny_cfg.stages):
        st = sampler_settings(tiny_cfg, stage)
        assert st.interval_end is None and st.interval[1] == tiny_cfg.sampling.num_steps


@pytest.mark.parametrize(
    ("schedule", "first"),
    [({"kind": "forward", "start": 2, "end": 4}, (0, 2)), ({"kind": "window", "width": 2}, (0, 2))],
)
def test_forward_and_window_stages_train_their_interval(tiny_model, tiny_cfg, schedule, first):
    cfg = _cfg_with(tiny_cfg, schedule)
    st = sampler_settings(cfg, 0)
    assert st.interval == first
    trainer = PolicyTrainer(tiny_model, cfg)
    before = {k: v.clone() for k, v in trainer.weights().items()}
    # the trainer recomputes the sampler's log-probs of the interval: ratio 1
    batch = sample_branches(tiny_model, ["a red circle"] * 2, [0, 1], st, cfg.seed, 0)
    assert (torch.exp(trainer.log_probs(batch) - batch.log_probs) - 1).abs().max() <= 1e-6

    def brightness(images, prompts):
        return images.float().mean(dim=(1, 2, 3)).numpy() / 255.0

    res = run_in_process(trainer, Advantages(cfg.advantage), brightness, ["a red circle"], cfg, 0)
    tiny_model.scheduler.set_timesteps(6, device="cpu")
    assert torch.equal(res.batch.timesteps, tiny_model.scheduler.timesteps[slice(*first)].long())
    assert res.update.optimizer_steps >= 1 and np.isfinite(res.update.loss)
    assert any(not torch.equal(before[k], v) for k, v in trainer.weights().items())
    # the last of the 4 stages: the window has slid by floor(5 * 3 / 4) steps, the forward
    # interval has grown to 2 + floor(3 * 3 / 4) steps
    last = sampler_settings(cfg, cfg.stages - 1).interval
    assert last == ((3, 5) if schedule["kind"] == "window" else (0, 4))
