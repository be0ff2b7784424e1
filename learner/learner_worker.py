"""The learner worker: the trainable LoRA, its optimizer and the reward memory.

Plain Python: the in-process learner group uses it as it is, the Ray learner group
(`learner.learner_group`) runs one as an actor per rank of a process group (`join`).
Rank 0 selects, publishes and is checkpointed; every rank updates on its shard
(`learner.distributed`) and holds the same LoRA and optimizer state.
"""

from __future__ import annotations

import hashlib
import time

import numpy as np
import torch

from actors.rollout_worker import set_threads
from configs.schema import Config
from diffusion.pipeline import load_model, pick_device
from diffusion.trajectory import TrajectoryBatch
from learner.advantages import Advantages
from learner.checkpoint import LearnerState
from learner.distributed import Collective, ProcessGroup, free_port
from learner.records import PublishedWeights, Rows, Selected
from learner.selection import compact, select
from learner.update import PolicyTrainer, UpdateStats

# the EMA weights are published as version EMA_VERSION + v: a version no rollout samples
# with, so the next stage's sync hands the rollouts the trained weights again
EMA_VERSION = 1 << 40


class LearnerWorker:
    def __init__(
        self,
        cfg: Config,
        trainer: PolicyTrainer | None = None,
        advantages: Advantages | None = None,
    ):
        """Builds its model from `cfg` unless handed a trainer (and reward memory)."""
        rt = cfg.runtime
        self.cfg = cfg
        if trainer is None:
            set_threads(rt.learner_threads, rt.learner_cpus)
            device = pick_device(cfg.model.device) if rt.learner_gpus > 0 else torch.device("cpu")
            trainer = PolicyTrainer(load_model(cfg.model, device), cfg)
        self.trainer = trainer
        self.advantages = advantages or Advantages(cfg.advantage)
        self.version = 0

    # -- one stage ------------------------------------------------------------------------
    def weights(self) -> dict[str, torch.Tensor]:
        return self.trainer.weights()

    def ema_weights(self) -> dict[str, torch.Tensor]:
        """The weights to evaluate and export: the moving average with `train.ema`, else
        the trained weights. Never the ones rollouts sample with (`publish`)."""
        ema = self.trainer.ema_weights()
        return self.weights() if ema is None else ema

    def select(self, stage: int, rows: Rows, rewards: np.ndarray) -> Selected:
        adv = self.advantages(rows.prompts, rows.trunk_ids, rewards, stage)
        return Selected(adv, select(self.cfg.selection, rows.trunk_ids, adv))

    def update(self, stage: int, selected: Selected, *parts: TrajectoryBatch) -> UpdateStats:
        """Train on the selected rows; `parts` hold this rank's rows of them in ascending
        order: with one rank all of selection.index, with N `held_rows` of the compact
        selection (a rank that trains none is handed an empty part, for the shapes)."""
        sel = selected.selection
        if len(sel.index) == 0 or not parts:
            self.version += 1
            return UpdateStats()
        batch = TrajectoryBatch.cat(parts)
        stats = self.trainer.update(batch, selected.advantages[sel.index], compact(sel), stage)
        self.version += 1
        return stats

    # -- checkpoints ----------------------------------------------------------------------
    def state(self, stage: int, split_step: int) -> LearnerState:
        return LearnerState(
            stage=stage,
            split_step=split_step,
            version=self.version,
            lora=self.weights(),
            optimizer=self.trainer.optimizer.state_dict(),
            advantages=self.advantages.state_dict(),
            rng=torch.get_rng_state(),
            ema=self.trainer.ema_weights(),
        )

    def restore(self, state: LearnerState, source: str) -> int:
        """Continue from `state`; the optimizer's hyper-parameters stay this config's (a
        forced resume may change them), only its moments come from the checkpoint."""
        self.trainer.load_weights(state.lora, source)
        self.trainer.load_ema(state.ema, source)
        optimizer = self.trainer.optimizer
        settings = [{k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups]
        optimizer.load_state_dict(state.optimizer)
        for group, mine in zip(optimizer.param_groups, settings, strict=True):
            group.update(mine)
        self.advantages.load_state_dict(state.advantages)
        torch.set_rng_state(state.rng)
        self.version = state.version
        return self.version

    def fingerprint(self) -> str:
        """A digest of the LoRA and the optimizer state: equal on every rank, or the ranks
        have drifted apart (and a checkpoint of rank 0 would not cover the others)."""
        h = hashlib.sha256()
        tensors = list(self.weights().values()) + list((self.trainer.ema_weights() or {}).values())
        for slots in self.trainer.optimizer.state_dict()["state"].values():
            tensors += [slots[k] for k in sorted(slots) if isinstance(slots[k], torch.Tensor)]
        for t in tensors:
            h.update(t.detach().cpu().contiguous().numpy().tobytes())
        return h.hexdigest()

    # -- as one rank of a Ray learner group -------------------------------------------------
    def join(self, group: Collective) -> int:
        """Become one rank of `group`: updates from now on share their work with its ranks."""
        self.trainer.group = group
        return group.rank

    def rendezvous(self) -> tuple[str, int]:
        """This node's address and a free port on it, for the other ranks to join at."""
        import ray

        address = ray.util.get_node_ip_address()
        return address, free_port(address)

    def join_group(self, address: str, port: int, rank: int, size: int) -> int:
        return self.join(ProcessGroup(address, port, rank, size, self.trainer.model.device))

    def published(self, ema: bool = False) -> PublishedWeights:
        """The weights rollouts sample with, by version; `ema`: the evaluation weights
        (`ema_weights`, with train.ema) under a version of their own, for the training
        grid, so that the next stage's rollouts are handed the trained weights again."""
        if ema and self.cfg.train.ema is not None:
            return PublishedWeights(EMA_VERSION + self.version, self.ema_weights())
        return PublishedWeights(self.version, self.weights())

    def publish(self, ema: bool = False) -> PublishedWeights:
        """`published`, its tensors put once in Ray's object store (the reference goes to
        every rollout actor)."""
        import ray

        out = self.published(ema)
        return PublishedWeights(out.version, ray.put(out.weights))

    def comm_bytes(self) -> dict[str, int]:
        """Bytes this rank all-reduced so far, by kind, and its gradient all-reduces."""
        g = self.trainer.group
        return {**getattr(g, "bytes", {}), "grad_reductions": getattr(g, "grad_reductions", 0)}

    def cpu_seconds(self) -> float:
        """CPU time this rank's process has used (all its threads): its share of the work,
        whatever else the machine runs."""
        return time.process_time()
