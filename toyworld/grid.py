"""A readable picture of generated images: each upscaled, framed green (the checker says
correct) or red, with its prompt written underneath."""

from __future__ import annotations

import textwrap

import numpy as np
from PIL import Image, ImageDraw, ImageFont

CELL = 128  # px per image (32 px images upscaled 4x, nearest neighbour)
TEXT_LINES = 3
LINE = 14
GOOD, BAD = (20, 150, 40), (200, 30, 30)


def sample_grid(
    images: np.ndarray, prompts: list[str], correct: np.ndarray | None = None, cols: int = 8
) -> Image.Image:
    """images: uint8 [N, 3, H, W] or [N, H, W, 3]."""
    images = np.asarray(images)
    if images.shape[1] == 3 and images.shape[-1] != 3:
        images = images.transpose(0, 2, 3, 1)
    n = len(images)
    rows = -(-n // cols)
    pad, text_h = 6, TEXT_LINES * LINE + 4
    cell_w, cell_h = CELL + 2 * pad, CELL + 2 * pad + text_h
    sheet = Image.new("RGB", (cols * cell_w, rows * cell_h), (245, 245, 245))
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default(size=11)
    for i in range(n):
        x, y = (i % cols) * cell_w, (i // cols) * cell_h
        if correct is not None:
            colour = GOOD if correct[i] else BAD
            draw.rectangle([x + 2, y + 2, x + cell_w - 3, y + pad + CELL + 3], fill=colour)
        tile = Image.fromarray(images[i]).resize((CELL, CELL), Image.Resampling.NEAREST)
        sheet.paste(tile, (x + pad, y + pad))
        lines = textwrap.wrap(prompts[i], width=22)[:TEXT_LINES]
        for j, line in enumerate(lines):
            draw.text((x + pad, y + 2 * pad + CELL + j * LINE), line, fill=(0, 0, 0), font=font)
    return sheet
