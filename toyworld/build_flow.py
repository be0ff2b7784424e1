"""The toy world in flow form: a Stable Diffusion 3 pipeline trained by flow matching.

    python -m toyworld.build --family sd3 [--out DIR] [--seed N] [--micro] [--threads N]

It shares the shape world's renders, captions, VAE and CLIP with the UNet world
(`toyworld/assets`, which must be built first), and trains an SD3Transformer2DModel (MM-DiT,
patch 2, on the VAE's 4 x 16 x 16 latents) by flow matching (`toyworld.train_flow`), then
a late exposure to the default train prompts, stronger than the UNet world's. Its two text
encoders are both the toy CLIP's text tower with projection; there is no T5, and the T5
places of the joint sequence are `TEXT_LENGTH` zero embeddings, as diffusers fills them
(`model.max_sequence_length` in the preset). Written: DIR/pipeline (a diffusers
StableDiffusion3Pipeline folder, the text encoders in half precision: the toy CLIP's
weights are half-precision values), DIR/baselines.json and DIR/BUILD.md, the exact checker's
accuracy under `configs/toy_sd3_b2.yaml`'s sampler.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from diffusers import (
    AutoencoderKL,
    FlowMatchEulerDiscreteScheduler,
    SD3Transformer2DModel,
    StableDiffusion3Pipeline,
)
from safetensors.torch import load_file

from configs.load import PROJECT_ROOT, load_config
from diffusion.pipeline import load_model
from diffusion.tiny import clip_tokenizer
from toyworld import models
from toyworld.clip import ASSETS_DIR, CHECKPOINT_NAME
from toyworld.evaluate import sample_with
from toyworld.prompts import load_prompts, pretraining_captions, prompt_file
from toyworld.render import make_dataset
from toyworld.train_flow import FlowTraining, train_flow
from toyworld.train_vae import encode_moments

PRESET = PROJECT_ROOT / "configs" / "toy_sd3_b2.yaml"
FLOW_DIR = ASSETS_DIR / "sd3"
TEXT_LENGTH = 0  # T5 places in the joint sequence: none (no T5 encoder)


@dataclass(frozen=True)
class FlowWorld:
    width: int = 96
    layers: int = 4
    heads: int = 4
    shift: float = 1.0  # the scheduler's timestep shift (SD3 uses 3 at 1,024 px)
    images_per_caption: int = 48
    flow: FlowTraining = FlowTraining()
    # the late exposure: the UNet world's 160 renders of each default train prompt left
    # this transformer drawing them 7 % exact; 1,920 renders and 1,200 steps give it the
    # UNet world's room for RL (about 30 %)
    exposure: FlowTraining = FlowTraining(steps=1200)
    exposure_renders: int = 1920
    eval_images: int = 520  # per split


FLOW = FlowWorld()
MICRO = FlowWorld(
    width=16,
    layers=1,
    images_per_caption=1,
    flow=FlowTraining(steps=3, batch_size=8),
    exposure=FlowTraining(steps=3, batch_size=8),
    exposure_renders=1,
    eval_images=8,
)


def build_transformer(s: FlowWorld, latent_size: int, text_width: int, pooled: int):
    return SD3Transformer2DModel(
        sample_size=latent_size,
        patch_size=2,
        in_channels=4,
        out_channels=4,
        num_layers=s.layers,
        attention_head_dim=s.width // s.heads,
        num_attention_heads=s.heads,
        joint_attention_dim=2 * text_width,  # the two CLIP towers side by side
        caption_projection_dim=s.width,
        pooled_projection_dim=2 * pooled,
        pos_embed_max_size=latent_size,
    )


def assemble(source: Path, s: FlowWorld, seed: int) -> StableDiffusion3Pipeline:
    """A flow pipeline around the UNet world's VAE and CLIP in `source` (its pipeline/ and
    clip/), with a random transformer."""
    vae = AutoencoderKL.from_pretrained(str(source / "pipeline"), subfolder="vae")
    vae.register_to_config(shift_factor=0.0)  # its latents are centred (toyworld.train_vae)
    size = models.PipelineSize()
    clip_state = load_file(str(source / "clip" / CHECKPOINT_NAME))
    encoders = [models.projected_text_encoder_from_clip(clip_state, size) for _ in range(2)]
    latent = size.image_size // 2 ** (len(vae.config.block_out_channels) - 1)
    torch.manual_seed(seed)
    transformer = build_transformer(s, latent, size.text_width, encoders[0].config.projection_dim)
    tokenizer = clip_tokenizer(size.max_length)
    return StableDiffusion3Pipeline(
        transformer=transformer,
        scheduler=FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=s.shift),
        vae=vae.eval(),
        text_encoder=encoders[0].eval(),
        tokenizer=tokenizer,
        text_encoder_2=encoders[1].eval(),
        tokenizer_2=tokenizer,
        text_encoder_3=None,
        tokenizer_3=None,
    )


def encoder(pipe: StableDiffusion3Pipeline):
    def encode(captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        seq, _, pooled, _ = pipe.encode_prompt(
            captions,
            None,
            None,
            do_classifier_free_guidance=False,
            max_sequence_length=TEXT_LENGTH,
        )
        return seq, pooled

    return encode


def latents_of(pipe: StableDiffusion3Pipeline, images: np.ndarray) -> torch.Tensor:
    mean, _ = encode_moments(pipe.vae, images)
    cfg = pipe.vae.config
    return (mean - cfg.shift_factor) * cfg.scaling_factor


def expose(
    pipe: StableDiffusion3Pipeline,
    transformer: torch.nn.Module,
    latents: torch.Tensor,
    labels: list,
    training: FlowTraining,
    renders: int,
    data_seed: int,
    train_seed: int,
    progress: bool,
) -> tuple[torch.nn.Module, dict, list[str]]:
    """The late exposure: go on training on the pretraining data plus `renders` renders of
    each of the preset's train prompts. Returns the transformer, its stats and the prompts."""
    shown = load_prompts(PROJECT_ROOT / load_config(PRESET).prompts.train)
    extra, extra_labels = make_dataset(shown, renders, seed=data_seed)
    both = torch.cat([latents, latents_of(pipe, extra)])
    transformer.requires_grad_(True)  # the EMA copy is frozen
    transformer, out = train_flow(
        transformer,
        pipe.scheduler,
        both,
        labels + extra_labels,
        encoder(pipe),
        training,
        train_seed,
        progress,
        desc="exposure",
    )
    return transformer, out, shown


