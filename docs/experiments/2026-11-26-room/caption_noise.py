"""Fine-tune the shipped toy UNet on renders whose two-object captions are wrong P of the
time in a fixed way (colours swapped between the objects; "two X" drawn as one X).

    python docs/experiments/2026-11-26-room/caption_noise.py P STEPS OUT_DIR [LR]
    (docs/archive/RESULTS-history.md: P 0.4, STEPS 500, LR 3e-4; 6.5 min on 2 cores)
"""

import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch
from diffusers import DiffusionPipeline

from diffusion.tiny import sd_scheduler
from toyworld.grammar import ObjectSpec, Spec, parse
from toyworld.prompts import pretraining_captions
from toyworld.render import render, sample_scene
from toyworld.train_unet import UnetTraining, train_unet
from toyworld.train_vae import encode_moments

P, STEPS, OUT = float(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3])
LR = float(sys.argv[4]) if len(sys.argv) > 4 else 3e-4
torch.set_num_threads(2)


def corrupt(spec: Spec, rng: np.random.Generator) -> Spec:
    if len(spec.objects) != 2 or rng.random() >= P:
        return spec
    a, b = spec.objects
    if spec.is_counting:
        return Spec((a,))
    return Spec((ObjectSpec(b.colour, a.shape), ObjectSpec(a.colour, b.shape)), spec.relation)


rng = np.random.default_rng(11)
images, labels = [], []
for cap in pretraining_captions():
    spec = parse(cap)
    for _ in range(48):
        images.append(render(sample_scene(corrupt(spec, rng), rng, 32)))
        labels.append(cap)
src = Path("toyworld/assets/pipeline")
pipe = DiffusionPipeline.from_pretrained(str(src), local_files_only=True)
with torch.no_grad():
    mean, _ = encode_moments(pipe.vae, np.stack(images))
latents = mean * pipe.vae.config.scaling_factor
start = time.time()
unet, _, stats = train_unet(
    pipe.unet,
    pipe.text_encoder,
    pipe.tokenizer,
    sd_scheduler(),
    latents,
    labels,
    UnetTraining(steps=STEPS, lr=LR),
    seed=5,
)
print(f"trained {time.time() - start:.0f} s", stats)
if OUT.exists():
    shutil.rmtree(OUT)
shutil.copytree(src, OUT)
pipe.unet = unet
pipe.save_pretrained(str(OUT), safe_serialization=True)
