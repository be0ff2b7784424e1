"""The reward worker: builds the configured scorers once, scores image batches."""

from __future__ import annotations

import numpy as np
import torch

from actors.rollout import RolloutImages, set_threads
from configs.schema import Config
from diffusion.pipeline import pick_device
from rewards.composite import RewardModel


class RewardWorker:
    def __init__(self, cfg: Config, index: int = 0):
        rt = cfg.runtime
        set_threads(rt.reward_threads, rt.reward_cpus)
        device = pick_device(cfg.model.device) if rt.reward_gpus > 0 else torch.device("cpu")
        self.model = RewardModel(cfg.rewards, device)
        self.index = index

    def score(self, rollout: RolloutImages) -> tuple[int, np.ndarray, dict[str, np.ndarray]]:
        result = self.model.score(rollout.images, rollout.prompts)
        return rollout.chunk, result.total, result.terms
