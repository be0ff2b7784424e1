"""Scenes of flat shapes on white, their random layout for a caption, and rendering to pixels.

Coordinates are continuous pixel coordinates at the scene's canvas size: pixel i covers
[i, i+1), so an object drawn on pixels x0 .. x0+size-1 has its centre at x0 + size/2.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from toyworld.grammar import BACKGROUND, COLOURS, SHAPES, ObjectSpec, Spec, parse

# Layout rules at the reference 32 px canvas; they scale with the canvas size.
MIN_OBJECT = 9  # px across: large enough that the checker tells the shapes apart
MAX_OBJECT = 14
MIN_GAP = 3  # px between bounding boxes, so two objects never touch, even after a blur
RELATION_MIN_OFFSET = 6  # px between centres along the relation's axis
RELATION_MAX_SLANT = 0.5  # |offset across the axis| <= this * offset along it
_MAX_TRIES = 10_000


@dataclass(frozen=True)
class PlacedObject:
    colour: str
    shape: str
    x: float  # centre
    y: float  # centre, y grows downward
    size: float  # width and height of the bounding box

    def __post_init__(self) -> None:
        if self.colour not in COLOURS or self.shape not in SHAPES:
            raise ValueError(f"unknown object {self.colour!r} {self.shape!r}")
        if self.size <= 0:
            raise ValueError(f"object size must be positive, got {self.size}")


@dataclass(frozen=True)
class Scene:
    objects: tuple[PlacedObject, ...]
    size: int = 32  # canvas width and height the coordinates refer to


def relation_holds(
    first: tuple[float, float],
    second: tuple[float, float],
    relation: str,
    min_offset: float,
    max_slant: float,
) -> bool:
    """Whether `first` is `relation` `second` given two centres (x, y): the offset along the
    relation's axis is at least `min_offset` and the offset across it at most `max_slant`
    times that, so a mostly vertical layout never counts as "left of"."""
    dx, dy = second[0] - first[0], second[1] - first[1]
    along, across = {
        "left of": (dx, dy),
        "right of": (-dx, dy),
        "above": (dy, dx),
        "below": (-dy, dx),
    }[relation]
    return along >= min_offset and abs(across) <= max_slant * along


def _round(value: float) -> int:
    return int(np.floor(value + 0.5))  # halves up, not to even: a shift moves every box alike


def render(scene: Scene, size: int | None = None) -> np.ndarray:
    """uint8 [size, size, 3]; `size` defaults to the scene's own canvas and otherwise rescales
    the layout (e.g. to look at a scene larger)."""
    size = scene.size if size is None else size
    scale = size / scene.size
    image = Image.new("RGB", (size, size), BACKGROUND)
    draw = ImageDraw.Draw(image)
    for obj in scene.objects:
        side = max(1, _round(obj.size * scale))
        x0 = _round(obj.x * scale - side / 2)
        y0 = _round(obj.y * scale - side / 2)
        x1, y1 = x0 + side - 1, y0 + side - 1  # PIL boxes include their last pixel
        fill = COLOURS[obj.colour]
        if obj.shape == "circle":
            draw.ellipse([x0, y0, x1, y1], fill=fill)
        elif obj.shape == "square":
            draw.rectangle([x0, y0, x1, y1], fill=fill)
        else:  # triangle, apex up: its bounding box is the object's box
            draw.polygon([(x0, y1), (x1, y1), ((x0 + x1) / 2, y0)], fill=fill)
    return np.asarray(image, dtype=np.uint8).copy()


def _boxes_apart(a: PlacedObject, b: PlacedObject, gap: float) -> bool:
    gap_x = abs(a.x - b.x) - (a.size + b.size) / 2
    gap_y = abs(a.y - b.y) - (a.size + b.size) / 2
    return max(gap_x, gap_y) >= gap


def _random_object(obj: ObjectSpec, rng: np.random.Generator, size: int) -> PlacedObject:
    scale = size / 32
    side = int(rng.integers(round(MIN_OBJECT * scale), round(MAX_OBJECT * scale) + 1))
    # Integer top-left corners keep every edge on the pixel grid: crisp, exact fill ratios.
    x0 = int(rng.integers(0, size - side + 1))
    y0 = int(rng.integers(0, size - side + 1))
    return PlacedObject(obj.colour, obj.shape, x0 + side / 2, y0 + side / 2, float(side))


def sample_scene(spec: Spec, rng: np.random.Generator, size: int = 32) -> Scene:
    """A random layout that satisfies `spec` with a clear margin: objects 9-14 px across at
    32 px, two objects at least 3 px apart, relations at least 6 px off along their axis and
    at most half that across it. Rejection sampling; the same rng state gives the same scene."""
    scale = size / 32
    for _ in range(_MAX_TRIES):
        placed = tuple(_random_object(obj, rng, size) for obj in spec.objects)
        if len(placed) == 1:
            return Scene(placed, size)
        first, second = placed
        if not _boxes_apart(first, second, MIN_GAP * scale):
            continue
        if spec.relation is not None and not relation_holds(
            (first.x, first.y),
            (second.x, second.y),
            spec.relation,
            RELATION_MIN_OFFSET * scale,
            RELATION_MAX_SLANT,
        ):
            continue
        return Scene(placed, size)
    raise RuntimeError(f"no layout found for {spec} at {size} px after {_MAX_TRIES} tries")


def render_prompt(prompt: str, seed: int, size: int = 32) -> np.ndarray:
    return render(sample_scene(parse(prompt), np.random.default_rng(seed), size))


def make_dataset(
    prompts: list[str], n_per_prompt: int, seed: int, size: int = 32
) -> tuple[np.ndarray, list[str]]:
    """Images uint8 [len(prompts) * n_per_prompt, size, size, 3], grouped by prompt in the
    given order, and their captions. One generator drives all layouts, so the seed fixes it."""
    rng = np.random.default_rng(seed)
    specs = [parse(prompt) for prompt in prompts]  # fail on a bad prompt before any work
    images = np.empty((len(prompts) * n_per_prompt, size, size, 3), dtype=np.uint8)
    captions: list[str] = []
    for spec, prompt in zip(specs, prompts, strict=True):
        for _ in range(n_per_prompt):
            images[len(captions)] = render(sample_scene(spec, rng, size))
            captions.append(prompt)
    return images, captions
