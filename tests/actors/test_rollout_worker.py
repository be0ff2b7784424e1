"""The plain rollout worker: typed records out, trajectories kept for the learner, and the
training grid's fixed noise."""

from __future__ import annotations

import pytest
import torch

from actors.rollout_worker import RolloutWorker, StaleWeightsError
from learner.records import RolloutTask
from learner.stage import rollout_tasks, sampler_settings
from learner.training_grid import GRID_SEED, GRID_STREAM, grid_rows


def test_a_chunk_returns_its_images_and_cost_and_keeps_its_trajectories(tiny_cfg):
    worker = RolloutWorker(tiny_cfg)
    with pytest.raises(StaleWeightsError):  # built, but not given weights yet
        worker.sample(0, RolloutTask(0, 0, ["a red circle"], [0]), sampler_settings(tiny_cfg, 0))
    weights = {k: v.clone() for k, v in worker.model.unet.state_dict().items() if "lora" in k}
    worker.set_weights(0, weights)
    (task,) = rollout_tasks(
        tiny_cfg.model_copy(
            update={"runtime": tiny_cfg.runtime.model_copy(update={"trunks_per_task": 8})}
        ),
        ["a red circle", "a blue square"],
        0,
    )
    k = tiny_cfg.sampling.branches
    images, cost = worker.sample(0, task, sampler_settings(tiny_cfg, 0))
    n = len(task.trunk_ids) * k
    assert images.chunk == task.chunk and images.images.shape[0] == n
    assert images.trunk_ids.tolist() == [t for t in task.trunk_ids for _ in range(k)]
    assert images.prompts == [p for p in task.prompts for _ in range(k)]
    assert cost.unet_evaluations > 0 and cost.row_bytes > 0
    rows, count = worker.take(0, task.chunk, [1, n - 1])
    assert count == 2 and rows.trunk_ids.tolist() == images.trunk_ids[[1, n - 1]].tolist()
    assert len(rows.images) == 0  # the images went to the rewards already
    with pytest.raises(KeyError, match="no chunk 5 of stage 0"):
        worker.take(0, 5, [0])


def test_training_grid_noise_is_the_same_at_every_stage(tiny_cfg):
    worker = RolloutWorker(tiny_cfg)
    weights = {k: v.clone() for k, v in worker.model.unet.state_dict().items() if "lora" in k}
    worker.set_weights(0, weights)
    rows = grid_rows(["a red circle", "two blue squares", "a green triangle"])

    def grid(stage: int) -> torch.Tensor:
        settings = sampler_settings(tiny_cfg, stage)
        return worker.sample_fixed(0, rows, settings, GRID_SEED, GRID_STREAM)

    first, last = grid(0), grid(tiny_cfg.stages - 1)
    assert sampler_settings(tiny_cfg, 0).split_step != sampler_settings(tiny_cfg, 3).split_step
    assert first.shape[:2] == (len(rows), 3) and first.dtype == torch.uint8
    assert torch.equal(first, last)  # the stage changes nothing but the weights
    assert not torch.equal(first[0], first[3])  # one prompt, two noises

    moved = {k: v + 0.5 * torch.randn_like(v) for k, v in weights.items()}
    worker.set_weights(1, moved)
    assert not torch.equal(
        worker.sample_fixed(1, rows, sampler_settings(tiny_cfg, 0), GRID_SEED, GRID_STREAM), first
    )
    with pytest.raises(StaleWeightsError):
        worker.sample_fixed(0, rows, sampler_settings(tiny_cfg, 0), GRID_SEED, GRID_STREAM)
