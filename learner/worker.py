"""The learner: the trainable LoRA, its optimizer and the per-prompt reward memory.

Plain Python; the driver wraps it as a Ray actor and publishes its weights with one
`ray.put` per version. With `runtime.learner_workers` > 1 the driver runs several, one
per rank of a process group (`join`): rank 0 selects, publishes and is checkpointed, and
every rank updates on its shard (`learner.distributed`) and holds the same LoRA and
optimizer state.
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch

from actors.rollout import set_threads
from configs.schema import Config
from diffusion.pipeline import load_model, pick_device
from diffusion.trajectory import TrajectoryBatch
from learner.advantages import Advantages
from learner.checkpoint import LearnerState
from learner.distributed import Collective
from learner.selection import Selection, compact, select
from learner.update import PolicyTrainer, UpdateStats


class LearnerWorker:
    def __init__(self, cfg: Config):
        rt = cfg.runtime
        set_threads(rt.learner_threads, rt.learner_cpus)
        device = pick_device(cfg.model.device) if rt.learner_gpus > 0 else torch.device("cpu")
        self.cfg = cfg
        self.trainer = PolicyTrainer(load_model(cfg.model, device), cfg)
        self.advantages = Advantages(cfg.advantage)
        self.version = 0

    def join(self, group: Collective) -> int:
        """Become one rank of `group`: updates from now on share their work with its ranks."""
        self.trainer.group = group
        return group.rank

    def fingerprint(self) -> str:
        """A digest of the LoRA and the optimizer state: equal on every rank, or the ranks
        have drifted apart (and a checkpoint of rank 0 would not cover the others)."""
        h = hashlib.sha256()
        tensors = list(self.weights().values())
        for slots in self.trainer.optimizer.state_dict()["state"].values():
            tensors += [slots[k] for k in sorted(slots) if isinstance(slots[k], torch.Tensor)]
        for t in tensors:
            h.update(t.detach().cpu().contiguous().numpy().tobytes())
        return h.hexdigest()

    def weights(self) -> dict[str, torch.Tensor]:
        return self.trainer.weights()

    def select(
        self, prompts: list[str], trunk_ids: np.ndarray, rewards: np.ndarray
    ) -> tuple[np.ndarray, Selection]:
        adv = self.advantages(prompts, trunk_ids, rewards)
        return adv, select(self.cfg.selection, trunk_ids, adv)

    def update(
        self, stage: int, advantages: np.ndarray, selection: Selection, *parts: TrajectoryBatch
    ) -> UpdateStats:
        """Train on the selected rows only; `parts` hold exactly selection.index's rows."""
        parts = [p for p in parts if len(p)]
        if not parts:
            self.version += 1
            return UpdateStats()
        batch = TrajectoryBatch.cat(parts)
        stats = self.trainer.update(batch, advantages[selection.index], compact(selection), stage)
        self.version += 1
        return stats

    def state(self, stage: int, split_step: int) -> LearnerState:
        return LearnerState(
            stage=stage,
            split_step=split_step,
            version=self.version,
            lora=self.weights(),
            optimizer=self.trainer.optimizer.state_dict(),
            advantages=self.advantages.state_dict(),
            rng=torch.get_rng_state(),
        )

    def restore(self, state: LearnerState, source: str) -> int:
        self.trainer.load_weights(state.lora, source)
        self.trainer.optimizer.load_state_dict(state.optimizer)
        self.advantages.load_state_dict(state.advantages)
        torch.set_rng_state(state.rng)
        self.version = state.version
        return self.version