def train(pipe: StableDiffusion3Pipeline, s: FlowWorld, seed: int, progress: bool) -> dict:
    times, stats = {}, {}
    t = time.perf_counter()
    captions = pretraining_captions()
    images, labels = make_dataset(captions, s.images_per_caption, seed=seed)
    latents = latents_of(pipe, images)
    encode = encoder(pipe)
    times["data"] = round(time.perf_counter() - t, 1)
    t = time.perf_counter()
    transformer, out = train_flow(
        pipe.transformer, pipe.scheduler, latents, labels, encode, s.flow, seed + 2, progress
    )
    stats.update(out)
    times["transformer"] = round(time.perf_counter() - t, 1)
    if s.exposure.steps > 0:
        t = time.perf_counter()
        transformer, out, shown = expose(
            pipe,
            transformer,
            latents,
            labels,
            s.exposure,
            s.exposure_renders,
            data_seed=seed + 100,
            train_seed=seed + 2,
            progress=progress,
        )
        stats["exposure_mse"] = out["transformer_mse"]
        stats["exposed_prompts"] = shown
        times["exposure"] = round(time.perf_counter() - t, 1)
    pipe.transformer = transformer.eval()
    stats["parameters"] = models.parameter_count(transformer)
    stats["training_images"] = len(images)
    return {"times": times, "stats": stats}


