"""The records of one policy update (`learner.update.PolicyTrainer.update`): what its terms
share, this rank's running sums, and the statistics it reports."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from diffusion.trajectory import TrajectoryBatch
from learner.distributed import Collective


@dataclass
class UpdateStats:
    loss: float = 0.0
    approx_kl: float = 0.0
    clip_fraction: float = 0.0
    ratio_mean: float = 1.0
    ratio_min: float = 1.0
    ratio_max: float = 1.0
    grad_norm: float = 0.0
    optimizer_steps: int = 0
    samples: int = 0
    kl_stopped: int = 0  # 1 when train.target_kl ended the update early
    kl_base: float = 0.0  # mean KL from the pretrained model per trained transition (kl_coef > 0)
    # |ratio - 1| of the terms before the first optimizer step (learner.onpolicy)
    onpolicy_ratio_dev_max: float = 0.0
    onpolicy_ratio_dev_mean: float = 0.0
    onpolicy_transitions: int = 0
    onpolicy_exceeded: int = 0  # 1 when the max is above train.onpolicy_tolerance
    # latents through the UNet in training, all ranks: every trained latent counts its
    # forward and its backward pass (x2 with classifier-free guidance, as sampling's
    # unet_evaluations), a pretrained-model forward for the KL penalty counts once
    update_unet_evaluations: int = 0

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


@dataclass
class Work:
    """What every term of one update shares."""

    batch: TrajectoryBatch
    units: np.ndarray  # [U, 1] selected rows (PPO) or [U, 2] (best, worst) pairs
    unit_cost: np.ndarray  # [U] trajectory-steps of each unit (what sharding balances)
    advantages: torch.Tensor  # [N] float32, every row of the batch
    emb: dict[str, torch.Tensor]  # prompt -> its conditioning
    uncond: torch.Tensor
    step_weights: torch.Tensor  # [s] loss weight of each interval step
    kl_on: torch.Tensor  # [s] whether the KL penalty covers each interval step
    guided: int  # denoiser passes per latent and step (DiffusionModel.passes)
    base_means: torch.Tensor | None = None  # the pretrained model's step means (KL penalty)
    kl_pos: dict[int, int] | None = None  # row -> its index in base_means


@dataclass
class Tally:
    """This rank's running sums over an update's terms; `finish` reduces them over ranks."""

    loss: float = 0.0
    approx_kl: float = 0.0
    clip_fraction: float = 0.0
    ratio_mean: float = 0.0
    ratio_min: float = math.inf
    ratio_max: float = -math.inf
    kl_base: float = 0.0
    evaluations: int = 0  # this rank's trained latents x guidance x 2 (forward, backward)
    terms: int = 0  # interval steps of the optimizer batches so far (each batch counts s)
    terms_at_step: int = 0  # `terms` at the last optimizer step
    step_kl: float = 0.0  # approx. KL of this rank's terms since the last optimizer step
    grad_norms: list[float] = field(default_factory=list)

    def add(self, loss: torch.Tensor, diag: dict, share: float) -> None:
        self.loss += float(loss.detach())
        self.approx_kl += float(diag["approx_kl"]) * share
        self.clip_fraction += float(diag["clip_fraction"]) * share
        self.ratio_mean += float(diag["ratio_mean"]) * share
        self.ratio_min = min(self.ratio_min, float(diag["ratio_min"]))
        self.ratio_max = max(self.ratio_max, float(diag["ratio_max"]))
        self.step_kl += float(diag["approx_kl"]) * share

    def finish(self, stats: UpdateStats, group: Collective) -> None:
        keys = ("loss", "approx_kl", "clip_fraction", "ratio_mean")
        values = [getattr(self, k) for k in keys] + [self.kl_base, self.evaluations]
        *totals, kl_base, evaluations = group.sum(values)
        stats.update_unet_evaluations += int(round(evaluations))
        for k, total in zip(keys, totals, strict=True):
            setattr(stats, k, total / self.terms)
        stats.ratio_min, stats.ratio_max = group.min(self.ratio_min), group.max(self.ratio_max)
        stats.grad_norm = float(np.mean(self.grad_norms)) if self.grad_norms else 0.0
        stats.kl_base = kl_base / self.terms
