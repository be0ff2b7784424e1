"""The configured reward: a weighted sum of registered rewards, each also reported alone."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from configs.schema import RewardTerm
from rewards.registry import build


@dataclass
class RewardResult:
    total: np.ndarray  # float64 [N], the training reward
    terms: dict[str, np.ndarray]  # per term key (term_keys), unweighted


def term_keys(terms: list[RewardTerm]) -> list[str]:
    """One metric key per term, never two alike: its label or name, then `_2`, `_3`, ...
    for a key already taken (two clip_score terms: clip_score, clip_score_2)."""
    keys: list[str] = []
    for term in terms:
        base = term.label or term.name
        key, n = base, 1
        while key in keys:
            n += 1
            key = f"{base}_{n}"
        keys.append(key)
    return keys


class RewardModel:
    def __init__(self, terms: list[RewardTerm], device: torch.device | None = None):
        device = device or torch.device("cpu")
        self.terms = list(terms)
        self.keys = term_keys(self.terms)
        self.scorers = [build(t, device, i) for i, t in enumerate(self.terms)]

    def score(self, images: torch.Tensor, prompts: list[str]) -> RewardResult:
        total = np.zeros(len(prompts), dtype=np.float64)
        parts: dict[str, np.ndarray] = {}
        for key, term, scorer in zip(self.keys, self.terms, self.scorers, strict=True):
            values = scorer(images, prompts)
            if values.shape[0] != len(prompts):
                raise ValueError(
                    f"reward term '{key}' returned {values.shape[0]} scores for "
                    f"{len(prompts)} images"
                )
            parts[key] = values
            total += term.weight * values
        return RewardResult(total, parts)

    def __call__(self, images: torch.Tensor, prompts: list[str]) -> np.ndarray:
        return self.score(images, prompts).total
