"""The caption grammar of the toy world: what a prompt may say, and its structured meaning.

Forms (nothing else parses):
    "a red circle"                          one object
    "a red circle and a blue square"        two different objects
    "a red circle left of a blue square"    two different objects and a relation
                                            ("left of", "right of", "above", "below")
    "two red circles"                       counting: two identical objects

Two identical objects are only ever said with "two": "a red circle and a red circle" and
"a red circle left of a red circle" are outside the grammar, so every `Spec` has exactly one
caption and `parse(caption(spec)) == spec` holds for all of `all_specs()`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

# Saturated and far apart in RGB (pairwise distance >= 180, each >= 250 from white), so a
# nearest-palette classifier with a generous threshold still separates them after blur/noise.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 20, 20),
    "green": (20, 160, 40),
    "blue": (30, 60, 220),
    "yellow": (235, 200, 0),
}
BACKGROUND: tuple[int, int, int] = (255, 255, 255)
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
RELATIONS: tuple[str, ...] = ("left of", "right of", "above", "below")

# Each relation rewritten as (canonical relation, swap objects?): "X right of Y" is "Y left of X".
_CANONICAL_RELATION: dict[str, tuple[str, bool]] = {
    "left of": ("left of", False),
    "right of": ("left of", True),
    "above": ("above", False),
    "below": ("above", True),
}


@dataclass(frozen=True, order=True)
class ObjectSpec:
    colour: str
    shape: str

    def __post_init__(self) -> None:
        if self.colour not in COLOURS:
            raise ValueError(f"unknown colour {self.colour!r}; known: {sorted(COLOURS)}")
        if self.shape not in SHAPES:
            raise ValueError(f"unknown shape {self.shape!r}; known: {list(SHAPES)}")

    def words(self) -> str:
        return f"{self.colour} {self.shape}"


@dataclass(frozen=True)
class Spec:
    """The meaning of one caption. `relation`, when set, relates objects[0] to objects[1]."""

    objects: tuple[ObjectSpec, ...]
    relation: str | None = None

    def __post_init__(self) -> None:
        if len(self.objects) not in (1, 2):
            raise ValueError(f"a spec has 1 or 2 objects, got {len(self.objects)}")
        if self.relation is not None:
            if self.relation not in RELATIONS:
                raise ValueError(f"unknown relation {self.relation!r}; known: {list(RELATIONS)}")
            if len(self.objects) != 2:
                raise ValueError("a relation needs exactly two objects")
            if self.objects[0] == self.objects[1]:
                raise ValueError("a relation between two identical objects is not in the grammar")

    @property
    def is_counting(self) -> bool:
        return len(self.objects) == 2 and self.objects[0] == self.objects[1]


def normalise(spec: Spec) -> Spec:
    """Same-meaning specs map to one value: "right of"/"below" become "left of"/"above" with
    the objects swapped, and objects without a relation are sorted (their order says nothing).
    Use this to compare meanings, e.g. a prompt with what the checker described."""
    if spec.relation is None:
        return Spec(tuple(sorted(spec.objects)), None)
    relation, swap = _CANONICAL_RELATION[spec.relation]
    objects = spec.objects[::-1] if swap else spec.objects
    return Spec(objects, relation)


def caption(spec: Spec) -> str:
    first = spec.objects[0]
    if len(spec.objects) == 1:
        return f"a {first.words()}"
    if spec.is_counting:
        return f"two {first.colour} {first.shape}s"
    second = spec.objects[1]
    joiner = spec.relation if spec.relation is not None else "and"
    return f"a {first.words()} {joiner} a {second.words()}"


_COLOUR = "|".join(COLOURS)
_SHAPE = "|".join(SHAPES)
_JOINER = "|".join(["and", *RELATIONS])
_ONE = re.compile(rf"a ({_COLOUR}) ({_SHAPE})")
_TWO_SAME = re.compile(rf"two ({_COLOUR}) ({_SHAPE})s")
_TWO = re.compile(rf"a ({_COLOUR}) ({_SHAPE}) ({_JOINER}) a ({_COLOUR}) ({_SHAPE})")


def parse(prompt: str) -> Spec:
    """Meaning of a prompt. Case and runs of whitespace are ignored; anything else outside the
    grammar raises ValueError naming the prompt."""
    text = " ".join(prompt.lower().split())
    if m := _ONE.fullmatch(text):
        return Spec((ObjectSpec(m[1], m[2]),))
    if m := _TWO_SAME.fullmatch(text):
        obj = ObjectSpec(m[1], m[2])
        return Spec((obj, obj))
    if m := _TWO.fullmatch(text):
        first, second = ObjectSpec(m[1], m[2]), ObjectSpec(m[4], m[5])
        if first == second:
            raise ValueError(
                f"prompt {prompt!r} is outside the grammar: say 'two {m[1]} {m[2]}s' instead"
            )
        return Spec((first, second), None if m[3] == "and" else m[3])
    raise ValueError(f"prompt {prompt!r} is outside the toy grammar")


def in_grammar(prompts: Iterable[str]) -> bool:
    """True if every prompt parses: then the exact checker can judge images of them."""
    try:
        for prompt in prompts:
            parse(prompt)
    except ValueError:
        return False
    return True


def all_objects() -> list[ObjectSpec]:
    return [ObjectSpec(colour, shape) for colour in COLOURS for shape in SHAPES]


def all_specs() -> list[Spec]:
    """Every spec the grammar can say, in a fixed order: singles, counting, "and", relations."""
    objects = all_objects()
    singles = [Spec((obj,)) for obj in objects]
    counting = [Spec((obj, obj)) for obj in objects]
    pairs = [(a, b) for a in objects for b in objects if a != b]
    conjunctions = [Spec(pair) for pair in pairs]
    relations = [Spec(pair, rel) for rel in RELATIONS for pair in pairs]
    return singles + counting + conjunctions + relations


def all_captions() -> list[str]:
    return [caption(spec) for spec in all_specs()]
