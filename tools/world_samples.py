"""A picture of the toy pipeline's samples: packaged train and held-out prompts, each image
framed green where the checker judges it correct and red where not.

    python -m tools.world_samples [--dir DIR] [--out PNG] [--images N] [--seed N]

The images are those `toyworld.build` measures its baselines on (the default preset's
sampler, the same seed and noise): the first N/2 of the packaged "all" train prompts' and
of the held-out ones'. Writes docs/toyworld_samples.png for the shipped assets,
DIR/samples.png for another DIR.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from configs.load import DEFAULT_PRESET, PROJECT_ROOT, load_config
from configs.schema import ModelConfig
from diffusion.pipeline import load_model
from learner.grid import grid_image
from toyworld.clip import ASSETS_DIR
from toyworld.evaluate import sample_with
from toyworld.prompts import load_prompts, prompt_file

DOCS_PICTURE = PROJECT_ROOT / "docs" / "toyworld_samples.png"


def draw(directory: Path, out: Path, images: int, seed: int, progress: bool = True) -> Path:
    """Sample `images` // 2 images per split from DIR/pipeline and write the grid to `out`."""
    pipeline = directory / "pipeline"
    if not (pipeline / "model_index.json").is_file():
        raise SystemExit(f"{pipeline}: no diffusers pipeline here (run `python -m toyworld.build`)")
    model = load_model(ModelConfig(pretrained=str(pipeline), device="cpu"))
    sampling = load_config(DEFAULT_PRESET).sampling
    shown, prompts, correct = [], [], []
    for split in ("train", "test"):
        samples = sample_with(
            model,
            sampling,
            load_prompts(prompt_file("all", split)),
            images // 2,
            seed,
            progress=progress,
            desc=f"samples {split}",
        )
        shown.append(samples.images)
        prompts += samples.prompts
        correct += samples.correct.tolist()
    out.parent.mkdir(parents=True, exist_ok=True)
    grid_image(torch.cat(shown), prompts, correct=correct).save(out)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Draw the toy pipeline's samples as a grid.")
    parser.add_argument("--dir", type=Path, default=ASSETS_DIR, help="a toyworld.build output")
    parser.add_argument("--out", type=Path, default=None, help="where to write the PNG")
    parser.add_argument("--images", type=int, default=40, help="in all, half per split")
    parser.add_argument("--seed", type=int, default=0, help="the build's seed: its noise")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    if args.images < 2:
        raise SystemExit(f"--images {args.images}: must be >= 2 (half per split)")
    torch.set_num_threads(args.threads)
    directory = args.dir.resolve()
    out = args.out or (
        DOCS_PICTURE if directory == ASSETS_DIR.resolve() else directory / "samples.png"
    )
    print(draw(directory, out, args.images, args.seed, progress=not args.quiet))


if __name__ == "__main__":
    main()
