"""One complete stage (sample, score, select, update) in a single process.

The Ray driver runs the same steps with the sampling and scoring spread over actors; this
module is the reference for tests and debugging, and the pieces it uses are shared.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from configs.schema import Config
from diffusion.sampler import SamplerSettings, UNetCounter, derive_seed, sample_branches
from diffusion.trajectory import TrajectoryBatch
from learner.advantages import Advantages, within_trunk_share
from learner.schedule import interval
from learner.selection import Selection, select
from learner.update import PolicyTrainer, UpdateStats

RewardFn = Callable[[torch.Tensor, list[str]], np.ndarray]


def sampler_settings(cfg: Config, stage: int) -> SamplerSettings:
    s = cfg.sampling
    start, end = interval(cfg.schedule, stage, cfg.stages, s.num_steps)
    return SamplerSettings(
        num_steps=s.num_steps,
        split_step=end - start,
        branches=s.branches,
        guidance_scale=s.guidance_scale,
        eta=s.eta,
        micro_batch=s.micro_batch,
        interval_end=None if end == s.num_steps else end,
    )


def stage_prompts(prompts: list[str], trunks: int, seed: int, stage: int) -> list[str]:
    """The prompt of each trunk of a stage: every prompt equally often, order shuffled."""
    rng = np.random.default_rng(derive_seed(seed, stage, 0x9807))
    reps = -(-trunks // len(prompts))
    pool = [p for _ in range(reps) for p in rng.permutation(prompts).tolist()]
    return pool[:trunks]


def stage_rows(cfg: Config, prompts: list[str], stage: int) -> list[str]:
    """The prompt of every row (trunk x branch) of a stage, in the order its rewards arrive."""
    trunks = stage_prompts(prompts, cfg.sampling.trunks_per_stage, cfg.seed, stage)
    return [p for p in trunks for _ in range(cfg.sampling.branches)]


class NonFiniteReward(ValueError):
    """A scorer returned NaN or infinity; the run stops rather than train on it."""


def check_rewards(rewards: np.ndarray, prompts: list[str]) -> np.ndarray:
    rewards = np.asarray(rewards, dtype=np.float64).reshape(-1)
    if rewards.shape[0] != len(prompts):
        raise ValueError(f"reward count {rewards.shape[0]} != image count {len(prompts)}")
    bad = np.flatnonzero(~np.isfinite(rewards))
    if bad.size:
        raise NonFiniteReward(
            f"non-finite reward {rewards[bad[0]]} for prompt {prompts[bad[0]]!r} "
            f"({bad.size} of {len(prompts)} images); refusing to train on it"
        )
    return rewards


@dataclass
class StageResult:
    stage: int
    split_step: int
    rewards: np.ndarray
    advantages: np.ndarray
    selection: Selection
    update: UpdateStats
    unet: UNetCounter
    seconds: dict[str, float]
    batch: TrajectoryBatch

    def metrics(self) -> dict[str, float]:
        out = {
            "split_step": float(self.split_step),
            "reward_mean": float(self.rewards.mean()),
            "reward_std": float(self.rewards.std()),
            "reward_within_trunk": within_trunk_share(self.rewards, self.batch.trunk_ids.numpy()),
            "positives": float(self.selection.positives),
            "negatives": float(self.selection.negatives),
            "images": float(len(self.rewards)),
        }
        out.update({k: float(v) for k, v in self.update.as_dict().items()})
        out.update({f"seconds_{k}": v for k, v in self.seconds.items()})
        return out


def train_on(
    trainer: PolicyTrainer,
    advantages: Advantages,
    cfg: Config,
    stage: int,
    batch: TrajectoryBatch,
    rewards: np.ndarray,
) -> tuple[np.ndarray, Selection, UpdateStats]:
    """Normalise, select, update: the learner's half of a stage."""
    adv = advantages(batch.prompts, batch.trunk_ids.numpy(), rewards, stage)
    sel = select(cfg.selection, batch.trunk_ids.numpy(), adv)
    stats = trainer.update(batch, adv, sel, stage)
    return adv, sel, stats


def run_stage(
    trainer: PolicyTrainer,
    advantages: Advantages,
    reward_fn: RewardFn,
    prompts: list[str],
    cfg: Config,
    stage: int,
    workers: int = 1,
) -> StageResult:
    """Sample all trunks (split over `workers` plain calls), score, select, update."""
    settings = sampler_settings(cfg, stage)
    trunk_prompts = stage_prompts(prompts, cfg.sampling.trunks_per_stage, cfg.seed, stage)
    counter = UNetCounter()
    t0 = time.perf_counter()
    parts = np.array_split(np.arange(len(trunk_prompts)), workers)
    batch = TrajectoryBatch.cat(
        [
            sample_branches(
                trainer.model,
                [trunk_prompts[i] for i in ids],
                ids.tolist(),
                settings,
                cfg.seed,
                stage,
                counter,
            )
            for ids in parts
            if len(ids)
        ]
    )
    t1 = time.perf_counter()
    rewards = check_rewards(reward_fn(batch.images, batch.prompts), batch.prompts)
    t2 = time.perf_counter()
    adv, sel, stats = train_on(trainer, advantages, cfg, stage, batch, rewards)
    t3 = time.perf_counter()
    return StageResult(
        stage,
        settings.split_step,
        rewards,
        adv,
        sel,
        stats,
        counter,
        {"rollout": t1 - t0, "reward": t2 - t1, "update": t3 - t2},
        batch,
    )
