"""`python -m bench.gpu`: Stable Diffusion 1.5 sampling and update throughput on one GPU.

    python -m bench.gpu --out DIR [--tiny] [--device cuda|cpu] [--budget-s S]
                        [--trunks B] [--branches K] [--micro-batch M]

Builds the SD-1.5 architecture from its config values (written out below) with random
weights, so nothing is downloaded: UNet, VAE, CLIP ViT-L/14 text encoder, the CLIP
tokenizer and SD's DDIM scheduler, assembled into the project's `DiffusionModel`. Then it
runs the project's own code on it:

  1. dense matmul peak: a large fp16 / bf16 `torch.matmul`, TFLOP/s;
  2. per dtype (fp16, bf16): one UNet forward at the sampling batch (micro-batch x 2 for
     CFG), FLOPs counted with `FlopCounterMode`, timed -> UNet TFLOP/s; then branch sampling
     with `diffusion.sampler.sample_branches` (B trunks x K branches, 20 DDIM steps, CFG 5,
     eta 1, 512 px) -> images per second and peak memory; then the same work as a loop
     over branch indices (`bench.branching.per_branch_loop`) -> the branch-batching speedup;
  3. one `learner.update.PolicyTrainer.update` (LoRA rank 4, PPO-clip) on those trajectories;
  4. the largest micro-batch that fits: training forward + backward, and sampling (a
     guided UNet step plus the VAE decode of that many latents), by doubling then bisecting
     until `torch.cuda.OutOfMemoryError`;
  5. the update again, from the sampling weights on the same trajectories (as many as the
     largest train micro-batch, one optimizer step), at the preset's micro-batch, at the
     largest, and at the largest with gradient checkpointing; then the largest train
     micro-batch with gradient checkpointing.

Each part checks the time left against --budget-s (default 420 s, counted after the
imports, so that the whole run stays within 8 minutes on an H100) and is skipped with a note
when it would not fit. The JSON goes to DIR/bench_gpu.json, rewritten after every part
(`complete` stays false until the end); a short table is printed last.
Without a GPU (or with --device cpu) it runs a tiny pipeline-sized model in fp32 on the CPU
with few steps; memory figures are then null.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import gc
import json
import os
import platform
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from bench.branching import per_branch_loop
from configs.schema import Config
from diffusion.architectures import SD15 as SD15_NETWORKS
from diffusion.architectures import Networks, random_pipeline
from diffusion.ddim import ddim_step_with_logprob
from diffusion.pipeline import DiffusionModel, from_pipeline
from diffusion.sampler import UNetCounter, expected_evaluations, guided_noise, sample_branches
from diffusion.trajectory import TrajectoryBatch
from learner.selection import Selection, select
from learner.stage import sampler_settings
from learner.update import PolicyTrainer

RESULT_FILE = "bench_gpu.json"
TITLE = "bench.gpu results"
PROMPTS = (
    "a cat riding a bike",
    "a dog playing chess",
    "a horse washing the dishes",
    "a monkey reading a book",
    "a rabbit flying a kite",
    "a bear playing the piano",
    "a fox cooking dinner",
    "an owl writing a letter",
)


# -- architectures ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Arch:
    """A network configuration and the run sizes that go with it."""

    name: str
    net: Networks
    num_steps: int
    split_step: int
    trunks: int
    branches: int
    micro_batch: int
    train_batch: int
    grad_accum: int
    train_micro_batch: int  # trajectories per forward / backward (0: the whole batch)
    matmul_n: int

    def as_dict(self) -> dict:
        """The network's config values and the run sizes, one flat mapping."""
        run = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "net"}
        return {**run, **dataclasses.asdict(self.net)}


# Stable Diffusion 1.5. Run sizes follow configs/sd14_b2.yaml: 20 steps, K = 5, micro-batch
# 16, the first stage's split step 14, train batch 32 in training micro-batches of 16.
SD15 = Arch(
    name="sd15",
    net=SD15_NETWORKS,
    num_steps=20,
    split_step=14,
    trunks=8,
    branches=5,
    micro_batch=16,
    train_batch=32,
    grad_accum=1,
    train_micro_batch=16,
    matmul_n=8192,
)

