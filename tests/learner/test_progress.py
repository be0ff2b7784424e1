"""The stage line's elapsed time, time left and the warning for stages that train nothing."""

from __future__ import annotations

from learner import progress
from learner.progress import IDLE_STAGES, Progress, duration


def test_durations_read_as_people_write_them():
    assert [duration(s) for s in (0, 59.4, 61, 3599, 3720)] == [
        "0s",
        "59s",
        "1m01s",
        "59m59s",
        "1h02m",
    ]


def test_time_left_is_the_mean_stage_time_times_the_stages_left(monkeypatch):
    clock = iter([100.0, 130.0, 160.0])
    monkeypatch.setattr(progress.time, "perf_counter", lambda: next(clock))
    p = Progress(first_stage=4, last_stage=9)  # resumed after stage 3: six stages to run
    assert p.times(4) == "elapsed 30s  left ~2m30s"
    assert p.times(9) == "elapsed 1m00s  left ~0s"


def test_idle_stages_are_reported_once_per_streak():
    p = Progress(0, 20)
    idle = {"optimizer_steps": 0.0, "reward_std": 0.0, "reward_within_trunk": 0.0}
    said = [p.idle_warning(s, idle) for s in range(IDLE_STAGES + 2)]
    assert [m is not None for m in said] == [i == IDLE_STAGES - 1 for i in range(IDLE_STAGES + 2)]
    assert said[IDLE_STAGES - 1].startswith(f"warning: stages 1-{IDLE_STAGES} trained nothing")
    assert p.idle_warning(10, {"optimizer_steps": 2.0}) is None  # training again: streak over
    later = [p.idle_warning(s, idle) for s in range(11, 11 + IDLE_STAGES)]
    assert later[-1] is not None and later[-1].startswith("warning: stages 12-14")
