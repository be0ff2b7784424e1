"""How far a trained LoRA has moved the policy from the pretrained model, per denoising step
(thirteenth session).

    python docs/experiments/2026-11-27-base-range/kl_from_base.py LORA.safetensors [...] \
        [--prompts FILE] [--out FILE]

For each LoRA kept by `toyworld.rl_check --lora-out`: ten "mid" trunks (each prompt twice;
or the prompts of `--prompts FILE`, twice) sampled through all 10 DDIM steps with the LoRA,
then, per step, the KL between the LoRA's transition and the pretrained model's at the same
latent: the quantity `loss.kl_coef` penalises (mean over latent dimensions, as the log-prob
is). Prints one line a LoRA and writes kl_from_base.json here (or `--out FILE`).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from safetensors.torch import load_file

from configs.load import DEFAULT_PRESET, load_config
from diffusion.pipeline import load_model
from diffusion.sampler import SamplerSettings, sample_branches
from learner.prompts import load_prompts
from learner.update import PolicyTrainer

HERE = Path(__file__).parent


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("loras", type=Path, nargs="+")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--prompts", type=Path, default=HERE / "mid_train.txt", help="prompt file")
    ap.add_argument("--out", type=Path, default=HERE / "kl_from_base.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = load_config(DEFAULT_PRESET, [f"prompts.train={args.prompts}"])
    model = load_model(cfg.model)
    trainer = PolicyTrainer(model, cfg)
    prompts = load_prompts(cfg.prompts.train) * 2
    s = cfg.sampling
    every_step = SamplerSettings(s.num_steps, s.num_steps, 1, s.guidance_scale, s.eta, 64)
    result = {}
    for path in args.loras:
        trainer.load_weights(load_file(str(path)), str(path))
        batch = sample_branches(model, prompts, list(range(len(prompts))), every_step, 5, 99)
        model.scheduler.set_timesteps(s.num_steps, device="cpu")
        emb, uncond = trainer._embeddings(batch)
        rows = torch.arange(len(batch))
        cond = torch.stack([emb[p] for p in batch.prompts])
        with torch.no_grad():
            per_step = [
                float(
                    trainer._forward(batch, rows, torch.full_like(rows, j), cond, uncond, True)[
                        1
                    ].mean()
                )
                for j in range(s.num_steps)
            ]
        result[path.name] = {"mean": sum(per_step) / len(per_step), "per_step": per_step}
        steps = " ".join(f"{k:.1e}" for k in per_step)
        print(f"{path.name}: mean {result[path.name]['mean']:.2e}; steps 0-9: {steps}")
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