# The test pipeline's size (diffusion.tiny.tiny_pipeline): 32 px images, 16 x 16 latents,
# cross-attention only at the 8 x 8 level; few steps, so the CPU run takes seconds.
TINY = Arch(
    name="tiny",
    net=Networks(
        image_size=32,
        unet_channels=(32, 64),
        unet_down=("DownBlock2D", "CrossAttnDownBlock2D"),
        unet_up=("CrossAttnUpBlock2D", "UpBlock2D"),
        unet_layers=1,
        attention_head_dim=8,
        norm_groups=8,
        vae_channels=(16, 32),
        vae_layers=1,
        vae_mid_attention=False,
        text_width=32,
        text_layers=2,
        text_heads=4,
        text_ffn=64,
        max_length=16,
    ),
    num_steps=4,
    split_step=2,
    trunks=2,
    branches=2,
    micro_batch=4,
    train_batch=2,
    grad_accum=1,
    train_micro_batch=0,
    matmul_n=512,
)


def build_model(arch: Arch, device: torch.device, dtype: torch.dtype) -> DiffusionModel:
    """Random-weight pipeline of `arch` as the project's DiffusionModel, on `device`."""
    try:
        with torch.device(device):  # initialise on the card: much faster than on the CPU
            pipe = random_pipeline(arch.net)
    except (RuntimeError, NotImplementedError, TypeError):
        pipe = random_pipeline(arch.net)
    return with_dtype(from_pipeline(pipe, device, dtype), dtype)


def with_dtype(model: DiffusionModel, dtype: torch.dtype) -> DiffusionModel:
    for module in (model.unet, model.vae, model.text_encoder):
        module.to(dtype=dtype)
    return dataclasses.replace(model, dtype=dtype)


def param_count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# -- measuring -------------------------------------------------------------------------------


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_bytes(device: torch.device) -> int | None:
    return int(torch.cuda.max_memory_allocated(device)) if device.type == "cuda" else None


def seconds_per_call(
    fn: Callable[[], object], device: torch.device, reps: int, warmup: int
) -> float:
    for _ in range(warmup):
        fn()
    sync(device)
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    sync(device)
    return (time.perf_counter() - t0) / reps


def count_flops(fn: Callable[[], object]) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def matmul_peak(n: int, dtype: torch.dtype, device: torch.device, reps: int) -> dict:
    """Dense n x n x n matmul throughput (2 n^3 FLOPs per product)."""
    g = torch.Generator(device="cpu").manual_seed(0)
    a = torch.randn(n, n, generator=g).to(device, dtype)
    b = torch.randn(n, n, generator=g).to(device, dtype)
    sec = seconds_per_call(lambda: torch.matmul(a, b), device, reps=reps, warmup=3)
    return {"n": n, "reps": reps, "seconds_per_matmul": sec, "tflops": 2 * n**3 / sec / 1e12}


def unet_inputs(model: DiffusionModel, n: int) -> tuple[torch.Tensor, ...]:
    """A CFG batch as the sampler builds it for n latents: 2n rows, uncond then cond."""
    g = torch.Generator(device="cpu").manual_seed(1)
    x = torch.randn(2 * n, *model.latent_shape, generator=g).to(model.device, model.dtype)
    t = torch.full((2 * n,), 501, dtype=torch.long, device=model.device)
    cond = model.encode_prompts([PROMPTS[0]]).expand(n, -1, -1)
    uncond = model.encode_prompts([""]).expand(n, -1, -1)
    return x, t, torch.cat([uncond, cond])


