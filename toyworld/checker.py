"""The exact checker: the independent judge of whether an image shows what its prompt says.

Pipeline: each pixel -> a palette colour or background -> single-pixel noise repairs ->
4-connected components per colour -> drop specks -> shape from the component's geometry ->
compare with the prompt (`check`) or name what is there (`describe`).
It knows nothing of how images were made, so it judges a diffusion model's samples and the
renderer's images alike. Measured accuracies: toyworld/README.md and toyworld/accuracy.py.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np

from toyworld.grammar import (
    BACKGROUND,
    COLOURS,
    ObjectSpec,
    Spec,
    caption,
    parse,
)
from toyworld.render import relation_holds

_COLOUR_NAMES = tuple(COLOURS)
_WHITE = np.array(BACKGROUND, dtype=np.float32)
_TOWARD = np.array(list(COLOURS.values()), dtype=np.float32) - _WHITE  # [colours, 3]
# A pixel is read as a blend of white and one palette colour: it belongs to the colour when
# it is at least half way from white toward it (a blurred edge keeps the object's true
# outline) and lies near that white-colour line. Greys, browns and other off-palette mush
# lie far from every line and count as background, as do faint tints.
MIN_MIX = 0.5
MAX_OFF_LINE = 60.0  # RGB units; noise of std 20 leaves about 1 % of object pixels beyond it
# At the reference 32 px; scaled by area / length for other sizes.
MIN_AREA = 12  # px; the smallest object (a 9 px triangle) covers about 40
CHECK_MIN_OFFSET = 3.0  # px; the judge is lenient, the sampler draws relations with 6 px
CHECK_MAX_SLANT = 1.0  # the relation's axis must dominate: |across| <= |along|
# describe() names a relation only for a clear layout: nearly the sampler's margins (6 px,
# slant 0.5), loosened for the pixel or so that blur and tidying move a detected centre.
DESCRIBE_MIN_OFFSET = 5.0
DESCRIBE_MAX_SLANT = 0.6
EXTRA_PENALTY = 0.25  # partial credit lost per object the prompt did not ask for


@dataclass(frozen=True)
class DetectedObject:
    colour: str
    shape: str | None  # None: a blob that is none of the grammar's shapes
    x: float  # bounding-box centre, same convention as render.PlacedObject
    y: float
    width: int
    height: int
    area: int


@dataclass(frozen=True)
class CheckResult:
    correct: bool  # exactly the prompt's objects, nothing else, relation holds
    partial: float  # in [0, 1]: share of the prompt's objects found, minus extras
    found: list[DetectedObject]


def as_uint8_images(images: Any) -> np.ndarray:
    """uint8 [N, H, W, 3] from uint8 [N, H, W, 3] or float [N, 3, H, W] in [0, 1] (numpy or
    a CPU/GPU tensor; tensors are read without importing torch)."""
    if hasattr(images, "detach"):
        images = images.detach().float().cpu().numpy()
    images = np.asarray(images)
    if images.ndim != 4:
        raise ValueError(f"expected a batch of images [N, ...], got shape {images.shape}")
    if images.dtype == np.uint8:
        if images.shape[-1] != 3:
            raise ValueError(f"uint8 images must be [N, H, W, 3], got {images.shape}")
        return images
    if not np.issubdtype(images.dtype, np.floating) or images.shape[1] != 3:
        raise ValueError(
            f"float images must be [N, 3, H, W] in [0, 1], got {images.dtype} {images.shape}"
        )
    scaled = np.rint(np.clip(images, 0.0, 1.0) * 255.0).astype(np.uint8)
    return np.ascontiguousarray(scaled.transpose(0, 2, 3, 1))


def classify_pixels(image: np.ndarray) -> np.ndarray:
    """int [H, W]: index into grammar.COLOURS, or -1 for background."""
    offset = image.astype(np.float32)[..., None, :] - _WHITE  # [H, W, 1, 3]
    mix = (offset * _TOWARD).sum(-1) / (_TOWARD**2).sum(-1)  # [H, W, colours]
    off_line = np.linalg.norm(offset - np.clip(mix, 0, 1)[..., None] * _TOWARD, axis=-1)
    nearest = off_line.argmin(axis=-1)
    mix_there = np.take_along_axis(mix, nearest[..., None], axis=-1)[..., 0]
    is_colour = (mix_there >= MIN_MIX) & (off_line.min(axis=-1) <= MAX_OFF_LINE)
    return np.where(is_colour, nearest, -1)


def tidy(classes: np.ndarray) -> np.ndarray:
    """Single-pixel repairs of noise: a background pixel walled in by one colour on 3 or 4
    sides is filled, and a coloured pixel with at most one same-colour neighbour (a spur that
    would stretch a bounding box, or a speck) is cleared. One pass: shapes keep their corners."""
    padded = np.pad(classes, 1, constant_values=-1)
    neighbours = np.stack(
        [padded[:-2, 1:-1], padded[2:, 1:-1], padded[1:-1, :-2], padded[1:-1, 2:]]
    )  # [4, H, W]
    same = (neighbours == classes).sum(0)
    out = np.where((classes >= 0) & (same <= 1), -1, classes)
    for colour in range(len(COLOURS)):
        walled = (classes < 0) & ((neighbours == colour).sum(0) >= 3)
        out = np.where(walled, colour, out)
    return out


def label_components(classes: np.ndarray) -> np.ndarray:
    """int [H, W]: one label per 4-connected region of equal class, -1 on background.

    Each pixel repeatedly takes the smallest label among its same-class neighbours, then
    follows the label as a pointer (labels are pixel indices), which halves the path to the
    region's root each round; converges in a few dozen numpy steps on 32 px images."""
    h, w = classes.shape
    foreground = classes >= 0
    labels = np.where(foreground, np.arange(h * w).reshape(h, w), h * w)
    same_down = (classes[1:, :] == classes[:-1, :]) & foreground[1:, :]
    same_right = (classes[:, 1:] == classes[:, :-1]) & foreground[:, 1:]
    while True:
        new = labels.copy()
        np.minimum(new[1:, :], np.where(same_down, labels[:-1, :], h * w), out=new[1:, :])
        np.minimum(new[:-1, :], np.where(same_down, labels[1:, :], h * w), out=new[:-1, :])
        np.minimum(new[:, 1:], np.where(same_right, labels[:, :-1], h * w), out=new[:, 1:])
        np.minimum(new[:, :-1], np.where(same_right, labels[:, 1:], h * w), out=new[:, :-1])
        flat = new.reshape(-1)
        inside = flat < h * w
        flat[inside] = flat[flat[inside]]  # pointer jump: a label names a pixel of the region
        if np.array_equal(new, labels):
            return np.where(foreground, labels, -1)
        labels = new


