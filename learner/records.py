"""The typed records a stage passes between its groups (and across Ray actor boundaries).

rollout task -> `SampledChunk` (images to score, what it cost) -> `ScoredChunk` (rewards,
with the rows they belong to) -> `Rows` of the stage -> `Selected` (advantages and the
rows to train on) -> the learner's `UpdateStats`. `PublishedWeights` carries the LoRA the
other way, by version.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from diffusion.sampler import UNetCounter
from diffusion.trajectory import TrajectoryBatch
from learner.selection import Selection


@dataclass(frozen=True)
class RolloutTask:
    """A chunk of a stage's trunks, sampled by one rollout worker in one call. Its make-up
    depends on the config only, never on the number of workers, so a chunk gives
    bit-identical samples wherever it runs (BLAS results depend on batch composition)."""

    stage: int
    chunk: int
    prompts: list[str]  # one per trunk
    trunk_ids: list[int]  # global trunk index within the stage


@dataclass
class RolloutImages:
    """The images of one chunk, leaving the rollout worker at once for the rewards."""

    chunk: int
    prompts: list[str]  # one per row (trunk x branch)
    trunk_ids: torch.Tensor  # int64 [n]
    branch_ids: torch.Tensor  # int64 [n]
    images: torch.Tensor  # uint8 [n, 3, H, W]
    seconds: float

    @staticmethod
    def of(batch: TrajectoryBatch, chunk: int, seconds: float) -> RolloutImages:
        return RolloutImages(
            chunk, batch.prompts, batch.trunk_ids, batch.branch_ids, batch.images, seconds
        )


@dataclass(frozen=True)
class RolloutCost:
    """What sampling one chunk took."""

    unet_calls: int  # UNet forward invocations
    unet_evaluations: int  # latents through the UNet (x2 with classifier-free guidance)
    row_bytes: int  # bytes of one kept trajectory row (what the learner may fetch)

    @staticmethod
    def of(counter: UNetCounter, kept: TrajectoryBatch) -> RolloutCost:
        """`kept`: the chunk's trajectories as kept for the learner (without images)."""
        return RolloutCost(counter.calls, counter.evaluations, kept.nbytes() // max(1, len(kept)))


@dataclass
class SampledChunk:
    """A chunk that has been sampled: its images (in-process the record itself; through
    Ray a reference the reward actors fetch directly) and its cost."""

    stage: int
    chunk: int
    images: RolloutImages | Any
    cost: RolloutCost
    done_at: float  # time.perf_counter() when the driver saw it done


@dataclass
class Rows:
    """The rows (trunk x branch samples) of a stage in the order their rewards arrive:
    chunk by chunk, each chunk in the order its worker sampled it."""

    prompts: list[str]
    trunk_ids: np.ndarray  # int64 [N]
    branch_ids: np.ndarray  # int64 [N]
    chunks: np.ndarray  # int64 [N], the chunk each row was sampled in
    positions: np.ndarray  # int64 [N], the row's index within its chunk

    def __len__(self) -> int:
        return len(self.prompts)

    @staticmethod
    def of(images: RolloutImages) -> Rows:
        n = len(images.prompts)
        return Rows(
            list(images.prompts),
            images.trunk_ids.numpy().astype(np.int64),
            images.branch_ids.numpy().astype(np.int64),
            np.full(n, images.chunk, dtype=np.int64),
            np.arange(n, dtype=np.int64),
        )

    @staticmethod
    def cat(parts: list[Rows]) -> Rows:
        return Rows(
            [p for r in parts for p in r.prompts],
            np.concatenate([r.trunk_ids for r in parts]),
            np.concatenate([r.branch_ids for r in parts]),
            np.concatenate([r.chunks for r in parts]),
            np.concatenate([r.positions for r in parts]),
        )

    def picks(self, index: np.ndarray) -> dict[int, list[int]]:
        """Rows `index` of the stage as {chunk: positions within the chunk}, each in
        ascending order, so the chunks' parts joined in chunk order are rows `index`."""
        out: dict[int, list[int]] = {}
        for i in np.sort(np.asarray(index, dtype=np.int64)):
            out.setdefault(int(self.chunks[i]), []).append(int(self.positions[i]))
        return dict(sorted(out.items()))


@dataclass
class ScoredChunk:
    """A chunk's rewards: the weighted total and each term alone, row for row."""

    chunk: int
    rows: Rows
    total: np.ndarray  # float64 [n]
    terms: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass
class Selected:
    """The learner's choice for a stage: every row's advantage and the rows to train on."""

    advantages: np.ndarray  # float64 [N]
    selection: Selection


@dataclass
class PublishedWeights:
    """The learner's LoRA at `version`: in-process the tensors, through Ray a reference
    to one `ray.put` every rollout actor fetches."""

    version: int
    weights: dict[str, torch.Tensor] | Any
