"""What the stage line says about the run as a whole: time so far, time left, idle stages."""

from __future__ import annotations

import time

IDLE_STAGES = 3  # consecutive stages without an optimizer step before the run says so


def duration(seconds: float) -> str:
    """12s, 3m05s, 1h02m."""
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


class Progress:
    """Elapsed time and an estimate of the time left (the mean stage time of this
    invocation times the stages left), and a warning when stages stop training."""

    def __init__(self, first_stage: int, last_stage: int):
        self.first, self.last = first_stage, last_stage
        self.t0 = time.perf_counter()
        self.idle: list[int] = []

    def times(self, stage: int) -> str:
        """'elapsed 3m05s  left ~1m02s' after `stage` completed."""
        elapsed = time.perf_counter() - self.t0
        done = stage - self.first + 1
        left = elapsed / done * (self.last - stage)
        return f"elapsed {duration(elapsed)}  left ~{duration(left)}"

    def idle_warning(self, stage: int, metrics: dict[str, float]) -> str | None:
        """A one-time message when IDLE_STAGES stages in a row made no optimizer step."""
        if metrics.get("optimizer_steps", 0) > 0:
            self.idle = []
            return None
        self.idle.append(stage)
        if len(self.idle) != IDLE_STAGES:
            return None
        return (
            f"warning: stages {self.idle[0] + 1}-{stage + 1} trained nothing: no branch passed "
            f"the selection (reward std {metrics.get('reward_std', 0.0):.4g}, within-trunk share "
            f"{metrics.get('reward_within_trunk', 0.0):.2f}); check that the reward varies "
            "between branches and the selection thresholds (selection.tau_pos / tau_neg)"
        )
