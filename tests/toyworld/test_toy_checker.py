import numpy as np
import pytest

from toyworld.accuracy import degrade, measure
from toyworld.checker import EXTRA_PENALTY, check, check_batch, detect
from toyworld.render import PlacedObject, Scene, render, render_prompt


def scene(*objects):
    return render(Scene(tuple(PlacedObject(*obj) for obj in objects)))


RED_CIRCLE = ("red", "circle", 8.0, 16.0, 12.0)
BLUE_SQUARE = ("blue", "square", 24.0, 16.0, 12.0)
GREEN_TRIANGLE = ("green", "triangle", 16.0, 5.5, 9.0)


def test_clean_renders():
    # Measured (seed 0, 600 renders evenly over the grammar's forms): 1.000 / 1.000.
    acc = measure(600, seed=0)
    assert acc.matching >= 0.99
    assert acc.mismatched >= 0.99


@pytest.mark.parametrize(
    "blur, noise, floor",
    [
        # Measured over seeds 0-4 with 400 renders: matching 1.000 at (0.7, 10) and
        # 0.990-1.000 at (1.0, 20); mismatched 1.000 for both.
        (0.7, 10.0, 0.98),
        (1.0, 20.0, 0.97),
    ],
)
def test_degraded_renders(blur, noise, floor):
    acc = measure(400, seed=1, blur_sigma=blur, noise_std=noise)
    assert acc.matching >= floor
    assert acc.mismatched >= 0.98


def test_shapes_and_centres_are_found():
    found = detect(scene(RED_CIRCLE, BLUE_SQUARE, GREEN_TRIANGLE))
    assert sorted((o.colour, o.shape) for o in found) == [
        ("blue", "square"),
        ("green", "triangle"),
        ("red", "circle"),
    ]
    circle = next(o for o in found if o.shape == "circle")
    assert (circle.x, circle.y, circle.width, circle.height) == (8.0, 16.0, 12, 12)


def test_partial_credit():
    both = scene(RED_CIRCLE, BLUE_SQUARE)
    one = scene(RED_CIRCLE)
    result = check(both, "a red circle and a blue square")
    assert result.correct and result.partial == 1.0
    result = check(one, "a red circle and a blue square")
    assert not result.correct and result.partial == 0.5
    result = check(both, "a red circle")  # the blue square was not asked for
    assert not result.correct and result.partial == 1.0 - EXTRA_PENALTY
    result = check(scene(RED_CIRCLE, GREEN_TRIANGLE), "a red circle and a blue square")
    assert not result.correct and result.partial == 0.5 - EXTRA_PENALTY
    result = check(one, "two red circles")
    assert not result.correct and result.partial == 0.5
    blank = np.full((32, 32, 3), 255, np.uint8)
    assert check(blank, "a red circle").partial == 0.0
    crowd = scene(
        ("red", "square", 6.0, 6.0, 9.0),
        ("red", "square", 26.0, 6.0, 9.0),
        ("red", "square", 6.0, 26.0, 9.0),
        ("red", "square", 26.0, 26.0, 9.0),
        ("blue", "circle", 16.0, 16.0, 9.0),
    )
    result = check(crowd, "a blue circle")
    assert not result.correct and result.partial == 0.0  # clipped at 0


def test_relations_decide_correctness_but_not_partial():
    image = scene(RED_CIRCLE, BLUE_SQUARE)
    assert check(image, "a red circle left of a blue square").correct
    assert check(image, "a blue square right of a red circle").correct
    for wrong in ("a red circle right of a blue square", "a red circle above a blue square"):
        result = check(image, wrong)
        assert not result.correct and result.partial == 1.0
    stacked = scene(("red", "circle", 16.0, 7.0, 10.0), ("red", "circle", 16.0, 24.0, 10.0))
    assert check(stacked, "two red circles").correct


def test_background_tints_greys_and_specks_are_not_objects():
    rng = np.random.default_rng(0)
    tinted = np.full((32, 32, 3), (240, 235, 250), np.uint8)
    grey = np.full((32, 32, 3), 128, np.uint8)
    specks = np.full((32, 32, 3), 255, np.uint8)
    for y, x in rng.integers(0, 32, size=(25, 2)):
        specks[y, x] = (220, 20, 20)
    for image in (tinted, grey, specks):
        assert detect(image) == []


def test_merged_blob_is_no_shape_and_counts_as_extra():
    bar = scene(("red", "square", 10.0, 16.0, 10.0), ("red", "square", 20.0, 16.0, 10.0))
    (blob,) = detect(bar)
    assert blob.shape is None and (blob.width, blob.height) == (20, 10)
    result = check(bar, "two red squares")
    assert not result.correct and result.partial == 0.0


def test_check_batch_layouts_agree():
    prompts = ["a red circle", "two blue squares", "a green triangle below a yellow circle"]
    rng = np.random.default_rng(3)
    images = np.stack([render_prompt(p, seed) for seed, p in enumerate(prompts)])
    images = np.stack([degrade(im, rng, 0.7, 10.0) for im in images])
    wrong = ["a red square", "two blue squares", "a green triangle above a yellow circle"]
    correct, partial = check_batch(images, wrong)
    assert correct.dtype == np.bool_ and partial.dtype == np.float32
    np.testing.assert_array_equal(correct, [False, True, False])
    np.testing.assert_allclose(partial, [0.0, 1.0, 1.0])
    floats = images.transpose(0, 3, 1, 2).astype(np.float32) / 255.0
    for batch in (floats, _FakeTensor(floats)):
        again_correct, again_partial = check_batch(batch, wrong)
        np.testing.assert_array_equal(again_correct, correct)
        np.testing.assert_array_equal(again_partial, partial)


def test_check_batch_rejects_bad_input():
    images = np.zeros((2, 32, 32, 3), np.uint8)
    with pytest.raises(ValueError, match="2 images but 1 prompts"):
        check_batch(images, ["a red circle"])
    with pytest.raises(ValueError, match=r"\[N, 3, H, W\]"):
        check_batch(images.astype(np.float32), ["a red circle"] * 2)
    with pytest.raises(ValueError, match="outside"):
        check_batch(images, ["a red circle", "a pink circle"])


class _FakeTensor:
    """Stands in for a torch tensor: the checker reads tensors through this chain of calls."""

    def __init__(self, array):
        self.array = array

    def detach(self):
        return self

    def float(self):
        return self

    def cpu(self):
        return self

    def numpy(self):
        return self.array
