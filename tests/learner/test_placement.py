"""Placement at cluster scale, simulated: a local Ray with 8 logical GPUs on the CPU."""

from __future__ import annotations

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
        rollout = [_gpu_ids(a) for a in cluster.rollouts]
        reward = [_gpu_ids(a) for a in cluster.rewards]
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
