"""`python -m bench.scale`: one stage's update on 1 and on N learner workers.

    python -m bench.scale [--config FILE] [--set KEY=VALUE ...] [--stage S] [--workers 1 2]
                          [--repeats 2] [--json OUT] [--doc docs/PERFORMANCE.md]

Samples one stage of a preset in this process (default: the toy preset's last stage, the
longest interval) and scores it with the preset's reward, then times the learner's update
of that stage through `RayLearnerGroup` with each number of `runtime.learner_workers`, at
`runtime.learner_threads` threads each (default 1), every group restored to the same
starting state before each timed update (repeats alternate between the groups). It prints
the seconds (best of the repeats), the ratio to one worker, the bytes each rank all-reduced
per optimizer step against the LoRA's gradient size, how far each group's LoRA is from one
worker's, and how many of the selected trajectories each rank was handed (the rows it
trains, `learner.update_plan.held_rows`). With --doc the numbers go to the end of the
"Learner workers" section.

`python -m bench.scale --model [...]` runs the stage-time model instead (`bench.scale_report`:
the preset on 1 to 64 GPUs from bench.gpu's per-GPU rates; no Ray, seconds).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from bench.stage import record, run_meta
from configs.load import load_config
from configs.schema import Config

SECTION = "## Learner workers (bench/scale.py)"


def sample_stage(cfg: Config, stage: int):
    """The stage's trajectories (images dropped), advantages and selection, in-process."""
    from diffusion.pipeline import load_model
    from diffusion.sampler import sample_branches
    from learner.advantages import Advantages
    from learner.prompts import load_prompts
    from learner.selection import select
    from learner.stage import sampler_settings, stage_prompts
    from rewards.composite import RewardModel

    torch.set_num_threads(os.cpu_count() or 1)
    model = load_model(cfg.model, torch.device("cpu"))
    prompts = stage_prompts(
        load_prompts(cfg.prompts.train), cfg.sampling.trunks_per_stage, cfg.seed, stage
    )
    trunks = list(range(len(prompts)))
    batch = sample_branches(model, prompts, trunks, sampler_settings(cfg, stage), cfg.seed, stage)
    rewards = RewardModel(cfg.rewards)(batch.images, batch.prompts)
    adv = Advantages(cfg.advantage)(batch.prompts, batch.trunk_ids.numpy(), rewards)
    sel = select(cfg.selection, batch.trunk_ids.numpy(), adv)
    return batch.select(torch.as_tensor(sel.index)).without_images(), adv, sel


def measure(cfg: Config, stage: int, workers: list[int], repeats: int) -> dict:
    import ray

    from learner.learner_group import RayLearnerGroup
    from learner.records import Selected

    batch, adv, sel = sample_stage(cfg, stage)
    ray.init(
        address="local",
        num_cpus=max(sum(workers), os.cpu_count() or 1),
        include_dashboard=False,
        _node_ip_address="127.0.0.1",
        logging_level="warning",
    )
    try:
        selected = Selected(adv, sel)
        groups, parts, held = {}, {}, {}
        for n in workers:
            rt = cfg.runtime.model_copy(update={"learner_workers": n, "learner_cpus": 1})
            groups[n] = RayLearnerGroup(cfg.model_copy(update={"runtime": rt}))
            groups[n].connect()
            # each rank is handed only the rows it trains (`batch` holds the selected rows)
            held[n] = [np.searchsorted(sel.index, h) for h in groups[n].held_rows(stage, selected)]
            parts[n] = [[ray.put(batch.select(torch.as_tensor(h)))] for h in held[n]]
        start = {n: g.state(-1, 0) for n, g in groups.items()}
        seconds: dict[int, list[float]] = {n: [] for n in workers}
        cpu: dict[int, list[list[float]]] = {n: [] for n in workers}
        out: dict[int, dict] = {}
        for _ in range(repeats):
            for n, g in groups.items():
                g.restore(start[n], "bench start")
                before, cpu0 = g.comm_bytes(), g.cpu_seconds()
                t0 = time.perf_counter()
                stats = g.update(stage, selected, parts[n])
                seconds[n].append(time.perf_counter() - t0)
                after, cpu1 = g.comm_bytes(), g.cpu_seconds()
                cpu[n].append([b - a for a, b in zip(cpu0, cpu1, strict=True)])
                steps = max(1, stats.optimizer_steps)
                out[n] = {
                    "stats": stats.as_dict(),
                    "grad_bytes_per_step": [
                        (a.get("grads", 0) - b.get("grads", 0)) / steps
                        for a, b in zip(after, before, strict=True)
                    ],
                    "other_bytes": [
                        a.get("other", 0) - b.get("other", 0)
                        for a, b in zip(after, before, strict=True)
                    ],
                    "lora": g.weights(),
                }
        for g in groups.values():
            g.kill()
    finally:
        ray.shutdown()
    base = min(workers)
    lora = out[base]["lora"]
    lora_bytes = sum(v.numel() * v.element_size() for v in lora.values())
    result = {
        "stage": stage,
        "split_step": int(batch.interval),
        "selected_trajectories": len(batch),
        "trajectory_steps": len(batch) * batch.interval,
        "lora_gradient_bytes": lora_bytes,
        "workers": {},
    }
    for n in workers:
        best = min(seconds[n])
        result["workers"][str(n)] = {
            "seconds": seconds[n],
            "best_seconds": best,
            "ratio_to_base": best / min(seconds[base]),
            "cpu_seconds_per_rank": cpu[n],  # per repeat, per rank
            "cpu_ratio_to_base": min(max(c) for c in cpu[n]) / min(max(c) for c in cpu[base]),
            "optimizer_steps": out[n]["stats"]["optimizer_steps"],
            "rows_per_rank": [len(h) for h in held[n]],
            "grad_bytes_per_step": out[n]["grad_bytes_per_step"],
            "other_bytes_per_update": out[n]["other_bytes"],
            "max_lora_difference": max(
                float((out[n]["lora"][k] - lora[k]).abs().max()) for k in lora
            ),
            "loss": out[n]["stats"]["loss"],
        }
    return result


