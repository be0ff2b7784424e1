"""A world variant (ninth session): the shipped toy CLIP, the pipeline pretrained with its
text encoder learning too (`UnetTraining.text_lr_scale`), then the usual baselines.

    PYTHONPATH=. python docs/experiments/2026-11-27-text-lr/build_variant.py OUT_DIR SCALE

Seed 0, 2 threads, about 25 minutes on 2 cores; OUT_DIR/pipeline is a diffusers directory
(`--set model.pretrained=OUT_DIR/pipeline`), OUT_DIR/baselines.json what was measured.
"""

import dataclasses
import json
import shutil
import sys
import time
from pathlib import Path

import torch

from toyworld import build_models, build_record, build_settings

torch.set_num_threads(2)
out, scale = Path(sys.argv[1]), float(sys.argv[2])
out.mkdir(parents=True, exist_ok=True)
shutil.copytree("toyworld/assets/clip", out / "clip", dirs_exist_ok=True)
s = dataclasses.replace(
    build_settings.FULL, unet=dataclasses.replace(build_settings.FULL.unet, text_lr_scale=scale)
)
t = time.perf_counter()
pipe = build_models.build_pipeline(out, s, 0, True)
measured = build_record.measure(out, s, 0, True, out / "samples.png")
record = {
    "text_lr_scale": scale,
    "pipeline_stats": pipe["stats"],
    "times": pipe["times"],
    **measured,
    "seconds": time.perf_counter() - t,
}
(out / "baselines.json").write_text(json.dumps(record, indent=2, default=str) + "\n")
print(json.dumps({k: record[k] for k in ("pipeline", "default_prompts")}, indent=1))