def train_probe(model: DiffusionModel, params: list[torch.nn.Parameter], n: int, cfg: Config):
    """One training term as PolicyTrainer.update computes it, for n trajectories: a guided
    UNet forward with the LoRA, the DDIM log-prob of given next latents, backward."""
    g = torch.Generator(device="cpu").manual_seed(2)
    shape = (n, *model.latent_shape)
    x = torch.randn(shape, generator=g).to(model.device, model.dtype)
    x_next = torch.randn(shape, generator=g).to(model.device, model.dtype)
    t = torch.full((n,), 501, dtype=torch.long)
    cond = model.encode_prompts([PROMPTS[0]]).expand(n, -1, -1)
    uncond = model.encode_prompts([""])

    def run() -> None:
        try:
            eps = guided_noise(
                model.unet,
                x,
                t.to(model.device),
                cond,
                uncond.expand(n, -1, -1),
                cfg.sampling.guidance_scale,
            )
            _, lp = ddim_step_with_logprob(
                model.scheduler, eps, t, x, eta=cfg.sampling.eta, prev_sample=x_next
            )
            lp.float().mean().backward()
        finally:
            for p in params:
                p.grad = None

    return run


@torch.no_grad()
def sampling_probe(model: DiffusionModel, n: int, guidance_scale: float) -> Callable[[], None]:
    """What one sampler micro-batch of n latents holds at once: a guided UNet step, a DDIM
    step, and the VAE decode of n latents (sample_branches decodes in micro-batches too)."""
    g = torch.Generator(device="cpu").manual_seed(3)
    x = torch.randn(n, *model.latent_shape, generator=g).to(model.device, model.dtype)
    noise = torch.randn(x.shape, generator=g).to(model.device, model.dtype)
    t = model.scheduler.timesteps[-1].long()
    cond = model.encode_prompts([PROMPTS[0]]).expand(n, -1, -1)
    uncond = model.encode_prompts([""]).expand(n, -1, -1)

    @torch.no_grad()
    def run() -> None:
        eps = guided_noise(
            model.unet, x, t.expand(n).to(model.device), cond, uncond, guidance_scale
        )
        nxt, _ = ddim_step_with_logprob(model.scheduler, eps, t, x, eta=1.0, noise=noise)
        model.decode(nxt, n)

    return run


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else ""


def _free_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def fits(make_probe: Callable[[int], Callable[[], None]], n: int) -> tuple[bool, str]:
    """Does a probe of size n run? Out of memory (or another size limit) means no."""
    try:
        make_probe(n)()
        return True, ""
    except torch.cuda.OutOfMemoryError:
        why = "OutOfMemoryError"
    except RuntimeError as exc:  # e.g. a kernel's 2**31-element limit on huge batches
        why = f"RuntimeError: {_first_line(exc)}"
    _free_memory()  # after the except block, so the traceback's tensors are gone
    return False, why


def largest_fitting(
    make_probe: Callable[[int], Callable[[], None]],
    cap: int,
    deadline: float,
    start: int = 1,
) -> dict:
    """The largest n <= cap whose probe runs: double from `start` until one fails, then
    bisect. Stops early (complete = False) when the deadline passes."""
    t0 = time.perf_counter()
    good, bad, why, probes, complete = 0, None, "", [], True
    n = start
    while True:
        if time.perf_counter() > deadline:
            complete = False
            break
        ok, reason = fits(make_probe, n)
        probes.append([n, ok])
        if not ok:
            bad, why = n, reason
            break
        good = n
        if n >= cap:
            break
        n = min(2 * n, cap)
    while complete and bad is not None and bad - good > 1:
        if time.perf_counter() > deadline:
            complete = False
            break
        mid = (good + bad) // 2
        ok, reason = fits(make_probe, mid)
        probes.append([mid, ok])
        if ok:
            good = mid
        else:
            bad, why = mid, reason
    return {
        "value": good or None,
        "capped": bad is None and good >= cap,
        "cap": cap,
        "smallest_failing": bad,
        "stopped_by": why or None,
        "complete": complete,
        "probes": probes,
        "seconds": time.perf_counter() - t0,
    }


# -- the run ---------------------------------------------------------------------------------


