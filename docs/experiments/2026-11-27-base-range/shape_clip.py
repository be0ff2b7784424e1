"""A toy CLIP trained with more shape hard negatives, as an RL reward (eleventh session).

    python docs/experiments/2026-11-27-base-range/shape_clip.py --out DIR [--threads 2]

The shipped CLIP's recipe (`toyworld.build_models.build_clip`, seed 0) with more shape hard
negatives (`ClipTraining.reshape_share=0.3`: the anchor's own scene with one object's shape
changed in place, colour, position and size kept, the image a wrong-shape sample is;
`shape_weight=3`: the caption-level shape near miss three times as often as the other
kinds). Writes DIR/clip (config + safetensors, loadable by `ToyClipScorer`) and
DIR/clip_check.json: retrieval and hard-negative rates on 700 renders
(`toyworld.baselines.clip_retrieval`) for both CLIPs.
Not adopted by the build: a test of whether the reward's leniency on shapes is what stops
RL on prompts the base model gets right a third of the time or more.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import torch

from toyworld.baselines import clip_retrieval
from toyworld.build_models import build_clip
from toyworld.build_settings import FULL
from toyworld.clip import CLIP_DIR, ToyClipScorer

SHAPE_NEGATIVES = replace(FULL, clip=replace(FULL.clip, reshape_share=0.3, shape_weight=3.0))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    info = build_clip(args.out, SHAPE_NEGATIVES, seed=0, progress=False)
    check = {
        "build": info,
        "shape_clip": clip_retrieval(ToyClipScorer(args.out / "clip"), 700, seed=6),
        "shipped_clip": clip_retrieval(ToyClipScorer(CLIP_DIR), 700, seed=6),
    }
    (args.out / "clip_check.json").write_text(json.dumps(check, indent=2) + "\n", "utf-8")
    print(json.dumps({k: v for k, v in check.items() if k != "build"}, indent=1))


if __name__ == "__main__":
    main()
