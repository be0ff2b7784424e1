"""The on-policy guard: before a stage's first optimizer step the learner's weights are the
ones that sampled the batch, so the ratio of the recomputed to the sampled log-probs must be
1 up to rounding. Every update measures |ratio - 1| on the terms it computes before that
step (no extra forward), over all ranks; above the tolerance the run warns once.
"""

from __future__ import annotations

import torch

from configs.schema import Config
from learner.distributed import Collective

FLOAT32_TOLERANCE = 1e-4
HALF_TOLERANCE = 1e-3


def tolerance(cfg: Config) -> float:
    """train.onpolicy_tolerance, or the default for the precision the UNet computes in."""
    if cfg.train.onpolicy_tolerance is not None:
        return cfg.train.onpolicy_tolerance
    half = cfg.model.autocast != "none" or cfg.model.dtype != "float32"
    return HALF_TOLERANCE if half else FLOAT32_TOLERANCE


class RatioCheck:
    """|ratio - 1| of the on-policy terms seen on this rank: max, sum and count."""

    def __init__(self) -> None:
        self.max, self.sum, self.count = 0.0, 0.0, 0

    def add(self, new: torch.Tensor, old: torch.Tensor) -> None:
        dev = (torch.exp(new.detach().float() - old.float()) - 1.0).abs()
        if dev.numel():
            self.max = max(self.max, float(dev.max()))
            self.sum += float(dev.sum())
            self.count += dev.numel()

    def reduce(self, group: Collective, tol: float) -> dict[str, float]:
        """The UpdateStats fields, the same on every rank."""
        total, count = group.sum([self.sum, float(self.count)])
        worst = group.max(self.max)
        return {
            "onpolicy_ratio_dev_max": worst,
            "onpolicy_ratio_dev_mean": total / count if count else 0.0,
            "onpolicy_transitions": int(count),
            "onpolicy_exceeded": int(count > 0 and worst > tol),
        }


def warning(metrics: dict[str, float], cfg: Config) -> str | None:
    """The stage line's warning when the stage's on-policy check failed (else None)."""
    if not metrics.get("onpolicy_exceeded"):
        return None
    m = cfg.model
    return (
        f"warning: off-policy at unchanged weights: the learner's recomputed log-probs differ "
        f"from the sampler's, max |ratio - 1| = {metrics['onpolicy_ratio_dev_max']:.2e} "
        f"(mean {metrics['onpolicy_ratio_dev_mean']:.2e}) > {tolerance(cfg):.0e} "
        f"(train.onpolicy_tolerance). Likely causes: half precision (model.dtype={m.dtype}, "
        f"model.autocast={m.autocast}), TF32 (model.allow_tf32={m.allow_tf32}), kernels that "
        f"depend on the batch shape (train.micro_batch vs sampling.micro_batch), or weights "
        f"that differ between the rollout actors and the learner. PPO's clipping then acts "
        f"on rounding noise; the value is logged per stage (onpolicy_ratio_dev_max)."
    )
