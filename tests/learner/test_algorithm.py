import numpy as np
import pytest

from configs.schema import AdvantageConfig, ScheduleConfig, SelectionConfig
from learner.advantages import Advantages, within_trunk_share
from learner.schedule import split_step
from learner.selection import select


def test_reference_schedule():
    cfg = ScheduleConfig(kind="linear", start=14, end=20)
    got = {i: split_step(cfg, i, 100, 20) for i in (0, 14, 15, 99)}
    assert got == {0: 14, 14: 14, 15: 15, 99: 20}
    values = [split_step(cfg, i, 100, 20) for i in range(100)]
    assert values == sorted(values) and set(values) == set(range(14, 21))


def test_list_and_constant_schedules():
    assert [
        split_step(ScheduleConfig(kind="list", values=[1, 3, 5]), i, 10, 20) for i in range(5)
    ] == [1, 3, 5, 5, 5]
    assert split_step(ScheduleConfig(kind="constant", start=20, end=20), 7, 10, 20) == 20
    # a ramp over fewer stages than the run holds its end
    assert split_step(ScheduleConfig(start=1, end=4, stages=4), 9, 10, 20) == 4


def test_selection_thresholds_including_edges():
    cfg = SelectionConfig(tau_pos=0.5, tau_neg=-0.5)
    trunks = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2])
    adv = np.array([0.5, 0.0, -0.5, 0.9, 0.1, -0.51, 0.49, 0.0, -0.2])
    sel = select(cfg, trunks, adv)
    # trunk 0: best at exactly tau_pos is taken (>=), worst at exactly tau_neg is not (<)
    # trunk 1: both; trunk 2: neither
    assert sel.index.tolist() == [0, 3, 5]
    assert (sel.positives, sel.negatives) == (2, 1)
    assert sel.pairs.tolist() == [[3, 5]]
    all_sel = select(SelectionConfig(mode="all"), trunks, adv)
    assert all_sel.index.tolist() == list(range(9))


def test_history_window_pools_last_h_stages():
    adv = Advantages(AdvantageConfig(mode="prompt_history", history=2))
    trunks = np.array([0, 0])
    a0 = adv(["p", "p"], trunks, np.array([0.0, 2.0]))
    assert np.allclose(a0, [-(0.5**0.5), 0.5**0.5])  # unbiased std of [0, 2]: sqrt(2)
    adv(["p", "p"], trunks, np.array([10.0, 10.0]))  # pool now [0, 2, 10, 10]
    a2 = adv(["p", "p"], trunks, np.array([4.0, 4.0]))
    pool = np.array([4, 4, 0, 2, 10, 10.0])
    assert np.allclose(a2, (4 - pool.mean()) / (pool.std(ddof=1) + 1e-8))
    a3 = adv(["p", "p"], trunks, np.array([4.0, 4.0]))  # stage 0 has left the window
    pool = np.array([4, 4, 10, 10, 4, 4.0])
    assert np.allclose(a3, (4 - pool.mean()) / (pool.std(ddof=1) + 1e-8))
    # prompts are normalised separately
    mixed = adv(["p", "q"], np.array([0, 1]), np.array([4.0, 100.0]))
    assert mixed[1] == 0.0
    restored = Advantages(AdvantageConfig(mode="prompt_history", history=2))
    restored.load_state_dict(adv.state_dict())
    assert np.allclose(
        restored(["p"], np.array([0]), np.array([7.0])), adv(["p"], np.array([0]), np.array([7.0]))
    )


def test_ddpo_stat_tracker_min_count_then_buffer():
    adv = Advantages(AdvantageConfig(mode="stat_tracker", buffer_size=4, min_count=3))
    r = np.array([1.0, 3.0, 10.0, 20.0])
    a = adv(["p", "p", "q", "q"], np.arange(4), r)
    # below min_count: whole-batch statistics
    assert np.allclose(a, (r - r.mean()) / (r.std() + 1e-8))
    a = adv(["p", "p"], np.arange(2), np.array([5.0, 7.0]))  # p's buffer: 1, 3, 5, 7
    buf = np.array([1, 3, 5, 7.0])
    assert np.allclose(a, (np.array([5, 7.0]) - buf.mean()) / (buf.std() + 1e-8))
    adv(["p"], np.arange(1), np.array([9.0]))  # ring buffer drops the oldest (1)
    assert adv.memory["p"] == [3.0, 5.0, 7.0, 9.0]


def test_group_advantages_within_trunk():
    adv = Advantages(AdvantageConfig(mode="group"))
    a = adv(["p"] * 4, np.array([0, 0, 1, 1]), np.array([1.0, 3.0, 5.0, 5.0]))
    assert np.allclose(a, [-1, 1, 0, 0])


def test_group_advantages_scaled_by_the_prompts_pooled_std():
    trunks = np.array([0, 0, 1, 1, 2, 2])
    rewards = np.array([0.94, 0.96, 0.1, 0.9, 0.3, 0.5])
    prompts = ["p", "p", "p", "p", "q", "q"]
    by_trunk = Advantages(AdvantageConfig(mode="group"))(prompts, trunks, rewards)
    by_prompt = Advantages(AdvantageConfig(mode="group", group_scale="prompt"))(
        prompts, trunks, rewards
    )
    assert np.allclose(by_trunk, [-1, 1, -1, 1, -1, 1])  # noise and a real difference alike
    pooled = rewards[:4].std()
    assert np.allclose(by_prompt[:4], np.array([-0.01, 0.01, -0.4, 0.4]) / pooled)
    assert np.allclose(by_prompt[4:], [-1, 1])  # q's only trunk: its std is the prompt's
    assert abs(by_prompt[0]) < 0.5 < abs(by_prompt[2])  # only the real difference is selected


def test_within_trunk_share_of_reward_variance():
    trunks = np.array([0, 0, 1, 1])
    assert within_trunk_share(np.array([1.0, 1.0, 3.0, 3.0]), trunks) == 0.0  # trunks only
    assert within_trunk_share(np.array([1.0, 3.0, 1.0, 3.0]), trunks) == pytest.approx(1.0)
    # between: trunk means 2 and 4 around 3 (SS 4); within: 1 + 1 around each mean (SS 4)
    assert within_trunk_share(np.array([1.0, 3.0, 3.0, 5.0]), trunks) == pytest.approx(0.5)
    assert within_trunk_share(np.full(4, 0.7), trunks) == 0.0  # nothing to explain


def test_mode_mismatch_on_restore():
    with pytest.raises(ValueError, match="mode"):
        Advantages(AdvantageConfig(mode="group")).load_state_dict(
            {"mode": "stat_tracker", "memory": {}}
        )
