"""`python -m bench.stage`: where a stage's time goes, measured in one run.

    python -m bench.stage [--config FILE] [--set KEY=VALUE ...] [--stages N] [--json OUT]
                          [--doc docs/PERFORMANCE.md]

Runs N stages of a preset on Ray and the same stages in one process without Ray, and
prints per phase seconds and share of the stage, images per second, UNet evaluations made
vs the formula (T - s) + K * s per trunk (x2 with CFG), the Ray / in-process ratio, the
branch-batched sampler vs a per-branch loop of the same work, rollout throughput with 1 vs
2 rollout actors, and the bytes the learner receives per stage (with the same at SD-1.4
scale). The numbers go to --json and, with --doc, to the end of the "Stage profile" section
of that Markdown file.
"""

from __future__ import annotations

import argparse
import faulthandler
import json
import os
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from bench.branching import per_branch_loop
from configs.load import load_config
from configs.schema import Config
from diffusion.pipeline import load_model
from diffusion.sampler import SamplerSettings, expected_evaluations, sample_branches

SECTION = "## Stage profile (bench/stage.py)"


def insert_into_section(doc: Path, heading: str, entry: str) -> None:
    """Add `entry` at the end of the `heading` section of a Markdown file (before the next
    `## ` heading), or at the end of the file when it has no such section."""
    text = doc.read_text(encoding="utf-8") if doc.is_file() else ""
    lines = text.splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if line.rstrip() == heading), None)
    if start is None:
        doc.write_text(text + entry, encoding="utf-8")
        return
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    before = "".join(lines[:end]).rstrip("\n") + "\n"
    after = "".join(lines[end:])
    doc.write_text(before + entry + ("\n" + after if after else ""), encoding="utf-8")


def run_meta(module: str, argv: list[str] | None) -> dict:
    """The command, machine, date and torch version a benchmark's numbers come from."""
    command = f"python -m {module} " + " ".join(argv if argv is not None else sys.argv[1:])
    return {
        "command": command.strip(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}",
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "torch": torch.__version__,
    }


def record(result: dict, text: str, json_path: Path | None, doc: Path | None, heading: str):
    """A benchmark's result as JSON at `json_path` and, with `doc`, its report as a dated
    entry at the end of that Markdown file's `heading` section (added when missing)."""
    if json_path:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(result, indent=2))
    if doc:
        meta = result["meta"]
        entry = (
            f"\n### {meta['date']}: `{meta['command']}`\n\n"
            f"Machine: {meta['machine']}, torch {meta['torch']}\n\n```\n{text}\n```\n"
        )
        existing = doc.read_text(encoding="utf-8") if doc.is_file() else ""
        if heading not in existing.splitlines():
            entry = f"\n{heading}\n{entry}"
        insert_into_section(doc, heading, entry)


PHASES = ("weight_sync", "rollout", "reward", "select", "update", "log_checkpoint")


def ray_stages(cfg: Config, stages: int, tmp: Path) -> list[dict]:
    """Run stages through the real driver; return each stage's metrics."""
    from learner import checkpoint
    from learner.driver import Cluster
    from learner.prompts import load_prompts
    from learner.run import connect
    from learner.stage import run_stage
    from learner.tracking import Tracker

    connect(cfg)
    cluster = Cluster(cfg)
    prompts = load_prompts(cfg.prompts.train)
    tracker = Tracker(
        cfg.model_copy(update={"logging": cfg.logging.model_copy(update={"mlflow": False})}),
        tmp,
        "bench",
    )
    out = []
    try:
        for stage in range(stages):
            t0 = time.perf_counter()
            metrics = run_stage(cluster.groups, cfg, prompts, stage).metrics()
            t1 = time.perf_counter()
            checkpoint.save(tmp, cluster.learner.state(stage, 0))
            tracker.metrics(stage, metrics)
            metrics["seconds_log_checkpoint"] = time.perf_counter() - t1
            metrics["seconds_stage"] = time.perf_counter() - t0
            out.append(metrics)
    finally:
        cluster.shutdown()
    return out


