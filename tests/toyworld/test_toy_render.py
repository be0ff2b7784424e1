import numpy as np
import pytest

from toyworld.grammar import BACKGROUND, COLOURS, all_specs, parse
from toyworld.render import (
    PlacedObject,
    Scene,
    make_dataset,
    relation_holds,
    render,
    render_prompt,
    sample_scene,
)
from toyworld.scenes import reshape, scene_truth

PROMPTS = [
    "a red circle",
    "two yellow triangles",
    "a green square and a blue circle",
    "a blue triangle above a red square",
]


@pytest.mark.parametrize("prompt", PROMPTS)
def test_render_prompt_is_deterministic_per_seed(prompt):
    first = render_prompt(prompt, seed=7)
    assert first.dtype == np.uint8 and first.shape == (32, 32, 3)
    np.testing.assert_array_equal(first, render_prompt(prompt, seed=7))
    assert not np.array_equal(first, render_prompt(prompt, seed=8))


def test_pixels_are_palette_or_white_only():
    allowed = {BACKGROUND, *COLOURS.values()}
    for seed in range(20):
        image = render_prompt("a yellow circle and a blue triangle", seed)
        assert {tuple(int(v) for v in p) for p in image.reshape(-1, 3)} <= allowed


def test_layouts_keep_their_promises():
    rng = np.random.default_rng(0)
    for spec in all_specs()[::3]:
        scene = sample_scene(spec, rng)
        for obj in scene.objects:
            assert 9 <= obj.size <= 14
            assert obj.size / 2 <= obj.x <= 32 - obj.size / 2
            assert obj.size / 2 <= obj.y <= 32 - obj.size / 2
        if len(scene.objects) == 2:
            a, b = scene.objects
            gap = max(abs(a.x - b.x), abs(a.y - b.y)) - (a.size + b.size) / 2
            assert gap >= 3
        if spec.relation is not None:
            a, b = scene.objects
            assert relation_holds((a.x, a.y), (b.x, b.y), spec.relation, 6, 0.5)


def test_relation_needs_the_axis_to_dominate():
    assert relation_holds((0, 0), (10, 3), "left of", 6, 0.5)
    assert not relation_holds((0, 0), (10, 8), "left of", 6, 0.5)  # too slanted
    assert not relation_holds((0, 0), (4, 0), "left of", 6, 0.5)  # too close
    assert relation_holds((0, 0), (1, 9), "above", 6, 0.5)  # y grows downward
    assert relation_holds((0, 9), (1, 0), "below", 6, 0.5)
    assert relation_holds((10, 0), (0, 0), "right of", 6, 0.5)


def test_render_draws_exact_boxes_and_rescales():
    scene = Scene((PlacedObject("red", "square", x=10.0, y=8.0, size=10.0),))
    image = render(scene)
    ys, xs = np.nonzero((image != 255).any(-1))
    assert (xs.min(), xs.max(), ys.min(), ys.max()) == (5, 14, 3, 12)
    big = render(scene, size=64)
    assert big.shape == (64, 64, 3)
    assert (big != 255).any(-1).sum() == 4 * (image != 255).any(-1).sum()


def test_sample_scene_scales_with_canvas():
    scene = sample_scene(parse("a red circle left of a blue square"), np.random.default_rng(1), 64)
    assert scene.size == 64 and all(18 <= obj.size <= 28 for obj in scene.objects)
    assert render(scene).shape == (64, 64, 3)


def test_make_dataset_is_grouped_and_deterministic():
    images, captions = make_dataset(PROMPTS, n_per_prompt=3, seed=5)
    assert images.shape == (12, 32, 32, 3) and images.dtype == np.uint8
    assert captions == [p for p in PROMPTS for _ in range(3)]
    again, _ = make_dataset(PROMPTS, n_per_prompt=3, seed=5)
    np.testing.assert_array_equal(images, again)
    other, _ = make_dataset(PROMPTS, n_per_prompt=3, seed=6)
    assert not np.array_equal(images, other)
    with pytest.raises(ValueError, match="purple"):
        make_dataset(["a purple circle"], 1, seed=0)


def test_reshape_changes_one_shape_in_place_and_the_truth_follows():
    rng = np.random.default_rng(3)
    scene = sample_scene(parse("a red circle and a blue square"), rng)
    for _ in range(10):
        edited = reshape(scene, rng)
        changed = [(a, b) for a, b in zip(scene.objects, edited.objects, strict=True) if a != b]
        assert len(changed) == 1
        before, after = changed[0]
        assert after.shape != before.shape
        assert (after.colour, after.x, after.y, after.size) == (
            before.colour,
            before.x,
            before.y,
            before.size,
        )
        assert scene_truth(edited) != scene_truth(scene)
