"""Checker accuracy of a diffusion model on a prompt set, with the project's own sampler.

Images come from `diffusion.sampler.sample_images` (plain DDIM sampling), noise seeded by
(seed, EVAL_STAGE, image index), so two models measured with the same seed start from the
same noise: a before / after comparison is paired.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch

from configs.schema import SamplingConfig
from diffusion.pipeline import DiffusionModel
from diffusion.sampler import SamplerSettings, sample_images
from toyworld.checker import check_batch

EVAL_STAGE = 1_000_003  # a stage number no training run reaches: its noise is never trained on


@dataclass(frozen=True)
class Accuracy:
    images: int
    correct: float  # share judged exactly right by the checker
    partial: float  # mean partial credit
    correct_se: float  # binomial standard error of `correct`

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


@dataclass
class Samples:
    prompts: list[str]
    images: torch.Tensor  # uint8 [N, 3, H, W]
    correct: np.ndarray  # bool [N]
    partial: np.ndarray  # float [N]

    def accuracy(self) -> Accuracy:
        n = len(self.prompts)
        c = float(self.correct.mean())
        return Accuracy(n, c, float(self.partial.mean()), float(np.sqrt(c * (1 - c) / n)))

    def per_prompt(self) -> dict[str, float]:
        """Share judged exactly right, per prompt, in the order prompts first appear."""
        wanted = np.asarray(self.prompts)
        return {p: float(self.correct[wanted == p].mean()) for p in dict.fromkeys(self.prompts)}


def eval_prompts(prompts: list[str], images: int) -> list[str]:
    """`images` prompts cycling through the set in order (each prompt equally often when
    `images` is a multiple of the set's size)."""
    return [prompts[i % len(prompts)] for i in range(images)]


def sample_and_check(
    model: DiffusionModel,
    prompts: list[str],
    images: int,
    num_steps: int,
    guidance_scale: float,
    seed: int,
    eta: float = 1.0,
    batch: int = 64,
    progress: bool = True,
    desc: str = "sample",
) -> Samples:
    settings = SamplerSettings(
        num_steps=num_steps,
        split_step=num_steps,
        branches=1,
        guidance_scale=guidance_scale,
        eta=eta,
        micro_batch=batch,
    )
    wanted = eval_prompts(prompts, images)
    imgs = sample_images(model, wanted, settings, seed, EVAL_STAGE, progress, desc)
    correct, partial = check_batch(imgs.permute(0, 2, 3, 1).numpy(), wanted)
    return Samples(wanted, imgs, correct, partial)


def sample_with(
    model: DiffusionModel,
    sampling: SamplingConfig,
    prompts: list[str],
    images: int,
    seed: int,
    batch: int = 64,
    progress: bool = True,
    desc: str = "sample",
) -> Samples:
    """`sample_and_check` with a config's sampler (DDIM steps, guidance, eta): a model
    measured as the preset samples it."""
    return sample_and_check(
        model,
        prompts,
        images,
        sampling.num_steps,
        sampling.guidance_scale,
        seed,
        eta=sampling.eta,
        batch=batch,
        progress=progress,
        desc=desc,
    )