class Budget:
    """Wall-clock budget: parts run only while their estimate fits in the time left."""

    def __init__(self, seconds: float, reserve: float):
        self.start = time.perf_counter()
        self.deadline = self.start + seconds - reserve
        self.skipped: list[str] = []
        self.errors: list[str] = []

    def left(self) -> float:
        return self.deadline - time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def run(self, name: str, estimate: float, fn: Callable[[], object]) -> object:
        if self.left() < estimate:
            note = f"{name}: skipped, needs ~{estimate:.0f} s, {max(0.0, self.left()):.0f} s left"
            self.skipped.append(note)
            log(note)
            return None
        log(f"{name} ...")
        t0 = time.perf_counter()
        try:
            out = fn()
        except Exception as exc:  # a failed part must not lose the others' numbers
            traceback.print_exc()
            self.errors.append(f"{name}: {type(exc).__name__}: {_first_line(exc)}")
            _free_memory()
            return None
        log(f"{name}: {time.perf_counter() - t0:.1f} s")
        return out


_T0 = time.perf_counter()


def log(msg: str) -> None:
    print(f"[bench.gpu {time.perf_counter() - _T0:6.1f} s] {msg}", flush=True)


def bench_config(arch: Arch, train_dtype: str, device: torch.device, out: Path) -> Config:
    return Config.model_validate(
        {
            "seed": 0,
            "stages": 1,
            "output_dir": str(out / "runs"),
            "model": {
                "pretrained": f"bench.gpu random {arch.name} (built in memory)",
                "dtype": train_dtype,
                "device": device.type,
            },
            "sampling": {
                "num_steps": arch.num_steps,
                "eta": 1.0,
                "guidance_scale": 5.0,
                "branches": arch.branches,
                "trunks_per_stage": arch.trunks,
                "micro_batch": arch.micro_batch,
            },
            "schedule": {"kind": "constant", "start": arch.split_step, "end": arch.split_step},
            "selection": {"mode": "extremes", "tau_pos": 0.5, "tau_neg": -0.5},
            "loss": {"name": "ppo_clip", "clip_range": 0.1},
            "train": {
                "epochs": 1,
                "batch_size": arch.train_batch,
                "grad_accum": arch.grad_accum,
                "micro_batch": arch.train_micro_batch,
                "lora": {"rank": 4},
            },
            "rewards": [{"name": "jpeg_compressibility"}],
            "logging": {"mlflow": False},
        }
    )


def sample_part(model: DiffusionModel, cfg: Config, budget: Budget) -> tuple[dict, TrajectoryBatch]:
    """UNet FLOPs and TFLOP/s at the sampling batch, then timed branch sampling."""
    settings = sampler_settings(cfg, 0)
    dev, mb = model.device, settings.micro_batch
    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(cfg.sampling.trunks_per_stage)]
    trunk_ids = list(range(len(prompts)))
    x, t, ctx = unet_inputs(model, mb)

    @torch.no_grad()
    def forward() -> None:
        model.unet(x, t, encoder_hidden_states=ctx)

    reps = 10 if dev.type == "cuda" else 2
    forward()  # warm-up (kernel selection) before the FLOP count and the timing
    flops = count_flops(forward)
    sec_forward = seconds_per_call(forward, dev, reps=reps, warmup=1)
    out = {
        "unet_batch": 2 * mb,
        "unet_flops_per_forward": flops,
        "unet_flops_per_latent": flops / (2 * mb),
        "unet_seconds_per_forward": sec_forward,
        "unet_tflops": flops / sec_forward / 1e12,
    }
    # warm-up with the same batch shapes and few steps, then the timed run
    warm = dataclasses.replace(settings, num_steps=2, split_step=1)
    sample_branches(model, prompts, trunk_ids, warm, seed=0, stage=1)
    evals = expected_evaluations(settings, len(prompts))
    estimate = 1.5 * evals * sec_forward / (2 * mb) + 5
    if budget.left() < estimate:
        budget.skipped.append(
            f"sampling {dtype_name(model.dtype)}: skipped, needs ~{estimate:.0f} s, "
            f"{max(0.0, budget.left()):.0f} s left"
        )
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
            "sampling_unet_tflops": counter.evaluations * flops / (2 * mb) / sec / 1e12,
            "peak_memory_bytes": peak_bytes(dev),
            "finite_latents": bool(torch.isfinite(batch.chain[:, -1]).all()),
        }
    )
    # the same work without branch batching: each branch index in its own pass
    if budget.left() < 1.5 * sec + 5:
        budget.skipped.append(
            f"per-branch loop {dtype_name(model.dtype)}: skipped, needs ~{1.5 * sec + 5:.0f} s"
        )
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


