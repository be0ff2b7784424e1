"""Seconds of one stage's update at split 10 (64 selected trajectories of the toy B² preset,
2 epochs, the KL penalty on), the current `learner.update` against an older copy of it.

    git show e1c2a22~1:learner/update.py > /tmp/update_old.py
    python docs/experiments/2026-12-04-update-cost/update_bench.py --old /tmp/update_old.py \
        [--threads N] [--repeats 2]

Both versions get the same freshly loaded model, batch, advantages and selection; each
prints its seconds and what it computed (kl_base, loss, the LoRA's norm after the update),
so a faster version that computes something else shows it.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))

from configs.load import DEFAULT_PRESET, load_config  # noqa: E402
from diffusion.pipeline import load_model  # noqa: E402
from diffusion.sampler import sample_branches  # noqa: E402
from learner import update as current  # noqa: E402
from learner.prompts import load_prompts  # noqa: E402
from learner.selection import Selection  # noqa: E402
from learner.stage import sampler_settings  # noqa: E402


def load_old(path: Path):
    spec = importlib.util.spec_from_file_location("update_old", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["update_old"] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


def one_update(mod, cfg) -> tuple[float, object, float]:
    model = load_model(cfg.model)
    trainer = mod.PolicyTrainer(model, cfg)
    stage = cfg.stages - 1  # the last stage: every step in the interval
    prompts = load_prompts(cfg.prompts.train)
    trunk_prompts = [prompts[i % len(prompts)] for i in range(cfg.sampling.trunks_per_stage)]
    trunks = list(range(len(trunk_prompts)))
    batch = sample_branches(model, trunk_prompts, trunks, sampler_settings(cfg, stage), 1, stage)
    adv = np.random.default_rng(0).standard_normal(len(batch))
    index = np.arange(0, len(batch), 2)  # 64 of the 128 branches, as extremes selects
    sel = Selection(index, len(index) // 2, len(index) // 2, np.zeros((0, 2), int))
    t0 = time.perf_counter()
    stats = trainer.update(batch, adv, sel, stage=stage)
    seconds = time.perf_counter() - t0
    norm = float(torch.cat([p.detach().flatten() for p in trainer.params]).norm())
    return seconds, stats, norm


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--old", type=Path, required=True, help="an older learner/update.py")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = load_config(DEFAULT_PRESET)
    versions = {"old": load_old(args.old), "current": current}
    for _ in range(args.repeats):
        for name, mod in versions.items():
            seconds, stats, norm = one_update(mod, cfg)
            print(
                f"{name:8} {seconds:6.1f} s  threads {args.threads}  kl_base {stats.kl_base:.9g}"
                f"  loss {stats.loss:.9g}  |lora| {norm:.9g}",
                flush=True,
            )


if __name__ == "__main__":
    main()
