"""Sample grids: one cell per image, caption under it, optional correctness frames."""

from __future__ import annotations

import torch

from learner.grid import BAD, GOOD, grid_image, save_grid


def test_grid_frames_mark_correct_and_wrong_images(tmp_path):
    images = torch.full((3, 3, 8, 8), 255, dtype=torch.uint8)
    img = grid_image(
        images,
        ["a red circle", "two blue squares", "x"],
        columns=2,
        cell=32,
        correct=[True, False, True],
    )
    assert img.size == (2 * 32, 2 * (32 + 28))
    assert img.getpixel((0, 0)) == GOOD and img.getpixel((32, 0)) == BAD
    assert img.getpixel((16, 16)) == (255, 255, 255)  # the image itself, upscaled
    plain = grid_image(images, ["a", "b", "c"], columns=2, cell=32)
    assert plain.getpixel((0, 0)) == (255, 255, 255)  # no frames unless asked
    path = save_grid(images, ["a", "b", "c"], tmp_path / "g" / "grid.png")
    assert path.is_file()
