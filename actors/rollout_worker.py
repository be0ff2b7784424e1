"""Rollout workers: hold a pipeline + LoRA and run branch sampling for the trunks given.

`RolloutWorker` is plain Python (the tests use it directly); the Ray rollout group
(`actors.rollout_group`) runs it as a restartable actor. Everything is built in __init__,
so a restarted actor rebuilds itself and then refuses to sample until it has received the
current weights.
Sampled trajectories stay here; only images (for the rewards) leave at once, and the
learner later takes just the selected rows.
"""

from __future__ import annotations

import time

import torch

from configs.schema import Config
from diffusion.lora import attach_lora, load_lora_state
from diffusion.pipeline import load_model, pick_device
from diffusion.sampler import SamplerSettings, UNetCounter, sample_branches, sample_images
from diffusion.trajectory import TrajectoryBatch
from learner.records import RolloutCost, RolloutImages, RolloutTask


class StaleWeightsError(RuntimeError):
    """Asked to sample with weights this worker does not hold."""


def set_threads(threads: int, cpus: float) -> None:
    torch.set_num_threads(max(1, threads or int(cpus)))


class RolloutWorker:
    def __init__(self, cfg: Config, index: int = 0):
        rt = cfg.runtime
        set_threads(rt.rollout_threads, rt.rollout_cpus)
        self.cfg = cfg
        self.index = index
        device = pick_device(cfg.model.device) if rt.rollout_gpus > 0 else torch.device("cpu")
        self.model = load_model(cfg.model, device)
        attach_lora(self.model.unet, cfg.train.lora, seed=cfg.seed)
        self.version = -1
        self._kept: dict[tuple[int, int], TrajectoryBatch] = {}

    def set_weights(self, version: int, weights: dict[str, torch.Tensor]) -> int:
        load_lora_state(self.model.unet, weights, f"weights v{version}")
        self.version = version
        return version

    def sample(
        self, version: int, task: RolloutTask, settings: SamplerSettings
    ) -> tuple[RolloutImages, RolloutCost]:
        """Sample a chunk of trunks; keep its trajectories, return its images at once and
        what it cost (two returns: Ray hands them out separately)."""
        self._check(version)
        t0 = time.perf_counter()
        counter = UNetCounter()
        batch = sample_branches(
            self.model, task.prompts, task.trunk_ids, settings, self.cfg.seed, task.stage, counter
        )
        self._kept = {k: v for k, v in self._kept.items() if k[0] == task.stage}
        kept = self._kept[(task.stage, task.chunk)] = batch.without_images()
        images = RolloutImages.of(batch, task.chunk, time.perf_counter() - t0)
        return images, RolloutCost.of(counter, kept)

    def sample_fixed(
        self, version: int, prompts: list[str], settings: SamplerSettings, seed: int, stream: int
    ) -> torch.Tensor:
        """One image uint8 [3, H, W] per prompt, the whole trajectory from the fixed noise
        of (seed, stream, index) (`sample_images`, as evaluation samples): the same noise
        whatever the stage, so only the weights tell two calls apart."""
        self._check(version)
        return sample_images(self.model, prompts, settings, seed, stream)

    def _check(self, version: int) -> None:
        if version != self.version:
            raise StaleWeightsError(
                f"rollout worker {self.index} holds weights v{self.version}, asked for v{version}"
            )

    def take(self, stage: int, chunk: int, rows: list[int]) -> tuple[TrajectoryBatch, int]:
        """The selected rows of a chunk sampled here (what the learner trains on), and
        their number (two returns: the driver checks the small one, the learner fetches
        the batch)."""
        batch = self._kept.get((stage, chunk))
        if batch is None:
            raise KeyError(f"rollout worker {self.index} has no chunk {chunk} of stage {stage}")
        return batch.select(rows), len(rows)

    def ping(self) -> int:
        return self.version
