"""The three groups a stage runs on, as typed interfaces, and their in-process versions.

A rollout group samples chunks of trunks and keeps their trajectories; a reward group
scores the chunks' images; a learner group publishes weights, selects and updates. The
stage (`learner.stage.run_stage`) is written once against these interfaces. The in-process
versions here run everything in this process (tests, probes, debugging); the Ray versions
(`actors.rollout_group`, `rewards.reward_group`, `learner.learner_group`) spread the work
over actors and own what a cluster needs: weight versions, retries, restarts and the
resampling of lost chunks. The stage never sees any of it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from configs.schema import Config
from diffusion.lora import load_lora_state, lora_state
from diffusion.pipeline import DiffusionModel
from diffusion.sampler import SamplerSettings, UNetCounter, sample_branches, sample_images
from diffusion.trajectory import TrajectoryBatch
from learner.records import (
    PublishedWeights,
    RolloutCost,
    RolloutImages,
    RolloutTask,
    Rows,
    SampledChunk,
    ScoredChunk,
    Selected,
)
from learner.update import UpdateStats
from learner.update_plan import held_rows

RewardFn = Callable[[torch.Tensor, list[str]], np.ndarray]


class RolloutGroup(Protocol):
    restarts: int  # rollout workers restarted so far

    def sync(self, weights: PublishedWeights) -> None:
        """Make `weights` the ones every following sample is drawn with."""

    def sample(self, settings: SamplerSettings, tasks: list[RolloutTask]) -> Iterator[SampledChunk]:
        """Sample every task, yielding each chunk as soon as it is done (any order)."""

    def take(self, stage: int, picks: dict[int, list[int]]) -> list:
        """The picked rows of the stage's chunks ({chunk: positions}), one part a chunk in
        chunk order: trajectories without images, or references to them."""

    def sample_fixed(
        self,
        weights: PublishedWeights,
        prompts: list[str],
        settings: SamplerSettings,
        seed: int,
        stream: int,
    ) -> torch.Tensor | None:
        """One image uint8 [3, H, W] a prompt from fixed noise (`sample_images`), or None
        if no worker could."""


class RewardGroup(Protocol):
    def submit(self, chunk: SampledChunk) -> None:
        """Start scoring a chunk's images."""

    def gather(self) -> list[ScoredChunk]:
        """Every submitted chunk's scores, in chunk order; the group forgets them."""


class LearnerGroup(Protocol):
    def publish(self, ema: bool = False) -> PublishedWeights:
        """The weights rollouts sample with; `ema`: those evaluation uses (train.ema), under
        a version of their own, for the training grid."""

    def select(self, stage: int, rows: Rows, rewards: np.ndarray) -> Selected: ...

    def held_rows(self, stage: int, selected: Selected) -> list[np.ndarray]:
        """Each rank's rows of the selection (stage row numbers, ascending): the rows it
        trains (`learner.update_plan.held_rows`), what it must be handed."""

    def update(self, stage: int, selected: Selected, parts: list[list]) -> UpdateStats:
        """Train on the selected rows; `parts[r]` hold rank r's `held_rows`, in order."""


@dataclass
class StageGroups:
    rollouts: RolloutGroup
    rewards: RewardGroup
    learner: LearnerGroup


# -- in-process --------------------------------------------------------------------------
class InProcessRollouts:
    """Samples with one model in this process (the learner's own, if it is given that)."""

    def __init__(self, model: DiffusionModel, cfg: Config):
        self.model = model
        self.seed = cfg.seed
        self.restarts = 0
        self.kept: dict[int, TrajectoryBatch] = {}  # chunk -> its batch, images included
        self._stage = -1

    def sync(self, weights: PublishedWeights) -> None:
        load_lora_state(self.model.unet, weights.weights, f"weights v{weights.version}")

    def sample(self, settings: SamplerSettings, tasks: list[RolloutTask]) -> Iterator[SampledChunk]:
        for task in tasks:
            if task.stage != self._stage:
                self.kept, self._stage = {}, task.stage
            counter = UNetCounter()
            t0 = time.perf_counter()
            batch = sample_branches(
                self.model, task.prompts, task.trunk_ids, settings, self.seed, task.stage, counter
            )
            self.kept[task.chunk] = batch
            images = RolloutImages.of(batch, task.chunk, time.perf_counter() - t0)
            cost = RolloutCost.of(counter, batch.without_images())
            yield SampledChunk(task.stage, task.chunk, images, cost, time.perf_counter())

    def take(self, stage: int, picks: dict[int, list[int]]) -> list[TrajectoryBatch]:
        if stage != self._stage:
            raise KeyError(f"no chunks of stage {stage} are kept")
        return [self.kept[c].select(rows).without_images() for c, rows in picks.items()]

    def batch(self) -> TrajectoryBatch:
        """Every row of the last stage, images included, in (trunk, branch) order."""
        return TrajectoryBatch.cat(list(self.kept.values()))

    def sample_fixed(
        self,
        weights: PublishedWeights,
        prompts: list[str],
        settings: SamplerSettings,
        seed: int,
        stream: int,
    ) -> torch.Tensor:
        # the model may be the learner's own: its weights are put back afterwards
        kept = {k: v.clone() for k, v in lora_state(self.model.unet).items()}
        self.sync(weights)
        try:
            return sample_images(self.model, prompts, settings, seed, stream)
        finally:
            load_lora_state(self.model.unet, kept, "the weights before the grid")


class InProcessRewards:
    """Scores with a function of (images, prompts) in this process."""

    def __init__(self, reward_fn: RewardFn):
        self.reward_fn = reward_fn
        self._scored: list[ScoredChunk] = []

    def submit(self, chunk: SampledChunk) -> None:
        images: RolloutImages = chunk.images
        score = getattr(self.reward_fn, "score", None)  # a RewardModel reports its terms too
        if score is not None:
            result = score(images.images, images.prompts)
            total, terms = result.total, result.terms
        else:
            total, terms = self.reward_fn(images.images, images.prompts), {}
        self._scored.append(
            ScoredChunk(chunk.chunk, Rows.of(images), np.asarray(total, np.float64), terms)
        )

    def gather(self) -> list[ScoredChunk]:
        out, self._scored = sorted(self._scored, key=lambda s: s.chunk), []
        return out


class InProcessLearner:
    """One learner worker in this process."""

    def __init__(self, worker):  # learner.learner_worker.LearnerWorker
        self.worker = worker

    def publish(self, ema: bool = False) -> PublishedWeights:
        """As `learner.learner_group.RayLearnerGroup.publish`: rollouts get the trained
        weights; `ema`, the evaluation weights, is for the training grid only."""
        return self.worker.published(ema)

    def select(self, stage: int, rows: Rows, rewards: np.ndarray) -> Selected:
        return self.worker.select(stage, rows, rewards)

    def held_rows(self, stage: int, selected: Selected) -> list[np.ndarray]:
        return held_rows(self.worker.cfg, selected.selection, stage, 1)

    def update(self, stage: int, selected: Selected, parts: list[list]) -> UpdateStats:
        (mine,) = parts
        return self.worker.update(stage, selected, *mine)
