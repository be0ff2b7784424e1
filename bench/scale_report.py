"""`python -m bench.scale --model`: the stage-time model (`bench.scale_model`) of a preset
on 1 to 64 GPUs, fed by a bench.gpu JSON; a table and a plot in seconds, no Ray.

    python -m bench.scale --model [--gpu-json docs/gpu/2026-11-26-h100/bench_gpu_sd15.json]
        [--config configs/sd14_b2.yaml] [--gpus 1 2 4 8 16 32 64] [--plot docs/scale_model.png]
        [--json OUT] [--nvlink-gbs 360] [--internode-gbs 40] [--object-store-gbs 2]
        [--gpus-per-node 8] [--reward-images-per-s R] [--selected N]

The sampling rate is the recorded guided UNet evaluations per second (which fold in that
run's decode, text encoding and copies), charged per evaluation at the preset's K and split
step; the update rate is the recorded trajectory-steps per second. Every stage of the
preset's schedule is modelled and the table shows the mean stage: seconds, speed-up over
the reference code's single-GPU loop, scaling efficiency (speed-up / GPUs), the phases and
the longest one. Links and the reward rate are assumptions, printed with the table.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

from bench.scale_model import (
    SHAPES,
    VIT_H14_IMAGE_FLOPS,
    Links,
    Rates,
    StageWork,
    lora_parameters,
    mean_phases,
    model_shape,
    reference,
)
from configs.schema import Config

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_GPU_JSON = ROOT / "docs/gpu/2026-11-26-h100/bench_gpu_sd15.json"
DEFAULT_CONFIG = ROOT / "configs/sd14_b2.yaml"
DEFAULT_PLOT = ROOT / "docs/scale_model.png"
SECOND_TICKS = [5, 10, 20, 50, 100, 200, 500, 1000]
LABELS = {
    "separate": "separate: G-1 rollout GPUs, 1 learner",
    "separate_group": "separate: R rollout GPUs, L learner ranks (best L)",
    "colocated": "colocated, as shipped",
    "colocated_fixed": "colocated, tasks of trunks/G, steps sharded",
}


# -- inputs ------------------------------------------------------------------------------


def load_rates(gpu_json: dict, cfg: Config, reward_images_per_s: float | None):
    """Per-GPU rates from a bench.gpu JSON for the preset `cfg`, and a line for each saying
    where it came from."""
    notes = []
    dtype = cfg.model.dtype
    sampling = gpu_json["sampling"]
    if dtype not in sampling:
        dtype_used = next(iter(sampling))
        notes.append(f"no {dtype} sampling recorded: {dtype_used}'s is used")
    else:
        dtype_used = dtype
    smp = sampling[dtype_used]
    evals = smp["unet_evaluations"] / smp["seconds"]
    notes.append(
        f"sampling: {evals:.1f} guided UNet evaluations/s = {smp['unet_evaluations']} in "
        f"{smp['seconds']:.2f} s ({smp['images_per_second']:.2f} images/s at {smp['trunks']} "
        f"trunks x K = {smp['branches']}, split {smp['split_step']}, {dtype_used}); charged "
        f"per evaluation at the preset's K and split step"
    )
    upd = gpu_json["update"]
    steps = upd["trajectory_steps_per_second"]
    if "train_micro_batch" in upd:  # bench.gpu trains in the preset's batch and micro-batch
        shape = f"batch {upd['train_batch']} in micro-batches of {upd['train_micro_batch']}"
    else:  # older runs: batches accumulated
        accum = gpu_json.get("meta", {}).get("arch", {}).get("grad_accum", 1)
        shape = f"batch {upd['train_batch']}, {accum} accumulated"
    notes.append(
        f"update: {steps:.2f} trajectory-steps/s ({upd['trajectory_steps']} in "
        f"{upd['seconds']:.2f} s, {upd['selected_trajectories']} trajectories x "
        f"{upd['interval']} steps, {shape}); the preset trains batch "
        f"{cfg.train.batch_size} in micro-batches of {cfg.train.micro_batch}"
    )
    if reward_images_per_s is None:
        tflops = gpu_json["unet_tflops"][dtype_used]
        reward_images_per_s = tflops * 1e12 / VIT_H14_IMAGE_FLOPS
        notes.append(
            f"reward: not measured; assumed {reward_images_per_s:.0f} images/s = ViT-H-14's "
            f"{VIT_H14_IMAGE_FLOPS / 1e9:.1f} GFLOP per 224 px image (counted) at the UNet "
            f"forward's measured {tflops:.0f} TFLOP/s, on one GPU for the reward actors"
        )
    else:
        notes.append(f"reward: {reward_images_per_s:.0f} images/s (given)")
    rates = Rates(evals, steps, reward_images_per_s)
    return rates, notes


def stage_works(cfg, selected: int | None = None) -> list[StageWork]:
    """Every stage of the preset's schedule as StageWork."""
    from learner.schedule import split_step

    s = cfg.sampling
    trunks = s.trunks_per_stage
    if selected is None:  # extremes: at most the best and the worst branch of every trunk
        selected = 2 * trunks if cfg.selection.mode == "extremes" else trunks * s.branches
    per_task = cfg.runtime.trunks_per_task or -(-trunks // 8)  # learner.stage.rollout_tasks' rule
    return [
        StageWork(
            num_steps=s.num_steps,
            branches=s.branches,
            trunks=trunks,
            split_step=split_step(cfg.schedule, i, cfg.stages, s.num_steps),
            selected=selected,
            batch_size=cfg.train.batch_size * cfg.train.grad_accum,
            epochs=cfg.train.epochs,
            trunks_per_task=per_task,
        )
        for i in range(cfg.stages)
    ]


# -- the table and the plot --------------------------------------------------------------


def run_model(works, rates: Rates, links: Links, gpus: list[int]) -> dict:
    ref = mean_phases([reference(w, rates) for w in works])
    ref_s = sum(ref.values())
    rows = [{"gpus": 1, "shape": "reference", "learners": 1, "phases": ref, "seconds": ref_s}]
    for g in gpus:
        for shape in SHAPES:
            ph, learners = model_shape(shape, g, works, rates, links)
            rows.append(
                {
                    "gpus": g,
                    "shape": shape,
                    "learners": learners,
                    "phases": ph,
                    "seconds": sum(ph.values()),
                }
            )
    for r in rows:
        r["speedup"] = ref_s / r["seconds"]
        r["efficiency"] = r["speedup"] / r["gpus"]
        r["dominant"] = max(r["phases"], key=r["phases"].get)
    return {"reference_seconds": ref_s, "rows": rows}


def shown(path: Path) -> str:
    """A path as the command line would name it from the project root."""
    path = path.resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def table(result: dict) -> str:
    """One line per shape and GPU count; at 1 GPU every Ray shape is one GPU that samples
    and then trains, so only `reference` and `colocated` are shown there."""
    head = (
        "GPUs  shape            learners  stage s  speed-up  effic. | sampling  reward  "
        "update  comm. | longest phase"
    )
    lines = [head]
    for r in result["rows"]:
        if r["gpus"] == 1 and r["shape"] not in ("reference", "colocated"):
            continue
        p = r["phases"]
        comm = p["weight_sync"] + p["trajectories"] + p["all_reduce"]
        share = p[r["dominant"]] / r["seconds"]
        lines.append(
            f"{r['gpus']:>4}  {r['shape']:<16} {r['learners']:>8} {r['seconds']:8.1f} "
            f"{r['speedup']:8.2f}x {r['efficiency']:6.0%} | {p['sampling']:8.1f} "
            f"{p['reward']:7.2f} {p['update']:7.1f} {comm:6.2f} | {r['dominant']} ({share:.0%})"
        )
    return "\n".join(lines)


def plot(result: dict, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, (ax_t, ax_x) = plt.subplots(1, 2, figsize=(11, 4.2))
    ref = result["reference_seconds"]
    for shape in SHAPES:
        rows = [r for r in result["rows"] if r["shape"] == shape]
        g = [r["gpus"] for r in rows]
        ax_t.plot(g, [r["seconds"] for r in rows], "o-", label=LABELS[shape])
        ax_x.plot(g, [r["speedup"] for r in rows], "o-", label=LABELS[shape])
    gmax = max(r["gpus"] for r in result["rows"])
    ax_t.axhline(ref, color="grey", ls="--", label="reference 1-GPU loop")
    ax_x.plot([1, gmax], [1, gmax], color="grey", ls=":", label="linear")
    ax_x.plot([8], [6], "k*", ms=12, label="target: 6x at 8 GPUs")
    ticks = sorted({r["gpus"] for r in result["rows"]})
    for ax, name in ((ax_t, "mean stage seconds"), (ax_x, "speed-up over the reference loop")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log", base=2 if ax is ax_x else 10)
        ax.set_xticks(ticks, [str(g) for g in ticks])
        ax.set_xlabel("GPUs (H100 rates)")
        ax.set_ylabel(name)
        ax.grid(True, which="both", alpha=0.3)
    ax_x.set_yticks(ticks, [str(g) for g in ticks])
    ax_t.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax_t.set_yticks(SECOND_TICKS, [str(s) for s in SECOND_TICKS])
    ax_t.legend(fontsize=7, loc="lower left")
    ax_x.legend(fontsize=7, loc="upper left")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench.scale --model",
        description="The stage-time model of a preset on 1 to 64 GPUs, fed by the per-GPU "
        "rates of a bench.gpu JSON (no Ray, no GPU).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--gpu-json", type=Path, default=DEFAULT_GPU_JSON, help="bench.gpu's JSON")
    p.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="the preset")
    p.add_argument("--set", dest="overrides", action="extend", nargs="+", default=[])
    p.add_argument("--gpus", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32, 64])
    p.add_argument("--selected", type=int, help="trajectories trained a stage; unset: the most")
    p.add_argument(
        "--reward-images-per-s", type=float, help="unset: ViT-H-14's FLOPs at the UNet's TFLOP/s"
    )
    p.add_argument("--gpus-per-node", type=int, default=8)
    p.add_argument("--nvlink-gbs", type=float, default=360.0, help="all-reduce GB/s in a node")
    p.add_argument(
        "--internode-gbs", type=float, default=40.0, help="all-reduce GB/s between nodes"
    )
    p.add_argument("--object-store-gbs", type=float, default=2.0, help="Ray object transfers")
    p.add_argument("--plot", type=Path, default=DEFAULT_PLOT, help="the PNG written")
    p.add_argument("--json", type=Path, help="the rows and the assumptions, as JSON")
    args = p.parse_args(argv)

    from configs.load import load_config

    cfg = load_config(args.config, args.overrides)
    gpu_json = json.loads(args.gpu_json.read_text(encoding="utf-8"))
    meta = gpu_json.get("meta", {})
    notes = [f"rates: {shown(args.gpu_json)} ({meta.get('device')}, {meta.get('date')})"]
    rates, rate_notes = load_rates(gpu_json, cfg, args.reward_images_per_s)
    notes += rate_notes
    lora = lora_parameters(cfg.train.lora.rank, cfg.train.lora.targets)
    links = Links(
        lora_bytes=lora * 4,  # the LoRA trains in fp32 (learner.update)
        gpus_per_node=args.gpus_per_node,
        nvlink_bytes_per_s=args.nvlink_gbs * 1e9,
        internode_bytes_per_s=args.internode_gbs * 1e9,
        object_bytes_per_s=args.object_store_gbs * 1e9,
    )
    works = stage_works(cfg, args.selected)
    result = run_model(works, rates, links, sorted(set(args.gpus)))
    s = sorted({w.split_step for w in works})
    w0 = works[0]
    notes += [
        f"preset {shown(args.config)}: {len(works)} stages, split {s[0]}..{s[-1]} "
        f"(mean {sum(w.split_step for w in works) / len(works):.2f}); {w0.images} images, "
        f"{w0.selected} selected x {w0.epochs} epochs, {w0.optimizer_steps} optimizer steps "
        f"of {w0.batch_size}; rollout tasks of {w0.trunks_per_task} trunks",
        f"LoRA rank {cfg.train.lora.rank}: {lora} parameters, {links.lora_bytes} B fp32 gradient",
        f"links: {args.gpus_per_node} GPUs a node; all-reduce {args.nvlink_gbs:g} GB/s + "
        f"{links.nvlink_latency_s * 1e6:g} us a ring step inside, {args.internode_gbs:g} GB/s + "
        f"{links.internode_latency_s * 1e6:g} us between nodes; object store "
        f"{args.object_store_gbs:g} GB/s + {links.object_latency_s * 1e3:g} ms an object",
    ]
    text = "\n".join(notes) + "\n\n" + table(result)
    colo8 = next((r for r in result["rows"] if r["shape"] == "colocated" and r["gpus"] == 8), None)
    if colo8:
        verdict = "met" if colo8["efficiency"] >= 0.75 else "missed"
        text += (
            f"\n\ncolocated, 8 GPUs: {colo8['seconds']:.1f} s = 1/{colo8['speedup']:.2f} of the "
            f"reference loop's {result['reference_seconds']:.1f} s, efficiency "
            f"{colo8['efficiency']:.0%} (target >= 75 %: {verdict})"
        )
    colocated = [r for r in result["rows"] if r["shape"] == "colocated"]
    big = max(colocated, key=lambda r: r["gpus"])
    text += (
        f"\ncolocated, {big['gpus']} GPUs: {big['seconds']:.1f} s, efficiency "
        f"{big['efficiency']:.0%}, longest phase {big['dominant']} "
        f"({big['phases'][big['dominant']] / big['seconds']:.0%})"
    )
    print(text)
    result.update(notes=notes, rates=asdict(rates), links=asdict(links), lora_parameters=lora)
    if args.plot:
        plot(result, args.plot, f"{args.config.name}: stage-time model from {args.gpu_json.name}")
        print(f"plot: {shown(args.plot)}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
