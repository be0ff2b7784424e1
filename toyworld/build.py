"""Build the toy world's models and measure them: the assets `python -m learner.main` uses.

    python -m toyworld.build [--out DIR] [--seed N] [--micro] [--threads N] [--baselines-only]
    python -m toyworld.build --family sd3 [--out DIR] [--seed N] [--micro]   (toyworld.build_flow)

1. the toy CLIP, on renders of every caption -> DIR/clip/toy-clip.json + toy_clip.safetensors;
2. renders of the pretraining captions (toyworld.prompts.pretraining_captions), the VAE,
   then the UNet on its latents with the CLIP's text tower as the frozen text encoder
   (as Stable Diffusion's is a CLIP text tower), then, where `BuildSettings.exposure` has
   steps (450 in the shipped build), a late exposure: the UNet trained on further on
   the same renders plus renders of the default preset's train prompts, so that it draws
   those sometimes -> DIR/pipeline (diffusers);
4. baselines (checker accuracy of the pipeline under the default preset's sampler on the
   packaged "all" prompt sets and on the default preset's own prompts, CLIP retrieval and
   agreement with the checker) -> DIR/baselines.json and DIR/BUILD.md (`--baselines-only`
   measures an existing DIR again).
A picture of the samples is `python -m tools.world_samples` (it draws the images the
baselines measure).
Same seed, same machine and thread count: the same assets. `--micro` builds tiny models
with a few steps each (for the tests).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shlex
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import open_clip
import torch
from safetensors.torch import load_file, save_file

from configs.load import DEFAULT_PRESET, PROJECT_ROOT, load_config
from configs.schema import ModelConfig
from diffusion.pipeline import load_model
from diffusion.tiny import clip_tokenizer, sd_scheduler
from toyworld import models
from toyworld.baselines import clip_agreement, clip_retrieval
from toyworld.checker import check_batch
from toyworld.clip import (
    ARCH,
    ASSETS_DIR,
    CHECKPOINT_NAME,
    ToyClipScorer,
    register_toy_clip,
    toy_clip_config,
    write_config,
)
from toyworld.evaluate import sample_with
from toyworld.prompts import load_prompts, pretraining_captions, prompt_file
from toyworld.render import make_dataset
from toyworld.report import write_build_md
from toyworld.train_clip import ClipTraining, RenderPool, train_clip
from toyworld.train_unet import UnetTraining, train_unet
from toyworld.train_vae import (
    VaeTraining,
    encode_moments,
    reconstruct,
    set_scaling_factor,
    train_vae,
)


@dataclass(frozen=True)
class BuildSettings:
    pipeline: models.PipelineSize = models.PipelineSize()
    clip_arch: dict = field(default_factory=toy_clip_config)
    images_per_caption: int = 48
    vae: VaeTraining = VaeTraining()
    unet: UnetTraining = UnetTraining()
    # The late exposure: after pretraining, the UNet trains on the pretraining renders plus
    # `exposure_renders` renders of each default train prompt (a pretraining caption has
    # `images_per_caption`), so that a default pair gets about 70 % of the samples a
    # pretraining caption gets, and gets them late: the pretrained model then draws those
    # pairs sometimes (20-70 % exact leaves RL room both ways), as Stable Diffusion has seen
    # most of what it is asked for a little. 0 steps: none.
    exposure: UnetTraining = UnetTraining(steps=450, lr=1e-3)
    exposure_renders: int = 160
    clip: ClipTraining = ClipTraining()
    eval_images: int = 520  # per split: 26 per prompt of a 20-prompt set
    retrieval_renders: int = 700

    def __post_init__(self) -> None:
        text = self.clip_arch["text_cfg"]
        shared = (text["width"], text["layers"], text["context_length"])
        wanted = (self.pipeline.text_width, self.pipeline.text_layers, self.pipeline.max_length)
        if shared != wanted:
            raise ValueError(
                f"the pipeline's text encoder is the CLIP text tower: (width, layers, context) "
                f"{wanted} != CLIP {shared}"
            )


FULL = BuildSettings()
# `--latent-size 8`: a VAE with two downsamplings (4 x 8 x 8 latents, a quarter of the noise
# dimensions per step) and cross-attention at 8 x 8 and 4 x 4; not the shipped world.
LATENT8 = BuildSettings(pipeline=models.PipelineSize(vae_channels=(16, 32, 64), top_attention=True))
MICRO = BuildSettings(
    pipeline=models.MICRO,
    clip_arch=toy_clip_config(
        embed_dim=16, vision_width=16, vision_layers=1, text_width=16, text_layers=1
    ),
    images_per_caption=1,
    vae=VaeTraining(steps=3, batch_size=8),
    unet=UnetTraining(steps=3, batch_size=8),
    exposure=UnetTraining(steps=3, batch_size=8),
    exposure_renders=1,
    clip=ClipTraining(steps=3, anchors=8, renders_per_spec=1),
    eval_images=8,
    retrieval_renders=16,
)


def _seconds(start: float) -> float:
    return round(time.perf_counter() - start, 1)


def build_pipeline(out: Path, s: BuildSettings, seed: int, progress: bool) -> dict:
    """VAE, then the UNet on its latents, with the toy CLIP's text tower (already built in
    out/clip) as the frozen text encoder."""
    times, stats = {}, {}
    t = time.perf_counter()
    captions = pretraining_captions()
    images, labels = make_dataset(captions, s.images_per_caption, seed=seed)
    times["data"] = _seconds(t)

    t = time.perf_counter()
    torch.manual_seed(seed)
    vae = models.build_vae(s.pipeline)
    stats.update(train_vae(vae, images, s.vae, seed=seed + 1, progress=progress))
    mean, _ = encode_moments(vae, images)
    stats["scaling_factor"] = set_scaling_factor(vae, mean)
    stats["latent_channel_mean"] = [round(float(v), 3) for v in mean.mean(dim=(0, 2, 3))]
    check_images, check_labels = make_dataset(captions, 1, seed=seed + 7)
    stats["vae_checker_accuracy"] = float(
        check_batch(reconstruct(vae, check_images), check_labels)[0].mean()
    )
    times["vae"] = _seconds(t)

    t = time.perf_counter()
    torch.manual_seed(seed + 2)
    unet = models.build_unet(s.pipeline)
    clip_state = load_file(str(out / "clip" / CHECKPOINT_NAME))
    text_encoder = models.text_encoder_from_clip(clip_state, s.pipeline)
    tokenizer = clip_tokenizer(s.pipeline.max_length)
    factor = stats["scaling_factor"]
    unet, text_encoder, unet_stats = train_unet(
        unet,
        text_encoder,
        tokenizer,
        sd_scheduler(),
        mean * factor,
        labels,
        s.unet,
        seed=seed + 2,
        progress=progress,
    )
    stats.update(unet_stats)
    times["unet"] = _seconds(t)
    if s.exposure.steps > 0:
        t = time.perf_counter()
        unet, text_encoder, exposure_stats = expose(
            unet, text_encoder, tokenizer, vae, images, labels, s, seed, progress
        )
        stats.update(exposure_stats)
        times["exposure"] = _seconds(t)
    pipe = models.assemble(vae, unet, text_encoder, s.pipeline.max_length)
    pipe.save_pretrained(str(out / "pipeline"), safe_serialization=True)
    stats["parameters"] = {
        "vae": models.parameter_count(vae),
        "unet": models.parameter_count(unet),
        "text_encoder": models.parameter_count(text_encoder),
    }
    stats["training_images"] = len(images)
    stats["captions"] = len(captions)
    return {"times": times, "stats": stats}


def expose(
    unet,
    text_encoder,
    tokenizer,
    vae,
    images,
    labels: list[str],
    s: BuildSettings,
    seed: int,
    progress: bool,
):
    """The late exposure: train the pretrained UNet on further, on the pretraining renders
    (`images`, `labels`) plus `s.exposure_renders` renders of each of the default preset's
    train prompts. Returns the EMA UNet, the text encoder and the phase's stats."""
    unet.requires_grad_(True)  # the EMA copy pretraining returns is frozen
    shown = load_prompts(PROJECT_ROOT / load_config(DEFAULT_PRESET).prompts.train)
    extra, extra_labels = make_dataset(shown, s.exposure_renders, seed=seed + 100)
    mean, _ = encode_moments(vae, np.concatenate([images, extra]))
    unet, text_encoder, stats = train_unet(
        unet,
        text_encoder,
        tokenizer,
        sd_scheduler(),
        mean * vae.config.scaling_factor,
        labels + extra_labels,
        s.exposure,
        seed=seed + 2,
        progress=progress,
        desc="exposure",
    )
    return unet, text_encoder, {"exposure_mse": stats["unet_mse"], "exposed_prompts": shown}