def classify_shape(mask: np.ndarray) -> str | None:
    """Shape of one component, given its mask cropped to its bounding box.

    The three shapes differ in fill ratio of the box (square 1.0, circle 0.785, triangle 0.5)
    and in how the width runs from top to bottom (a triangle, apex up, is narrow on top and
    full at the bottom; a circle is narrow at both ends; a square full at both). Blobs with a
    stretched box or a fill no shape has are no shape at all."""
    h, w = mask.shape
    if not 0.65 <= w / h <= 1.55:
        return None
    fill = mask.mean()
    widths = mask.sum(axis=1) / w
    quarter = max(1, h // 4)
    top, bottom = widths[:quarter].mean(), widths[-quarter:].mean()
    if bottom - top >= 0.3 and fill <= 0.8:
        return "triangle"
    if fill >= 0.85 and min(top, bottom) >= 0.75:
        return "square"
    if 0.6 <= fill < 0.9 and abs(bottom - top) < 0.3:
        return "circle"
    return None


def detect(image: np.ndarray) -> list[DetectedObject]:
    """Objects in one image uint8 [H, W, 3], largest first."""
    classes = tidy(classify_pixels(image))
    labels = label_components(classes)
    min_area = MIN_AREA * image.shape[0] * image.shape[1] / 32**2
    found: list[DetectedObject] = []
    for label in np.unique(labels[labels >= 0]):
        ys, xs = np.nonzero(labels == label)
        if ys.size < min_area:
            continue  # noise specks and stray edge pixels
        y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
        mask = labels[y0:y1, x0:x1] == label
        found.append(
            DetectedObject(
                colour=_COLOUR_NAMES[classes[ys[0], xs[0]]],
                shape=classify_shape(mask),
                x=(x0 + x1) / 2,
                y=(y0 + y1) / 2,
                width=int(x1 - x0),
                height=int(y1 - y0),
                area=int(ys.size),
            )
        )
    found.sort(key=lambda obj: -obj.area)
    return found


def _key(obj: DetectedObject) -> tuple[str, str | None]:
    return obj.colour, obj.shape


def judge(spec: Spec, found: list[DetectedObject], image_size: int) -> CheckResult:
    wanted = Counter((obj.colour, obj.shape) for obj in spec.objects)
    seen = Counter(_key(obj) for obj in found)
    matched = sum((wanted & seen).values())
    extras = len(found) - matched
    partial = float(np.clip(matched / len(spec.objects) - EXTRA_PENALTY * extras, 0.0, 1.0))
    correct = matched == len(spec.objects) and extras == 0
    if correct and spec.relation is not None:
        # Exact match and two different objects: each is found exactly once.
        first, second = (
            next(obj for obj in found if _key(obj) == (want.colour, want.shape))
            for want in spec.objects
        )
        correct = relation_holds(
            (first.x, first.y),
            (second.x, second.y),
            spec.relation,
            CHECK_MIN_OFFSET * image_size / 32,
            CHECK_MAX_SLANT,
        )
    return CheckResult(correct=correct, partial=partial, found=found)


def check(image: np.ndarray, prompt: str) -> CheckResult:
    """Judge one image uint8 [H, W, 3] against a prompt of the grammar."""
    image = as_uint8_images(np.asarray(image)[None])[0]
    return judge(parse(prompt), detect(image), image.shape[0])


def check_batch(images: Any, prompts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(correct bool [N], partial float32 [N]) for uint8 [N, H, W, 3] or float [N, 3, H, W]
    images in [0, 1] and one prompt per image."""
    batch = as_uint8_images(images)
    if len(prompts) != len(batch):
        raise ValueError(f"{len(batch)} images but {len(prompts)} prompts")
    specs = {prompt: parse(prompt) for prompt in set(prompts)}
    correct = np.zeros(len(batch), dtype=np.bool_)
    partial = np.zeros(len(batch), dtype=np.float32)
    for i, (image, prompt) in enumerate(zip(batch, prompts, strict=True)):
        result = judge(specs[prompt], detect(image), image.shape[0])
        correct[i], partial[i] = result.correct, result.partial
    return correct, partial


def describe(image: np.ndarray) -> str:
    """What the image shows, in the grammar's words: the captioner behind the BERTScore reward.

    Blobs that are no shape are left out; of more than two objects the two largest are named.
    A relation is named only when the layout clearly shows one (about the sampler's margins);
    it is said from the left or top object ("left of", "above"). With no object: "nothing",
    the one answer outside the grammar."""
    image = as_uint8_images(np.asarray(image)[None])[0]
    scale = image.shape[0] / 32
    objects = [obj for obj in detect(image) if obj.shape is not None][:2]
    if not objects:
        return "nothing"
    specs = [ObjectSpec(obj.colour, obj.shape) for obj in objects if obj.shape is not None]
    if len(objects) == 1:
        return caption(Spec((specs[0],)))
    if specs[0] == specs[1]:
        return caption(Spec((specs[0], specs[1])))
    for relation in ("left of", "above"):
        for a, b in ((0, 1), (1, 0)):
            if relation_holds(
                (objects[a].x, objects[a].y),
                (objects[b].x, objects[b].y),
                relation,
                DESCRIBE_MIN_OFFSET * scale,
                DESCRIBE_MAX_SLANT,
            ):
                return caption(Spec((specs[a], specs[b]), relation))
    order = (0, 1) if objects[0].x <= objects[1].x else (1, 0)  # read left to right
    return caption(Spec((specs[order[0]], specs[order[1]])))
