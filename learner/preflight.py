"""Checks that need no Ray and no model weights, run before anything is written."""

from __future__ import annotations

import os

import torch

from configs.schema import Config
from diffusion.pipeline import PipelineLoadError, check_source
from learner.prompts import load_prompts
from rewards.scorers import RewardSetupError, check_terms


def check_clip_weights(cfg: Config) -> None:
    """A clip_score term without a checkpoint would score against a randomly initialised
    CLIP (open_clip builds one and says so in one log line on a worker): refused."""
    for i, term in enumerate(cfg.rewards):
        if term.name == "clip_score" and not term.checkpoint:
            raise RewardSetupError(
                f"rewards.{i}.checkpoint = {term.checkpoint!r}: a clip_score term needs "
                "open_clip weights (a pretrained tag such as 'laion2b_s32b_b79k' or a "
                ".safetensors file); without them its CLIP is randomly initialised"
            )


def preflight(cfg: Config) -> None:
    check_clip_weights(cfg)
    load_prompts(cfg.prompts.train, "prompts.train")
    load_prompts(cfg.prompts.test, "prompts.test")
    check_source(cfg.model)
    check_terms(cfg.rewards)
    rt = cfg.runtime
    joining = bool(os.environ.get("RAY_ADDRESS"))
    wants_gpu = rt.rollout_gpus > 0 or rt.reward_gpus > 0 or rt.learner_gpus > 0
    if not joining and not torch.cuda.is_available():
        if wants_gpu:
            raise PipelineLoadError(
                "runtime: GPUs requested (rollout_gpus / reward_gpus / learner_gpus > 0) but "
                "this machine has none; set them to 0 or join a GPU cluster (RAY_ADDRESS)"
            )
        if cfg.model.device == "cuda":
            raise PipelineLoadError("model.device = 'cuda' but no CUDA GPU is visible here")
