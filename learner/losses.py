"""Policy losses over interval transitions, chosen by name (loss.name).

Both take new and old log-probs of the same transitions (mean over latent dims) and return
a scalar loss plus diagnostics; neither knows about sampling or branches.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from configs.schema import LossConfig


def scaled_advantages(adv: torch.Tensor, cfg: LossConfig) -> torch.Tensor:
    adv = adv.clamp(-cfg.adv_clip, cfg.adv_clip)
    return torch.where(adv > 0, adv * cfg.beta_pos, adv * cfg.beta_neg)


def ppo_clip(
    log_prob: torch.Tensor,
    old_log_prob: torch.Tensor,
    adv: torch.Tensor,
    cfg: LossConfig,
    weight: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """mean(w * max(-A * ratio, -A * clip(ratio, 1 - eps, 1 + eps))), w = 1 by default."""
    a = scaled_advantages(adv, cfg)
    log_ratio = log_prob - old_log_prob
    ratio = torch.exp(log_ratio)
    unclipped = -a * ratio
    clipped = -a * ratio.clamp(1.0 - cfg.clip_range, 1.0 + cfg.clip_range)
    per_row = torch.maximum(unclipped, clipped)
    loss = (per_row if weight is None else per_row * weight).mean()
    return loss, _diagnostics(log_ratio, cfg)


def pairwise(
    log_prob_w: torch.Tensor,
    old_log_prob_w: torch.Tensor,
    log_prob_l: torch.Tensor,
    old_log_prob_l: torch.Tensor,
    cfg: LossConfig,
    weight: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """DPO/D3PO-style: -log sigmoid(beta * (log-ratio of the best - log-ratio of the worst)).

    The sampling policy is the reference, so at the first step the margin is zero and the
    gradient pushes the best branch's transitions up and the worst's down.
    """
    ratio_w = log_prob_w - old_log_prob_w
    ratio_l = log_prob_l - old_log_prob_l
    per_pair = -F.logsigmoid(cfg.pairwise_beta * (ratio_w - ratio_l))
    loss = (per_pair if weight is None else per_pair * weight).mean()
    return loss, _diagnostics(torch.cat([ratio_w, ratio_l]), cfg)


def _diagnostics(log_ratio: torch.Tensor, cfg: LossConfig) -> dict[str, torch.Tensor]:
    log_ratio = log_ratio.detach()
    ratio = torch.exp(log_ratio)
    return {
        "approx_kl": 0.5 * (log_ratio**2).mean(),
        "clip_fraction": ((ratio - 1.0).abs() > cfg.clip_range).float().mean(),
        "ratio_mean": ratio.mean(),
        "ratio_min": ratio.min(),
        "ratio_max": ratio.max(),
    }
