"""Shared fixtures: a tiny random Stable-Diffusion-shaped pipeline (16x16 latents)."""

from __future__ import annotations

import copy
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402

from configs.schema import Config  # noqa: E402
from learner.distributed import Collective  # noqa: E402


@pytest.fixture(scope="session")
def tiny_pipeline_dir(tmp_path_factory) -> str:
    from diffusion.tiny import tiny_pipeline

    path = tmp_path_factory.mktemp("tiny") / "pipeline"
    tiny_pipeline(seed=0).save_pretrained(str(path))
    return str(path)


@pytest.fixture()
def tiny_cfg(tiny_pipeline_dir, tmp_path) -> Config:
    return Config.model_validate(
        {
            "seed": 3,
            "stages": 4,
            "output_dir": str(tmp_path / "runs"),
            "model": {"pretrained": tiny_pipeline_dir},
            "sampling": {
                "num_steps": 6,
                "branches": 3,
                "trunks_per_stage": 4,
                "micro_batch": 5,
                "guidance_scale": 3.0,
            },
            "schedule": {"kind": "linear", "start": 2, "end": 4},
            "selection": {"tau_pos": 0.3, "tau_neg": -0.3},
            "loss": {"clip_range": 0.2},
            "train": {"lr": 1e-3, "epochs": 1, "batch_size": 3, "lora": {"rank": 4}},
            "rewards": [{"name": "oracle_partial"}],
        }
    )


@pytest.fixture(scope="session")
def _tiny_model_once(tiny_pipeline_dir):
    from configs.schema import ModelConfig
    from diffusion.pipeline import load_model

    return load_model(ModelConfig(pretrained=tiny_pipeline_dir), torch.device("cpu"))


@pytest.fixture()
def tiny_model(_tiny_model_once):
    """A fresh copy per test: trainers attach LoRA to the UNet in place."""
    return copy.deepcopy(_tiny_model_once)


class ThreadRanks(Collective):
    """Data-parallel ranks as threads of one process (the learner's Collective): each
    reduction stacks every rank's value in rank order, so every rank gets the same bits,
    as an all-reduce gives them."""

    def __init__(self, shared: list, barrier, rank: int):
        self.shared, self.barrier, self.rank, self.size = shared, barrier, rank, len(shared)
        self.grad_bytes = 0

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

    def sum_grads(self, params):
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = self._reduce(torch.cat([g.reshape(-1) for g in grads]), lambda s: s.sum(0))
        self.grad_bytes += flat.numel() * flat.element_size()
        offset = 0
        for p in params:
            p.grad = flat[offset : offset + p.numel()].view_as(p).clone()
            offset += p.numel()


@pytest.fixture()
def thread_ranks():
    """`thread_ranks(n)`: the collectives of n ranks run as threads, one torch thread each
    (threads of one process share its OpenMP pool)."""
    import threading

    before = torch.get_num_threads()
    torch.set_num_threads(1)

    def make(n: int) -> list[ThreadRanks]:
        shared, barrier = [None] * n, threading.Barrier(n, timeout=60)
        return [ThreadRanks(shared, barrier, r) for r in range(n)]

    yield make
    torch.set_num_threads(before)


@pytest.fixture()
def in_threads():
    """`in_threads(calls)`: every call at once, one thread each (ranks that meet in
    collectives); their results, in order."""
    import threading

    def run(calls: list) -> list:
        out = [None] * len(calls)

        def one(i: int) -> None:
            out[i] = calls[i]()

        threads = [threading.Thread(target=one, args=(i,)) for i in range(len(calls))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return out

    return run


@pytest.fixture
def two_b2_stages():
    """A check that two B² stages train `model` in this process."""
    return _two_b2_stages


def _two_b2_stages(model, cfg) -> None:
    """Two B² stages on `model` in this process (a brightness reward): each trains the
    LoRA on-policy, the interval grows backward (2 then 3 steps), and the LoRA moves."""
    import numpy as np
    import torch

    from learner.advantages import Advantages
    from learner.stage import run_in_process
    from learner.update import PolicyTrainer

    trainer = PolicyTrainer(model, cfg)
    adv = Advantages(cfg.advantage)
    before = {k: v.clone() for k, v in trainer.weights().items()}

    def brightness(images, prompts):
        return images.float().mean(dim=(1, 2, 3)).numpy() / 255.0

    splits = []
    for stage in range(2):
        res = run_in_process(
            trainer, adv, brightness, ["a red circle", "a blue square"], cfg, stage
        )
        m = res.metrics()
        assert np.isfinite(m["loss"]) and m["optimizer_steps"] >= 1
        assert m["onpolicy_ratio_dev_max"] <= 1e-5  # the sampler's log-probs, recomputed
        splits.append(res.split_step)
    assert splits == [2, 3]  # backward: the interval grows towards x_T
    after = trainer.weights()
    assert any(not torch.equal(before[k], after[k]) for k in before)