def build_clip(out: Path, s: BuildSettings, seed: int, progress: bool) -> dict:
    t = time.perf_counter()
    clip_dir = out / "clip"
    write_config(clip_dir, s.clip_arch)
    register_toy_clip(clip_dir)
    torch.manual_seed(seed + 3)
    model = open_clip.create_model(ARCH)
    pool = RenderPool(s.clip.renders_per_spec, seed=seed + 4, progress=progress)
    stats = train_clip(model, pool, s.clip, seed=seed + 5, progress=progress)
    # half precision on disk halves the file (the 49,408-token embedding dominates);
    # open_clip copies it into the float32 model on load
    state = {k: v.detach().half().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(clip_dir / CHECKPOINT_NAME))
    stats["parameters"] = sum(p.numel() for p in model.parameters())
    return {"times": {"clip": _seconds(t)}, "stats": stats}


def measure(out: Path, s: BuildSettings, seed: int, progress: bool) -> dict:
    t = time.perf_counter()
    preset = load_config(DEFAULT_PRESET)
    sp = preset.sampling
    model = load_model(ModelConfig(pretrained=str(out / "pipeline"), device="cpu"))
    scorer = ToyClipScorer(out / "clip")
    result = {
        "sampler": {
            "num_steps": sp.num_steps,
            "guidance_scale": sp.guidance_scale,
            "eta": sp.eta,
            "images_per_split": s.eval_images,
            "seed": seed,
        },
        "pipeline": {},
        "agreement": {},
    }

    def sample(path: Path, desc: str):  # the preset's sampler, the same noise for every set
        return sample_with(
            model, sp, load_prompts(path), s.eval_images, seed, progress=progress, desc=desc
        )

    for split in ("train", "test"):
        samples = sample(prompt_file("all", split), f"baseline {split}")
        result["pipeline"][split] = samples.accuracy().as_dict()
        result["agreement"][split] = clip_agreement(
            scorer, samples.images, samples.prompts, samples.correct
        )
    # the default preset's prompts (what `python -m learner.main` trains and tests on), the
    # same sampler and noise: the numbers a default run starts from
    result["default_prompts"] = {}
    for split in ("train", "test"):
        path = getattr(preset.prompts, split)
        samples = sample(PROJECT_ROOT / path, f"baseline default {split}")
        result["default_prompts"][split] = {"file": path, **samples.accuracy().as_dict()}
    result["clip"] = clip_retrieval(scorer, s.retrieval_renders, seed=seed + 6)
    result["times"] = {"baselines": _seconds(t)}
    return result


