"""`runtime.learner_workers`: learner ranks as Ray actors in one gloo process group."""

from __future__ import annotations

import numpy as np
import pytest
import ray
import torch
from ray.util.placement_group import placement_group, remove_placement_group

from configs.schema import Config
from diffusion.sampler import sample_branches
from learner import checkpoint
from learner.learner_group import RayLearnerGroup
from learner.learner_worker import LearnerWorker
from learner.records import Rows
from learner.stage import sampler_settings, stage_prompts

PROMPTS = ["a red circle", "a blue square", "two green triangles"]


@pytest.fixture(scope="module")
def ray_gpus():
    """A local Ray with logical GPUs (the models stay on the CPU, so the ranks use gloo)."""
    ray.init(
        address="local",
        num_cpus=4,
        num_gpus=3,
        include_dashboard=False,
        _node_ip_address="127.0.0.1",
        logging_level="warning",
    )
    yield
    ray.shutdown()


def _cfg(tiny_cfg: Config, workers: int) -> Config:
    """The tiny config on `workers` learner ranks, its KL penalty on (so that the ranks
    share the pretrained model's step means too), at lr 3e-4: AdamW moves every LoRA
    component by up to lr whatever the size of its gradient, so the float32 noise of rows
    batched differently (a near-zero component's gradient is all noise) shows in the
    weights in proportion to lr (measured: 1.2e-5 at the tiny config's lr 1e-3)."""
    rt = tiny_cfg.runtime.model_copy(update={"learner_workers": workers, "learner_threads": 1})
    loss = tiny_cfg.loss.model_copy(update={"kl_coef": 0.1})
    train = tiny_cfg.train.model_copy(update={"lr": 3e-4})
    return tiny_cfg.model_copy(update={"runtime": rt, "loss": loss, "train": train})


def _stage_batch(tiny_model, cfg: Config, stage: int):
    prompts = stage_prompts(PROMPTS, cfg.sampling.trunks_per_stage, cfg.seed, stage)
    trunks = list(range(len(prompts)))
    batch = sample_branches(tiny_model, prompts, trunks, sampler_settings(cfg, stage), 3, stage)
    rewards = batch.images.float().mean(dim=(1, 2, 3)).numpy() / 255.0
    return batch, rewards


def _rows(batch) -> Rows:
    n = len(batch)
    return Rows(
        batch.prompts,
        batch.trunk_ids.numpy(),
        batch.branch_ids.numpy(),
        np.zeros(n, np.int64),
        np.arange(n),
    )


def _train(group: RayLearnerGroup, stage: int, batch, rewards):
    selected = group.select(stage, _rows(batch), rewards)
    parts = [[batch.select(torch.as_tensor(h))] for h in group.held_rows(stage, selected)]
    return group.update(stage, selected, parts)


def _rank_weights(group: RayLearnerGroup) -> list[dict[str, torch.Tensor]]:
    return ray.get([a.weights.remote() for a in group.ranks])


def _max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k] - b[k]).abs().max()) for k in a)


def _group(cfg: Config, pg=None) -> RayLearnerGroup:
    group = RayLearnerGroup(cfg, pg)
    group.connect()
    return group


def test_two_learner_workers_make_the_update_of_one(ray_gpus, tiny_model, tiny_cfg):
    batch, rewards = _stage_batch(tiny_model, _cfg(tiny_cfg, 1), 0)
    threads = torch.get_num_threads()
    one = LearnerWorker(_cfg(tiny_cfg, 1))  # the plain learner, here: what one rank runs
    torch.set_num_threads(threads)
    selected = one.select(0, _rows(batch), rewards)
    want = one.update(0, selected, batch.select(torch.as_tensor(selected.selection.index)))
    ref = one.weights()

    cfg = _cfg(tiny_cfg, 2)
    cfg = cfg.model_copy(update={"runtime": cfg.runtime.model_copy(update={"learner_gpus": 1})})
    pg = placement_group([{"CPU": 1, "GPU": 1}] * 2)  # as Cluster gives each rank a bundle
    ray.get(pg.ready())
    two = _group(cfg, pg)
    try:
        gpus = ray.get([a.__ray_call__.remote(lambda self: ray.get_gpu_ids()) for a in two.ranks])
        got = _train(two, 0, batch, rewards)
        w0, w1 = _rank_weights(two)
        prints = ray.get([a.fingerprint.remote() for a in two.ranks])
        comm = two.comm_bytes()
        lora_bytes = sum(v.numel() * v.element_size() for v in w0.values())
    finally:
        two.kill()
        remove_placement_group(pg)
    assert len({g[0] for g in gpus}) == 2  # a bundle (here a GPU) per rank
    assert want.optimizer_steps >= 2 and got.optimizer_steps == want.optimizer_steps
    assert all(torch.equal(w0[k], w1[k]) for k in w0) and prints[0] == prints[1]
    print(f"N = 2 vs N = 1: max |LoRA difference| {_max_diff(w0, ref):.2e}")
    assert _max_diff(w0, ref) <= 1e-5
    assert got.loss == pytest.approx(want.loss, abs=1e-6)
    assert got.kl_base == pytest.approx(want.kl_base, rel=1e-3)
    assert got.grad_norm == pytest.approx(want.grad_norm, rel=1e-3)
    # one all-reduce of the LoRA's gradient per optimizer step
    for c in comm:
        assert c["grad_reductions"] == got.optimizer_steps
        assert c["grads"] == lora_bytes * got.optimizer_steps


