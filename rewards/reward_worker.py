"""The reward worker: builds the configured scorers once, scores chunks of images.

Plain Python; the Ray reward group (`rewards.reward_group`) runs it as an actor.
"""

from __future__ import annotations

import torch

from actors.rollout_worker import set_threads
from configs.schema import Config
from diffusion.pipeline import pick_device
from learner.records import RolloutImages, Rows, ScoredChunk
from rewards.composite import RewardModel


class RewardWorker:
    def __init__(self, cfg: Config, index: int = 0):
        rt = cfg.runtime
        set_threads(rt.reward_threads, rt.reward_cpus)
        device = pick_device(cfg.model.device) if rt.reward_gpus > 0 else torch.device("cpu")
        self.model = RewardModel(cfg.rewards, device)
        self.index = index

    def score(self, rollout: RolloutImages) -> ScoredChunk:
        result = self.model.score(rollout.images, rollout.prompts)
        return ScoredChunk(rollout.chunk, Rows.of(rollout), result.total, result.terms)
