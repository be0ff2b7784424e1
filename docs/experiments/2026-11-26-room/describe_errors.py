"""What the pipeline draws for each prompt, in the checker's words (most common first).

python docs/experiments/2026-11-26-room/describe_errors.py PIPELINE_DIR train|test IMAGES CFG
"""

import collections
import sys

import torch

from configs.schema import ModelConfig
from diffusion.pipeline import load_model
from toyworld.checker import describe
from toyworld.evaluate import sample_and_check
from toyworld.prompts import load_prompts, prompt_file

torch.set_num_threads(2)
model = load_model(ModelConfig(pretrained=sys.argv[1], device="cpu"))
split, n, cfg = sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
s = sample_and_check(model, load_prompts(prompt_file("all", split)), n, 10, cfg, 0, progress=False)
seen = collections.defaultdict(collections.Counter)
images = s.images.permute(0, 2, 3, 1).numpy()
for prompt, image, ok in zip(s.prompts, images, s.correct, strict=True):
    seen[prompt][("OK " if ok else "") + describe(image)] += 1
for prompt, counts in seen.items():
    print(f"{prompt:45s} " + "; ".join(f"{k} x{v}" for k, v in counts.most_common(4)))
