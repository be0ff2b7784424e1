"""Sample grids: images with their prompts written under them, as PNG."""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image, ImageDraw, ImageFont

GOOD, BAD = (20, 150, 40), (200, 30, 30)


def grid_image(
    images: torch.Tensor,
    captions: list[str],
    columns: int = 8,
    cell: int = 128,
    correct: list[bool] | None = None,
) -> Image.Image:
    """images uint8 [N, 3, H, W] -> a grid, each image upscaled to `cell` px with its caption
    under it; with `correct`, each image framed green (true) or red (false)."""
    n = len(images)
    columns = max(1, min(columns, n))
    rows = -(-n // columns)
    text_h = 28
    grid = Image.new("RGB", (columns * cell, rows * (cell + text_h)), "white")
    draw = ImageDraw.Draw(grid)
    font = ImageFont.load_default()
    for i in range(n):
        arr = images[i].permute(1, 2, 0).cpu().numpy()
        tile = Image.fromarray(arr).resize((cell, cell), Image.NEAREST)
        x, y = (i % columns) * cell, (i // columns) * (cell + text_h)
        grid.paste(tile, (x, y))
        if correct is not None:
            colour = GOOD if correct[i] else BAD
            draw.rectangle([x, y, x + cell - 1, y + cell - 1], outline=colour, width=4)
        words, lines = captions[i].split(), [""]
        for w in words:  # wrap to the cell width
            trial = (lines[-1] + " " + w).strip()
            if draw.textlength(trial, font=font) > cell - 4 and lines[-1]:
                lines.append(w)
            else:
                lines[-1] = trial
        draw.multiline_text((x + 2, y + cell + 1), "\n".join(lines[:2]), fill="black", font=font)
    return grid


def save_grid(
    images: torch.Tensor, captions: list[str], path: Path, columns: int = 8, cell: int = 128
) -> Path:
    """`grid_image` written to `path` as PNG."""
    path.parent.mkdir(parents=True, exist_ok=True)
    grid_image(images, captions, columns, cell).save(path)
    return path
