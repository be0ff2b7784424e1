"""Data-parallel learner ranks without Ray: the sharding, the loss scaling, and N ranks in
threads (a barrier as the collective) making the update one rank makes."""

from __future__ import annotations

import copy
import types

import numpy as np
import pytest
import torch

from diffusion.sampler import sample_branches
from learner.distributed import mean_share, shard
from learner.selection import Selection, compact, select
from learner.stage import sampler_settings
from learner.update import PolicyTrainer
from learner.update_plan import (
    epoch_batches,
    held_rows,
    rank_share,
    training_units,
    unit_costs,
)


def test_shard_balances_trajectory_steps_and_covers_every_unit_once():
    costs = [10, 3, 3, 7, 1, 6, 2, 8]
    parts = shard(costs, 3)
    assert sorted(np.concatenate(parts).tolist()) == list(range(len(costs)))
    loads = [sum(costs[i] for i in p) for p in parts]
    assert max(loads) - min(loads) <= max(costs) and max(loads) <= 14  # 40 / 3 rounded up
    assert all(np.all(np.diff(p) > 0) for p in parts)  # ascending within a part
    assert [p.tolist() for p in shard(costs, 3)] == [p.tolist() for p in parts]  # deterministic


def test_shard_of_equal_costs_is_round_robin_and_one_rank_takes_all():
    assert [p.tolist() for p in shard([4] * 5, 2)] == [[0, 2, 4], [1, 3]]
    assert [p.tolist() for p in shard([4] * 5, 1)] == [[0, 1, 2, 3, 4]]
    assert [p.tolist() for p in shard([4], 3)] == [[0], [], []]  # more ranks than units


def test_mean_shares_sum_to_the_global_mean():
    values = np.array([0.3, -1.2, 2.0, 0.7, 0.1])
    parts = shard(np.ones(len(values)), 3)
    total = sum(values[p].mean() * mean_share(len(p), len(values)) for p in parts)
    assert total == pytest.approx(values.mean(), abs=1e-12)
    assert mean_share(5, 5) == 1.0 and mean_share(0, 5) == 0.0


def _units_cfg(tiny_cfg, **train):
    return tiny_cfg.model_copy(update={"train": tiny_cfg.train.model_copy(update=train)})


@pytest.mark.parametrize("pairwise", [False, True])
def test_each_rank_holds_its_share_of_every_batch_and_not_much_more(tiny_cfg, pairwise):
    cfg = _units_cfg(tiny_cfg, batch_size=8, epochs=2)
    if pairwise:
        cfg = cfg.model_copy(update={"loss": cfg.loss.model_copy(update={"name": "pairwise"})})
    index = np.arange(0, 120, 2)  # the selected rows of a stage, in its numbering
    pairs = index.reshape(-1, 2)
    sel = Selection(index, 30, 30, pairs)
    units = training_units(cfg, sel)
    assert held_rows(cfg, sel, 5, 1)[0].tolist() == index.tolist()
    held = held_rows(cfg, sel, 5, 4)
    for epoch in range(2):
        for unit_idx, _, _ in epoch_batches(cfg, len(units), 3, 5, epoch):
            for r in range(4):
                share = units[rank_share(unit_idx, unit_costs(units, 3), r, 4)]
                assert set(share.ravel()) <= set(held[r].tolist())
    assert all(np.all(np.diff(h) > 0) for h in held)  # ascending, no repeats
    assert set(np.concatenate(held).tolist()) == set(units.ravel().tolist())
    # two epochs: a rank holds about 1 - (3/4)^2 = 44 % of the rows, not all of them
    assert max(len(h) for h in held) <= 0.6 * units.size
    one_epoch = held_rows(_units_cfg(cfg, batch_size=8, epochs=1), sel, 5, 4)
    assert sum(len(h) for h in one_epoch) == units.size  # one epoch: a partition


