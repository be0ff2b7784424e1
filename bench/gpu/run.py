"""bench.gpu's command line and the order of its parts (see the package docstring)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
from datetime import datetime, timezone
from pathlib import Path

import torch

from bench.gpu.archs import ARCHS, TINY, Arch, bench_config
from bench.gpu.budget import Budget, log, restart_clock, since_start
from bench.gpu.build import build_model, parameters, with_dtype
from bench.gpu.measure import dtype_name, free_memory, largest_fitting, matmul_peak
from bench.gpu.probes import sampling_probe, train_probe
from bench.gpu.report import table
from bench.gpu.sampling import sample_part
from bench.gpu.update import update_part, update_variants
from configs.schema import Config
from diffusion.pipeline import DiffusionModel
from learner.update import PolicyTrainer

RESULT_FILE = "bench_gpu.json"
PARTS = ("branch_loop", "sampling_search", "variants", "checkpointing_search")
DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16}


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


def _setup(args: argparse.Namespace) -> tuple[torch.device, Arch, list[torch.dtype], list[str]]:
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("bench.gpu: --device cuda but no CUDA GPU is visible; use --device cpu")
    notes = []
    tiny = args.tiny or device.type == "cpu"
    if device.type == "cpu" and not args.tiny:
        notes.append(f"CPU: {args.arch} at full size would take hours, ran its tiny twin")
    arch = TINY[args.arch] if tiny else ARCHS[args.arch]
    sizes = {"trunks": args.trunks, "branches": args.branches, "micro_batch": args.micro_batch}
    arch = dataclasses.replace(arch, **{k: v for k, v in sizes.items() if v is not None})
    if device.type == "cuda":
        dtypes = [DTYPES[d] for d in (args.dtypes or arch.cuda_dtypes)]
    else:
        dtypes = [torch.float32]
        notes.append("CPU: fp32, one thread, tiny sizes: a smoke test; memory figures are null")
        notes.append(
            "CPU: FlopCounterMode does not count the CPU's fused attention kernel, so the "
            "tiny model's FLOPs leave out its attention"
        )
    return device, arch, dtypes, notes


def _meta(args: argparse.Namespace, arch: Arch, device: torch.device, budget_s: float) -> dict:
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    meta = {
        "command": "python -m bench.gpu " + " ".join(args.argv),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "device": gpu or f"CPU ({os.cpu_count()} cores, torch threads {torch.get_num_threads()})",
        "machine": f"{platform.machine()}, {platform.platform()}",
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "arch": arch.as_dict(),
        "budget_s": budget_s,
        "skip": list(args.skip),
    }
    if device.type == "cuda":
        meta["gpu_memory_bytes"] = int(torch.cuda.get_device_properties(device).total_memory)
    return meta


def run(args: argparse.Namespace) -> dict:
    device, arch, dtypes, notes = _setup(args)
    cuda = device.type == "cuda"
    train_dtype = dtypes[-1]
    budget_s = args.budget_s or arch.budget_s
    budget = Budget(budget_s, reserve=5.0)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    cfg = bench_config(arch, dtype_name(train_dtype), device, out_dir)
    result: dict = {"meta": _meta(args, arch, device, budget_s)}

    # 1. matmul peak
    peaks = {}
    for dtype in dtypes:
        name, n = dtype_name(dtype), arch.matmul_n
        peaks[name] = budget.run(
            f"matmul {n}^3 {name}",
            10,
            lambda dtype=dtype, n=n: matmul_peak(n, dtype, device, 20 if cuda else 3),
        )
    result["matmul"] = peaks
    save(result, out_dir, complete=False)

    # 2. the model, then sampling per dtype
    model = budget.run(f"build {arch.name}", 30, lambda: build_model(arch, device, dtypes[0]))
    sampling: dict = {name: None for name in map(dtype_name, dtypes)}
    result["sampling"] = sampling  # filled in place, saved after each dtype
    batch = None
    if model is not None:
        result["meta"]["parameters"] = parameters(model)
        loop = "branch_loop" not in args.skip
        for dtype in dtypes:
            name = dtype_name(dtype)
            model = with_dtype(model, dtype)
            got = budget.run(
                f"sampling {name}", 30, lambda m=model: sample_part(m, cfg, budget, loop)
            )
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
    if cuda and trainer is not None:
        search = {}
        model.unet.disable_gradient_checkpointing()  # the update may have turned it on
        free_memory()
        search["train"] = budget.run(
            "largest train micro-batch",
            20,
            lambda: _largest_train(model, cfg, trainer, arch.train_cap, budget),
        )
        if "sampling_search" not in args.skip:
            search["sampling"] = budget.run(
                "largest sampling micro-batch",
                20,
                lambda: largest_fitting(
                    lambda n: sampling_probe(model, cfg, n), arch.sampling_cap, budget.deadline
                ),
            )
    elif cuda:
        budget.skipped.append("largest micro-batch: skipped, no model with LoRA")
    result["max_micro_batch_search"] = search
    save(result, out_dir, complete=False)

    # 5. the update at the largest micro-batch and with gradient checkpointing
    variants = None
    if "variants" not in args.skip and update is not None and "seconds" in update:
        largest = ((search or {}).get("train") or {}).get("value")
        per_step = update["seconds"] / update["trajectory_steps"]
        variants = budget.run(
            "update variants",
            10,
            lambda: update_variants(trainer, start, batch, largest, per_step, budget),
        )
    result["update_variants"] = variants
    save(result, out_dir, complete=False)
    if search is not None and "checkpointing_search" not in args.skip:
        model.unet.enable_gradient_checkpointing()
        start_at = (search.get("train") or {}).get("value") or 1
        search["train_checkpointing"] = budget.run(
            "largest train micro-batch, gradient checkpointing",
            30,
            lambda: _largest_train(model, cfg, trainer, arch.train_cap, budget, start_at),
        )
        model.unet.disable_gradient_checkpointing()
    headline(result, dtype_name(train_dtype), cuda)
    result["notes"] = notes
    result["skipped"] = budget.skipped
    result["errors"] = budget.errors
    result["seconds_total"] = since_start()
    return result


def _largest_train(
    model: DiffusionModel,
    cfg: Config,
    trainer: PolicyTrainer,
    cap: int,
    budget: Budget,
    start: int = 1,
) -> dict:
    """The largest training micro-batch whose forward and backward fit (`largest_fitting`)."""
    return largest_fitting(
        lambda n: train_probe(model, cfg, trainer.params, n), cap, budget.deadline, start=start
    )


def headline(result: dict, train: str, cuda: bool) -> None:
    """The numbers the table leads with: throughputs and their fractions of the peak."""
    peaks = {k: v["tflops"] for k, v in result["matmul"].items() if v}
    sampling = result["sampling"]
    result["matmul_peak_tflops"] = peaks
    result["unet_tflops"] = _per_dtype(sampling, "unet_tflops")
    fraction = {k: v / peaks[k] for k, v in result["unet_tflops"].items() if k in peaks}
    result["unet_fraction_of_matmul_peak"] = fraction
    effective = _per_dtype(sampling, "sampling_unet_tflops")
    result["sampling_fraction_of_matmul_peak"] = {
        k: v / peaks[k] for k, v in effective.items() if k in peaks
    }
    result["images_per_second"] = _per_dtype(sampling, "images_per_second")
    up = result.get("update") or {}
    if "update_unet_tflops" in up and train in peaks:
        result["update_fraction_of_matmul_peak"] = up["update_unet_tflops"] / peaks[train]
        result["update_trajectory_steps_per_second"] = up["trajectory_steps_per_second"]
    per_step = up.get("train_flops_per_trajectory_step")
    for v in ((result.get("update_variants") or {}).get("variants") or {}).values():
        if per_step and train in peaks and "trajectory_steps_per_second" in v:
            tflops = per_step * v["trajectory_steps_per_second"] / 1e12
            v["fraction_of_matmul_peak"] = tflops / peaks[train]
    result["peak_memory_bytes"] = None
    result["max_micro_batch"] = None
    if cuda:
        mem = {f"sampling_{k}": v for k, v in _per_dtype(sampling, "peak_memory_bytes").items()}
        if up.get("peak_memory_bytes") is not None:
            mem[f"update_{train}"] = up["peak_memory_bytes"]
        result["peak_memory_bytes"] = mem or None
        search = result.get("max_micro_batch_search")
        if search:
            result["max_micro_batch"] = {k: (v or {}).get("value") for k, v in search.items()}


def parse(argv: list[str]) -> argparse.Namespace:
    from bench.gpu import __doc__ as doc

    p = argparse.ArgumentParser(prog="python -m bench.gpu", description=doc.split("\n")[0])
    p.add_argument("--out", required=True, type=Path, help="directory for bench_gpu.json")
    p.add_argument("--arch", choices=sorted(ARCHS), default="sd15", help="default sd15")
    p.add_argument("--tiny", action="store_true", help="the arch's tiny twin (implied on CPU)")
    p.add_argument(
        "--device", choices=("cuda", "cpu"), default="cuda" if torch.cuda.is_available() else "cpu"
    )
    p.add_argument(
        "--budget-s", type=float, help="wall-clock budget in s (default: the arch's, 420 sd15)"
    )
    p.add_argument("--dtypes", nargs="+", choices=sorted(DTYPES), help="CUDA dtypes, train last")
    p.add_argument("--skip", nargs="+", choices=PARTS, default=[], help="parts to leave out")
    p.add_argument("--trunks", type=int, help="trunks B (default: the arch's)")
    p.add_argument("--branches", type=int, help="branches K per trunk (default: the arch's)")
    p.add_argument("--micro-batch", type=int, help="sampler micro-batch (default: the arch's)")
    args = p.parse_args(argv)
    args.argv = argv
    return args


def main(argv: list[str] | None = None) -> int:
    restart_clock()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse(argv)
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
