"""Can the toy CLIP learn to see relations? Fine-tune the shipped one with relation-heavy
batches and report what it sees (sixth session: it does not, 0.50 -> 0.54).

    python docs/experiments/2026-11-26-compare/clip_relation_finetune.py STEPS LR OUT_DIR \
        RELATION_SHARE MIRROR_WEIGHT
    e.g. ... 600 1e-3 /tmp/rel/a 0.6 6

RELATION_SHARE: share of relation captions among the anchors (the build: 0.5);
MIRROR_WEIGHT: weight of the mirrored-scene and flipped-relation hard negatives (the
build: 3 and 1 of 11.5). Prints the cosine of the text embeddings of "... left of ..." and
"... right of ..." and the retrieval / hard-negative rates the build reports.
"""

import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import open_clip
import torch
from safetensors.torch import save_file

import toyworld.train_clip as tc
from toyworld.baselines import clip_retrieval
from toyworld.clip import ARCH, CLIP_DIR, ToyClipScorer, register_toy_clip

torch.set_num_threads(2)
steps, lr, out = int(sys.argv[1]), float(sys.argv[2]), Path(sys.argv[3])
relation_share, mirror_weight = float(sys.argv[4]), float(sys.argv[5])
tc.FORM_WEIGHTS = {"single": 0.1, "counting": 0.1, "and": 0.2, "relation": relation_share}
misses = dict(tc._MISS, mirror=mirror_weight, relation=mirror_weight)
tc.MISS_KINDS = tuple(misses)
tc.MISS_WEIGHTS = np.array(list(misses.values())) / sum(misses.values())

register_toy_clip(CLIP_DIR)
model, _, _ = open_clip.create_model_and_transforms(
    ARCH, pretrained=str(CLIP_DIR / "toy_clip.safetensors")
)
pool = tc.RenderPool(12, seed=4, progress=False)
t = time.time()
stats = tc.train_clip(model, pool, tc.ClipTraining(steps=steps, lr=lr), seed=99, progress=False)
print(f"trained {steps} steps in {time.time() - t:.0f} s: {stats}")
out.mkdir(parents=True, exist_ok=True)
shutil.copy(CLIP_DIR / "toy-clip.json", out / "toy-clip.json")
save_file(
    {k: v.contiguous() for k, v in model.state_dict().items()}, str(out / "toy_clip.safetensors")
)
scorer = ToyClipScorer(out)
text = scorer.text_embeddings(
    ["a red circle left of a blue square", "a red circle right of a blue square"]
)
print(f"text cosine left of / right of: {float(text[0] @ text[1]):.4f}")
print(json.dumps(clip_retrieval(scorer, 700, seed=6)))
