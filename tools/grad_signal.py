"""Is there a policy-gradient signal to follow? Measure it before tuning learning rates.

    python -m tools.grad_signal [--config FILE]
                                [--reward partial|exact|clip|brightness|darkness|random]
                                [--trunks N] [--batches M] [--set dotted.key=value ...]
                                [--step-test SIZE,SIZE,...]

Samples M independent batches (N trunks x K branches each, the whole trajectory as the
interval), scores them, normalises rewards within each trunk, and computes the gradient
of sum(A * log pi) on the LoRA for every denoising step separately, at the initial
weights. Two numbers per step tell signal from noise:

- the cosine between the gradients of different batches: a consistent direction (signal)
  gives a clearly positive cosine; pure estimator noise gives about 0;
- the gradient norm against the batch size: noise grows as sqrt(N), signal as N (run it
  twice, e.g. --trunks 32 and --trunks 128).

The score-function estimator's noise per sample scales with 1/sigma_t, so the last DDIM
steps (smallest sigma) dominate the norm.

`--step-test` then checks the direction itself by finite differences: the LoRA moves by
+-size along the measured ascent (and along a random direction, the control), and one
fixed set of fresh trajectories is scored at each setting.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from configs.load import DEFAULT_PRESET, load_config
from diffusion.ddim import noise_step_weights
from diffusion.pipeline import load_model
from diffusion.sampler import sample_branches
from learner.prompts import load_prompts
from learner.stage import sampler_settings, stage_prompts
from learner.update import PolicyTrainer
from tools.rl_check import REWARDS, reward_function
from toyworld.checker import check_batch


def _cos(x: torch.Tensor, y: torch.Tensor) -> float:
    return float((x @ y) / (x.norm() * y.norm() + 1e-20))


def _full_trajectories(trainer, cfg, prompts: list[str], stage: int):
    """One stage's trunks x K branches with the whole trajectory as the interval (every
    step is a branch step); noise from (seed, stage, trunk), so equal arguments give equal
    noise whatever the parameters."""
    settings = replace(
        sampler_settings(cfg, stage), split_step=cfg.sampling.num_steps, interval_end=None
    )
    tp = stage_prompts(prompts, cfg.sampling.trunks_per_stage, cfg.seed, stage)
    with torch.no_grad():
        return sample_branches(trainer.model, tp, list(range(len(tp))), settings, cfg.seed, stage)


def _evaluate(trainer, cfg, reward_fn, prompts: list[str], stage: int):
    """Rewards and checker verdicts of one fixed set of full trajectories."""
    batch = _full_trajectories(trainer, cfg, prompts, stage)
    r = np.asarray(reward_fn(batch.images, batch.prompts), dtype=float)
    correct, _ = check_batch(batch.images.permute(0, 2, 3, 1).numpy(), batch.prompts)
    return r, np.asarray(correct, dtype=float)


def step_test(
    trainer, cfg, reward_fn, prompts: list[str], ascent: torch.Tensor, sizes: list[float]
) -> list[dict]:
    """Finite differences along the measured ascent direction and along a random one.

    The parameters move to theta +- size * unit direction; the mean reward of one fixed set
    of trajectories (fresh prompts and noise, paired across the settings) is compared. An
    estimator that points uphill gives reward(+) > reward(-) for small sizes; the random
    direction is the control (about 0)."""
    params = trainer.params
    theta = [p.detach().clone() for p in params]
    gen = torch.Generator().manual_seed(cfg.seed + 7)
    rand = torch.randn(ascent.shape, generator=gen) * (ascent != 0)  # the same subspace
    eval_stage = 1000  # away from the measured batches' stages

    def set_params(offset: torch.Tensor | None) -> None:
        with torch.no_grad():
            lo = 0
            for p, t in zip(params, theta, strict=True):
                n = p.numel()
                p.copy_(t if offset is None else t + offset[lo : lo + n].view_as(p).to(p))
                lo += n

    out = []
    for name, direction in (("ascent", ascent), ("random", rand)):
        unit = direction / (direction.norm() + 1e-20)
        for size in sizes:
            res = {}
            for sign in (1.0, -1.0):
                set_params(sign * size * unit)
                res[sign] = _evaluate(trainer, cfg, reward_fn, prompts, eval_stage)
            set_params(None)
            diff = res[1.0][0] - res[-1.0][0]
            out.append(
                {
                    "direction": name,
                    "size": size,
                    "reward_plus": float(res[1.0][0].mean()),
                    "reward_minus": float(res[-1.0][0].mean()),
                    "reward_diff": float(diff.mean()),
                    "reward_diff_se": float(diff.std() / np.sqrt(len(diff))),
                    "correct_plus": float(res[1.0][1].mean()),
                    "correct_minus": float(res[-1.0][1].mean()),
                    "images": len(diff),
                }
            )
    return out


def measure(cfg, reward: str, batches: int, step_sizes: list[float] | None = None) -> dict:
    model = load_model(cfg.model)
    trainer = PolicyTrainer(model, cfg)
    prompts = load_prompts(cfg.prompts.train)
    reward_fn = reward_function(reward, cfg)
    K = cfg.sampling.branches
    grads, info = [], []
    for stage in range(batches):
        # the whole trajectory is the interval: every step's gradient is measured
        batch = _full_trajectories(trainer, cfg, prompts, stage)
        r = np.asarray(reward_fn(batch.images, batch.prompts), dtype=float).reshape(-1, K)
        adv = (r - r.mean(1, keepdims=True)) / (r.std(1, keepdims=True) + 1e-8)
        adv_t = torch.as_tensor(adv.reshape(-1), dtype=torch.float32)
        info.append({"reward_mean": float(r.mean()), "within_trunk_std": float(r.std(1).mean())})
        model.scheduler.set_timesteps(cfg.sampling.num_steps, device="cpu")
        emb, uncond = trainer._embeddings(batch)
        per_step = []
        for j in range(batch.interval):
            trainer.optimizer.zero_grad(set_to_none=True)
            for lo in range(0, len(batch), cfg.sampling.micro_batch):
                rows = torch.arange(lo, min(lo + cfg.sampling.micro_batch, len(batch)))
                cond = torch.stack([emb[batch.prompts[i]] for i in rows.tolist()])
                lp = trainer._forward(batch, rows, torch.full_like(rows, j), cond, uncond)[0]
                (-(adv_t[rows].to(lp.device) * lp).sum()).backward()
            per_step.append(torch.cat([p.grad.flatten().clone() for p in trainer.params]))
        grads.append(torch.stack(per_step))
    steps = []
    for j in range(grads[0].shape[0]):
        pairs = [
            _cos(grads[a][j], grads[b][j])
            for a in range(len(grads))
            for b in range(a + 1, len(grads))
        ]
        steps.append(
            {
                "step": j,
                "grad_norm": float(np.mean([float(g[j].norm()) for g in grads])),
                "cosine_between_batches": float(np.mean(pairs)),
            }
        )

    def batch_cosine(vectors: list[torch.Tensor]) -> float:
        n = len(vectors)
        return float(
            np.mean([_cos(vectors[a], vectors[b]) for a in range(n) for b in range(a + 1, n)])
        )

    # the first k steps together: what an update training steps [0, k) follows
    first_steps = [
        {"steps": k, "cosine_between_batches": batch_cosine([g[:k].sum(0) for g in grads])}
        for k in range(1, grads[0].shape[0] + 1)
    ]
    # each step weighted as loss.step_weight=noise weights it: the near-deterministic
    # second-to-last step does not dominate the sum
    model.scheduler.set_timesteps(cfg.sampling.num_steps, device="cpu")
    weight = noise_step_weights(model.scheduler, cfg.sampling.eta)
    weighted_totals = [(g * weight[: g.shape[0], None]).sum(0) for g in grads]
    weighted = batch_cosine(weighted_totals)
    fd = None
    if step_sizes:
        # the update's direction: minus the loss gradient, all batches and steps as weighted
        ascent = -torch.stack(weighted_totals).sum(0)
        fd = step_test(trainer, cfg, reward_fn, prompts, ascent, step_sizes)
    return {
        "reward": reward,
        "trunks": cfg.sampling.trunks_per_stage,
        "branches": K,
        "batches": info,
        "steps": steps,
        "first_steps": first_steps,
        "all_steps_cosine": first_steps[-1]["cosine_between_batches"],
        "all_steps_noise_weighted_cosine": weighted,
        "step_test": fd,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Policy-gradient signal vs noise.")
    parser.add_argument("--config", type=Path, default=DEFAULT_PRESET)
    parser.add_argument("--reward", choices=REWARDS, default="partial")
    parser.add_argument("--trunks", type=int, default=32)
    parser.add_argument("--batches", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument(
        "--step-test",
        default="",
        help="comma-separated parameter-space step sizes: finite differences of the reward "
        "along the measured ascent direction and a random one",
    )
    args = parser.parse_args(argv)
    if args.batches < 2:
        raise SystemExit("--batches must be at least 2 (the cosine compares batches)")
    torch.set_num_threads(args.threads)
    cfg = load_config(args.config, [*args.overrides, f"sampling.trunks_per_stage={args.trunks}"])
    sizes = [float(x) for x in args.step_test.split(",") if x.strip()]
    result = measure(cfg, args.reward, args.batches, sizes)
    for s in result["steps"]:
        print(
            f"step {s['step']:2d}: |grad| {s['grad_norm']:.3e}  "
            f"cosine between batches {s['cosine_between_batches']:+.3f}"
        )
    print(
        "steps [0, k) together, cosine between batches: "
        + "  ".join(
            f"k={f['steps']} {f['cosine_between_batches']:+.3f}" for f in result["first_steps"]
        )
    )
    print(f"all steps: cosine between batches {result['all_steps_cosine']:+.3f}")
    print(
        "all steps weighted as loss.step_weight=noise: cosine between batches "
        f"{result['all_steps_noise_weighted_cosine']:+.3f}"
    )
    for f in result["step_test"] or []:
        print(
            f"step {f['direction']:>6} size {f['size']:g}: reward {f['reward_minus']:.4f} (-) "
            f"-> {f['reward_plus']:.4f} (+), diff {f['reward_diff']:+.4f} "
            f"(se {f['reward_diff_se']:.4f}); exact {f['correct_minus']:.3f} -> "
            f"{f['correct_plus']:.3f} ({f['images']} images)"
        )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
