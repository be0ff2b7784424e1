"""Backward progressive training: how many final steps (the interval s_i) stage i trains."""

from __future__ import annotations

from configs.schema import ScheduleConfig


def split_step(cfg: ScheduleConfig, stage: int, total_stages: int, num_steps: int) -> int:
    """s_i for stage i: the trunk runs T - s_i steps, the branches the last s_i.

    linear: the reference ramp s_min + floor((s_max - s_min + 1) * i / stages), capped at
    s_max; list: one explicit value per stage (the last repeats); constant: start.
    """
    if stage < 0:
        raise ValueError(f"stage {stage} must be >= 0")
    if cfg.kind == "constant":
        s = cfg.start
    elif cfg.kind == "list":
        values = cfg.values or []
        s = values[min(stage, len(values) - 1)]
    else:
        span = cfg.stages or total_stages
        s = cfg.start + ((cfg.end - cfg.start + 1) * stage) // span
        s = min(s, cfg.end)
    return max(1, min(s, num_steps))
