"""Checks that need no Ray and no model weights, run before anything is written."""

from __future__ import annotations

import os

import torch

from configs.schema import Config
from diffusion.pipeline import PipelineLoadError, check_source
from learner.prompts import load_prompts
from rewards.scorers import check_terms


def preflight(cfg: Config) -> None:
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
