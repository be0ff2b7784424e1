"""Which branches become training samples.

extremes (the reference): within each trunk, the argmax branch is a positive sample if its
advantage >= tau_pos and the argmin branch a negative sample if its advantage < tau_neg,
so a trunk gives 0, 1 or 2 trajectories. all: every branch (DDPO).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from configs.schema import SelectionConfig


@dataclass
class Selection:
    index: np.ndarray  # rows of the stage's trajectory batch to train on, sorted
    positives: int
    negatives: int
    pairs: np.ndarray  # [P, 2] (best row, worst row) of trunks where both were selected


def select(cfg: SelectionConfig, trunk_ids: np.ndarray, advantages: np.ndarray) -> Selection:
    trunk_ids = np.asarray(trunk_ids)
    advantages = np.asarray(advantages, dtype=np.float64)
    if cfg.mode == "all":
        index = np.arange(len(advantages))
        return Selection(
            index, int((advantages > 0).sum()), int((advantages < 0).sum()), np.zeros((0, 2), int)
        )
    chosen, pairs, pos, neg = [], [], 0, 0
    for tid in np.unique(trunk_ids):
        rows = np.flatnonzero(trunk_ids == tid)
        if len(rows) < 2:
            continue
        best = rows[np.argmax(advantages[rows])]
        worst = rows[np.argmin(advantages[rows])]
        take_best = advantages[best] >= cfg.tau_pos
        take_worst = advantages[worst] < cfg.tau_neg and worst != best
        if take_best:
            chosen.append(best)
            pos += 1
        if take_worst:
            chosen.append(worst)
            neg += 1
        if take_best and take_worst:
            pairs.append((best, worst))
    index = np.asarray(sorted(chosen), dtype=int)
    return Selection(index, pos, neg, np.asarray(pairs, dtype=int).reshape(-1, 2))


def compact(sel: Selection) -> Selection:
    """The same selection re-indexed into the batch of only the selected rows (in order)."""
    index = np.arange(len(sel.index))
    pairs = np.searchsorted(sel.index, sel.pairs) if len(sel.pairs) else sel.pairs
    return Selection(index, sel.positives, sel.negatives, np.asarray(pairs, dtype=int))
