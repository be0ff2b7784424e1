"""Which runs' evaluations can be compared, and the ranking they allow.

Two evaluations of a split are paired when they share the images per prompt, the noise
seed and the prompts: then every image of one has a counterpart from the same noise in
the other, and their difference is the weights'. `learner.compare` shows, for each run,
such an evaluation where every run has one, ranks only those, and says so where it cannot.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import pairwise

from learner.eval_stats import stderr


def stage_of(e: dict) -> int:
    """The evaluated checkpoint's stage; -1 for the base model."""
    return -1 if e["stage"] is None else e["stage"]


def final_evals(evals: list[dict], split: str) -> list[dict]:
    """The evaluations of `split` at the last evaluated stage (any size or seed)."""
    found = [e for e in evals if split in e["splits"]]
    last = max((stage_of(e) for e in found), default=None)
    return [e for e in found if stage_of(e) == last]


def pairing(e: dict, split: str) -> tuple:
    """What two evaluations of `split` must share to be paired: (images per prompt, noise
    seed, prompts)."""
    per_prompt = e.get("images_per_prompt")
    if isinstance(per_prompt, dict):
        per_prompt = per_prompt.get(split)
    return per_prompt, e.get("seed"), tuple(sorted(e["splits"][split]["per_prompt"]))


def describe_eval(e: dict, split: str) -> str:
    per_prompt, seed, _ = pairing(e, split)
    return f"{e['splits'][split]['images']:,} images ({per_prompt} a prompt), seed {seed}"


def _size(e: dict, split: str) -> int:
    return e["splits"][split]["images"]


@dataclass
class Choice:
    """Each run's evaluation of one split to show (None: not evaluated), and why they are
    not paired (None: they are)."""

    evals: list[dict | None]
    problem: str | None = None


def choose(labels: list[str], finals: list[list[dict]], split: str) -> Choice:
    """From each run's `final_evals`, the largest evaluation whose size, seed and prompts
    every evaluated run shares; where none is shared, each run's largest, and `problem`
    says how they differ."""
    evaluated = [f for f in finals if f]
    if not evaluated:
        return Choice([None] * len(finals))
    shared = set.intersection(*({pairing(e, split) for e in f} for f in evaluated))
    if shared:
        best = max(
            (e for e in evaluated[0] if pairing(e, split) in shared), key=lambda e: _size(e, split)
        )
        key = pairing(best, split)
        return Choice([next((e for e in f if pairing(e, split) == key), None) for f in finals])
    chosen = [max(f, key=lambda e: _size(e, split)) if f else None for f in finals]
    keys = [pairing(e, split) for e in chosen if e is not None]
    differ = [
        what
        for i, what in enumerate(("size", "noise seed", "prompts"))
        if len({k[i] for k in keys}) > 1
    ]
    each = "; ".join(
        f"{label}: {describe_eval(e, split)}"
        for label, e in zip(labels, chosen, strict=True)
        if e is not None
    )
    return Choice(
        chosen,
        f"Not ranked: the {split} evaluations differ in {' and '.join(differ)} ({each}), so "
        "their numbers are not paired; evaluate every run with the same size flag and --seed.",
    )


def ranking(labels: list[str], split: str, choice: Choice) -> str | None:
    """One line ranking the runs on `split` by oracle_accuracy (clip_score off the toy
    world), with standard errors: `>` only where a difference exceeds two standard errors
    of it (taken as unpaired, which overstates the noise of paired evaluations), `≈`
    otherwise. The refusal where the evaluations are not paired; None with fewer than two
    evaluated runs."""
    if choice.problem:
        return choice.problem
    shown = [(label, e) for label, e in zip(labels, choice.evals, strict=True) if e is not None]
    if len(shown) < 2:
        return None
    first = shown[0][1]["splits"][split]
    metric = "oracle_accuracy" if first.get("oracle_accuracy") is not None else "clip_score"
    rows = sorted(
        (
            (e["splits"][split][metric], stderr(e["splits"][split], metric) or 0.0, label)
            for label, e in shown
        ),
        key=lambda row: -row[0],
    )
    parts = [f"{rows[0][2]} {rows[0][0]:.4f} ± {rows[0][1]:.4f}"]
    for (v1, s1, _), (v2, s2, label) in pairwise(rows):
        sign = ">" if v1 - v2 > 2 * math.hypot(s1, s2) else "≈"
        parts.append(f"{sign} {label} {v2:.4f} ± {s2:.4f}")
    size = describe_eval(shown[0][1], split)
    return f"Ranking on {split} by {metric} (± standard error; {size} each): " + " ".join(parts)
