"""bench.gpu's wall-clock budget and its log lines."""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable

from bench.gpu.measure import first_line, free_memory

_T0 = [time.perf_counter()]


def restart_clock() -> None:
    _T0[0] = time.perf_counter()


def since_start() -> float:
    return time.perf_counter() - _T0[0]


def log(msg: str) -> None:
    print(f"[bench.gpu {since_start():6.1f} s] {msg}", flush=True)


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

    def skip(self, name: str, estimate: float) -> None:
        note = f"{name}: skipped, needs ~{estimate:.0f} s, {max(0.0, self.left()):.0f} s left"
        self.skipped.append(note)
        log(note)

    def run(self, name: str, estimate: float, fn: Callable[[], object]) -> object:
        if self.left() < estimate:
            self.skip(name, estimate)
            return None
        log(f"{name} ...")
        t0 = time.perf_counter()
        try:
            out = fn()
        except Exception as exc:  # a failed part must not lose the others' numbers
            traceback.print_exc()
            self.errors.append(f"{name}: {type(exc).__name__}: {first_line(exc)}")
            free_memory()
            return None
        log(f"{name}: {time.perf_counter() - t0:.1f} s")
        return out
