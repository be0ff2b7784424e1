"""The build's baselines: how often the toy CLIP ranks a correct image over a wrong one."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from toyworld.baselines import clip_agreement


def test_clip_agreement_per_prompt_counts_correct_over_wrong_pairs():
    class Scores:  # stands in for the toy CLIP: the given scores, in image order
        def score(self, images, prompts):
            return np.array([0.9, 0.1, 0.5, 0.2, 0.8, 0.3, 0.7])

    prompts = ["a"] * 3 + ["b"] * 2 + ["c"] * 2
    correct = np.array([True, False, False, True, False, True, True])
    g = clip_agreement(Scores(), torch.zeros(7, 3, 4, 4), prompts, correct)
    # a: 0.9 beats 0.1 and 0.5; b: 0.2 loses to 0.8; c: all correct, no pair
    assert g["per_prompt"] == {"a": 1.0, "b": 0.0, "c": None}
    assert g["pairs"] == 3 and g["agreement"] == pytest.approx(2 / 3)
