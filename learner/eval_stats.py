"""Standard errors of the evaluation metrics: how far a number can move with the noise.

`learner.evaluate` stores them next to each metric (a split's `stderr`); `learner.compare`
draws them as error bars and ranks runs only by differences that exceed them.
"""

from __future__ import annotations

import math

import numpy as np
import torch


def mean_stderr(values) -> float:
    """Standard error of the mean of per-image values: sample std / sqrt(n) (0 for n < 2)."""
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    return float(v.std(ddof=1) / math.sqrt(len(v))) if len(v) > 1 else 0.0


def diversity(emb: torch.Tensor) -> tuple[float, float]:
    """Mean pairwise cosine distance (1 - cos) among one prompt's image embeddings [n, d]
    (unit norm), and its jackknife standard error over the images: leaving image i out
    removes its row and column of the distance matrix, so each leave-one-out mean is
    (total - 2 * rowsum_i) / ((n - 1)(n - 2)) without recomputing anything."""
    n = len(emb)
    if n < 2:
        return 0.0, 0.0
    dist = 1 - (emb @ emb.T).double()
    dist.fill_diagonal_(0)
    total = dist.sum()
    mean = float(total / (n * (n - 1)))
    if n < 3:
        return mean, 0.0
    leave_one_out = (total - 2 * dist.sum(dim=1)) / ((n - 1) * (n - 2))
    spread = float(((leave_one_out - leave_one_out.mean()) ** 2).sum())
    return mean, math.sqrt((n - 1) / n * spread)


def mean_of_prompts_stderr(stderrs: list[float]) -> float:
    """Standard error of a mean over prompts of independent per-prompt estimates."""
    return math.sqrt(sum(s * s for s in stderrs)) / len(stderrs) if stderrs else 0.0


def stderr(split_result: dict, metric: str) -> float | None:
    """The standard error of `metric` in one split of an evaluation JSON: the stored one;
    for evaluations written before they were stored, the binomial one of oracle_accuracy
    (sqrt(p (1 - p) / images)) and None for the others."""
    stored = split_result.get("stderr", {}).get(metric)
    if stored is not None:
        return stored
    p = split_result.get(metric)
    if metric == "oracle_accuracy" and p is not None and split_result.get("images"):
        return math.sqrt(p * (1 - p) / split_result["images"])
    return None
