"""Sample grids: whole captions, correctness frames, and the training grid's fixed noise."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from learner.grid import BAD, GOOD, grid_image, save_grid, wrap
from learner.training_grid import grid_rows, save_training_grid, verdict
from toyworld.render import render_prompt


def _ink_bottom(img: Image.Image, top: int) -> int:
    """The lowest row below `top` holding dark (text) pixels."""
    a = np.asarray(img.convert("L"))[top:]
    return top + int(np.flatnonzero((a < 128).any(axis=1)).max())


def test_grid_frames_mark_correct_and_wrong_images(tmp_path):
    images = torch.full((3, 3, 8, 8), 255, dtype=torch.uint8)
    img = grid_image(
        images,
        ["a red circle", "two blue squares", "x"],
        columns=2,
        cell=32,
        correct=[True, False, True],
    )
    assert img.size[0] == 2 * 32 and img.size[1] % 2 == 0
    assert img.getpixel((0, 0)) == GOOD and img.getpixel((32, 0)) == BAD
    assert img.getpixel((16, 16)) == (255, 255, 255)  # the image itself, upscaled
    plain = grid_image(images, ["a", "b", "c"], columns=2, cell=32)
    assert plain.getpixel((0, 0)) == (255, 255, 255)  # no frames unless asked
    path = save_grid(images, ["a", "b", "c"], tmp_path / "g" / "grid.png")
    assert path.is_file()


def test_long_captions_are_wrapped_whole_not_cut():
    caption = "toy_b2-s0@stage_0095: a blue triangle left of a red square"
    cell = 64
    draw, font = ImageDraw.Draw(Image.new("RGB", (1, 1))), ImageFont.load_default()
    lines = wrap(caption, cell - 4, draw, font)
    assert len(lines) >= 4  # more than the two lines a fixed caption band held
    assert "".join(lines).replace(" ", "") == caption.replace(" ", "")  # no character lost
    assert all(draw.textlength(line, font=font) <= cell - 4 for line in lines)

    images = torch.zeros((2, 3, 8, 8), dtype=torch.uint8)
    full = grid_image(images, [caption, "a"], columns=1, cell=cell)
    two_lines = grid_image(images, [" ".join(lines[:2]), "a"], columns=1, cell=cell)
    row = full.size[1] // 2  # the second image starts here, under the first caption
    assert _ink_bottom(full, cell) > _ink_bottom(two_lines, cell)  # every line drawn
    assert _ink_bottom(full.crop((0, 0, cell, row)), cell) < row - 1  # and inside its band


def test_grid_rows_show_each_prompt_with_a_few_noises():
    five = [f"p{i}" for i in range(5)]
    assert grid_rows(five) == five * 3  # row by row: one column per prompt
    many = [f"p{i}" for i in range(20)]
    assert grid_rows(many) == many[:8] * 2
    assert grid_rows(["a", "a", "b"]) == ["a", "b"] * 4


def test_toy_verdict_frames_the_training_grid(tmp_path):
    prompts = ["a red circle", "a blue square"]
    rendered = [render_prompt(p, seed=0) for p in prompts]
    # each render under its own prompt, then under the other one
    rows = prompts + prompts[::-1]
    images = torch.as_tensor(np.stack(rendered * 2)).permute(0, 3, 1, 2).contiguous()
    assert verdict(images, rows) == [True, True, False, False]
    img = Image.open(save_training_grid(images, rows, tmp_path / "grid.png")).convert("RGB")
    cell = img.size[0] // 2  # two prompts: two columns
    row = img.size[1] // 2
    assert [img.getpixel((x, y)) for y in (0, row) for x in (0, cell)] == [GOOD, GOOD, BAD, BAD]

    free_text = ["a photo of a cat", "a castle at dusk"] * 2  # not the toy world: no verdict
    assert verdict(images, free_text) is None
    img = Image.open(save_training_grid(images, free_text, tmp_path / "free.png")).convert("RGB")
    assert img.getpixel((0, 0)) not in (GOOD, BAD)
