"""bench.gpu's update parts: one `PolicyTrainer.update` on the sampled trajectories, then
the update again from the sampling weights at the preset's micro-batch, at the largest that
fits and at the largest with gradient checkpointing."""

from __future__ import annotations

import contextlib
import copy
import time

import numpy as np
import torch

from bench.gpu.budget import Budget
from bench.gpu.measure import (
    count_flops,
    denoiser_rows,
    free_memory,
    peak_bytes,
    reset_peak,
    seconds_per_call,
    sync,
)
from bench.gpu.probes import train_probe
from configs.schema import Config
from diffusion.pipeline import DiffusionModel
from diffusion.trajectory import TrajectoryBatch
from learner.selection import Selection, select
from learner.update import PolicyTrainer

OUT_OF_MEMORY = "OutOfMemoryError"


def update_part(
    model: DiffusionModel, cfg: Config, batch: TrajectoryBatch, budget: Budget
) -> tuple[dict, PolicyTrainer | None, tuple]:
    """One PolicyTrainer.update on the sampled trajectories; advantages spread -1..1 within
    each trunk so that the best and the worst branch of every trunk are selected. Also
    returns the trainer's starting LoRA and optimizer state (the sampling policy's)."""
    dev = model.device
    trainer = PolicyTrainer(model, cfg)  # attaches the LoRA to model.unet
    start = (trainer.weights(), copy.deepcopy(trainer.optimizer.state_dict()))
    adv = spread_advantages(len(batch), cfg.sampling.branches)
    sel = select(cfg.selection, batch.trunk_ids.numpy(), adv)
    bs = cfg.train.micro_batch or cfg.train.batch_size  # trajectories per forward / backward
    # the useful FLOPs of one trajectory's term (no recomputation), then the term at the
    # preset's micro-batch and checkpointing timed (what the update's time estimate uses)
    model.unet.disable_gradient_checkpointing()
    one = train_probe(model, cfg, trainer.params, 1)
    rows = denoiser_rows(model.unet, one) * bs  # also the warm-up of the backward kernels
    flops = count_flops(one) * bs  # forward + backward of one training term, bs trajectories
    checkpointing = cfg.train.gradient_checkpointing
    if checkpointing:
        model.unet.enable_gradient_checkpointing()
    probe = train_probe(model, cfg, trainer.params, bs)
    try:
        sec_term = seconds_per_call(probe, dev, reps=3 if dev.type == "cuda" else 1, warmup=1)
    except torch.cuda.OutOfMemoryError:  # keep the trainer: the searches still run
        sec_term = None
    if sec_term is None:  # after the except block, so the traceback's tensors are gone
        _out_of_memory(trainer, budget, "update", bs)
        return {"error": OUT_OF_MEMORY, "train_micro_batch": bs}, trainer, start
    terms = cfg.train.epochs * batch.interval * len(sel.index)  # trajectory-steps
    out = {
        "lora_rank": cfg.train.lora.rank,
        "lora_parameters": sum(p.numel() for p in trainer.params),
        "train_batch": cfg.train.batch_size,
        "train_micro_batch": bs,
        "gradient_checkpointing": checkpointing,
        "unet_batch": rows,
        "train_flops_per_trajectory_step": flops / bs,
        "train_probe_seconds": sec_term,
        "train_probe_tflops": flops / sec_term / 1e12,
        "selected_trajectories": len(sel.index),
        "interval": batch.interval,
        "epochs": cfg.train.epochs,
        "grad_accum": cfg.train.grad_accum,
    }
    estimate = 1.5 * terms * sec_term / bs + 5
    if budget.left() < estimate:
        budget.skip("update", estimate)
        return out, trainer, start
    sync(dev)
    reset_peak(dev)
    t0 = time.perf_counter()
    stats = None
    with contextlib.suppress(torch.cuda.OutOfMemoryError):
        stats = trainer.update(batch.without_images(), adv, sel, stage=0)
    if stats is None:  # out of memory; freed after the with block drops the traceback
        _out_of_memory(trainer, budget, "update", bs)
        return {**out, "error": OUT_OF_MEMORY}, trainer, start
    sync(dev)
    sec = time.perf_counter() - t0
    out.update(
        {
            "seconds": sec,
            "trajectory_steps": terms,
            "trajectory_steps_per_second": terms / sec,
            "update_unet_tflops": terms * flops / bs / sec / 1e12,
            "peak_memory_bytes": peak_bytes(dev),
            "stats": stats.as_dict(),
        }
    )
    return out, trainer, start


