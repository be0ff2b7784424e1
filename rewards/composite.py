"""The configured reward: a weighted sum of named scorers, each also reported alone."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from configs.schema import RewardTerm
from rewards.scorers import SCORERS


@dataclass
class RewardResult:
    total: np.ndarray  # float64 [N], the training reward
    terms: dict[str, np.ndarray]  # per scorer, unweighted


class RewardModel:
    def __init__(self, terms: list[RewardTerm], device: torch.device | None = None):
        device = device or torch.device("cpu")
        self.terms = list(terms)
        self.scorers = [SCORERS[t.name](t, device, i) for i, t in enumerate(self.terms)]

    def score(self, images: torch.Tensor, prompts: list[str]) -> RewardResult:
        total = np.zeros(len(prompts), dtype=np.float64)
        parts: dict[str, np.ndarray] = {}
        for term, scorer in zip(self.terms, self.scorers, strict=True):
            values = np.asarray(scorer(images, prompts), dtype=np.float64).reshape(-1)
            if values.shape[0] != len(prompts):
                raise ValueError(
                    f"reward term '{term.name}' returned {values.shape[0]} scores for "
                    f"{len(prompts)} images"
                )
            parts[term.name] = values
            total += term.weight * values
        return RewardResult(total, parts)

    def __call__(self, images: torch.Tensor, prompts: list[str]) -> np.ndarray:
        return self.score(images, prompts).total