def test_a_rank_handed_other_rows_than_its_share_says_so(tiny_model, tiny_cfg):
    prompts = ["a red circle", "a blue square", "two green triangles"]
    batch = sample_branches(tiny_model, prompts, [0, 1, 2], sampler_settings(tiny_cfg, 2), 3, 2)
    sel = Selection(np.arange(len(batch)), 4, 5, np.zeros((0, 2), int))
    rank = types.SimpleNamespace(rank=0, size=2)
    trainer = PolicyTrainer(copy.deepcopy(tiny_model), tiny_cfg, rank)
    with pytest.raises(ValueError, match=r"learner rank 0 of 2 was handed 9 trajectories"):
        trainer.update(batch, np.zeros(len(batch)), sel, stage=2)


CASES = {
    "ppo": ({}, {}),
    "ppo_accum": ({}, {"grad_accum": 2, "batch_size": 2}),
    "kl_penalty": ({"kl_coef": 0.5, "step_weight": "noise"}, {}),
    "pairwise": ({"name": "pairwise"}, {"batch_size": 1}),
    "target_kl": ({}, {"lr": 0.05, "batch_size": 1, "epochs": 2, "target_kl": 1e-4}),
    "micro_batch": ({}, {"batch_size": 6, "micro_batch": 1}),  # pieces of each rank's shard
}


@pytest.mark.parametrize("case", list(CASES))
def test_two_ranks_make_the_update_of_one(tiny_model, tiny_cfg, case, thread_ranks, in_threads):
    loss, train = CASES[case]
    cfg = tiny_cfg.model_copy(
        update={
            "loss": tiny_cfg.loss.model_copy(update=loss),
            "train": tiny_cfg.train.model_copy(update=train),
        }
    )
    prompts = ["a red circle", "a blue square", "two green triangles"]
    batch = sample_branches(tiny_model, prompts, [0, 1, 2], sampler_settings(cfg, 2), 3, 2)
    adv = np.array([1.0, 0.1, -1.0, 0.9, -0.8, 0.0, 0.5, -0.2, -0.6])
    sel = select(cfg.selection, batch.trunk_ids.numpy(), adv)
    batch, adv, sel = batch.select(torch.as_tensor(sel.index)), adv[sel.index], compact(sel)

    one = PolicyTrainer(copy.deepcopy(tiny_model), cfg)
    want = one.update(batch, adv, sel, stage=2)

    ranks = [PolicyTrainer(copy.deepcopy(tiny_model), cfg, g) for g in thread_ranks(2)]
    mine = [batch.select(h) for h in held_rows(cfg, sel, 2, 2)]  # each rank: its rows only
    pairs = zip(ranks, mine, strict=True)
    jobs = [lambda t=t, b=b: t.update(b, adv, sel, stage=2) for t, b in pairs]
    got = in_threads(jobs)
    assert got[0] is not None and got[0] == got[1]  # the same stats on every rank
    w0, w1, ref = ranks[0].weights(), ranks[1].weights(), one.weights()
    assert all(torch.equal(w0[k], w1[k]) for k in ref)  # identical on every rank
    # float32 noise (rows batched differently) in a near-zero gradient component still
    # moves it by a fraction of lr under AdamW: compare with the update's own size
    init = PolicyTrainer(copy.deepcopy(tiny_model), cfg).weights()
    moved = max(float((ref[k] - init[k]).abs().max()) for k in ref)
    assert max(float((w0[k] - ref[k]).abs().max()) for k in ref) <= 0.01 * moved
    assert got[0].optimizer_steps == want.optimizer_steps >= 1
    assert got[0].kl_stopped == want.kl_stopped
    # the loss is a mean of O(1) terms that nearly cancel: float32 rounding is absolute
    assert got[0].loss == pytest.approx(want.loss, abs=1e-6)
    assert got[0].approx_kl == pytest.approx(want.approx_kl, rel=1e-3, abs=1e-10)
    for key in ("clip_fraction", "ratio_mean", "grad_norm", "kl_base"):
        assert getattr(got[0], key) == pytest.approx(getattr(want, key), rel=1e-3)
    assert (got[0].ratio_min, got[0].ratio_max) == pytest.approx((want.ratio_min, want.ratio_max))
    lora_bytes = sum(p.numel() * p.element_size() for p in ranks[0].params)
    assert ranks[0].group.grad_bytes == lora_bytes * got[0].optimizer_steps
    if case == "target_kl":
        assert want.kl_stopped == 1  # the case exercises the global early-stopping decision
