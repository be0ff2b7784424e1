"""Probe: continue the shipped flow world's late exposure by N steps; save the pipeline.

python expose.py STEPS OUT [SEED] [LR] [SOURCE] [RENDERS]
"""

import sys
import time
from pathlib import Path

import torch
from diffusers import StableDiffusion3Pipeline

from toyworld.build_flow import FLOW, expose, latents_of, save
from toyworld.prompts import pretraining_captions
from toyworld.render import make_dataset
from toyworld.train_flow import FlowTraining

steps, out = int(sys.argv[1]), Path(sys.argv[2])
seed = int(sys.argv[3]) if len(sys.argv) > 3 else 0
lr = float(sys.argv[4]) if len(sys.argv) > 4 else 1e-3
src = sys.argv[5] if len(sys.argv) > 5 else "toyworld/assets/sd3/pipeline"
renders = int(sys.argv[6]) if len(sys.argv) > 6 else FLOW.exposure_renders
torch.set_num_threads(2)
pipe = StableDiffusion3Pipeline.from_pretrained(
    src, text_encoder_3=None, tokenizer_3=None, torch_dtype=torch.float32
)
t = time.perf_counter()
images, labels = make_dataset(pretraining_captions(), FLOW.images_per_caption, seed=seed)
latents = latents_of(pipe, images)
transformer, stats, _ = expose(
    pipe,
    pipe.transformer,
    latents,
    labels,
    FlowTraining(steps=steps, lr=lr),
    renders,
    data_seed=seed + 100,
    train_seed=seed + 7,
    progress=False,
)
print("trained", round(time.perf_counter() - t, 1), stats, flush=True)
pipe.transformer = transformer.eval()
save(pipe, out)
