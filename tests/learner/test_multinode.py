"""Several Ray nodes on one machine (`ray.cluster_utils.Cluster`, logical GPUs, CPU work):
the colocated learner group spans nodes, and a node lost mid-stage is survived."""

from __future__ import annotations

import json
import threading

import pytest
import ray
from ray.cluster_utils import Cluster as RayNodes
from safetensors.torch import load_file

from configs.schema import Config
from learner.driver import Cluster
from learner.run import execute, prepare

RUNTIME = {
    "placement": "colocated",
    "rollout_actors": 2,
    "learner_workers": 2,
    "rollout_gpus": 0.5,
    "learner_gpus": 0.5,
    "rollout_cpus": 1,
    "learner_cpus": 0.5,
    "learner_threads": 1,
    "reward_actors": 1,
    "reward_cpus": 1,
}


@pytest.fixture()
def nodes(monkeypatch):
    """A head for the driver and the reward actor, and three GPU nodes: two for the
    colocated pairs, one spare for a lost node's bundle. Every node on the loopback
    address (Ray otherwise resolves a local address to the machine's own IP)."""
    monkeypatch.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    cluster = RayNodes(initialize_head=True, head_node_args={"num_cpus": 1})
    workers = [cluster.add_node(num_cpus=3, num_gpus=1) for _ in range(3)]
    ray.init(address=cluster.address, logging_level="warning")
    yield cluster, workers
    ray.shutdown()
    cluster.shutdown()


def _cfg(tiny_pipeline_dir, tmp_path, name: str) -> Config:
    return Config.model_validate(
        {
            "seed": 5,
            "stages": 3,
            "output_dir": str(tmp_path / "runs"),
            "run_name": name,
            "model": {"pretrained": tiny_pipeline_dir, "device": "cpu"},
            "sampling": {"num_steps": 5, "branches": 3, "trunks_per_stage": 4, "micro_batch": 8},
            "schedule": {"kind": "linear", "start": 2, "end": 4},
            "selection": {"tau_pos": 0.2, "tau_neg": -0.2},
            "train": {"lr": 3e-3, "epochs": 1, "batch_size": 4, "lora": {"rank": 2}},
            "rewards": [{"name": "jpeg_compressibility"}],
            "runtime": RUNTIME,
            "logging": {"mlflow": False, "grid_every": 0},
        }
    )


def _node(actor) -> str:
    return ray.get(actor.__ray_call__.remote(lambda self: ray.get_runtime_context().get_node_id()))


def test_the_colocated_learner_group_spans_nodes(nodes, tiny_pipeline_dir, tmp_path):
    cluster = Cluster(_cfg(tiny_pipeline_dir, tmp_path, "span"))
    try:
        rollout = [_node(a) for a in cluster.rollouts.actors]
        learner = [_node(a) for a in cluster.learner.ranks]
    finally:
        cluster.shutdown()
    assert rollout == learner  # each pair shares its node
    assert len(set(learner)) == 2  # the process group spans two nodes


def _lora(run_dir):
    return load_file(str(run_dir / "lora" / "pytorch_lora_weights.safetensors"))


@pytest.mark.slow
def test_a_node_lost_mid_stage_is_survived(nodes, tiny_pipeline_dir, tmp_path):
    """The node of rollout actor 1 and learner rank 1 goes while stage 2 samples: the
    rollout actor restarts on the spare node and its chunks are sampled again, the learner
    group is rebuilt there from stage 1's checkpoint, and the run ends as an undisturbed one."""
    cluster, workers = nodes
    cfg, ref_dir, resuming = prepare(_cfg(tiny_pipeline_dir, tmp_path, "ref"), None, [], False)
    execute(cfg, ref_dir, resuming)

    lost, timers = [], []

    def remove_its_node(kind, stage, chunk, actor):
        if kind != "rollout" or stage != 1 or lost:
            return
        node_id = _node(actor)
        node = next(w for w in workers if w.node_id == node_id)
        lost.append(node_id)
        timer = threading.Timer(
            0.1, cluster.remove_node, args=(node,), kwargs={"allow_graceful": False}
        )
        timers.append(timer)
        timer.start()

    cfg, run_dir, resuming = prepare(_cfg(tiny_pipeline_dir, tmp_path, "lost"), None, [], False)
    execute(cfg, run_dir, resuming, on_submit=remove_its_node)
    for timer in timers:
        timer.join()
    assert lost
    ref = [json.loads(x) for x in (ref_dir / "metrics.jsonl").read_text().splitlines()]
    got = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert all(g["images"] == 12 for g in got)
    assert [r["reward_mean"] for r in ref] == [g["reward_mean"] for g in got]
    ref_lora, got_lora = _lora(ref_dir), _lora(run_dir)
    assert ref_lora.keys() == got_lora.keys()
    assert max(float((ref_lora[k] - got_lora[k]).abs().max()) for k in ref_lora) <= 1e-6
