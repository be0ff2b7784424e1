"""The reward worker and the reward model it runs: typed records out, bad scores refused."""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest
import torch

from configs.schema import RewardTerm
from learner.records import RolloutImages
from rewards.composite import RewardModel


def _images(n: int) -> RolloutImages:
    return RolloutImages(
        chunk=3,
        prompts=[f"prompt {i // 2}" for i in range(n)],
        trunk_ids=torch.arange(n) // 2 + 10,
        branch_ids=torch.arange(n) % 2,
        images=torch.randint(0, 255, (n, 3, 8, 8), dtype=torch.uint8),
        seconds=0.0,
    )


@pytest.fixture
def scorer_module(monkeypatch):
    module = types.ModuleType("user_scorers")
    module.short = lambda images, prompts: np.zeros(len(prompts) - 1)
    module.mean = lambda images, prompts: images.float().mean(dim=(1, 2, 3)).numpy()
    monkeypatch.setitem(sys.modules, "user_scorers", module)
    return module


def test_a_term_with_the_wrong_number_of_scores_is_refused_by_name(scorer_module):
    model = RewardModel([RewardTerm(name="custom", model="user_scorers:short")])
    with pytest.raises(ValueError, match="reward term 'custom' returned 3 scores for 4 images"):
        model.score(_images(4).images, _images(4).prompts)


def test_the_worker_returns_a_scored_chunk_with_its_rows(scorer_module, tiny_cfg):
    from rewards.reward_worker import RewardWorker

    cfg = tiny_cfg.model_copy(
        update={"rewards": [RewardTerm(name="custom", model="user_scorers:mean", weight=2.0)]}
    )
    rollout = _images(4)
    scored = RewardWorker(cfg).score(rollout)
    want = rollout.images.float().mean(dim=(1, 2, 3)).numpy()
    assert scored.chunk == 3 and scored.rows.prompts == rollout.prompts
    assert scored.rows.trunk_ids.tolist() == [10, 10, 11, 11]
    assert scored.rows.chunks.tolist() == [3] * 4 and scored.rows.positions.tolist() == [0, 1, 2, 3]
    np.testing.assert_allclose(scored.total, 2.0 * want)
    np.testing.assert_allclose(scored.terms["custom"], want)