def asset_bytes(out: Path) -> int:
    return sum(p.stat().st_size for p in out.rglob("*") if p.is_file())


def build(out: Path, seed: int, settings: BuildSettings, progress: bool, command: str) -> dict:
    start = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    clip = build_clip(out, settings, seed, progress)
    pipe = build_pipeline(out, settings, seed, progress)
    measured = measure(out, settings, seed, progress)
    times = {**pipe["times"], **clip["times"], **measured.pop("times")}
    times["total"] = _seconds(start)
    record = {
        "command": command,
        "seed": seed,
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "torch_threads": torch.get_num_threads(),
        **measured,
        "training": {
            "pipeline": pipe["stats"],
            "clip": clip["stats"],
            "settings": asdict(settings),
        },
        "times_s": times,
    }
    (out / "baselines.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    record["asset_bytes"] = asset_bytes(out)
    _write_record(out, record)
    return record


def _write_record(out: Path, record: dict) -> None:
    tmp = out / "baselines.json.tmp"
    tmp.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    tmp.replace(out / "baselines.json")
    write_build_md(out)


def _recorded_match(recorded: dict, current: dict) -> bool:
    """Every setting the record holds equals the current one (fields added since the build
    was recorded are not in it)."""
    current = json.loads(json.dumps(current))
    return all(
        _recorded_match(v, current.get(k, {})) if isinstance(v, dict) else current.get(k) == v
        for k, v in recorded.items()
    )


def remeasure(out: Path, seed: int, settings: BuildSettings, progress: bool, command: str) -> dict:
    """Measure the baselines of an existing build again (e.g. after the default preset's
    prompts changed) and update its baselines.json and BUILD.md; the models are untouched."""
    path = out / "baselines.json"
    if not path.is_file():
        raise SystemExit(f"{path} not found: --baselines-only needs a built DIR")
    record = json.loads(path.read_text(encoding="utf-8"))
    if record.get("seed") != seed:
        raise SystemExit(f"{path}: built with seed {record.get('seed')}, not --seed {seed}")
    built = record.get("training", {}).get("settings")
    if not isinstance(built, dict) or not _recorded_match(built, asdict(settings)):
        raise SystemExit(
            f"{path}: built with other settings (--micro, --latent-size or --exposure-steps differ)"
        )
    measured = measure(out, settings, seed, progress)
    seconds = measured.pop("times")["baselines"]
    record.update(measured)
    record["remeasured"] = {  # the build's own record (command, date, times_s) stays
        "command": command,
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "seconds": seconds,
    }
    _write_record(out, record)
    return record


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Build the toy world's pipeline and CLIP.")
    parser.add_argument(
        "--family",
        choices=("sd", "sd3"),
        default="sd",
        help="sd: the UNet world (DIR default toyworld/assets); sd3: the flow world on the "
        "UNet world's VAE and CLIP (toyworld.build_flow; DIR default toyworld/assets/sd3)",
    )
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--micro", action="store_true", help="tiny models, a few steps each")
    parser.add_argument(
        "--latent-size",
        type=int,
        choices=(16, 8),
        default=16,
        help="latent side: 16 (the shipped world) or 8 (a smaller latent, not shipped)",
    )
    parser.add_argument(
        "--exposure-steps",
        type=int,
        default=None,
        help="steps of the late exposure instead of the settings' (0: none, the world without it)",
    )
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument(
        "--baselines-only",
        action="store_true",
        help="measure the baselines of the build in --out again; train nothing",
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    command = "python -m toyworld.build " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    if args.family == "sd3":
        from toyworld import build_flow

        if args.latent_size != 16 or args.exposure_steps is not None or args.baselines_only:
            raise SystemExit("--family sd3 takes --out, --seed, --micro, --threads and --quiet")
        build_flow.run(args.out, args.seed, args.micro, not args.quiet, command.strip())
        return
    out = (args.out or ASSETS_DIR).resolve()
    if args.micro and args.latent_size != 16:
        raise SystemExit("--micro builds the 16 x 16 world only")
    settings = MICRO if args.micro else (LATENT8 if args.latent_size == 8 else FULL)
    if args.exposure_steps is not None:
        if args.exposure_steps < 0:
            raise SystemExit(f"--exposure-steps {args.exposure_steps}: must be >= 0")
        settings = replace(settings, exposure=replace(settings.exposure, steps=args.exposure_steps))
    if args.baselines_only:
        record = remeasure(out, args.seed, settings, not args.quiet, command.strip())
        d = record["default_prompts"]
        print(
            f"measured {out} again in {record['remeasured']['seconds']:.0f} s; default prompts:"
            f" train {d['train']['correct']:.3f}, test {d['test']['correct']:.3f}"
        )
        return
    record = build(out, args.seed, settings, not args.quiet, command.strip())
    p = record["pipeline"]
    print(
        f"built {out} in {record['times_s']['total']:.0f} s, {record['asset_bytes'] / 1e6:.1f} MB;"
        f" checker accuracy train {p['train']['correct']:.3f}, test {p['test']['correct']:.3f};"
        f" CLIP retrieval {record['clip']['top1']:.3f}"
    )


if __name__ == "__main__":
    main()
