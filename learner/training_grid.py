"""The training grid: a few train prompts sampled from the same noise at every stage.

Every `logging.grid_every` stages (and at the last) the driver samples `grid_rows` with the
weights that stage has just trained, on one rollout actor, through evaluation's fixed-noise
sampler (`diffusion.sampler.sample_images`) on a noise stream of its own. So
grids/stage_NNNN.png shows the model checkpointed in stages/stage_NNNN, and two grids of
one run (or of runs of one config, whatever their seeds) differ only by their weights.
On the toy world each image is framed by the exact checker's verdict (green: correct).
"""

from __future__ import annotations

from pathlib import Path

import torch

from learner.grid import save_grid
from toyworld.grammar import in_grammar

GRID_SEED = 1234  # fixed rather than the run's seed, so runs of other seeds share the noise
GRID_STREAM = 2_000_000  # the noise's "stage": no training stage, nor evaluation, uses it
MAX_PROMPTS = 8  # columns
GRID_IMAGES = 16  # about this many images: a few noises (rows) per prompt


def grid_rows(prompts: list[str]) -> list[str]:
    """The prompt of each grid image, row by row: up to MAX_PROMPTS distinct train prompts
    across, 2 to 4 noises down. Image i's noise depends only on i."""
    shown = list(dict.fromkeys(prompts))[:MAX_PROMPTS]
    noises = min(4, max(2, GRID_IMAGES // len(shown)))
    return [p for _ in range(noises) for p in shown]


def verdict(images: torch.Tensor, rows: list[str]) -> list[bool] | None:
    """The toy checker's judgement of each image uint8 [N, 3, H, W] against its prompt;
    None where the prompts are not the toy world's (as evaluation decides oracle_accuracy)."""
    if not in_grammar(rows):
        return None
    from toyworld.checker import check_batch

    return check_batch(images.permute(0, 2, 3, 1).numpy(), rows)[0].tolist()


def save_training_grid(images: torch.Tensor, rows: list[str], path: Path) -> Path:
    """The grid as PNG: one column per prompt, framed by the verdict on the toy world."""
    columns = len(dict.fromkeys(rows))
    return save_grid(images, rows, path, columns=columns, correct=verdict(images, rows))
