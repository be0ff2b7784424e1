"""How often each reward CLIP scores the checker's correct image above a wrong one of the same
prompt, on the base pipeline's samples of a prompt set (twelfth session).

    python docs/experiments/2026-11-27-base-range/agreement.py [--images 600] [--threads 2]

The shipped toy CLIP and the shape-negatives CLIP of `shape_clip.py` (run it with `--out
/tmp/shapeclip` first), on the "mid", "orders" and default train prompts, sampled as
`toyworld.rl_check` samples its "before" (the default preset's sampler, eval seed 1234), so
the images are the ones its accuracies count. Agreement is `toyworld.baselines.clip_agreement`
(ties half). Writes agreement.json here.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from configs.load import DEFAULT_PRESET, PROJECT_ROOT, load_config
from diffusion.pipeline import load_model
from learner.prompts import load_prompts
from toyworld.baselines import clip_agreement
from toyworld.clip import CLIP_DIR, ToyClipScorer
from toyworld.evaluate import sample_with

HERE = Path(__file__).parent
EVAL_SEED = 1234  # toyworld.rl_check --eval-seed of the runs beside this script
SETS = {
    "mid": HERE / "mid_train.txt",
    "orders": HERE / "orders_train.txt",
    "default": PROJECT_ROOT / "toyworld/prompts/unusual_train.txt",
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=600)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--shape-clip", type=Path, default=Path("/tmp/shapeclip/clip"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = load_config(DEFAULT_PRESET)
    model = load_model(cfg.model)
    scorers = {"shipped": ToyClipScorer(CLIP_DIR), "shape": ToyClipScorer(args.shape_clip)}
    out = {"images": args.images, "eval_seed": EVAL_SEED}
    for name, path in SETS.items():
        s = sample_with(model, cfg.sampling, load_prompts(path), args.images, EVAL_SEED, desc=name)
        out[name] = {"correct": float(s.correct.mean())}
        for clip, scorer in scorers.items():
            a = clip_agreement(scorer, s.images, s.prompts, s.correct)
            out[name][clip] = {k: a[k] for k in ("pairs", "agreement", "per_prompt")}
        shown = {k: v if k == "correct" else round(v["agreement"], 3) for k, v in out[name].items()}
        print(name, shown)
    (HERE / "agreement.json").write_text(json.dumps(out, indent=2) + "\n", "utf-8")


if __name__ == "__main__":
    main()
