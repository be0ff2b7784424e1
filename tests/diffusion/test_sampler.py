import math

import numpy as np
import torch

from diffusion.sampler import SamplerSettings, UNetCounter, expected_evaluations, sample_branches
from learner.stage import sampler_settings, stage_prompts


def _settings(s=3, k=3, mb=5, cfg=3.0):
    return SamplerSettings(
        num_steps=6, split_step=s, branches=k, guidance_scale=cfg, eta=1.0, micro_batch=mb
    )


def test_branches_share_the_trunk_and_differ_after(tiny_model):
    st = _settings()
    batch = sample_branches(
        tiny_model, ["a red circle", "a blue square"], [0, 1], st, seed=1, stage=0
    )
    assert len(batch) == 6 and batch.chain.shape[:2] == (6, 4) and batch.log_probs.shape == (6, 3)
    assert batch.images.dtype == torch.uint8 and batch.images.shape == (6, 3, 32, 32)
    for tid in (0, 1):
        rows = (batch.trunk_ids == tid).nonzero().flatten()
        first = batch.chain[rows, 0]
        assert torch.equal(first, first[:1].expand_as(first))  # identical at the split point
        for j in range(1, 4):
            step = batch.chain[rows, j]
            assert not torch.allclose(step[0], step[1]) and not torch.allclose(step[1], step[2])
    # the two trunks draw different noise
    assert not torch.allclose(batch.chain[0, 0], batch.chain[3, 0])
    assert torch.equal(batch.latents[:, 1], batch.next_latents[:, 0])


def test_unet_work_is_the_batched_count(tiny_model):
    st = _settings(s=2, k=4, mb=5)
    counter = UNetCounter()
    sample_branches(tiny_model, ["a"] * 3, [0, 1, 2], st, seed=0, stage=0, counter=counter)
    # trunk: 4 steps of 3 latents (1 call each); branches: 2 steps of 12 latents (3 calls each)
    assert counter.calls == 4 * 1 + 2 * math.ceil(12 / 5)
    assert counter.evaluations == expected_evaluations(st, 3) == 2 * (3 * 4 + 12 * 2)
    per_branch_loop_calls = 3 * 4 * 6  # K * T per trunk if every branch were sampled alone
    assert counter.calls < per_branch_loop_calls


def test_same_seed_same_samples_and_split_over_workers(tiny_model, tiny_cfg):
    st = sampler_settings(tiny_cfg, 0)
    prompts = stage_prompts(["a red circle", "a blue square", "two green triangles"], 5, 3, 0)
    whole = sample_branches(tiny_model, prompts, list(range(5)), st, seed=3, stage=0)
    from diffusion.trajectory import TrajectoryBatch

    parts = [np.arange(0, 2), np.arange(2, 4), np.arange(4, 5)]
    split = TrajectoryBatch.cat(
        [
            sample_branches(tiny_model, [prompts[i] for i in p], p.tolist(), st, seed=3, stage=0)
            for p in reversed(parts)
        ]
    )
    assert split.prompts == whole.prompts
    assert torch.equal(split.trunk_ids, whole.trunk_ids)
    # the noise is bit-identical; BLAS may round differently for another batch size, so the
    # latents agree to float32 rounding (measured: 6e-7 of the largest value) and the images
    # to one intensity level where a value sits on a rounding edge. (The Ray runtime cuts a
    # stage into tasks by the config alone, so there the samples are bit-identical.)
    diff = (split.images.int() - whole.images.int()).abs()
    assert diff.max() <= 1 and (diff > 0).float().mean() < 1e-3
    scale = whole.chain.abs().max()
    assert (split.chain - whole.chain).abs().max() <= 1e-5 * scale
    assert torch.allclose(split.log_probs, whole.log_probs, atol=1e-6, rtol=0)
    other_stage = sample_branches(tiny_model, prompts, list(range(5)), st, seed=3, stage=1)
    assert not torch.allclose(other_stage.chain[:, 0], whole.chain[:, 0])


def test_parts_without_rows_join_and_keep_the_interval(tiny_model):
    from diffusion.trajectory import TrajectoryBatch

    st = _settings(s=2, k=2)
    batch = sample_branches(tiny_model, ["a", "b"], [0, 1], st, seed=0, stage=0)
    empty = batch.select([])
    alone = TrajectoryBatch.cat([empty])
    assert (
        len(alone) == 0 and alone.interval == 2 and alone.chain.shape[1:] == batch.chain.shape[1:]
    )
    joined = TrajectoryBatch.cat([empty, batch.select([3, 1]), empty])
    assert joined.trunk_ids.tolist() == [0, 1] and torch.equal(joined.chain, batch.chain[[1, 3]])


def test_ddpo_is_k1_full_interval(tiny_model):
    st = _settings(s=6, k=1)
    batch = sample_branches(tiny_model, ["a red circle"], [0], st, seed=0, stage=0)
    assert batch.chain.shape[1] == 7 and batch.log_probs.shape == (1, 6)
