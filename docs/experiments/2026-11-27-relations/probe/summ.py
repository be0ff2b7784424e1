"""Totals of failure_modes.py JSONs: exact accuracy over all prompts, and each failure."""

import json
import sys
from pathlib import Path

import numpy as np

MODES = ("count", "colour", "shape", "both")

for name in sys.argv[1:]:
    d = json.loads(Path(name).read_text())
    per_prompt, n = d["per_prompt"], d["images_per_prompt"]
    correct = np.array([v["correct"] for v in per_prompt.values()])
    total = correct.mean()
    se = np.sqrt(total * (1 - total) / (n * len(correct)))
    modes = " ".join(f"{m} {100 * np.mean([v[m] for v in per_prompt.values()]):.0f}" for m in MODES)
    images = n * len(correct)
    print(f"{name}: exact {100 * total:.1f} % (se {100 * se:.1f}, {images} images)  {modes}")
