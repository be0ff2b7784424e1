"""Placement at cluster scale, simulated: a local Ray with 8 logical GPUs on the CPU."""

from __future__ import annotations

import re

import pytest
import ray

from configs.schema import Config
from learner.driver import Cluster, RuntimeSetupError


@pytest.fixture()
def eight_gpus():
    ray.init(
        address="local",
        num_cpus=12,
        num_gpus=8,
        include_dashboard=False,
        _node_ip_address="127.0.0.1",
        logging_level="warning",
    )
    yield
    ray.shutdown()


def _cfg(tiny_pipeline_dir, **runtime) -> Config:
    return Config.model_validate(
        {
            "model": {"pretrained": tiny_pipeline_dir, "device": "cpu"},  # logical GPUs only
            "sampling": {"num_steps": 4, "branches": 2, "trunks_per_stage": 2},
            "schedule": {"kind": "constant", "start": 2, "end": 2},
            "rewards": [{"name": "jpeg_compressibility"}],
            "runtime": runtime,
        }
    )


def _gpu_ids(actor) -> list[str]:
    return ray.get(actor.__ray_call__.remote(lambda self: ray.get_gpu_ids()))


def test_actors_land_where_the_cluster_docs_say(eight_gpus, tiny_pipeline_dir):
    cfg = _cfg(
        tiny_pipeline_dir,
        rollout_actors=6,
        rollout_gpus=1,
        rollout_cpus=1,
        reward_actors=2,
        reward_gpus=0.25,
        reward_cpus=1,
        learner_gpus=1,
        learner_cpus=1,
    )
    cluster = Cluster(cfg)
    try:
        rollout = [_gpu_ids(a) for a in cluster.rollouts.actors]
        reward = [_gpu_ids(a) for a in cluster.rewards.actors]
        learner = _gpu_ids(cluster.learner.lead)
    finally:
        cluster.shutdown()
    assert all(len(ids) == 1 for ids in rollout)
    assert len({ids[0] for ids in rollout}) == 6  # one rollout actor per GPU
    assert len(learner) == 1 and learner[0] not in {ids[0] for ids in rollout}  # alone
    # reward actors share the GPU left over, a quarter each
    assert all(len(ids) == 1 for ids in reward)
    used = {ids[0] for ids in rollout} | set(learner)
    assert {ids[0] for ids in reward}.isdisjoint(used)


def test_more_gpus_than_the_cluster_has_is_refused(eight_gpus, tiny_pipeline_dir):
    cfg = _cfg(tiny_pipeline_dir, rollout_actors=8, rollout_gpus=1, learner_gpus=1)
    with pytest.raises(RuntimeSetupError, match="request 9 GPUs .* the Ray cluster has 8"):
        Cluster(cfg)


def test_colocated_pairs_each_rollout_actor_with_a_learner_rank_on_one_gpu(
    eight_gpus, tiny_pipeline_dir
):
    cfg = _cfg(
        tiny_pipeline_dir,
        placement="colocated",
        rollout_actors=2,
        learner_workers=2,
        rollout_gpus=0.5,
        learner_gpus=0.5,
        rollout_cpus=1,
        learner_cpus=1,
        learner_threads=1,
        reward_actors=1,
        reward_gpus=0.5,
        reward_cpus=1,
    )
    cluster = Cluster(cfg)
    try:
        rollout = [_gpu_ids(a) for a in cluster.rollouts.actors]
        learner = [_gpu_ids(a) for a in cluster.learner.ranks]
        reward = [_gpu_ids(a) for a in cluster.rewards.actors]
    finally:
        cluster.shutdown()
    assert rollout == learner  # rank i samples and trains on the same GPU
    assert len({ids[0] for ids in rollout}) == 2  # every pair on a GPU of its own
    assert {ids[0] for ids in reward}.isdisjoint({ids[0] for ids in rollout})


@pytest.mark.parametrize(
    ("runtime", "needle"),
    [
        ({"rollout_actors": 2, "learner_workers": 1}, "rollout_actors=2 must equal"),
        (
            {"rollout_actors": 2, "learner_workers": 2, "rollout_gpus": 0.5, "learner_gpus": 0.25},
            re.escape("rollout_gpus + learner_gpus = 0.75"),
        ),
    ],
)
def test_colocated_needs_pairs_on_whole_gpus(tiny_pipeline_dir, runtime, needle):
    with pytest.raises(ValueError, match=needle):
        _cfg(tiny_pipeline_dir, placement="colocated", **runtime)
