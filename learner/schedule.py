"""Progressive training: which denoising steps (the interval) stage i trains.

Steps are indexed 0 (the noisiest, from x_T) to T - 1 (the last, to x_0); an interval is
[start, end) of those indices. The paper's backward schedule trains the last s_i steps,
[T - s_i, T); `forward` and `window` are the orders it is compared with.
"""

from __future__ import annotations

from configs.schema import ScheduleConfig


def _ramp(low: int, high: int, stage: int, span: int) -> int:
    """low + floor((high - low + 1) * stage / span), capped at high: every value from low to
    high for an equal share of the span's stages (the reference code's rule)."""
    return min(low + ((high - low + 1) * stage) // span, high)


def interval(cfg: ScheduleConfig, stage: int, total_stages: int, num_steps: int) -> tuple[int, int]:
    """[start, end) of the denoising steps stage i trains; the trunk runs steps 0 .. start - 1,
    the branches the rest.

    backward: the last s_i steps, s_i the reference ramp from `start` to `end` over
    `stages` (default: all) stages; forward: the first s_i steps; window: `width` steps
    whose first index ramps from 0 to T - width; list: the last values[i] steps (the last
    value repeats); constant: the last `start` steps.
    """
    if stage < 0:
        raise ValueError(f"stage {stage} must be >= 0")
    span = cfg.stages or total_stages
    if cfg.kind == "window":
        width = min(cfg.width or 1, num_steps)
        first = _ramp(0, num_steps - width, stage, span)
        return first, first + width
    if cfg.kind == "constant":
        s = cfg.start
    elif cfg.kind == "list":
        values = cfg.values or []
        s = values[min(stage, len(values) - 1)]
    else:
        s = _ramp(cfg.start, cfg.end, stage, span)
    s = max(1, min(s, num_steps))
    return (0, s) if cfg.kind == "forward" else (num_steps - s, num_steps)


def split_step(cfg: ScheduleConfig, stage: int, total_stages: int, num_steps: int) -> int:
    """s_i, the number of steps stage i trains (the interval's length)."""
    start, end = interval(cfg, stage, total_stages, num_steps)
    return end - start
