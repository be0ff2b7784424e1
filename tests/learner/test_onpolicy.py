"""The on-policy guard: before a stage's first optimizer step the recomputed log-probs
equal the sampled ones; a mismatch is measured, reduced over ranks and warned about."""

from __future__ import annotations

import copy

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
from learner.update_plan import held_rows

ADV = np.array([1.0, 0.1, -1.0, 0.9, -0.8, 0.0, 0.5, -0.2, -0.6])


def _cfg(tiny_cfg: Config, **train) -> Config:
    return tiny_cfg.model_copy(update={"train": tiny_cfg.train.model_copy(update=train)})


@pytest.fixture()
def batch(tiny_model, tiny_cfg):
    prompts = ["a red circle", "a blue square", "two green triangles"]
    return sample_branches(tiny_model, prompts, [0, 1, 2], sampler_settings(tiny_cfg, 2), 3, 2)


def _update(model, cfg, batch, group=None):
    sel = Selection(np.arange(len(batch)), 4, 5, np.zeros((0, 2), int))
    if group is not None:  # a rank is handed only the rows it trains
        batch = batch.select(held_rows(cfg, sel, 2, group.size)[group.rank])
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


def test_two_ranks_report_the_global_statistic(
    tiny_model, tiny_cfg, batch, thread_ranks, in_threads
):
    """Each rank sees its shard; the reduced max, mean and count are one rank's."""
    cfg = _cfg(tiny_cfg, batch_size=9)
    shifted = copy.copy(batch)
    gen = torch.Generator().manual_seed(0)
    shifted.log_probs = batch.log_probs + 1e-3 * torch.rand(batch.log_probs.shape, generator=gen)
    want = _update(tiny_model, cfg, shifted)
    got = in_threads([lambda g=g: _update(tiny_model, cfg, shifted, g) for g in thread_ranks(2)])
    assert got[0] is not None and got[0] == got[1]
    assert got[0].onpolicy_transitions == want.onpolicy_transitions == 9 * batch.interval
    assert got[0].onpolicy_ratio_dev_max == pytest.approx(want.onpolicy_ratio_dev_max, rel=1e-3)
    assert got[0].onpolicy_ratio_dev_mean == pytest.approx(want.onpolicy_ratio_dev_mean, rel=1e-3)
    assert got[0].onpolicy_exceeded == want.onpolicy_exceeded == 1


def test_a_run_warns_once_and_records_the_statistic(tiny_pipeline_dir, tmp_path, capsys):
    """Through Ray and the driver: a tolerance below float32 rounding stands in for a
    mismatch; every stage's metrics carry the statistic, and the warning comes once."""
    import json

    import ray

    from learner.run import execute, prepare

    cfg = Config.model_validate(
        {
            "seed": 5,
            "stages": 2,
            "output_dir": str(tmp_path / "runs"),
            "run_name": "run",
            "model": {"pretrained": tiny_pipeline_dir, "device": "cpu"},
            "sampling": {"num_steps": 4, "branches": 2, "trunks_per_stage": 2, "micro_batch": 4},
            "schedule": {"kind": "constant", "start": 2, "end": 2},
            "selection": {"tau_pos": 0.2, "tau_neg": -0.2},
            "train": {"epochs": 1, "batch_size": 1, "onpolicy_tolerance": 1e-12},
            "rewards": [{"name": "jpeg_compressibility"}],
            "runtime": {"rollout_actors": 1, "reward_actors": 1},
            "logging": {"mlflow": False, "grid_every": 0},
        }
    )
    ray.init(address="local", num_cpus=3, include_dashboard=False, _node_ip_address="127.0.0.1")
    try:
        execute(*prepare(cfg, None, [], False))
    finally:
        ray.shutdown()
    lines = (tmp_path / "runs" / "run" / "metrics.jsonl").read_text().splitlines()
    stages = [json.loads(line) for line in lines]
    assert len(stages) == 2
    for m in stages:  # rows batched 1 by 1 here, 4 by 4 in the sampler: rounding apart
        assert m["onpolicy_transitions"] > 0 and m["onpolicy_ratio_dev_max"] <= 1e-6
        assert m["onpolicy_exceeded"] == (m["onpolicy_ratio_dev_max"] > 1e-12)
    assert any(m["onpolicy_exceeded"] for m in stages)
    assert capsys.readouterr().err.count("off-policy at unchanged weights") == 1
