"""The models of `toyworld.build`: the toy CLIP, then the VAE and the UNet (with the CLIP's
text tower as the frozen text encoder) and the UNet's late exposure, written as a diffusers
pipeline."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import open_clip
import torch
from safetensors.torch import load_file, save_file

from configs.load import DEFAULT_PRESET, PROJECT_ROOT, load_config
from diffusion.tiny import clip_tokenizer, sd_scheduler
from toyworld import models
from toyworld.build_settings import BuildSettings
from toyworld.checker import check_batch
from toyworld.clip import ARCH, CHECKPOINT_NAME, register_toy_clip, write_config
from toyworld.prompts import load_prompts, pretraining_captions
from toyworld.render import make_dataset
from toyworld.train_clip import RenderPool, train_clip
from toyworld.train_unet import train_unet
from toyworld.train_vae import encode_moments, reconstruct, set_scaling_factor, train_vae


def seconds_since(start: float) -> float:
    return round(time.perf_counter() - start, 1)


def build_pipeline(out: Path, s: BuildSettings, seed: int, progress: bool) -> dict:
    """VAE, then the UNet on its latents, with the toy CLIP's text tower (already built in
    out/clip) as the frozen text encoder."""
    times, stats = {}, {}
    t = time.perf_counter()
    captions = pretraining_captions()
    images, labels = make_dataset(captions, s.images_per_caption, seed=seed)
    times["data"] = seconds_since(t)

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
    times["vae"] = seconds_since(t)

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
    times["unet"] = seconds_since(t)
    if s.exposure.steps > 0:
        t = time.perf_counter()
        unet, text_encoder, exposure_stats = expose(
            unet, text_encoder, tokenizer, vae, images, labels, s, seed, progress
        )
        stats.update(exposure_stats)
        times["exposure"] = seconds_since(t)
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
    return {"times": {"clip": seconds_since(t)}, "stats": stats}
