"""One stage of B²-DiffuRL, written once against the three groups (`learner.groups`).

publish the learner's weights -> the rollout group samples the stage's chunks, each
chunk's images going to the reward group as soon as it is done -> the learner normalises
and selects -> the rollout group hands over the selected rows -> the learner updates ->
(every `logging.grid_every` stages) the grid from fixed noise, with the weights evaluation
uses (`train.ema`'s average when it is on). The same function runs in
one process (`run_in_process`) and on a Ray cluster (`learner.driver.Cluster.groups`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch

from configs.schema import Config
from diffusion.sampler import SamplerSettings, derive_seed
from diffusion.trajectory import TrajectoryBatch
from learner.advantages import Advantages, within_trunk_share
from learner.groups import (
    InProcessLearner,
    InProcessRewards,
    InProcessRollouts,
    RewardFn,
    StageGroups,
)
from learner.learner_worker import LearnerWorker
from learner.records import RolloutTask, Rows, Selected
from learner.schedule import interval
from learner.selection import Selection
from learner.training_grid import GRID_SEED, GRID_STREAM, grid_rows
from learner.update import PolicyTrainer, UpdateStats


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


def rollout_tasks(cfg: Config, prompts: list[str], stage: int) -> list[RolloutTask]:
    """The stage's chunks of trunks: `runtime.trunks_per_task` each (default: an eighth of
    the stage), whatever the number of workers."""
    trunks = stage_prompts(prompts, cfg.sampling.trunks_per_stage, cfg.seed, stage)
    per = cfg.runtime.trunks_per_task or -(-len(trunks) // 8)
    return [
        RolloutTask(stage, c, trunks[lo : lo + per], list(range(lo, min(lo + per, len(trunks)))))
        for c, lo in enumerate(range(0, len(trunks), per))
    ]


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
class StageRecord:
    """What one stage did. `metrics()` is its flat form for MLflow and metrics.jsonl."""

    stage: int
    split_step: int  # s_i: the number of steps this stage trained
    rows: Rows
    rewards: np.ndarray  # float64 [N], the training reward of every row
    reward_terms: dict[str, float]  # each reward term's mean, unweighted
    selected: Selected
    update: UpdateStats
    unet_calls: int
    unet_evaluations: int
    rollout_restarts: int
    bytes_to_learner: int
    seconds: dict[str, float]  # by phase: weight_sync, rollout, reward, select, update[, grid]
    grid_prompts: list[str] = field(default_factory=list)
    grid_images: torch.Tensor | None = None  # uint8 [len(grid_prompts), 3, H, W]
    learner_rebuilds: int = 0  # learner groups rebuilt to finish the stage (learner.stage_loop)
    batch: TrajectoryBatch | None = None  # in-process only: every row, images included

    @property
    def selection(self) -> Selection:
        return self.selected.selection

    @property
    def advantages(self) -> np.ndarray:
        return self.selected.advantages

    def metrics(self) -> dict[str, float]:
        sel = self.selection
        out = {
            "split_step": float(self.split_step),
            "reward_mean": float(self.rewards.mean()),
            "reward_std": float(self.rewards.std()),
            "reward_within_trunk": within_trunk_share(self.rewards, self.rows.trunk_ids),
            "positives": float(sel.positives),
            "negatives": float(sel.negatives),
            "images": float(len(self.rewards)),
            "unet_calls": float(self.unet_calls),
            "unet_evaluations": float(self.unet_evaluations),
            "rollout_restarts": float(self.rollout_restarts),
            "bytes_to_learner": float(self.bytes_to_learner),
            "learner_rebuilds": float(self.learner_rebuilds),
        }
        out.update({f"seconds_{k}": v for k, v in self.seconds.items()})
        busy = sum(v for k, v in self.seconds.items() if k != "grid")
        out["images_per_second"] = len(self.rewards) / max(1e-9, busy)
        out.update({f"reward_{k}": v for k, v in self.reward_terms.items()})
        out.update({k: float(v) for k, v in self.update.as_dict().items()})
        return out


def rank_picks(rows: Rows, mine: np.ndarray, selected: Selected) -> dict[int, list[int]]:
    """A learner rank's rows as {chunk: positions}; a rank that trains none of a non-empty
    selection gets an empty part of one chunk (the batch's shapes, no rows)."""
    if len(mine) or not len(selected.selection.index):
        return rows.picks(mine)
    return {int(rows.chunks[selected.selection.index[0]]): []}


def run_stage(
    groups: StageGroups, cfg: Config, prompts: list[str], stage: int, grid: bool = False
) -> StageRecord:
    """One stage on `groups`; `prompts` are the run's train prompts."""
    settings = sampler_settings(cfg, stage)
    tasks = rollout_tasks(cfg, prompts, stage)
    restarts = groups.rollouts.restarts
    t0 = time.perf_counter()
    groups.rollouts.sync(groups.learner.publish())
    t_sync = time.perf_counter()

    calls = evaluations = row_bytes = 0
    t_sampled = t_sync
    for chunk in groups.rollouts.sample(settings, tasks):
        groups.rewards.submit(chunk)
        calls += chunk.cost.unet_calls
        evaluations += chunk.cost.unet_evaluations
        row_bytes = chunk.cost.row_bytes
        t_sampled = max(t_sampled, chunk.done_at)
    scored = groups.rewards.gather()
    t_scored = time.perf_counter()

    rows = Rows.cat([s.rows for s in scored])
    rewards = check_rewards(np.concatenate([s.total for s in scored]), rows.prompts)
    terms = {
        name: float(np.concatenate([s.terms[name] for s in scored]).mean())
        for name in scored[0].terms
    }
    selected = groups.learner.select(stage, rows, rewards)
    t_selected = time.perf_counter()
    held = groups.learner.held_rows(stage, selected)
    parts = [groups.rollouts.take(stage, rank_picks(rows, mine, selected)) for mine in held]
    update = groups.learner.update(stage, selected, parts)
    t_updated = time.perf_counter()

    record = StageRecord(
        stage=stage,
        split_step=settings.split_step,
        rows=rows,
        rewards=rewards,
        reward_terms=terms,
        selected=selected,
        update=update,
        unet_calls=calls,
        unet_evaluations=evaluations,
        rollout_restarts=groups.rollouts.restarts - restarts,
        bytes_to_learner=sum(len(mine) for mine in held) * row_bytes,
        seconds={
            "weight_sync": t_sync - t0,
            "rollout": t_sampled - t_sync,
            "reward": max(0.0, t_scored - t_sampled),
            "select": t_selected - t_scored,
            "update": t_updated - t_selected,
        },
    )
    if grid:
        record.grid_prompts = grid_rows(prompts)
        record.grid_images = groups.rollouts.sample_fixed(
            groups.learner.publish(ema=True),
            record.grid_prompts,
            settings,
            GRID_SEED,
            GRID_STREAM,
        )
        record.seconds["grid"] = time.perf_counter() - t_updated
        if record.grid_images is None:
            print(f"  stage {stage}: no rollout actor could sample the grid; skipped", flush=True)
    return record


def run_in_process(
    trainer: PolicyTrainer,
    advantages: Advantages,
    reward_fn: RewardFn,
    prompts: list[str],
    cfg: Config,
    stage: int,
) -> StageRecord:
    """One stage in this process, sampling with the trainer's own model: the reference
    for tests and probes. The record also holds the stage's whole batch (`batch`)."""
    learner = LearnerWorker(cfg, trainer, advantages)
    rollouts = InProcessRollouts(trainer.model, cfg)
    groups = StageGroups(rollouts, InProcessRewards(reward_fn), InProcessLearner(learner))
    record = run_stage(groups, cfg, prompts, stage)
    record.batch = rollouts.batch()
    return record
