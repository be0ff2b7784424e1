"""bench.gpu's sampling part: the denoiser's FLOPs and TFLOP/s at the sampling batch,
branch sampling through `diffusion.sampler.sample_branches`, and the same work as a loop
over branch indices."""

from __future__ import annotations

import dataclasses
import time

import torch

from bench.branching import per_branch_loop
from bench.gpu.budget import Budget
from bench.gpu.measure import (
    count_flops,
    denoiser_rows,
    dtype_name,
    peak_bytes,
    reset_peak,
    seconds_per_call,
    sync,
)
from bench.gpu.probes import PROMPTS, forward_probe
from configs.schema import Config
from diffusion.pipeline import DiffusionModel
from diffusion.sampler import UNetCounter, expected_evaluations, sample_branches
from diffusion.trajectory import TrajectoryBatch
from learner.stage import sampler_settings


def sample_part(
    model: DiffusionModel, cfg: Config, budget: Budget, branch_loop: bool = True
) -> tuple[dict, TrajectoryBatch | None]:
    """Denoiser FLOPs and TFLOP/s at the sampling batch, then timed branch sampling."""
    settings = sampler_settings(cfg, 0)
    dev, mb = model.device, settings.micro_batch
    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(cfg.sampling.trunks_per_stage)]
    trunk_ids = list(range(len(prompts)))
    forward = forward_probe(model, cfg, mb)

    reps = 10 if dev.type == "cuda" else 2
    rows = denoiser_rows(model.unet, forward)  # also the warm-up (kernel selection)
    flops = count_flops(forward)
    sec_forward = seconds_per_call(forward, dev, reps=reps, warmup=1)
    out = {
        "unet_batch": rows,
        "unet_flops_per_forward": flops,
        "unet_flops_per_latent": flops / rows,
        "unet_seconds_per_forward": sec_forward,
        "unet_tflops": flops / sec_forward / 1e12,
    }
    # warm-up with the same batch shapes and few steps, then the timed run
    warm = dataclasses.replace(settings, num_steps=2, split_step=1)
    sample_branches(model, prompts, trunk_ids, warm, seed=0, stage=1)
    evals = expected_evaluations(settings, len(prompts), model.passes(settings.guidance_scale))
    estimate = 1.5 * evals * sec_forward / rows + 5
    if budget.left() < estimate:
        budget.skip(f"sampling {dtype_name(model.dtype)}", estimate)
        return out, None
    sync(dev)
    reset_peak(dev)
    counter = UNetCounter()
    t0 = time.perf_counter()
    batch = sample_branches(model, prompts, trunk_ids, settings, seed=0, stage=0, counter=counter)
    sync(dev)
    sec = time.perf_counter() - t0
    out.update(
        {
            "trunks": len(prompts),
            "branches": settings.branches,
            "num_steps": settings.num_steps,
            "split_step": settings.split_step,
            "micro_batch": mb,
            "guidance_scale": settings.guidance_scale,
            "eta": settings.eta,
            "image_size": int(batch.images.shape[-1]),
            "images": len(batch),
            "seconds": sec,
            "images_per_second": len(batch) / sec,
            "unet_evaluations": counter.evaluations,
            "unet_evaluations_formula": evals,
            "unet_calls": counter.calls,
            "sampling_unet_tflops": counter.evaluations * flops / rows / sec / 1e12,
            "peak_memory_bytes": peak_bytes(dev),
            "finite_latents": bool(torch.isfinite(batch.chain[:, -1]).all()),
        }
    )
    if not branch_loop:
        return out, batch
    # the same work without branch batching: each branch index in its own pass
    if budget.left() < 1.5 * sec + 5:
        budget.skip(f"per-branch loop {dtype_name(model.dtype)}", 1.5 * sec + 5)
        return out, batch
    per_branch_loop(model, prompts, warm, seed=0)  # warm-up in the loop's batch shapes
    sync(dev)
    t0 = time.perf_counter()
    per_branch_loop(model, prompts, settings, seed=0)
    sync(dev)
    looped = time.perf_counter() - t0
    out["per_branch_loop_seconds"] = looped
    out["branch_batching_speedup"] = looped / sec
    return out, batch
