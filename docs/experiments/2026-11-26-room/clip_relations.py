"""Does the toy CLIP see relations? Own caption vs the flipped relation on 32 renders of
each relation prompt of the packaged spatial sets.

    python docs/experiments/2026-11-26-room/clip_relations.py
"""

import numpy as np
import torch

from toyworld.clip import CLIP_DIR, ToyClipScorer
from toyworld.grammar import Spec, caption, parse
from toyworld.prompts import load_prompts, prompt_file
from toyworld.render import render, sample_scene

FLIP = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}
torch.set_num_threads(1)
scorer = ToyClipScorer(CLIP_DIR)
rng = np.random.default_rng(0)
wins = []
for prompt in load_prompts(prompt_file("spatial", "train")) + load_prompts(
    prompt_file("spatial", "test")
):
    spec = parse(prompt)
    if spec.relation is None:
        continue
    flipped = caption(Spec(spec.objects, FLIP[spec.relation]))
    images = torch.from_numpy(np.stack([render(sample_scene(spec, rng)) for _ in range(32)]))
    images = images.permute(0, 3, 1, 2)
    own, other = scorer.score(images, [prompt] * 32), scorer.score(images, [flipped] * 32)
    wins.append(float(np.mean(own > other)))
    means = f"own {own.mean():.3f}, flipped {other.mean():.3f}"
    print(f"{prompt:42s} own > flipped {wins[-1]:.2f} ({means})")
print(f"mean {np.mean(wins):.3f}")
