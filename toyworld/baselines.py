"""How good the toy CLIP is: as a retriever on renders, and as a judge of generated images.

- retrieval: for renders spread evenly over the grammar's forms, the caption the CLIP ranks
  first among all 684 is true of the image (several can be: a layout drawn for "X and Y"
  may also show "X left of Y"; truth is read off the scene, as the checker judges it);
- hard negatives: the image's own caption scores above a near miss of it (one colour or
  shape changed, the two colours swapped, the relation flipped, an object dropped);
- agreement: among generated images of one prompt, for every pair where the checker calls
  one correct and the other not, how often the CLIP scores the correct one higher (ties
  count half): the quality of the CLIP as a reward, measured against the exact judge.
"""

from __future__ import annotations

import numpy as np
import torch

from toyworld.clip import ToyClipScorer
from toyworld.grammar import all_specs, caption
from toyworld.render import render, sample_scene
from toyworld.scenes import CAPTIONS, near_miss, scene_truth

HARD_KINDS = ("colour", "shape", "bind", "relation", "missing")


def _even_specs(n: int, rng: np.random.Generator) -> list:
    forms: dict[str, list] = {}
    for spec in all_specs():
        form = spec.relation or ("counting" if spec.is_counting else str(len(spec.objects)))
        forms.setdefault(form, []).append(spec)
    groups = list(forms.values())
    picks = [groups[i % len(groups)] for i in range(n)]
    return [group[int(rng.integers(len(group)))] for group in picks]


def clip_retrieval(scorer: ToyClipScorer, n: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    specs = _even_specs(n, rng)
    scenes = [sample_scene(spec, rng) for spec in specs]
    images = np.stack([render(scene) for scene in scenes])
    image_emb = scorer.image_embeddings(images)
    text_emb = scorer.text_embeddings(CAPTIONS)
    top = (image_emb @ text_emb.T).argmax(dim=1).numpy()
    top1 = np.mean([t in scene_truth(s) for t, s in zip(top, scenes, strict=True)])

    own = [caption(spec) for spec in specs]
    hard: dict[str, float] = {}
    for kind in HARD_KINDS:
        rows, misses = [], []
        for i, spec in enumerate(specs):
            miss = near_miss(spec, kind, rng)
            if miss is not None:
                rows.append(i)
                misses.append(caption(miss))
        if rows:
            emb = image_emb[rows]
            s_own = (emb * scorer.text_embeddings([own[i] for i in rows])).sum(-1)
            s_miss = (emb * scorer.text_embeddings(misses)).sum(-1)
            hard[kind] = float((s_own > s_miss).float().mean())
    return {"renders": n, "top1": float(top1), "hard_negatives": hard}


def clip_agreement(
    scorer: ToyClipScorer, images: torch.Tensor, prompts: list[str], correct: np.ndarray
) -> dict:
    scores = scorer.score(images, prompts)
    agree, pairs = 0.0, 0
    per_prompt: dict[str, float | None] = {}  # None: the checker calls all or none correct
    for prompt in dict.fromkeys(prompts):
        m = np.array([p == prompt for p in prompts])
        good, bad = scores[m & correct], scores[m & ~correct]
        per_prompt[prompt] = None
        if len(good) and len(bad):
            diff = good[:, None] - bad[None, :]
            won = float((diff > 0).sum() + 0.5 * (diff == 0).sum())
            per_prompt[prompt] = won / diff.size
            agree += won
            pairs += diff.size
    return {
        "pairs": pairs,
        "agreement": agree / pairs if pairs else float("nan"),
        "score_correct": float(scores[correct].mean()) if correct.any() else float("nan"),
        "score_wrong": float(scores[~correct].mean()) if (~correct).any() else float("nan"),
        "per_prompt": per_prompt,
    }