def spread_advantages(n: int, branches: int) -> np.ndarray:
    """Advantages -1..1 across each trunk's branches, for n trajectories in trunk order, so
    that the best and the worst branch of every trunk are the extremes."""
    return np.tile(np.linspace(-1.0, 1.0, branches), -(-n // branches))[:n]


def _out_of_memory(trainer: PolicyTrainer, budget: Budget, part: str, micro_batch: int) -> None:
    """`part` ran out of memory: noted as an error, its gradients dropped and the cache
    emptied; the trainer is kept for the parts after it."""
    budget.errors.append(f"{part}: {OUT_OF_MEMORY} at micro-batch {micro_batch}")
    trainer.optimizer.zero_grad(set_to_none=True)
    free_memory()


def update_variants(
    trainer: PolicyTrainer,
    start: tuple,
    batch: TrajectoryBatch,
    largest: int | None,
    seconds_per_step: float,
    budget: Budget,
) -> dict:
    """The update at the preset's micro-batch, at the largest that fits and at the largest
    with gradient checkpointing: each from the sampling weights (`start`), on the same first
    n = min(largest, sampled) trajectories in one optimizer step, so their times, peak
    memory, losses and on-policy ratios compare directly. `seconds_per_step`: the measured
    seconds of one trajectory-step at the preset's micro-batch (for the time estimates)."""
    base, dev = trainer.cfg, trainer.model.device
    n = min(largest or len(batch), len(batch))
    work = batch.select(torch.arange(n))
    adv = spread_advantages(n, base.sampling.branches)
    sel = Selection(np.arange(n), int((adv > 0).sum()), int((adv < 0).sum()), np.zeros((0, 2), int))
    plans = {
        "preset": (
            min(base.train.micro_batch or base.train.batch_size, n),
            base.train.gradient_checkpointing,
        ),
        "largest": (n, False),
        "largest_checkpointing": (n, True),
    }
    out: dict = {"trajectories": n, "interval": work.interval, "variants": {}}
    try:
        for name, (micro, checkpointing) in plans.items():
            steps = n * work.interval
            estimate = 1.5 * steps * seconds_per_step * (1.5 if checkpointing else 1.0) + 5
            if budget.left() < estimate:
                budget.skip(f"update {name}", estimate)
                continue
            train = {
                "epochs": 1,
                "batch_size": n,
                "grad_accum": 1,
                "micro_batch": micro,
                "gradient_checkpointing": checkpointing,
            }
            trainer.cfg = base.model_copy(update={"train": base.train.model_copy(update=train)})
            trainer.load_weights(start[0])
            trainer.optimizer.load_state_dict(start[1])
            free_memory()
            sync(dev)
            reset_peak(dev)
            t0 = time.perf_counter()
            stats = None
            try:
                stats = trainer.update(work.without_images(), adv, sel, stage=0)
            except torch.cuda.OutOfMemoryError:  # the probe fitted, the update did not
                out["variants"][name] = {"micro_batch": micro, "error": OUT_OF_MEMORY}
            if stats is None:  # after the except block, so the traceback's tensors are gone
                _out_of_memory(trainer, budget, f"update {name}", micro)
                continue
            sync(dev)
            sec = time.perf_counter() - t0
            out["variants"][name] = {
                "micro_batch": micro,
                "gradient_checkpointing": checkpointing,
                "seconds": sec,
                "trajectory_steps": steps,
                "trajectory_steps_per_second": steps / sec,
                "peak_memory_bytes": peak_bytes(dev),
                "stats": stats.as_dict(),
            }
    finally:
        trainer.cfg = base
        trainer.model.unet.disable_gradient_checkpointing()
    return out