def inprocess_stages(cfg: Config, stages: int) -> list[float]:
    """The same stages in this process, no Ray: seconds per stage."""
    from learner.advantages import Advantages
    from learner.prompts import load_prompts
    from learner.stage import run_in_process
    from learner.update import PolicyTrainer
    from rewards.composite import RewardModel

    torch.set_num_threads(os.cpu_count() or 1)
    trainer = PolicyTrainer(load_model(cfg.model, torch.device("cpu")), cfg)
    adv = Advantages(cfg.advantage)
    reward = RewardModel(cfg.rewards)
    prompts = load_prompts(cfg.prompts.train)
    times = []
    for stage in range(stages):
        t0 = time.perf_counter()
        run_in_process(trainer, adv, reward, prompts, cfg, stage)
        times.append(time.perf_counter() - t0)
    return times


def sampler_ratio(cfg: Config, branches: int = 4) -> dict:
    torch.set_num_threads(1)  # one rollout actor's share
    model = load_model(cfg.model, torch.device("cpu"))
    s = cfg.sampling
    split = max(1, s.num_steps // 2)
    settings = SamplerSettings(s.num_steps, split, branches, s.guidance_scale, s.eta, s.micro_batch)
    trunks = max(1, min(cfg.sampling.trunks_per_stage, 8))
    prompts = ["a red circle"] * trunks
    sample_branches(model, prompts[:1], [0], settings, 0, 0)  # warm-up
    t0 = time.perf_counter()
    sample_branches(model, prompts, list(range(trunks)), settings, 0, 0)
    batched = time.perf_counter() - t0
    t0 = time.perf_counter()
    per_branch_loop(model, prompts, settings, 0)
    looped = time.perf_counter() - t0
    return {
        "branches": branches,
        "trunks": trunks,
        "split_step": split,
        "batched_s": batched,
        "per_branch_loop_s": looped,
        "speedup": looped / batched,
    }


def summarize(
    cfg: Config, ray_m: list[dict], inproc: list[float], one_actor: list[dict], sampler: dict
) -> dict:
    last = ray_m[1:] or ray_m  # the first stage warms caches; report the rest
    mean = {k: float(np.mean([m[k] for m in last])) for k in last[0]}
    stage_s = mean["seconds_stage"]
    phases = {p: mean.get(f"seconds_{p}", 0.0) for p in PHASES}
    phases["other"] = max(0.0, stage_s - sum(phases.values()))
    sync_bytes_per_row = mean["bytes_to_learner"] / max(1.0, mean["positives"] + mean["negatives"])
    s_sd, k_sd = 17, 5  # mid-schedule interval of the SD-1.4 preset; K
    sd_row = (s_sd + 1) * 4 * 64 * 64 * 2 + s_sd * 4
    settings = SamplerSettings(
        cfg.sampling.num_steps,
        int(mean["split_step"]),
        cfg.sampling.branches,
        cfg.sampling.guidance_scale,
        cfg.sampling.eta,
        cfg.sampling.micro_batch,
    )
    formula = expected_evaluations(settings, cfg.sampling.trunks_per_stage)
    inproc_s = float(np.mean(inproc[1:] or inproc))
    two = mean["images"] / max(1e-9, mean["seconds_rollout"])
    one = float(np.mean([m["images"] / m["seconds_rollout"] for m in (one_actor[1:] or one_actor)]))
    return {
        "stage_seconds": stage_s,
        "phases_seconds": phases,
        "phases_share": {p: v / stage_s for p, v in phases.items()},
        "images_per_second": mean["images"] / stage_s,
        "unet_evaluations": mean["unet_evaluations"],
        "unet_evaluations_formula": formula
        if int(mean["split_step"]) == settings.split_step
        else None,
        "ray_over_inprocess": stage_s / inproc_s,
        "inprocess_stage_seconds": inproc_s,
        "work_share": (phases["rollout"] + phases["reward"] + phases["update"]) / stage_s,
        "branch_batching": sampler,
        "rollout_images_per_second": {"1_actor": one, "2_actors": two, "ratio": two / one},
        "bytes_to_learner_per_stage": mean["bytes_to_learner"],
        "bytes_per_selected_row": sync_bytes_per_row,
        "sd14_estimate_bytes_per_stage": {
            "selected_rows_assumed": 2 * 256,
            "bytes": 2 * 256 * sd_row,
            "note": f"4x64x64 fp16 latents, interval {s_sd}, K={k_sd}, 256 trunks, "
            "2 selected branches per trunk at most",
        },
    }


def report(summary: dict) -> str:
    lines = [
        f"stage: {summary['stage_seconds']:.2f} s, {summary['images_per_second']:.1f} images/s"
    ]
    for p, v in summary["phases_seconds"].items():
        lines.append(f"  {p:<15} {v:8.3f} s  {100 * summary['phases_share'][p]:5.1f} %")
    lines += [
        f"UNet evaluations: {summary['unet_evaluations']:.0f} made, "
        f"{summary['unet_evaluations_formula']} by the formula",
        f"Ray stage / in-process stage: {summary['ray_over_inprocess']:.3f} "
        f"(in-process {summary['inprocess_stage_seconds']:.2f} s)",
        f"sampling + reward + update share: {100 * summary['work_share']:.1f} %",
        f"branch-batched vs per-branch loop (K={summary['branch_batching']['branches']}): "
        f"{summary['branch_batching']['speedup']:.2f}x",
        f"rollout images/s, 1 vs 2 actors: {summary['rollout_images_per_second']['1_actor']:.1f}"
        f" vs {summary['rollout_images_per_second']['2_actors']:.1f}",
        f"bytes to the learner per stage: {summary['bytes_to_learner_per_stage']:.0f} "
        f"({summary['bytes_per_selected_row']:.0f} per selected trajectory); at SD-1.4 scale "
        f"<= {summary['sd14_estimate_bytes_per_stage']['bytes'] / 1e6:.0f} MB",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.stage", description=__doc__.split("\n")[0])
    p.add_argument("--config", type=Path)
    p.add_argument("--set", dest="overrides", action="extend", nargs="+", default=[])
    p.add_argument("--stages", type=int, default=3)
    p.add_argument("--json", type=Path)
    p.add_argument(
        "--doc", type=Path, help="add the results to this Markdown file's Stage profile section"
    )
    args = p.parse_args(argv)
    faulthandler.enable()  # a native crash prints the Python stack of every thread
    cfg = load_config(args.config, args.overrides)
    tmp = Path(cfg.output_dir) / f"bench-{int(time.time())}"
    tmp.mkdir(parents=True, exist_ok=True)
    # The in-process parts first, then both Ray parts on one local Ray: Ray leaves native
    # threads (gRPC, its GCS client) running after ray.shutdown(), one set per ray.init,
    # and they must not overlap later torch work or outlive a second instance at exit.
    inproc = inprocess_stages(cfg, args.stages)
    sampler = sampler_ratio(cfg)
    ray_m = ray_stages(cfg, args.stages, tmp)
    one = cfg.model_copy(update={"runtime": cfg.runtime.model_copy(update={"rollout_actors": 1})})
    one_m = ray_stages(one, min(2, args.stages), tmp / "one")
    import ray

    ray.shutdown()
    summary = summarize(cfg, ray_m, inproc, one_m, sampler)
    summary["meta"] = run_meta("bench.stage", argv)
    text = report(summary)
    print(text)
    record(summary, text, args.json, args.doc, SECTION)
    return 0


if __name__ == "__main__":
    sys.exit(main())