def test_resume_with_two_learner_workers_equals_an_uninterrupted_run(
    ray_gpus, tiny_model, tiny_cfg, tmp_path
):
    cfg = _cfg(tiny_cfg, 2)
    stages = [_stage_batch(tiny_model, cfg, s) for s in range(3)]
    whole = _group(cfg)  # the uninterrupted run, checkpointed after stage 0
    try:
        _train(whole, 0, *stages[0])
        saved = checkpoint.save(tmp_path, whole.state(0, 2))
        for s in (1, 2):
            _train(whole, s, *stages[s])
        want = whole.weights()
    finally:
        whole.kill()
    resumed = _group(cfg)  # fresh ranks from the checkpoint
    try:
        resumed.restore(checkpoint.load(saved), str(saved))
        # rank 0's saved optimizer state is every rank's
        prints = ray.get([a.fingerprint.remote() for a in resumed.ranks])
        assert prints[0] == prints[1]
        for s in (1, 2):
            _train(resumed, s, *stages[s])
        got = _rank_weights(resumed)
    finally:
        resumed.kill()
    assert all(_max_diff(w, want) <= 1e-6 for w in got)


def test_the_cluster_counts_every_learner_workers_gpu(ray_gpus, tiny_pipeline_dir):
    from learner.driver import Cluster, RuntimeSetupError

    cfg = Config.model_validate(
        {
            "model": {"pretrained": tiny_pipeline_dir, "device": "cpu"},
            "rewards": [{"name": "jpeg_compressibility"}],
            "runtime": {"learner_workers": 4, "learner_gpus": 1},
        }
    )
    with pytest.raises(RuntimeSetupError, match="request 4 GPUs .*learner_workers"):
        Cluster(cfg)
    half = cfg.runtime.model_copy(update={"learner_workers": 2, "learner_gpus": 0.5})
    with pytest.raises(RuntimeSetupError, match="a whole GPU for each learner rank"):
        Cluster(cfg.model_copy(update={"runtime": half}))


@pytest.mark.slow
def test_driver_resume_with_two_learner_workers_equals_an_uninterrupted_run(
    ray_gpus, tiny_pipeline_dir, tmp_path, monkeypatch
):
    """`python -m learner.main --resume` end to end with `runtime.learner_workers: 2`."""
    from safetensors.torch import load_file

    from learner.run import execute, prepare

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")

    def cfg(name: str) -> Config:
        return Config.model_validate(
            {
                "seed": 5,
                "stages": 3,
                "output_dir": str(tmp_path / "runs"),
                "run_name": name,
                "model": {"pretrained": tiny_pipeline_dir, "device": "cpu"},
                "sampling": {"num_steps": 5, "branches": 3, "trunks_per_stage": 4},
                "schedule": {"kind": "linear", "start": 2, "end": 4},
                "selection": {"tau_pos": 0.2, "tau_neg": -0.2},
                "train": {"lr": 3e-3, "epochs": 1, "batch_size": 4, "lora": {"rank": 2}},
                "rewards": [{"name": "jpeg_compressibility"}],
                "runtime": {"rollout_actors": 1, "learner_workers": 2, "learner_threads": 1},
                "logging": {"grid_every": 0, "mlflow": False},
            }
        )

    def lora(run_dir) -> dict[str, torch.Tensor]:
        return load_file(str(run_dir / "lora" / "pytorch_lora_weights.safetensors"))

    c, whole, resuming = prepare(cfg("whole"), None, [], False)
    execute(c, whole, resuming)
    c, cut, resuming = prepare(cfg("cut"), None, [], False)
    execute(c, cut, resuming, stop_after=0)
    c, cut, resuming = prepare(None, cut, [], False)
    execute(c, cut, resuming)
    assert _max_diff(lora(whole), lora(cut)) <= 1e-6
