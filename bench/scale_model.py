"""The stage-time model behind `python -m bench.scale --model` (`bench.scale_report`):
the seconds of each phase of one stage on G GPUs, from per-GPU rates, no Ray.

Shapes, with G GPUs (the reward actors' GPU is not counted in G):
- reference: one GPU samples, scores and trains in turn (the reference code's loop).
- separate: G - 1 rollout GPUs sample, then one learner GPU trains (G = 1: one GPU both).
- separate_group: R rollout GPUs, then a learner group of L = G - R ranks; the best L.
- colocated: every GPU samples its share of the rollout tasks, then every GPU is a learner
  rank (the SD presets' placement).
- colocated_fixed: colocated with tasks of trunks / G and the optimizer step's trajectory-
  steps (not whole trajectories) shared out among the ranks: what G > 8 needs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

PHASES = ("weight_sync", "sampling", "reward", "trajectories", "update", "all_reduce")
SHAPES = ("separate", "separate_group", "colocated", "colocated_fixed")

# FLOPs of one 224 px image through open_clip's ViT-H-14 image tower, counted with
# torch.utils.flop_counter on the meta device (tests/bench/test_bench_scale.py recounts it)
VIT_H14_IMAGE_FLOPS = 334_590_279_680


@dataclass(frozen=True)
class StageWork:
    """The work of one stage (the preset's sizes at one split step)."""

    num_steps: int  # T, DDIM steps
    branches: int  # K
    trunks: int
    split_step: int  # s: interval steps, branched and trained
    selected: int  # trajectories the update trains on (PPO-clip: one a training unit)
    batch_size: int  # trajectories per optimizer step
    epochs: int
    trunks_per_task: int  # rollout task size (the driver's chunks)
    latent_bytes: int = 4 * 64 * 64 * 2  # one fp16 SD latent
    image_bytes: int = 3 * 512 * 512  # one uint8 image

    @property
    def images(self) -> int:
        return self.trunks * self.branches

    def evaluations_per_trunk(self) -> int:
        """Guided UNet evaluations (rows, x2 for CFG) of one trunk and its K branches."""
        t, s, k = self.num_steps, self.split_step, self.branches
        return (t - s + k * s) * 2

    @property
    def trajectory_steps(self) -> int:
        return self.selected * self.split_step * self.epochs

    def batches(self) -> list[int]:
        """Trajectories in each optimizer step of one epoch."""
        full, rest = divmod(self.selected, self.batch_size)
        return [self.batch_size] * full + ([rest] if rest else [])

    @property
    def optimizer_steps(self) -> int:
        return self.epochs * len(self.batches())

    @property
    def trajectory_bytes(self) -> int:
        """Selected trajectories as the learner receives them: s + 1 latents and s fp32
        log-probs each."""
        s = self.split_step
        return self.selected * ((s + 1) * self.latent_bytes + s * 4)


@dataclass(frozen=True)
class Rates:
    """Per-GPU throughputs."""

    unet_evaluations_per_s: float  # sampling
    trajectory_steps_per_s: float  # update (forward + backward, CFG)
    reward_images_per_s: float  # scoring, on the reward actors' GPU


@dataclass(frozen=True)
class Links:
    """Assumed interconnect (none of it measured here)."""

    lora_bytes: int  # the all-reduced gradient and the published weights (fp32 LoRA)
    gpus_per_node: int = 8
    nvlink_bytes_per_s: float = 360e9  # NCCL ring bus bandwidth inside an 8-GPU H100 node
    nvlink_latency_s: float = 5e-6  # per ring step
    internode_bytes_per_s: float = 40e9  # one 400 Gb/s NIC per GPU
    internode_latency_s: float = 10e-6  # per ring step
    object_bytes_per_s: float = 2e9  # Ray object store, one pull between nodes
    object_latency_s: float = 1e-3  # per fetched object / actor call


def ring_all_reduce_s(nbytes: int, ranks: int, links: Links) -> float:
    """One ring all-reduce: 2 (n - 1) / n x bytes / bandwidth + 2 (n - 1) steps' latency,
    at the slowest link the ring crosses."""
    if ranks <= 1:
        return 0.0
    inside = ranks <= links.gpus_per_node
    bw = links.nvlink_bytes_per_s if inside else links.internode_bytes_per_s
    lat = links.nvlink_latency_s if inside else links.internode_latency_s
    return 2 * (ranks - 1) / ranks * nbytes / bw + 2 * (ranks - 1) * lat


def task_finish_times(work: StageWork, rates: Rates, actors: int, trunks_per_task: int):
    """When each rollout task ends, handed in order to whichever actor is free first (the
    driver's queue): the sampling phase ends with the last."""
    per_trunk = work.evaluations_per_trunk() / rates.unet_evaluations_per_s
    free = [0.0] * actors
    ends = []
    for lo in range(0, work.trunks, trunks_per_task):
        n = min(trunks_per_task, work.trunks - lo)
        a = free.index(min(free))
        free[a] += n * per_trunk
        ends.append((free[a], n))
    return ends


def reward_exposed_s(work: StageWork, rates: Rates, links: Links, ends) -> float:
    """Seconds the reward actors' GPU works after sampling ends. It scores each task's
    images as the task returns (a FIFO queue: the images' transfer, then CLIP), so only
    what is left when the last task returns is on the stage's path."""
    per_image = 1 / rates.reward_images_per_s + work.image_bytes / links.object_bytes_per_s
    busy_until = 0.0
    for end, trunks in sorted(ends):
        busy_until = max(busy_until, end) + trunks * work.branches * per_image
    return max(0.0, busy_until - max(e for e, _ in ends))


def update_s(work: StageWork, rates: Rates, ranks: int, by_steps: bool = False) -> float:
    """The busiest rank's training time: each optimizer step's trajectories are shared out
    whole (learner.distributed.shard), or with `by_steps` as single trajectory-steps."""
    busiest = 0
    for n in work.batches():
        units = n * work.split_step if by_steps else n
        busiest += math.ceil(units / ranks) * (1 if by_steps else work.split_step)
    return work.epochs * busiest / rates.trajectory_steps_per_s


def reference(work: StageWork, rates: Rates) -> dict[str, float]:
    """One GPU samples all trunks, scores all images, then trains."""
    return {
        **dict.fromkeys(PHASES, 0.0),
        "sampling": work.trunks * work.evaluations_per_trunk() / rates.unet_evaluations_per_s,
        "reward": work.images / rates.reward_images_per_s,
        "update": work.trajectory_steps / rates.trajectory_steps_per_s,
    }


def ray_stage(
    work: StageWork,
    rates: Rates,
    links: Links,
    actors: int,
    ranks: int,
    trunks_per_task: int | None = None,
    by_steps: bool = False,
) -> dict[str, float]:
    """A stage through the driver: publish the LoRA (one object every actor fetches),
    sample in tasks, score, send the selected trajectories to the learner ranks (each node
    pulls them once), train on `ranks` with one gradient all-reduce per optimizer step."""
    ends = task_finish_times(work, rates, actors, trunks_per_task or work.trunks_per_task)
    return {
        "weight_sync": links.lora_bytes / links.object_bytes_per_s + links.object_latency_s,
        "sampling": max(e for e, _ in ends),
        "reward": reward_exposed_s(work, rates, links, ends),
        "trajectories": work.trajectory_bytes / links.object_bytes_per_s
        + len(ends) * links.object_latency_s,
        "update": update_s(work, rates, ranks, by_steps),
        "all_reduce": work.optimizer_steps * ring_all_reduce_s(links.lora_bytes, ranks, links),
    }


def shape_phases(
    shape: str, gpus: int, work: StageWork, rates: Rates, links: Links, learners: int = 1
) -> dict[str, float]:
    """Phase seconds of one stage of `shape` on `gpus` GPUs (`learners`: L of
    separate_group)."""
    if shape == "separate":
        return ray_stage(work, rates, links, max(1, gpus - 1), 1)
    if shape == "separate_group":
        return ray_stage(work, rates, links, max(1, gpus - learners), learners)
    if shape == "colocated":
        return ray_stage(work, rates, links, gpus, gpus)
    if shape == "colocated_fixed":
        per = math.ceil(work.trunks / gpus)
        return ray_stage(work, rates, links, gpus, gpus, trunks_per_task=per, by_steps=True)
    raise ValueError(f"unknown shape {shape!r}")


def mean_phases(phases: list[dict[str, float]]) -> dict[str, float]:
    return {k: sum(p[k] for p in phases) / len(phases) for k in PHASES}


def model_shape(
    shape: str, gpus: int, works: list[StageWork], rates: Rates, links: Links
) -> tuple[dict[str, float], int]:
    """Mean phase seconds over the schedule's stages, and the learner ranks; separate_group
    takes the one split of the GPUs that is fastest over the whole run."""
    if shape == "separate_group" and gpus > 1:
        options = []
        for n in range(1, gpus):
            ph = mean_phases([shape_phases(shape, gpus, w, rates, links, n) for w in works])
            options.append((sum(ph.values()), n, ph))
        _, n, ph = min(options, key=lambda o: o[:2])
        return ph, n
    ranks = gpus if shape.startswith("colocated") else 1
    return mean_phases([shape_phases(shape, gpus, w, rates, links) for w in works]), ranks


def lora_parameters(rank: int, targets: list[str]) -> int:
    """LoRA parameters of SD-1.5's UNet (SD-1.4's is the same) with peft on the attention
    projections: rank x (in + out) for each of to_q, to_k, to_v, to_out.0 of the self- and
    cross-attention of every transformer block (cross-attention keys and values read the
    768-wide text states)."""
    from diffusion.architectures import SD15

    if sorted(targets) != sorted(["to_q", "to_k", "to_v", "to_out.0"]):
        raise ValueError(f"the model counts LoRA on to_q/to_k/to_v/to_out.0 only, not {targets}")
    ch, ctx = SD15.unet_channels, SD15.text_width
    blocks = [c for c, b in zip(ch, SD15.unet_down, strict=True) if "CrossAttn" in b]
    blocks = [c for c in blocks for _ in range(SD15.unet_layers)]
    up = [c for c, b in zip(reversed(ch), SD15.unet_up, strict=True) if "CrossAttn" in b]
    blocks += [c for c in up for _ in range(SD15.unet_layers + 1)]
    blocks.append(ch[-1])  # the mid block's one transformer
    # self-attention: q, k, v, out C -> C; cross-attention: q, out C -> C and k, v ctx -> C
    return sum(rank * (4 * (c + c) + 2 * (c + c) + 2 * (ctx + c)) for c in blocks)
