"""Checker accuracy of a pipeline on the packaged "all" sets, and how often an image shows
the systematic error of caption_noise.py instead (colours swapped; one object for "two").

    python docs/experiments/2026-11-26-room/measure_swaps.py PIPELINE_DIR IMAGES [CFG]
"""

import sys

import torch

from configs.schema import ModelConfig
from diffusion.pipeline import load_model
from toyworld.checker import check_batch
from toyworld.evaluate import sample_and_check
from toyworld.grammar import ObjectSpec, Spec, caption, parse
from toyworld.prompts import load_prompts, prompt_file

torch.set_num_threads(2)
model = load_model(ModelConfig(pretrained=sys.argv[1], device="cpu"))
n, cfg = int(sys.argv[2]), float(sys.argv[3]) if len(sys.argv) > 3 else 5.0


def wrong_version(prompt: str) -> str | None:
    spec = parse(prompt)
    if len(spec.objects) != 2:
        return None
    a, b = spec.objects
    if spec.is_counting:
        return caption(Spec((a,)))
    try:
        swapped = (ObjectSpec(b.colour, a.shape), ObjectSpec(a.colour, b.shape))
        return caption(Spec(swapped, spec.relation))
    except ValueError:
        return None


for split in ("train", "test"):
    s = sample_and_check(
        model, load_prompts(prompt_file("all", split)), n, 10, cfg, 0, progress=False
    )
    alt = [wrong_version(p) for p in s.prompts]
    rows = [i for i, a in enumerate(alt) if a]
    hit, _ = check_batch(s.images.permute(0, 2, 3, 1).numpy()[rows], [alt[i] for i in rows])
    print(
        f"{split} exact {s.correct.mean():.3f} partial {s.partial.mean():.3f} "
        f"swapped-or-single {hit.mean():.3f}"
    )