def report(r: dict, threads: int) -> str:
    lines = [
        f"stage {r['stage']} (split {r['split_step']}): {r['selected_trajectories']} selected "
        f"trajectories, {r['trajectory_steps']} trajectory-steps; LoRA gradient "
        f"{r['lora_gradient_bytes']} bytes",
        "workers x threads  update s: best (each)     vs 1  | busiest rank CPU s  vs 1 | "
        "steps  all-reduced bytes/step (each rank)  max |LoRA - 1 worker's|",
    ]
    for n, w in r["workers"].items():
        each = "(" + ", ".join(f"{s:.2f}" for s in w["seconds"]) + ")"
        busiest = min(max(c) for c in w["cpu_seconds_per_rank"])
        per = ", ".join(str(int(b)) for b in w["grad_bytes_per_step"]) if int(n) > 1 else "-"
        lines.append(
            f"{n:>7} x {threads:<7} {w['best_seconds']:6.2f} {each:<20} {w['ratio_to_base']:5.2f} "
            f"| {busiest:18.2f} {w['cpu_ratio_to_base']:5.2f} | {w['optimizer_steps']:>5}  "
            f"{per:<36}{w['max_lora_difference']:.1e}"
        )
    for n, w in r["workers"].items():
        held = ", ".join(str(k) for k in w.get("rows_per_rank", []))
        lines.append(f"{n:>7} workers: trajectories each rank fetched ({held})")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--model" in argv:  # the model has its own flags (`--model --help`)
        from bench import scale_report

        return scale_report.main([a for a in argv if a != "--model"])
    p = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__.split("\n")[0])
    p.add_argument("--config", type=Path)
    p.add_argument("--set", dest="overrides", action="extend", nargs="+", default=[])
    p.add_argument("--stage", type=int, help="default: the preset's last stage")
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--threads", type=int, default=1, help="runtime.learner_threads per worker")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--json", type=Path)
    p.add_argument(
        "--model", action="store_true", help="the stage-time model instead (--model --help)"
    )
    p.add_argument(
        "--doc", type=Path, help="add the results to this file's Learner workers section"
    )
    args = p.parse_args(argv)
    cfg = load_config(args.config, args.overrides)
    cfg = cfg.model_copy(
        update={"runtime": cfg.runtime.model_copy(update={"learner_threads": args.threads})}
    )
    stage = cfg.stages - 1 if args.stage is None else args.stage
    result = measure(cfg, stage, sorted(set(args.workers)), args.repeats)
    result["meta"] = {**run_meta("bench.scale", argv), "threads_per_worker": args.threads}
    text = report(result, args.threads)
    print(text)
    record(result, text, args.json, args.doc, SECTION)
    return 0


if __name__ == "__main__":
    sys.exit(main())
