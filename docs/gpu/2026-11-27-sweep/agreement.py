"""Per prompt, does the toy CLIP (the presets' reward) rank the base model's correct images
above its wrong ones? Samples the base model on the given prompt files (the default
sampler, seed 1234) and writes, per prompt, the checker's base accuracy and the CLIP's
agreement with the checker (`toyworld.baselines.clip_agreement`).

    python docs/gpu/2026-11-27-sweep/agreement.py --out FILE --per-prompt N FILE...
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from configs.load import DEFAULT_PRESET, load_config
from diffusion.pipeline import load_model
from toyworld.baselines import clip_agreement
from toyworld.clip import CLIP_DIR, ToyClipScorer
from toyworld.evaluate import sample_with
from toyworld.prompts import load_prompts


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("files", nargs="+", type=Path)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--per-prompt", type=int, default=64)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    torch.set_num_threads(2)
    cfg = load_config(DEFAULT_PRESET, [f"model.device={args.device}"])
    model = load_model(cfg.model)
    prompts = list(dict.fromkeys(p for f in args.files for p in load_prompts(f)))
    samples = sample_with(model, cfg.sampling, prompts, args.per_prompt * len(prompts), 1234)
    g = clip_agreement(ToyClipScorer(CLIP_DIR), samples.images, samples.prompts, samples.correct)
    out = {
        "files": [str(f) for f in args.files],
        "images_per_prompt": args.per_prompt,
        "seed": 1234,
        "agreement": g["agreement"],
        "per_prompt": {
            p: {"base": samples.per_prompt()[p], "agreement": g["per_prompt"][p]} for p in prompts
        },
    }
    args.out.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    for p, v in out["per_prompt"].items():
        a = "  -  " if v["agreement"] is None else f"{v['agreement']:.2f}"
        print(f"{v['base']:.3f} {a} {p}")


if __name__ == "__main__":
    main()
