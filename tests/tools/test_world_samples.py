"""tools.world_samples draws the shipped pipeline's samples, framed by the checker's verdict."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from configs.load import DEFAULT_PRESET, load_config
from configs.schema import ModelConfig
from diffusion.pipeline import load_model
from learner.grid import BAD, GOOD
from tools import world_samples
from toyworld.clip import ASSETS_DIR
from toyworld.evaluate import sample_with
from toyworld.prompts import load_prompts, prompt_file


def test_picture_frames_each_sample_by_the_checkers_verdict(tmp_path):
    out = tmp_path / "samples.png"
    world_samples.main(["--out", str(out), "--images", "4", "--quiet", "--threads", "1"])
    picture = np.asarray(Image.open(out).convert("RGB"))
    cell = 128
    assert picture.shape[1] == 4 * cell  # one row: two train samples, then two held-out
    frames = [tuple(int(v) for v in picture[1, i * cell + cell // 2]) for i in range(4)]
    # the verdicts of the same images, sampled as the build measures them
    model = load_model(ModelConfig(pretrained=str(ASSETS_DIR / "pipeline"), device="cpu"))
    sampling = load_config(DEFAULT_PRESET).sampling
    wanted = []
    for split in ("train", "test"):
        prompts = load_prompts(prompt_file("all", split))
        samples = sample_with(model, sampling, prompts, 2, 0, progress=False)
        wanted += [GOOD if c else BAD for c in samples.correct]
    assert frames == wanted


def test_a_folder_without_a_pipeline_is_a_one_line_error(tmp_path):
    with pytest.raises(SystemExit, match="no diffusers pipeline here"):
        world_samples.main(["--dir", str(tmp_path), "--quiet"])
    with pytest.raises(SystemExit, match="--images 1: must be >= 2"):
        world_samples.main(["--images", "1"])
