"""Which denoising steps carry what a trained LoRA does to the "mid" set (thirteenth session).

    python docs/experiments/2026-11-27-base-range/where_harm.py LORA.safetensors \
        [--images 600] [--threads 2] [--out FILE] [--grid PROMPT] [--prompts FILE]

Loads a LoRA kept by `toyworld.rl_check --lora-out` into the shipped pipeline and measures
the checker's exact accuracy on the "mid" train prompts (or on `--prompts FILE`) with the
LoRA switched on at only some of the sampler's 10 DDIM steps (a forward pre-hook on the UNet
turns the adapter on or off by timestep; the base weights run the other steps). Steps count
from the noisiest (0) to the last (9); the B² preset trains the last 3 from the first stage
and reaches all 10 only at the end, so "last 3" is what trained longest and "first 7" what
trained least. Sampled as rl_check samples its "after" (the preset's sampler, eval seed
1234): "all" is the run's own after, "none" its before. `--grid PROMPT` instead draws 8
images of one prompt under the gates none / all / first 7 / last 3 (a row each, framed green
where the checker says right) to where_harm_<LORA>.png.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from safetensors.torch import load_file

from configs.load import DEFAULT_PRESET, load_config
from diffusion.pipeline import load_model
from learner.grid import grid_image
from learner.prompts import load_prompts
from learner.update import PolicyTrainer
from toyworld.evaluate import sample_with

HERE = Path(__file__).parent
EVAL_SEED = 1234  # toyworld.rl_check --eval-seed of the runs beside this script
STEPS = 10
GATES = {  # name: the step indices (0 = noisiest) where the LoRA is on
    "none": [],
    "all": list(range(STEPS)),
    "first 4": list(range(4)),
    "first 7": list(range(7)),
    "last 6": list(range(4, STEPS)),
    "last 3": list(range(7, STEPS)),
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("lora", type=Path)
    ap.add_argument("--images", type=int, default=600)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--grid", default=None, help="draw this prompt under four gates instead")
    ap.add_argument("--prompts", type=Path, default=HERE / "mid_train.txt", help="prompt file")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = load_config(DEFAULT_PRESET, [f"prompts.train={args.prompts}"])
    model = load_model(cfg.model)
    trainer = PolicyTrainer(model, cfg)
    trainer.load_weights(load_file(str(args.lora)), str(args.lora))
    model.scheduler.set_timesteps(STEPS, device="cpu")
    step_of = {int(t): i for i, t in enumerate(model.scheduler.timesteps)}
    unet = model.unet
    on: set[int] = set()

    def gate(module, inputs):  # inputs: (latents, timesteps); one timestep per call
        if step_of[int(inputs[1].flatten()[0])] in on:
            module.enable_adapters()
        else:
            module.disable_adapters()

    hook = unet.register_forward_pre_hook(gate)
    name = args.lora.name.split(".")[0]
    if args.grid:
        images, captions, correct = [], [], []
        for g in ("none", "all", "first 7", "last 3"):
            on.clear()
            on.update(GATES[g])
            s = sample_with(model, cfg.sampling, [args.grid], 8, EVAL_SEED, progress=False)
            images.append(s.images)
            captions += [f"LoRA on {g}"] * 8
            correct += s.correct.tolist()
        out = args.out or HERE / f"where_harm_{name}.png"
        grid_image(torch.cat(images), captions, columns=8, cell=96, correct=correct).save(out)
        print(f"{args.grid!r}: rows none / all / first 7 / last 3 -> {out}")
        return
    prompts = load_prompts(cfg.prompts.train)
    result = {"lora": str(args.lora), "images": args.images, "eval_seed": EVAL_SEED}
    for gate_name, steps in GATES.items():
        on.clear()
        on.update(steps)
        s = sample_with(model, cfg.sampling, prompts, args.images, EVAL_SEED, desc=gate_name)
        acc = s.accuracy()
        result[gate_name] = {"steps": steps, "correct": acc.correct, "per_prompt": s.per_prompt()}
        print(f"LoRA on {gate_name:8s} {steps}: exact {acc.correct:.3f} (se {acc.correct_se:.3f})")
    hook.remove()
    unet.enable_adapters()
    out = args.out or HERE / f"where_harm_{name}.json"
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