def update_part(
    model: DiffusionModel, cfg: Config, batch: TrajectoryBatch, budget: Budget
) -> tuple[dict, PolicyTrainer | None, tuple]:
    """One PolicyTrainer.update on the sampled trajectories; advantages spread -1..1 within
    each trunk so that the best and the worst branch of every trunk are selected. Also
    returns the trainer's starting LoRA and optimizer state (the sampling policy's)."""
    dev = model.device
    trainer = PolicyTrainer(model, cfg)  # attaches the LoRA to model.unet
    start = (trainer.weights(), copy.deepcopy(trainer.optimizer.state_dict()))
    K = cfg.sampling.branches
    adv = np.tile(np.linspace(-1.0, 1.0, K), len(batch) // K)
    sel = select(cfg.selection, batch.trunk_ids.numpy(), adv)
    bs = cfg.train.micro_batch or cfg.train.batch_size  # trajectories per forward / backward
    model.scheduler.set_timesteps(cfg.sampling.num_steps, device="cpu")
    probe = train_probe(model, trainer.params, bs, cfg)
    probe()  # warm-up of the backward kernels
    flops = count_flops(probe)  # forward + backward of one training term, bs trajectories
    sec_term = seconds_per_call(probe, dev, reps=3 if dev.type == "cuda" else 1, warmup=0)
    terms = cfg.train.epochs * batch.interval * len(sel.index)  # trajectory-steps
    out = {
        "lora_rank": cfg.train.lora.rank,
        "lora_parameters": sum(p.numel() for p in trainer.params),
        "train_batch": cfg.train.batch_size,
        "train_micro_batch": bs,
        "unet_batch": 2 * bs,
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
        budget.skipped.append(
            f"update: skipped, needs ~{estimate:.0f} s, {max(0.0, budget.left()):.0f} s left"
        )
        return out, trainer, start
    sync(dev)
    reset_peak(dev)
    t0 = time.perf_counter()
    stats = trainer.update(batch.without_images(), adv, sel, stage=0)
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
    K = base.sampling.branches
    adv = np.tile(np.linspace(-1.0, 1.0, K), -(-n // K))[:n]
    sel = Selection(np.arange(n), int((adv > 0).sum()), int((adv < 0).sum()), np.zeros((0, 2), int))
    plans = {
        "preset": (min(base.train.micro_batch or base.train.batch_size, n), False),
        "largest": (n, False),
        "largest_checkpointing": (n, True),
    }
    out: dict = {"trajectories": n, "interval": work.interval, "variants": {}}
    try:
        for name, (micro, checkpointing) in plans.items():
            steps = n * work.interval
            estimate = 1.5 * steps * seconds_per_step * (1.5 if checkpointing else 1.0) + 5
            if budget.left() < estimate:
                budget.skipped.append(f"update {name}: skipped, needs ~{estimate:.0f} s")
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
            _free_memory()
            sync(dev)
            reset_peak(dev)
            t0 = time.perf_counter()
            stats = None
            try:
                stats = trainer.update(work.without_images(), adv, sel, stage=0)
            except torch.cuda.OutOfMemoryError:  # the probe fitted, the update did not
                out["variants"][name] = {"micro_batch": micro, "error": "OutOfMemoryError"}
                budget.errors.append(f"update {name}: OutOfMemoryError at micro-batch {micro}")
            if stats is None:  # after the except block, so the traceback's tensors are gone
                trainer.optimizer.zero_grad(set_to_none=True)
                _free_memory()
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


def save(result: dict, out_dir: Path, complete: bool) -> Path:
    """Write the JSON atomically; called after every part, so that a run cut short (a
    killed job, a lost machine) still leaves the numbers it had measured."""
    path = out_dir / RESULT_FILE
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({**result, "complete": complete}, indent=2))
    os.replace(tmp, path)
    return path


def _per_dtype(parts: dict, key: str) -> dict:
    return {name: part.get(key) for name, part in parts.items() if part and key in part}


def run(args: argparse.Namespace) -> dict:
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("bench.gpu: --device cuda but no CUDA GPU is visible; use --device cpu")
    notes = []
    tiny = args.tiny or device.type == "cpu"
    if device.type == "cpu" and not args.tiny:
        notes.append("CPU: SD-1.5 at 512 px would take hours, ran the tiny model instead")
    arch = TINY if tiny else SD15
    overrides = {
        "trunks": args.trunks,
        "branches": args.branches,
        "micro_batch": args.micro_batch,
    }
    arch = dataclasses.replace(arch, **{k: v for k, v in overrides.items() if v is not None})
    if device.type == "cuda":
        dtypes = [torch.bfloat16, torch.float16]  # the train dtype (fp16, as the preset) last
    else:
        dtypes = [torch.float32]
        notes.append("CPU: fp32, one thread, tiny sizes: a smoke test; memory figures are null")
        notes.append(
            "CPU: FlopCounterMode does not count the CPU's fused attention kernel, so the "
            "tiny model's FLOPs leave out its (8 x 8) attention"
        )
    train_dtype = dtypes[-1]
    budget = Budget(args.budget_s, reserve=5.0)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    cfg = bench_config(arch, dtype_name(train_dtype), device, out_dir)
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    result: dict = {
        "meta": {
            "command": "python -m bench.gpu " + " ".join(args.argv),
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "device": gpu
            or f"CPU ({os.cpu_count()} cores, torch threads {torch.get_num_threads()})",
            "machine": f"{platform.machine()}, {platform.platform()}",
            "torch": torch.__version__,
            "cuda": torch.version.cuda,
            "arch": arch.as_dict(),
            "budget_s": args.budget_s,
        }
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        result["meta"]["gpu_memory_bytes"] = int(props.total_memory)

    # 1. matmul peak
    peaks = {}
    for dtype in dtypes:
        name = dtype_name(dtype)
        n = arch.matmul_n
        peaks[name] = budget.run(
            f"matmul {n}^3 {name}",
            10,
            lambda dtype=dtype, n=n: matmul_peak(
                n, dtype, device, 20 if device.type == "cuda" else 3
            ),
        )
    result["matmul"] = peaks
    save(result, out_dir, complete=False)

    # 2. the model, then sampling per dtype
    model = budget.run(f"build {arch.name}", 30, lambda: build_model(arch, device, dtypes[0]))
    sampling: dict = {name: None for name in map(dtype_name, dtypes)}
    result["sampling"] = sampling  # filled in place, saved after each dtype
    batch = None
    if model is not None:
        result["meta"]["parameters"] = {
            "unet": param_count(model.unet),
            "vae": param_count(model.vae),
            "text_encoder": param_count(model.text_encoder),
        }
        for dtype in dtypes:
            name = dtype_name(dtype)
            model = with_dtype(model, dtype)
            got = budget.run(f"sampling {name}", 30, lambda m=model: sample_part(m, cfg, budget))
            if got is not None:
                sampling[name], batch_d = got
                if dtype == train_dtype:
                    batch = batch_d
            save(result, out_dir, complete=False)

    # 3. one update step on the train dtype's trajectories
    update, trainer, start = None, None, None
    if batch is not None:
        got = budget.run(
            f"update {dtype_name(train_dtype)}", 20, lambda: update_part(model, cfg, batch, budget)
        )
        if got is not None:
            update, trainer, start = got
    elif model is not None:
        budget.skipped.append("update: no trajectories (sampling did not run)")
    result["update"] = update
    save(result, out_dir, complete=False)

    # 4. largest micro-batch (CUDA only: the CPU has no memory limit to find)
    search = None
    if device.type == "cuda" and trainer is not None:
        search = {}
        _free_memory()
        search["train"] = budget.run(
            "largest train micro-batch",
            20,
            lambda: largest_fitting(
                lambda n: train_probe(model, trainer.params, n, cfg), 256, budget.deadline
            ),
        )
        model.scheduler.set_timesteps(cfg.sampling.num_steps, device="cpu")
        search["sampling"] = budget.run(
            "largest sampling micro-batch",
            20,
            lambda: largest_fitting(
                lambda n: sampling_probe(model, n, cfg.sampling.guidance_scale),
                512,
                budget.deadline,
            ),
        )
    elif device.type == "cuda":
        budget.skipped.append("largest micro-batch: skipped, no model with LoRA")
    result["max_micro_batch_search"] = search
    save(result, out_dir, complete=False)

    # 5. the update at the largest micro-batch and with gradient checkpointing
    variants = None
    if trainer is not None and update is not None and "seconds" in update:
        largest = ((search or {}).get("train") or {}).get("value")
        per_step = update["seconds"] / update["trajectory_steps"]
        variants = budget.run(
            "update variants",
            10,
            lambda: update_variants(trainer, start, batch, largest, per_step, budget),
        )
        result["update_variants"] = variants
        save(result, out_dir, complete=False)
    if search is not None and trainer is not None:
        model.unet.enable_gradient_checkpointing()
        search["train_checkpointing"] = budget.run(
            "largest train micro-batch, gradient checkpointing",
            30,
            lambda: largest_fitting(
                lambda n: train_probe(model, trainer.params, n, cfg),
                256,
                budget.deadline,
                start=(search.get("train") or {}).get("value") or 1,
            ),
        )
        model.unet.disable_gradient_checkpointing()
    result["update_variants"] = variants

    # headline numbers
    result["matmul_peak_tflops"] = {k: v["tflops"] for k, v in peaks.items() if v}
    result["unet_tflops"] = _per_dtype(sampling, "unet_tflops")
    result["unet_fraction_of_matmul_peak"] = {
        k: v / result["matmul_peak_tflops"][k]
        for k, v in result["unet_tflops"].items()
        if k in result["matmul_peak_tflops"]
    }
    result["images_per_second"] = _per_dtype(sampling, "images_per_second")
    if device.type == "cuda":
        mem = {f"sampling_{k}": v for k, v in _per_dtype(sampling, "peak_memory_bytes").items()}
        if update and update.get("peak_memory_bytes") is not None:
            mem[f"update_{dtype_name(train_dtype)}"] = update["peak_memory_bytes"]
        result["peak_memory_bytes"] = mem or None
        result["max_micro_batch"] = (
            {k: (v or {}).get("value") for k, v in search.items()} if search else None
        )
    else:
        result["peak_memory_bytes"] = None
        result["max_micro_batch"] = None
    result["notes"] = notes
    result["skipped"] = budget.skipped
    result["errors"] = budget.errors
    result["seconds_total"] = time.perf_counter() - _T0
    return result


# -- the report ------------------------------------------------------------------------------


def _fmt(v: float | None, spec: str = ".4g") -> str:
    return "-" if v is None else format(v, spec)


def _gib(v: int | None) -> str:
    return "-" if v is None else f"{v / 2**30:.1f}"


def table(result: dict) -> str:
    """The short summary printed last (a pure function of the JSON)."""
    meta = result["meta"]
    arch = meta["arch"]
    dtypes = list(result["sampling"]) or list(result["matmul"])
    samp = result["sampling"]

    def row(label: str, values: list[str]) -> str:
        return f"{label:<36}" + "".join(f"{v:>12}" for v in values)

    def per_raw(key: str) -> list:
        return [(samp.get(d) or {}).get(key) for d in dtypes]

    def per(key: str, spec: str = ".4g") -> list[str]:
        return [_fmt(v, spec) for v in per_raw(key)]

    mb = arch["micro_batch"]
    lines = [
        f"== {TITLE}: {arch['name']} on {meta['device']}, {result['seconds_total']:.0f} s "
        f"(budget {meta['budget_s']:.0f} s) ==",
        row("", dtypes),
        row("matmul peak TFLOP/s", [_fmt(result["matmul_peak_tflops"].get(d)) for d in dtypes]),
        row(
            "UNet GFLOP per latent (counted)",
            [_fmt((v / 1e9) if v else None) for v in per_raw("unet_flops_per_latent")],
        ),
        row(f"UNet forward TFLOP/s (batch {2 * mb})", per("unet_tflops")),
        row(
            "UNet / matmul peak",
            [_fmt(result["unet_fraction_of_matmul_peak"].get(d), ".2f") for d in dtypes],
        ),
        row(
            f"images/s ({arch['trunks']}x{arch['branches']}, {arch['num_steps']} steps, "
            f"{arch['image_size']} px)",
            per("images_per_second"),
        ),
        row("sampling UNet TFLOP/s (effective)", per("sampling_unet_tflops")),
        row(
            f"branch-batched / per-branch loop (K={arch['branches']})",
            per("branch_batching_speedup", ".3g"),
        ),
        row(
            "sampling peak memory GiB",
            [_gib((samp.get(d) or {}).get("peak_memory_bytes")) for d in dtypes],
        ),
    ]
    up = result.get("update")
    if up and "seconds" in up:
        lines.append(
            f"update ({dtypes[-1]}, LoRA r{up['lora_rank']}, micro-batch "
            f"{up.get('train_micro_batch', up['train_batch'])}): {up['seconds']:.2f} s for "
            f"{up['trajectory_steps']} trajectory-steps "
            f"({up['trajectory_steps_per_second']:.4g}/s), "
            f"{up['update_unet_tflops']:.4g} TFLOP/s, peak {_gib(up['peak_memory_bytes'])} GiB"
        )
    else:
        lines.append("update: -")
    var = (result.get("update_variants") or {}).get("variants") or {}
    if var:
        uv = result["update_variants"]
        lines.append(
            f"update from the sampling weights, {uv['trajectories']} trajectories x "
            f"{uv['interval']} steps in one optimizer step:"
        )
    for name, v in var.items():
        if "error" in v:
            lines.append(f"  {name}: micro-batch {v['micro_batch']}, {v['error']}")
            continue
        label = f"micro-batch {v['micro_batch']}" + (
            ", checkpointing" if v["gradient_checkpointing"] else ""
        )
        st = v["stats"]
        lines.append(
            f"  {label:<34}{v['trajectory_steps_per_second']:8.4g} trajectory-steps/s, "
            f"peak {_gib(v['peak_memory_bytes'])} GiB, loss {st['loss']:+.3e}, "
            f"on-policy max |ratio - 1| {st['onpolicy_ratio_dev_max']:.2e}"
        )
    mmb = result.get("max_micro_batch")
    if mmb:
        search = result["max_micro_batch_search"]

        def show(k: str) -> str:
            s = search.get(k) or {}
            v = mmb.get(k)
            return "-" if v is None else (f">={v}" if s.get("capped") else str(v))

        lines.append(
            f"largest micro-batch: train {show('train')} (UNet batch x2), "
            f"sampling {show('sampling')} (UNet x2 + VAE decode), "
            f"train with gradient checkpointing {show('train_checkpointing')}"
        )
    else:
        lines.append("largest micro-batch: - (no CUDA memory limit)")
    lines += [f"skipped: {note}" for note in result.get("skipped") or []]
    lines += [f"error: {note}" for note in result.get("errors") or []]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    global _T0
    _T0 = time.perf_counter()
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(prog="python -m bench.gpu", description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, type=Path, help="directory for bench_gpu.json")
    p.add_argument("--tiny", action="store_true", help="the tiny model (implied on the CPU)")
    p.add_argument(
        "--device",
        choices=("cuda", "cpu"),
        default="cuda" if torch.cuda.is_available() else "cpu",
    )
    p.add_argument("--budget-s", type=float, default=420.0, help="wall-clock budget (s)")
    p.add_argument("--trunks", type=int, help="trunks B (default 8; tiny 2)")
    p.add_argument("--branches", type=int, help="branches K per trunk (default 5; tiny 2)")
    p.add_argument("--micro-batch", type=int, help="sampler micro-batch (default 16; tiny 4)")
    args = p.parse_args(argv)
    args.argv = argv
    threads = torch.get_num_threads()
    if args.device == "cpu":
        # a smoke test, not a CPU benchmark: one thread is fastest on a shared small machine
        torch.set_num_threads(1)
    try:
        result = run(args)
    finally:
        torch.set_num_threads(threads)
    path = save(result, Path(args.out), complete=True)
    log(f"wrote {path}")
    print(table(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
