"""Base checker accuracy of candidate train pairs in every sentence the grammar has for them:
both "and" word orders and the four relations in both object orders (eleventh session).

    python docs/experiments/2026-11-27-base-range/probe_base.py --out FILE [--per-caption 32]

Candidates: the eight unseen two-object pairs with the highest base rate in the ninth
session's GPU measurement (docs/gpu/2026-11-27-sweep/splits/base_pairs.json), plus the five
default train pairs for reference. The default preset's sampler, evaluation seed 1234.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from configs.load import DEFAULT_PRESET, load_config
from diffusion.pipeline import load_model
from toyworld.evaluate import sample_with
from toyworld.grammar import RELATIONS, Spec, caption, parse
from toyworld.prompts import load_prompts, prompt_file

SWEEP = Path(__file__).parents[2] / "gpu/2026-11-27-sweep/splits/base_pairs.json"


def sentences(meaning: str) -> list[str]:
    a, b = parse(meaning).objects
    out = [caption(Spec((a, b))), caption(Spec((b, a)))]
    out += [caption(Spec(pair, rel)) for rel in RELATIONS for pair in ((a, b), (b, a))]
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--per-caption", type=int, default=32)
    ap.add_argument("--top", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rates = json.loads(SWEEP.read_text("utf-8"))["per_meaning"]
    meanings = sorted(rates, key=lambda m: -rates[m])[: args.top]
    meanings += load_prompts(prompt_file("unusual", "train"))
    cfg = load_config(DEFAULT_PRESET, [])
    model = load_model(cfg.model)
    captions = list(dict.fromkeys(c for m in meanings for c in sentences(m)))
    n = args.per_caption * len(captions)
    samples = sample_with(model, cfg.sampling, captions, n, 1234, 64, desc="base sentences")
    per_caption = samples.per_prompt()
    record = {"per_caption_images": args.per_caption, "seed": 1234, "meanings": {}}
    for m in meanings:
        s = sentences(m)
        record["meanings"][m] = {c: per_caption[c] for c in s}
        ands = [per_caption[c] for c in s[:2]]
        rels = [per_caption[c] for c in s[2:]]
        print(
            f"{m:42s} and {ands[0]:.2f}/{ands[1]:.2f}  relations "
            f"{sum(rels) / len(rels):.2f} ({' '.join(f'{r:.2f}' for r in rels)})"
        )
    args.out.write_text(json.dumps(record, indent=2) + "\n", "utf-8")


if __name__ == "__main__":
    main()
