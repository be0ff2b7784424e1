"""Sample grids: images with their prompts written under them, as PNG."""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image, ImageDraw, ImageFont


def save_grid(
    images: torch.Tensor, captions: list[str], path: Path, columns: int = 8, cell: int = 128
) -> Path:
    """images uint8 [N, 3, H, W] -> a PNG grid, each image upscaled to `cell` px."""
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
        words, lines = captions[i].split(), [""]
        for w in words:  # wrap to the cell width
            trial = (lines[-1] + " " + w).strip()
            if draw.textlength(trial, font=font) > cell - 4 and lines[-1]:
                lines.append(w)
            else:
                lines[-1] = trial
        draw.multiline_text((x + 2, y + cell + 1), "\n".join(lines[:2]), fill="black", font=font)
    path.parent.mkdir(parents=True, exist_ok=True)
    grid.save(path)
    return path
