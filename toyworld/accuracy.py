"""How often the checker is right, on clean and on degraded renders.

A render of prompt p must be judged correct for p and wrong for a mismatched prompt (one
object's colour or shape changed, or the relation flipped). Degrading (Gaussian blur,
additive noise) stands in for the imperfect samples of a diffusion model.

    python -m toyworld.accuracy            # prints the table quoted in toyworld/README.md
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import numpy as np

from toyworld.checker import check, describe
from toyworld.grammar import (
    COLOURS,
    SHAPES,
    ObjectSpec,
    Spec,
    all_specs,
    caption,
    normalise,
    parse,
)
from toyworld.render import render, sample_scene

_OPPOSITE = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}


@dataclass(frozen=True)
class Accuracy:
    n: int
    matching: float  # share of renders judged correct for their own prompt
    mismatched: float  # share judged wrong for a mismatched prompt
    described: float  # share whose describe() has the prompt's meaning (see describes())

    @property
    def verdicts(self) -> float:
        return (self.matching + self.mismatched) / 2


def degrade(
    image: np.ndarray, rng: np.random.Generator, blur_sigma: float, noise_std: float
) -> np.ndarray:
    """Gaussian blur (sigma in px, edges replicated) then additive Gaussian noise (std in
    0-255 units), rounded back to uint8."""
    out = image.astype(np.float32)
    if blur_sigma > 0:
        radius = int(np.ceil(3 * blur_sigma))
        taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / blur_sigma) ** 2)
        taps /= taps.sum()
        for axis in (0, 1):
            padded = np.pad(
                out, [(radius, radius) if a == axis else (0, 0) for a in range(3)], mode="edge"
            )
            out = sum(
                w * np.take(padded, np.arange(k, k + image.shape[axis]), axis=axis)
                for k, w in enumerate(taps)
            )
    if noise_std > 0:
        out = out + rng.normal(0.0, noise_std, size=out.shape)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def mismatch(spec: Spec, rng: np.random.Generator) -> Spec:
    """A spec that differs from `spec` in meaning: one colour or shape changed, or (for a
    relation) sometimes the relation flipped."""
    if spec.relation is not None and rng.random() < 0.3:
        return Spec(spec.objects, _OPPOSITE[spec.relation])
    while True:
        i = int(rng.integers(len(spec.objects)))
        old = spec.objects[i]
        if rng.random() < 0.5:
            new = ObjectSpec(str(rng.choice([c for c in COLOURS if c != old.colour])), old.shape)
        else:
            new = ObjectSpec(old.colour, str(rng.choice([s for s in SHAPES if s != old.shape])))
        objects = list(spec.objects)
        if spec.is_counting and rng.random() < 0.5:
            objects = [new, new]  # "two blue circles" for "two red circles", not just one off
        else:
            objects[i] = new
        if len(objects) == 2 and objects[0] == objects[1] and spec.relation is not None:
            continue  # identical objects cannot carry a relation
        return Spec(tuple(objects), spec.relation)


def describes(prompt_spec: Spec, description: str) -> bool:
    """describe() has the prompt's meaning: same objects, and the same relation when the
    prompt has one. For a prompt without relation, a described relation is fine: describe()
    names any clear layout."""
    if description == "nothing":
        return False
    said = parse(description)
    if prompt_spec.relation is None:
        return sorted(said.objects) == sorted(prompt_spec.objects)
    return normalise(said) == normalise(prompt_spec)


def measure(
    n: int, seed: int, blur_sigma: float = 0.0, noise_std: float = 0.0, size: int = 32
) -> Accuracy:
    """Renders n specs drawn evenly across the grammar's forms (singles, counting, "and",
    each relation), degrades them, and scores the checker's verdicts and descriptions."""
    rng = np.random.default_rng(seed)
    specs = all_specs()
    forms: dict[str | None, list[Spec]] = {}
    for spec in specs:
        form = spec.relation or ("counting" if spec.is_counting else str(len(spec.objects)))
        forms.setdefault(form, []).append(spec)
    groups = list(forms.values())
    matching = mismatched = described = 0
    for i in range(n):
        group = groups[i % len(groups)]
        spec = group[int(rng.integers(len(group)))]
        image = degrade(render(sample_scene(spec, rng, size)), rng, blur_sigma, noise_std)
        matching += check(image, caption(spec)).correct
        mismatched += not check(image, caption(mismatch(spec, rng))).correct
        described += describes(spec, describe(image))
    return Accuracy(n, float(matching / n), float(mismatched / n), float(described / n))


# The first four rows are the degradations the checker is meant for; the last two go beyond.
SETTINGS = [(0.0, 0.0), (0.7, 10.0), (1.0, 15.0), (1.0, 20.0), (1.5, 20.0), (1.0, 30.0)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=600)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(f"n={args.n} renders per setting, seed={args.seed}")
    print("blur_sigma noise_std  matching  mismatched  verdicts  described")
    for blur, noise in SETTINGS:
        acc = measure(args.n, args.seed, blur, noise)
        print(
            f"{blur:10.1f} {noise:9.0f}  {acc.matching:8.3f}  {acc.mismatched:10.3f}"
            f"  {acc.verdicts:8.3f}  {acc.described:9.3f}"
        )


if __name__ == "__main__":
    main()
