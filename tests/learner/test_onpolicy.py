"""The on-policy guard: before a stage's first optimizer step the recomputed log-probs
equal the sampled ones; a mismatch is measured, reduced over ranks and warned about."""

from __future__ import annotations

import copy
import threading

import numpy as np
import pytest
import torch

from configs.schema import Config, ModelConfig
from diffusion.pipeline import set_autocast
from diffusion.sampler import sample_branches
from learner import onpolicy
from learner.selection import Selection
from learner.stage import sampler_settings
from learner.update import PolicyTrainer

ADV = np.array([1.0, 0.1, -1.0, 0.9, -0.8, 0.0, 0.5, -0.2, -0.6])


def _cfg(tiny_cfg: Config, **train) -> Config:
    return tiny_cfg.model_copy(update={"train": tiny_cfg.train.model_copy(update=train)})


@pytest.fixture()
def batch(tiny_model, tiny_cfg):
    prompts = ["a red circle", "a blue square", "two green triangles"]
    return sample_branches(tiny_model, prompts, [0, 1, 2], sampler_settings(tiny_cfg, 2), 3, 2)


def _update(model, cfg, batch, group=None):
    sel = Selection(np.arange(len(batch)), 4, 5, np.zeros((0, 2), int))
    return PolicyTrainer(copy.deepcopy(model), cfg, group).update(batch, ADV, sel, stage=2)


def test_on_policy_in_float32_passes_and_counts_only_terms_before_the_first_step(
    tiny_model, tiny_cfg, batch
):
    cfg = _cfg(tiny_cfg, batch_size=3, epochs=2)
    stats = _update(tiny_model, cfg, batch)
    assert stats.optimizer_steps == 6
    assert stats.onpolicy_transitions == 3 * batch.interval  # the first batch only
    assert stats.onpolicy_ratio_dev_max <= 1e-6 and stats.onpolicy_exceeded == 0
    assert onpolicy.warning(stats.as_dict(), cfg) is None


def test_a_deliberate_mismatch_is_measured_and_warned(tiny_model, tiny_cfg, batch):
    cfg = _cfg(tiny_cfg, batch_size=9)
    shifted = copy.copy(batch)
    shifted.log_probs = batch.log_probs - 2e-3  # as if the sampler computed differently
    stats = _update(tiny_model, cfg, shifted)
    assert stats.onpolicy_ratio_dev_max == pytest.approx(np.expm1(2e-3), rel=1e-3)
    assert stats.onpolicy_ratio_dev_mean == pytest.approx(np.expm1(2e-3), rel=1e-3)
    assert stats.onpolicy_exceeded == 1
    note = onpolicy.warning(stats.as_dict(), cfg)
    assert note and "2.00e-03" in note and "train.onpolicy_tolerance" in note
    assert "model.autocast" in note and "model.allow_tf32" in note
    # the same mismatch under a looser tolerance passes
    loose = _cfg(tiny_cfg, batch_size=9, onpolicy_tolerance=5e-3)
    assert _update(tiny_model, loose, shifted).onpolicy_exceeded == 0


def test_training_in_bf16_what_float32_sampled_trips_the_guard(
    tiny_model, tiny_cfg, batch, tiny_pipeline_dir
):
    """The mistake the guard is for: sampled in float32, recomputed under bf16 autocast."""
    learner = copy.deepcopy(tiny_model)
    set_autocast(learner.unet, learner.device, torch.bfloat16)
    learner.autocast = torch.bfloat16
    cfg = tiny_cfg.model_copy(
        update={
            "model": ModelConfig(pretrained=tiny_pipeline_dir, autocast="bf16"),
            "train": tiny_cfg.train.model_copy(update={"batch_size": 9}),
        }
    )
    assert onpolicy.tolerance(cfg) == onpolicy.HALF_TOLERANCE
    stats = _update(learner, cfg, batch)
    # measured: max 4.6e-3, mean 8.3e-4 (0 when both run under the same autocast)
    assert stats.onpolicy_ratio_dev_max > onpolicy.HALF_TOLERANCE
    assert stats.onpolicy_exceeded == 1
    assert "model.autocast=bf16" in onpolicy.warning(stats.as_dict(), cfg)


def test_default_tolerances_follow_the_precision(tiny_cfg, tiny_pipeline_dir):
    assert onpolicy.tolerance(tiny_cfg) == 1e-4
    for model in (
        ModelConfig(pretrained=tiny_pipeline_dir, dtype="float16"),
        ModelConfig(pretrained=tiny_pipeline_dir, autocast="bf16"),
    ):
        assert onpolicy.tolerance(tiny_cfg.model_copy(update={"model": model})) == 1e-3
    assert onpolicy.tolerance(_cfg(tiny_cfg, onpolicy_tolerance=3e-3)) == 3e-3


class _ThreadRanks:
    """Two ranks as threads: every reduction stacks both ranks' values in rank order."""

    def __init__(self, shared: list, barrier: threading.Barrier, rank: int):
        self.shared, self.barrier, self.rank, self.size = shared, barrier, rank, 2

    def _reduce(self, t: torch.Tensor, how) -> torch.Tensor:
        self.shared[self.rank] = t.clone()
        self.barrier.wait()
        out = how(torch.stack(self.shared))
        self.barrier.wait()
        return out

    def sum(self, values):
        return self._reduce(torch.tensor(values, dtype=torch.float64), lambda s: s.sum(0)).tolist()

    def min(self, value):
        return float(self._reduce(torch.tensor(value), lambda s: s.min()))

    def max(self, value):
        return float(self._reduce(torch.tensor(value), lambda s: s.max()))

    def sum_tensor(self, tensor):
        return self._reduce(tensor, lambda s: s.sum(0))

    def sum_grads(self, params):
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = self._reduce(torch.cat([g.reshape(-1) for g in grads]), lambda s: s.sum(0))
        offset = 0
        for p in params:
            p.grad = flat[offset : offset + p.numel()].view_as(p).clone()
            offset += p.numel()


def test_two_ranks_report_the_global_statistic(tiny_model, tiny_cfg, batch):
    """Each rank sees its shard; the reduced max, mean and count are one rank's."""
    cfg = _cfg(tiny_cfg, batch_size=9)
    shifted = copy.copy(batch)
    gen = torch.Generator().manual_seed(0)
    shifted.log_probs = batch.log_probs + 1e-3 * torch.rand(batch.log_probs.shape, generator=gen)
    want = _update(tiny_model, cfg, shifted)
    threads_before = torch.get_num_threads()
    torch.set_num_threads(1)
    shared, barrier, got = [None, None], threading.Barrier(2, timeout=60), [None, None]

    def run(rank: int) -> None:
        got[rank] = _update(tiny_model, cfg, shifted, _ThreadRanks(shared, barrier, rank))

    try:
        threads = [threading.Thread(target=run, args=(r,)) for r in (0, 1)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        torch.set_num_threads(threads_before)
    assert got[0] is not None and got[0] == got[1]
    assert got[0].onpolicy_transitions == want.onpolicy_transitions == 9 * batch.interval
    assert got[0].onpolicy_ratio_dev_max == pytest.approx(want.onpolicy_ratio_dev_max, rel=1e-3)
    assert got[0].onpolicy_ratio_dev_mean == pytest.approx(want.onpolicy_ratio_dev_mean, rel=1e-3)
    assert got[0].onpolicy_exceeded == want.onpolicy_exceeded == 1
