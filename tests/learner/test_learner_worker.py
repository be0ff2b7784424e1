"""The plain learner worker: what one learner rank runs."""

from __future__ import annotations

import copy

import torch

from learner.learner_worker import LearnerWorker
from learner.update import PolicyTrainer


def test_a_restore_takes_the_moments_and_keeps_this_configs_settings(tiny_model, tiny_cfg):
    first = LearnerWorker(tiny_cfg, PolicyTrainer(copy.deepcopy(tiny_model), tiny_cfg))
    for p in first.trainer.params:  # one AdamW step, so there are moments to carry over
        p.grad = torch.ones_like(p)
    first.trainer.optimizer.step()
    state = first.state(stage=0, split_step=2)

    train = tiny_cfg.train.model_copy(update={"lr": 0.5, "weight_decay": 0.25})
    cfg = tiny_cfg.model_copy(update={"train": train})  # a forced resume with a new lr
    second = LearnerWorker(cfg, PolicyTrainer(tiny_model, cfg))
    second.restore(state, "stage_0000")

    group = second.trainer.optimizer.param_groups[0]
    assert (group["lr"], group["weight_decay"]) == (0.5, 0.25)
    got = second.trainer.optimizer.state_dict()["state"]
    want = first.trainer.optimizer.state_dict()["state"]
    assert got.keys() == want.keys()
    assert all(torch.equal(got[k]["exp_avg"], want[k]["exp_avg"]) for k in want)
    assert second.fingerprint() == first.fingerprint()
