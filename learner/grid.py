"""Sample grids: images with their prompts written under them, as PNG."""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image, ImageDraw, ImageFont

GOOD, BAD = (20, 150, 40), (200, 30, 30)


def wrap(text: str, width: float, draw: ImageDraw.ImageDraw, font) -> list[str]:
    """`text` as lines no wider than `width` px; a word wider than a line (a long run
    label) is broken inside, so nothing is cut."""
    pieces = []
    for word in text.split():
        while len(word) > 1 and draw.textlength(word, font=font) > width:
            fit = 1
            while fit < len(word) and draw.textlength(word[: fit + 1], font=font) <= width:
                fit += 1
            pieces.append(word[:fit])
            word = word[fit:]
        pieces.append(word)
    lines = [""]
    for piece in pieces:
        trial = f"{lines[-1]} {piece}".strip()
        if lines[-1] and draw.textlength(trial, font=font) > width:
            lines.append(piece)
        else:
            lines[-1] = trial
    return lines


def grid_image(
    images: torch.Tensor,
    captions: list[str],
    columns: int = 8,
    cell: int = 128,
    correct: list[bool] | None = None,
) -> Image.Image:
    """images uint8 [N, 3, H, W] -> a grid, each image upscaled to `cell` px with its whole
    caption under it (the caption band is as tall as the longest caption needs); with
    `correct`, each image framed green (true) or red (false)."""
    n = len(images)
    columns = max(1, min(columns, n))
    rows = -(-n // columns)
    font = ImageFont.load_default()
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    texts = ["\n".join(wrap(c, cell - 4, measure, font)) for c in captions]
    heights = [measure.multiline_textbbox((0, 0), t, font=font)[3] for t in texts]
    text_h = 4 + max(heights, default=0)
    grid = Image.new("RGB", (columns * cell, rows * (cell + text_h)), "white")
    draw = ImageDraw.Draw(grid)
    for i in range(n):
        arr = images[i].permute(1, 2, 0).cpu().numpy()
        tile = Image.fromarray(arr).resize((cell, cell), Image.NEAREST)
        x, y = (i % columns) * cell, (i // columns) * (cell + text_h)
        grid.paste(tile, (x, y))
        if correct is not None:
            colour = GOOD if correct[i] else BAD
            draw.rectangle([x, y, x + cell - 1, y + cell - 1], outline=colour, width=4)
        draw.multiline_text((x + 2, y + cell + 1), texts[i], fill="black", font=font)
    return grid


def save_grid(
    images: torch.Tensor,
    captions: list[str],
    path: Path,
    columns: int = 8,
    cell: int = 128,
    correct: list[bool] | None = None,
) -> Path:
    """`grid_image` written to `path` as PNG."""
    path.parent.mkdir(parents=True, exist_ok=True)
    grid_image(images, captions, columns, cell, correct).save(path)
    return path
