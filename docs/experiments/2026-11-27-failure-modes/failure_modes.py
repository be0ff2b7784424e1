"""How the base model gets two-object prompts wrong, per prompt (ninth session).

    PYTHONPATH=. python docs/experiments/2026-11-27-failure-modes/failure_modes.py \
        --out FILE [--per-prompt 64] [--checkpoint base|RUN_DIR|STAGE_DIR] PROMPT_FILE...

Samples the shipped base model, or a run's policy (`learner.evaluate`'s checkpoint
argument), on every prompt (the default sampler, evaluation seed 1234: the same noise for
every checkpoint) and sorts each image by what the checker's detector finds
(`toyworld.checker.detect`):
  correct  - the checker's verdict;
  count    - not exactly two objects;
  colour   - two objects, the prompt's two shapes, but not its colours with them (a colour
             leaked from the partner, swapped, or another colour);
  shape    - two objects, the prompt's two colours, but not its shapes with them;
  both     - two objects, neither the prompt's shapes nor its colours;
and the toy CLIP's mean score (the presets' reward) of each kind of image.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from diffusion.lora import attach_lora, load_lora_state
from diffusion.pipeline import load_model
from learner.evaluate import resolve
from toyworld.checker import as_uint8_images, detect
from toyworld.clip import CLIP_DIR, ToyClipScorer
from toyworld.evaluate import sample_with
from toyworld.grammar import parse
from toyworld.prompts import load_prompts

MODES = ("correct", "count", "colour", "shape", "both")


def mode(prompt: str, image: np.ndarray, correct: bool) -> str:
    if correct:
        return "correct"
    found = detect(image)
    if len(found) != 2:
        return "count"
    spec = parse(prompt)
    shapes_ok = Counter(o.shape for o in found) == Counter(o.shape for o in spec.objects)
    colours_ok = Counter(o.colour for o in found) == Counter(o.colour for o in spec.objects)
    if shapes_ok and not colours_ok:
        return "colour"
    if colours_ok and not shapes_ok:
        return "shape"
    if shapes_ok and colours_ok:
        return "colour"  # right colours and shapes, bound the wrong way round
    return "both"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("files", nargs="+", type=Path)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--per-prompt", type=int, default=64)
    ap.add_argument("--checkpoint", default="base")
    args = ap.parse_args()
    torch.set_num_threads(2)
    target = resolve(args.checkpoint, None, [])
    cfg = target.cfg
    model = load_model(cfg.model)
    if target.lora is not None:
        attach_lora(model.unet, cfg.train.lora, seed=cfg.seed)
        load_lora_state(model.unet, target.lora, target.label)
    prompts = list(dict.fromkeys(p for f in args.files for p in load_prompts(f)))
    n = args.per_prompt * len(prompts)
    samples = sample_with(model, cfg.sampling, prompts, n, 1234, desc=target.label)
    images = as_uint8_images(samples.images.permute(0, 2, 3, 1).numpy())
    counts: dict[str, Counter] = {p: Counter() for p in prompts}
    modes = []
    for prompt, image, ok in zip(samples.prompts, images, samples.correct, strict=True):
        modes.append(mode(prompt, image, bool(ok)))
        counts[prompt][modes[-1]] += 1
    # the presets' reward on the same images: what each kind of image earns
    scores = ToyClipScorer(CLIP_DIR).score(samples.images, samples.prompts)
    modes_arr = np.array(modes)
    clip_by_mode = {
        m: {"images": int((modes_arr == m).sum()), "clip": float(scores[modes_arr == m].mean())}
        for m in MODES
        if (modes_arr == m).any()
    }
    out = {
        "checkpoint": target.label,
        "images_per_prompt": args.per_prompt,
        "seed": 1234,
        "per_prompt": {p: {m: c[m] / args.per_prompt for m in MODES} for p, c in counts.items()},
        "clip_by_mode": clip_by_mode,
    }
    args.out.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    print("correct count colour shape both  prompt")
    for p, shares in out["per_prompt"].items():
        print("  ".join(f"{shares[m]:.2f}" for m in MODES), p)
    print("CLIP score by kind:", {m: round(v["clip"], 3) for m, v in clip_by_mode.items()})


if __name__ == "__main__":
    main()
