"""What a rendered scene truly shows, in captions, and the near misses of a caption.

The toy CLIP learns from these: every caption of the grammar that is true of a scene is a
positive for its image (a layout drawn for "a red circle and a blue square" may also show
"a red circle left of a blue square"); near misses (a colour or shape changed, colours
swapped between the objects, the relation flipped, an object missing or one too many)
are the hard negatives. Relations are judged like the checker judges them (lenient).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from toyworld.checker import CHECK_MAX_SLANT, CHECK_MIN_OFFSET
from toyworld.grammar import (
    COLOURS,
    RELATIONS,
    SHAPES,
    ObjectSpec,
    Spec,
    all_captions,
    caption,
)
from toyworld.render import MAX_OBJECT, MIN_GAP, MIN_OBJECT, PlacedObject, Scene, relation_holds

CAPTIONS = all_captions()
CAPTION_INDEX = {c: i for i, c in enumerate(CAPTIONS)}
_FLIP = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}
NEAR_MISS_KINDS = ("colour", "shape", "bind", "relation", "missing", "extra", "count")


def scene_truth(scene: Scene) -> list[int]:
    """Indices (into CAPTIONS) of every caption true of the scene; none for 0 or 3+ objects."""
    objs = scene.objects
    if len(objs) == 1:
        return [CAPTION_INDEX[caption(Spec((ObjectSpec(objs[0].colour, objs[0].shape),)))]]
    if len(objs) != 2:
        return []
    a, b = (ObjectSpec(o.colour, o.shape) for o in objs)
    if a == b:
        return [CAPTION_INDEX[caption(Spec((a, a)))]]
    scale = scene.size / 32
    out = [CAPTION_INDEX[caption(Spec((a, b)))], CAPTION_INDEX[caption(Spec((b, a)))]]
    for (first, p), (second, q) in (((a, objs[0]), (b, objs[1])), ((b, objs[1]), (a, objs[0]))):
        for rel in RELATIONS:
            if relation_holds(
                (p.x, p.y), (q.x, q.y), rel, CHECK_MIN_OFFSET * scale, CHECK_MAX_SLANT
            ):
                out.append(CAPTION_INDEX[caption(Spec((first, second), rel))])
    return out


def _other(values, old, rng: np.random.Generator):
    return str(rng.choice([v for v in values if v != old]))


def near_miss(spec: Spec, kind: str, rng: np.random.Generator) -> Spec | None:
    """A spec one step away from `spec` in meaning, or None when `kind` does not apply
    ("extra" is drawn by `add_object`, not as a spec)."""
    objs = list(spec.objects)
    i = int(rng.integers(len(objs)))
    if kind == "colour":
        objs[i] = ObjectSpec(_other(COLOURS, objs[i].colour, rng), objs[i].shape)
        if spec.is_counting:
            objs = [objs[i], objs[i]]
    elif kind == "shape":
        objs[i] = ObjectSpec(objs[i].colour, _other(SHAPES, objs[i].shape, rng))
        if spec.is_counting:
            objs = [objs[i], objs[i]]
    elif kind == "bind" and len(objs) == 2 and not spec.is_counting:
        a, b = objs
        objs = [ObjectSpec(b.colour, a.shape), ObjectSpec(a.colour, b.shape)]
    elif kind == "relation" and spec.relation is not None:
        return Spec(spec.objects, _FLIP[spec.relation])
    elif kind == "missing" and len(objs) == 2:
        return Spec((objs[i],))
    elif kind == "count":
        if len(objs) == 1:
            return Spec((objs[0], objs[0]))
        if spec.is_counting:
            return Spec((objs[0],))
        return Spec((objs[i], objs[i]))
    else:
        return None
    if len(objs) == 2 and objs[0] == objs[1] and not spec.is_counting:
        return None
    if objs == list(spec.objects):
        return None
    return Spec(tuple(objs), spec.relation if len(objs) == 2 else None)


def add_object(scene: Scene, rng: np.random.Generator, tries: int = 200) -> Scene | None:
    """The scene plus one random object clear of the others (None if it does not fit)."""
    size = scene.size
    scale = size / 32
    for _ in range(tries):
        side = int(rng.integers(round(MIN_OBJECT * scale), round(MAX_OBJECT * scale) + 1))
        x0, y0 = (int(v) for v in rng.integers(0, size - side + 1, size=2))
        new = PlacedObject(
            str(rng.choice(list(COLOURS))),
            str(rng.choice(SHAPES)),
            x0 + side / 2,
            y0 + side / 2,
            float(side),
        )
        if all(
            max(abs(new.x - o.x), abs(new.y - o.y)) - (new.size + o.size) / 2 >= MIN_GAP * scale
            for o in scene.objects
        ):
            return Scene((*scene.objects, new), size)
    return None


def mirror(scene: Scene, axis: str) -> Scene:
    """The scene mirrored left-right (axis "x") or top-bottom ("y"), every object still
    upright: the same objects with their relations on that axis reversed."""
    flip = [
        replace(o, x=scene.size - o.x) if axis == "x" else replace(o, y=scene.size - o.y)
        for o in scene.objects
    ]
    return Scene(tuple(flip), scene.size)


def swap_colours(scene: Scene) -> Scene | None:
    """Two objects' colours exchanged in place (a binding error); None if they match."""
    if len(scene.objects) != 2 or scene.objects[0].colour == scene.objects[1].colour:
        return None
    a, b = scene.objects
    return Scene((replace(a, colour=b.colour), replace(b, colour=a.colour)), scene.size)


def reshape(scene: Scene, rng: np.random.Generator) -> Scene:
    """One object's shape changed in place (colour, position and size kept): the image a
    wrong-shape sample is, the same pixels but for what is wrong."""
    objs = list(scene.objects)
    i = int(rng.integers(len(objs)))
    objs[i] = replace(objs[i], shape=_other(SHAPES, objs[i].shape, rng))
    return Scene(tuple(objs), scene.size)
