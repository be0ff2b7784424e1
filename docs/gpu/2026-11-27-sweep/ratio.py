"""Does the GPU recompute the sampled log-probs? With unchanged weights, the PPO ratio of
every transition must be 1 (ALGORITHM.md's first pitfall). Run on one DDPO stage's batch
(128 trunks, all 10 steps) of the default model, with TF32 allowed (PyTorch's default for
cuDNN convolutions) and with TF32 off.

    python docs/gpu/2026-11-27-sweep/ratio.py [--device cuda]
"""

from __future__ import annotations

import argparse

import torch

from configs.load import load_config
from diffusion.pipeline import load_model
from diffusion.sampler import sample_branches
from learner.prompts import load_prompts
from learner.stage import sampler_settings
from learner.update import PolicyTrainer


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--trunks", type=int, default=128)
    args = ap.parse_args()
    cfg = load_config(
        "configs/toy_ddpo.yaml",
        [f"model.device={args.device}", f"sampling.micro_batch={args.trunks}"],
    )
    model = load_model(cfg.model)
    trainer = PolicyTrainer(model, cfg)
    prompts = load_prompts(cfg.prompts.train)
    st = sampler_settings(cfg, 0)
    wanted = [prompts[i % len(prompts)] for i in range(args.trunks)]
    for tf32 in (True, False):
        torch.backends.cudnn.allow_tf32 = tf32
        torch.backends.cuda.matmul.allow_tf32 = tf32
        batch = sample_branches(model, wanted, list(range(args.trunks)), st, seed=3, stage=0)
        d = trainer.log_probs(batch) - batch.log_probs
        per_step = d.abs().amax(dim=0).tolist()
        print(
            f"tf32={tf32}: |log ratio| max {d.abs().max():.3e} mean {d.abs().mean():.3e}; "
            f"max per step " + " ".join(f"{x:.1e}" for x in per_step),
            flush=True,
        )


if __name__ == "__main__":
    main()
