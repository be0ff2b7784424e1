"""Timing, FLOP counting, peak memory and the largest-micro-batch search of bench.gpu."""

from __future__ import annotations

import gc
import time
from collections.abc import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode


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


def denoiser_rows(denoiser: torch.nn.Module, fn: Callable[[], object]) -> int:
    """How many rows (latents) `fn` passes through the denoiser: x2 under CFG."""
    rows = []

    def hook(module, args, kwargs) -> None:
        x = args[0] if args else kwargs.get("hidden_states", kwargs.get("sample"))
        rows.append(int(x.shape[0]))

    handle = denoiser.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        fn()
    finally:
        handle.remove()
    return sum(rows)


def matmul_peak(n: int, dtype: torch.dtype, device: torch.device, reps: int) -> dict:
    """Dense n x n x n matmul throughput (2 n^3 FLOPs per product)."""
    g = torch.Generator(device="cpu").manual_seed(0)
    a = torch.randn(n, n, generator=g).to(device, dtype)
    b = torch.randn(n, n, generator=g).to(device, dtype)
    sec = seconds_per_call(lambda: torch.matmul(a, b), device, reps=reps, warmup=3)
    return {"n": n, "reps": reps, "seconds_per_matmul": sec, "tflops": 2 * n**3 / sec / 1e12}


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else ""


def free_memory() -> None:
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
        why = f"RuntimeError: {first_line(exc)}"
    free_memory()  # after the except block, so the traceback's tensors are gone
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
