"""What a model draws for some prompts, before and after a LoRA (fifteenth session).

    python docs/experiments/2026-11-27-exposure/describe.py PIPELINE LORA PROMPT... \
        [--images 64] [--threads 2] [--out FILE]

Samples each prompt with the preset's sampler (eval seed 1234, so before and after share
their noise), without and with the LoRA (kept by `toyworld.rl_check --lora-out`), and
counts what the checker's describer (`toyworld.checker.describe`) names in each image.
Prints the exact accuracy and the four most frequent descriptions per prompt; `--out`
writes every count as JSON.
"""

from __future__ import annotations

import argparse
import collections
import json
from pathlib import Path

import torch
from safetensors.torch import load_file

from configs.load import DEFAULT_PRESET, load_config
from diffusion.pipeline import load_model
from learner.update import PolicyTrainer
from toyworld.checker import describe
from toyworld.evaluate import sample_with

EVAL_SEED = 1234


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("pipeline", type=Path)
    ap.add_argument("lora", type=Path)
    ap.add_argument("prompts", nargs="+")
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = load_config(DEFAULT_PRESET, [f"model.pretrained={args.pipeline}"])
    model = load_model(cfg.model)
    trainer = PolicyTrainer(model, cfg)
    record: dict = {"pipeline": str(args.pipeline), "lora": str(args.lora), "seed": EVAL_SEED}
    for label in ("before", "after"):
        if label == "after":
            trainer.load_weights(load_file(str(args.lora)), str(args.lora))
        record[label] = {}
        for prompt in args.prompts:
            s = sample_with(model, cfg.sampling, [prompt], args.images, EVAL_SEED, progress=False)
            seen = collections.Counter(describe(im) for im in s.images.permute(0, 2, 3, 1).numpy())
            record[label][prompt] = {"correct": float(s.correct.mean()), "drawn": dict(seen)}
            print(label, prompt, f"{s.correct.mean():.2f}", seen.most_common(4), flush=True)
    if args.out:
        args.out.write_text(json.dumps(record, indent=1), "utf-8")


if __name__ == "__main__":
    main()