def save(pipe: StableDiffusion3Pipeline, out: Path) -> None:
    for enc in (pipe.text_encoder, pipe.text_encoder_2):
        enc.half()
    pipe.save_pretrained(str(out / "pipeline"), safe_serialization=True)


def measure(out: Path, s: FlowWorld, seed: int, progress: bool) -> dict:
    """The checker's accuracy of the saved pipeline under the preset's sampler."""
    preset = load_config(PRESET)
    model = load_model(preset.model.model_copy(update={"pretrained": str(out / "pipeline")}))
    sp = preset.sampling
    result = {"sampler": {**sp.model_dump(include={"num_steps", "guidance_scale", "eta"})}}
    sets = {
        "all": {split: prompt_file("all", split) for split in ("train", "test")},
        "preset": {
            split: PROJECT_ROOT / getattr(preset.prompts, split) for split in ("train", "test")
        },
    }
    for name, files in sets.items():
        for split, path in files.items():
            samples = sample_with(
                model,
                sp,
                load_prompts(path),
                s.eval_images,
                seed,
                progress=progress,
                desc=f"{name} {split}",
            )
            result[f"{name}_{split}"] = {
                "file": str(Path(path).relative_to(PROJECT_ROOT)),
                **samples.accuracy().as_dict(),
            }
    return result


def write_record(out: Path, record: dict) -> None:
    tmp = out / "baselines.json.tmp"
    tmp.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    tmp.replace(out / "baselines.json")
    sp = record["measured"]["sampler"]
    lines = [
        "# Toy flow world build record",
        "",
        f"- command: `{record['command']}` (seed {record['seed']}, "
        f"{record['torch_threads']} torch threads)",
        f"- date: {record['date']}",
        f"- sampler: {sp['num_steps']} flow-matching SDE steps at noise level {sp['eta']} (as "
        f"the branches sample), CFG {sp['guidance_scale']}",
        "",
        "| prompts | images | exact (se) | partial |",
        "|---|---|---|---|",
    ]
    for key, a in record["measured"].items():
        if key != "sampler":
            lines.append(
                f"| {key.replace('_', ' ')} ({Path(a['file']).name}) | {a['images']} | "
                f"{100 * a['correct']:.1f} % ({100 * a['correct_se']:.1f}) | {a['partial']:.3f} |"
            )
    t = record["times_s"]
    lines += [
        "",
        "build time: " + ", ".join(f"{k} {v:.0f} s" for k, v in t.items()),
        f"assets: {record['asset_bytes'] / 1e6:.1f} MB",
        "",
    ]
    (out / "BUILD.md").write_text("\n".join(lines), encoding="utf-8")


def build(out: Path, seed: int, s: FlowWorld, progress: bool, command: str) -> dict:
    start = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    pipe = assemble(ASSETS_DIR, s, seed)
    trained = train(pipe, s, seed, progress)
    save(pipe, out)
    t = time.perf_counter()
    measured = measure(out, s, seed, progress)
    times = {**trained["times"], "baselines": round(time.perf_counter() - t, 1)}
    times["total"] = round(time.perf_counter() - start, 1)
    record = {
        "command": command,
        "seed": seed,
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "torch_threads": torch.get_num_threads(),
        "measured": measured,
        "training": {"stats": trained["stats"], "settings": asdict(s)},
        "times_s": times,
        "asset_bytes": sum(p.stat().st_size for p in out.rglob("*") if p.is_file()),
    }
    write_record(out, record)
    return record


def run(out: Path | None, seed: int, micro: bool, progress: bool, command: str) -> None:
    s = MICRO if micro else FLOW
    record = build((out or FLOW_DIR).resolve(), seed, s, progress, command)
    m = record["measured"]
    print(
        f"built the flow world in {record['times_s']['total']:.0f} s, "
        f"{record['asset_bytes'] / 1e6:.1f} MB; exact accuracy, preset train "
        f"{m['preset_train']['correct']:.3f}, test {m['preset_test']['correct']:.3f}"
    )
