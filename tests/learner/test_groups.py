"""The in-process groups: what the stage runs on without Ray."""

from __future__ import annotations

import torch

from diffusion.lora import attach_lora, lora_state
from learner.groups import InProcessRollouts
from learner.records import PublishedWeights
from learner.stage import sampler_settings


def test_a_grid_from_other_weights_leaves_the_shared_model_as_it_was(tiny_model, tiny_cfg):
    attach_lora(tiny_model.unet, tiny_cfg.train.lora, seed=tiny_cfg.seed)
    rollouts = InProcessRollouts(tiny_model, tiny_cfg)  # the learner's own model, in process
    before = {k: v.clone() for k, v in lora_state(tiny_model.unet).items()}
    other = PublishedWeights(7, {k: v + 0.5 for k, v in before.items()})
    settings = sampler_settings(tiny_cfg, 0)
    moved = rollouts.sample_fixed(other, ["a red circle"], settings, 1, 2)
    after = lora_state(tiny_model.unet)
    assert all(torch.equal(before[k], after[k]) for k in before)
    same = rollouts.sample_fixed(PublishedWeights(0, before), ["a red circle"], settings, 1, 2)
    assert moved.shape == same.shape and not torch.equal(moved, same)
