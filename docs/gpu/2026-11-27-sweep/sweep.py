"""Run `toyworld.rl_check` arms side by side on one device, in priority order, within a
deadline; pack the results into one archive after every finished run.

    python docs/gpu/2026-11-27-sweep/sweep.py --splits DIR --res DIR --archive FILE
        [--parallel 10] [--deadline-s 480] [--device cuda] [--tiny]

Each arm is `python -m toyworld.rl_check --config PRESET --eval-seed 1234 --images 520
--threads 1 --set seed=N --set model.device=DEVICE [--set ...]` (the same stage code as the
Ray driver, in one process). No arm starts after 80 % of the deadline; at the deadline the
running ones are stopped (their JSON is then missing, their log kept).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path

B2, DDPO = "configs/toy_b2.yaml", "configs/toy_ddpo.yaml"
RAMP12 = [3, 3, 4, 5, 5, 6, 7, 7, 8, 9, 9, 10]  # the linear ramp 3 -> 10 over 12 stages
HALF = "schedule.values=[" + ",".join(str(v) for v in [10] * 12 + RAMP12) + "]"


def arms(splits: Path) -> list[tuple[str, str, list[str]]]:
    def prompts(name: str) -> list[str]:
        return [f"prompts.{x}={splits}/{name}_{x}.txt" for x in ("train", "test")]

    half = ["schedule.kind=list", HALF]
    const = ["schedule.kind=constant", "schedule.start=10"]
    out = [
        ("wide_b2_s0", B2, ["seed=0", *prompts("wide")]),
        ("wide_ddpo_s0", DDPO, ["seed=0", *prompts("wide")]),
        ("default_b2_s3", B2, ["seed=3"]),
        ("default_ddpo_s3", DDPO, ["seed=3"]),
        ("wide_b2_s1", B2, ["seed=1", *prompts("wide")]),
        ("wide_ddpo_s1", DDPO, ["seed=1", *prompts("wide")]),
        ("wideall_b2_s0", B2, ["seed=0", *prompts("wideall")]),
        ("wideall_ddpo_s0", DDPO, ["seed=0", *prompts("wideall")]),
        ("half_b2_s0", B2, ["seed=0", *half]),
        ("default_b2_s4", B2, ["seed=4"]),
        ("default_ddpo_s4", DDPO, ["seed=4"]),
        ("wide_b2_s2", B2, ["seed=2", *prompts("wide")]),
        ("wide_ddpo_s2", DDPO, ["seed=2", *prompts("wide")]),
        ("half_b2_s1", B2, ["seed=1", *half]),
        ("wide_b2const_s0", B2, ["seed=0", *const, *prompts("wide")]),
        ("wideall_b2_s1", B2, ["seed=1", *prompts("wideall")]),
        ("wideall_ddpo_s1", DDPO, ["seed=1", *prompts("wideall")]),
        ("default_b2const_s2", B2, ["seed=2", *const]),
        ("default_b2_s5", B2, ["seed=5"]),
        ("default_ddpo_s5", DDPO, ["seed=5"]),
    ]
    return out


def pack(res: Path, archive: Path) -> None:
    tmp = archive.with_suffix(".tmp")
    with tarfile.open(tmp, "w:gz") as tar:
        tar.add(res, arcname=res.name)
    os.replace(tmp, archive)


def summary(name: str, path: Path) -> str:
    r = json.loads(path.read_text())
    b, a = r["before"], r["after"]
    return (
        f"{name:20s} train {b['train']['correct']:.3f} -> {a['train']['correct']:.3f}  "
        f"test {b['test']['correct']:.3f} -> {a['test']['correct']:.3f}  "
        f"(train {r['seconds']['train']:.0f} s, total {sum(r['seconds'].values()):.0f} s)"
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--splits", type=Path, required=True)
    ap.add_argument("--res", type=Path, required=True)
    ap.add_argument("--archive", type=Path, required=True)
    ap.add_argument("--parallel", type=int, default=10)
    ap.add_argument("--deadline-s", type=float, default=480)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--tiny", action="store_true", help="CPU smoke test: 1 stage, few images")
    ap.add_argument("--only", default="", help="comma-separated arm names, in this order")
    args = ap.parse_args()
    args.res.mkdir(parents=True, exist_ok=True)
    queue = arms(args.splits.resolve())
    if args.only:
        by_name = {a[0]: a for a in queue}
        queue = [by_name[n] for n in args.only.split(",")]
    extra = ["--images", "520"]
    if args.tiny:
        queue = queue[:3]
        extra = ["--images", "8", "--stages", "1"]
    t0 = time.monotonic()
    running: dict[str, tuple[subprocess.Popen, float]] = {}
    done: list[str] = []
    while queue or running:
        now = time.monotonic() - t0
        while queue and len(running) < args.parallel and now < 0.8 * args.deadline_s:
            name, preset, sets = queue.pop(0)
            cmd = [
                sys.executable,
                "-m",
                "toyworld.rl_check",
                "--config",
                preset,
                "--eval-seed",
                "1234",
                "--threads",
                "1",
                *extra,
                "--out",
                str(args.res / f"{name}.json"),
            ]
            for s in [*sets, f"model.device={args.device}", "sampling.micro_batch=128"]:
                cmd += ["--set", s]
            log = open(args.res / f"{name}.log", "w")  # noqa: SIM115 (the child's stdout)
            log.write(" ".join(cmd) + "\n")
            log.flush()
            running[name] = (subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT), now)
            print(f"[{now:5.0f} s] start {name}", flush=True)
        if now >= 0.8 * args.deadline_s:
            queue.clear()
        for name, (proc, _started) in list(running.items()):
            if proc.poll() is None and now > args.deadline_s:
                proc.kill()
                proc.wait()
                print(f"[{now:5.0f} s] stopped {name} at the deadline", flush=True)
            if proc.poll() is not None:
                del running[name]
                out = args.res / f"{name}.json"
                line = summary(name, out) if out.is_file() else f"{name}: rc {proc.returncode}"
                print(f"[{now:5.0f} s] {line}", flush=True)
                done.append(line)
                pack(args.res, args.archive)
        time.sleep(1.0)
    pack(args.res, args.archive)
    print("\n".join(done))


if __name__ == "__main__":
    main()
