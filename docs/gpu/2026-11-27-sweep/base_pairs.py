"""Base checker accuracy of every unseen two-object "and" pair, and the "wide" splits built
from it by a fixed rule (written before the measurement; docs/archive/RESULTS-history.md).

    python docs/gpu/2026-11-27-sweep/base_pairs.py --out DIR [--device cuda] [--per-caption 96]

Pairs: the grammar's two-object captions without a relation whose meaning is not a
pretraining caption (at least one of the four unusual objects; the bridge captions' two
meanings excluded): 36 meanings, 72 captions. Each caption is sampled --per-caption times
(the default preset's sampler, seed 4321); a meaning's base rate is the mean of its two
word orders. The prompt files use the canonical order (`caption(normalise(spec))`).

Rule "wide": meanings with base rate in [0.03, 0.6], sorted by rate (descending, ties by
caption), alternately train / test (first to train); a test meaning whose unusual object is
in no train meaning moves to train. Rule "wideall": all 36 meanings alternately, same fix.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from configs.load import DEFAULT_PRESET, load_config
from diffusion.pipeline import load_model
from toyworld.evaluate import sample_with
from toyworld.grammar import all_specs, caption, normalise, parse
from toyworld.prompts import BRIDGE_CAPTIONS, NATURAL_BINDINGS, _natural


def unseen_pairs() -> dict[str, list[str]]:
    bridge = {normalise(parse(c)) for c in BRIDGE_CAPTIONS}
    meanings: dict[str, list[str]] = {}
    for spec in all_specs():
        if len(spec.objects) != 2 or spec.relation is not None or _natural(spec):
            continue
        if spec.objects[0] == spec.objects[1] or normalise(spec) in bridge:
            continue
        meanings.setdefault(caption(normalise(spec)), []).append(caption(spec))
    return meanings


def split(rates: dict[str, float], lo: float, hi: float) -> tuple[list[str], list[str]]:
    kept = sorted((m for m, p in rates.items() if lo <= p <= hi), key=lambda m: (-rates[m], m))
    train = [m for i, m in enumerate(kept) if i % 2 == 0]
    test = [m for i, m in enumerate(kept) if i % 2 == 1]

    def unusual(m: str) -> set:
        return {o for o in parse(m).objects if o not in NATURAL_BINDINGS}

    trained = set().union(*(unusual(m) for m in train)) if train else set()
    moved = [m for m in test if not unusual(m) <= trained]
    return train + moved, [m for m in test if m not in moved]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--per-caption", type=int, default=96)
    ap.add_argument("--batch", type=int, default=1024)
    args = ap.parse_args()
    torch.manual_seed(0)
    cfg = load_config(DEFAULT_PRESET, [f"model.device={args.device}"])
    model = load_model(cfg.model)
    meanings = unseen_pairs()
    captions = [c for cs in meanings.values() for c in cs]
    n = args.per_caption * len(captions)
    samples = sample_with(model, cfg.sampling, captions, n, 4321, args.batch, desc="base pairs")
    per_caption = samples.per_prompt()
    rates = {m: sum(per_caption[c] for c in cs) / len(cs) for m, cs in meanings.items()}
    args.out.mkdir(parents=True, exist_ok=True)
    splits = {"wide": split(rates, 0.03, 0.6), "wideall": split(rates, 0.0, 1.0)}
    for name, (train, test) in splits.items():
        (args.out / f"{name}_train.txt").write_text("\n".join(train) + "\n", encoding="utf-8")
        (args.out / f"{name}_test.txt").write_text("\n".join(test) + "\n", encoding="utf-8")
    record = {
        "per_caption_images": args.per_caption,
        "seed": 4321,
        "per_caption": per_caption,
        "per_meaning": rates,
        "splits": {k: {"train": v[0], "test": v[1]} for k, v in splits.items()},
    }
    (args.out / "base_pairs.json").write_text(json.dumps(record, indent=2) + "\n", "utf-8")
    for m in sorted(rates, key=lambda m: -rates[m]):
        where = [
            k + ":" + ("train" if m in v[0] else "test")
            for k, v in splits.items()
            if m in v[0] or m in v[1]
        ]
        print(f"{rates[m]:6.3f}  {m:45s} {' '.join(where)}")
    for k, (train, test) in splits.items():
        mean = lambda ms: sum(rates[m] for m in ms) / max(1, len(ms))  # noqa: E731
        print(
            f"{k}: {len(train)} train (base {mean(train):.3f}), {len(test)} test "
            f"(base {mean(test):.3f})"
        )


if __name__ == "__main__":
    main()
