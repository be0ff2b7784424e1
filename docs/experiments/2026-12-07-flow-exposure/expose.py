"""Probe: continue the shipped flow world's late exposure by N steps; save the pipeline."""
import sys, time, torch
from pathlib import Path
from diffusers import StableDiffusion3Pipeline
from configs.load import PROJECT_ROOT, load_config
from toyworld.build_flow import PRESET, encoder, latents_of, FLOW, save
from toyworld.prompts import load_prompts, pretraining_captions
from toyworld.render import make_dataset
from toyworld.train_flow import FlowTraining, train_flow

steps, out, seed = int(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]) if len(sys.argv) > 3 else 0
lr = float(sys.argv[4]) if len(sys.argv) > 4 else 1e-3
src = sys.argv[5] if len(sys.argv) > 5 else "toyworld/assets/sd3/pipeline"
torch.set_num_threads(2)
pipe = StableDiffusion3Pipeline.from_pretrained(src, text_encoder_3=None, tokenizer_3=None, torch_dtype=torch.float32)
t = time.perf_counter()
captions = pretraining_captions()
images, labels = make_dataset(captions, FLOW.images_per_caption, seed=seed)
latents = latents_of(pipe, images)
shown = load_prompts(PROJECT_ROOT / load_config(PRESET).prompts.train)
renders = int(sys.argv[6]) if len(sys.argv) > 6 else FLOW.exposure_renders
extra, extra_labels = make_dataset(shown, renders, seed=seed + 100)
both = torch.cat([latents, latents_of(pipe, extra)])
print("data", round(time.perf_counter() - t, 1), len(labels), len(extra_labels), flush=True)
tr = pipe.transformer
tr.requires_grad_(True)
tr, o = train_flow(tr, pipe.scheduler, both, labels + extra_labels, encoder(pipe),
                   FlowTraining(steps=steps, lr=lr), seed + 7, False, desc="exposure")
print("trained", round(time.perf_counter() - t, 1), o, flush=True)
pipe.transformer = tr.eval()
save(pipe, out)
