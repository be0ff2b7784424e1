import itertools

import numpy as np
import pytest

from toyworld.grammar import (
    BACKGROUND,
    COLOURS,
    ObjectSpec,
    Spec,
    all_captions,
    all_specs,
    caption,
    normalise,
    parse,
)

RED_CIRCLE = ObjectSpec("red", "circle")
BLUE_SQUARE = ObjectSpec("blue", "square")


def test_round_trip_over_the_whole_grammar():
    specs = all_specs()
    # 12 singles + 12 counting + 132 ordered pairs with "and" + 4 relations x 132
    assert len(specs) == 12 + 12 + 132 + 4 * 132
    assert len(set(specs)) == len(specs)
    assert len(set(all_captions())) == len(specs)
    for spec in specs:
        assert parse(caption(spec)) == spec


@pytest.mark.parametrize(
    "prompt, spec",
    [
        ("a red circle", Spec((RED_CIRCLE,))),
        ("two red circles", Spec((RED_CIRCLE, RED_CIRCLE))),
        ("a red circle and a blue square", Spec((RED_CIRCLE, BLUE_SQUARE))),
        ("a red circle left of a blue square", Spec((RED_CIRCLE, BLUE_SQUARE), "left of")),
        ("a blue square below a red circle", Spec((BLUE_SQUARE, RED_CIRCLE), "below")),
        ("  A Red   circle ", Spec((RED_CIRCLE,))),
    ],
)
def test_parse_forms(prompt, spec):
    assert parse(prompt) == spec


@pytest.mark.parametrize(
    "prompt",
    [
        "",
        "a purple circle",
        "a red hexagon",
        "three red circles",
        "two red circle",
        "a red circle and a red circle",
        "a red circle left of a red circle",
        "a red circle behind a blue square",
        "a red circle and a blue square and a green triangle",
    ],
)
def test_parse_rejects_what_is_outside_the_grammar(prompt):
    with pytest.raises(ValueError, match="outside") as info:
        parse(prompt)
    assert repr(prompt) in str(info.value)


def test_invalid_specs_are_refused():
    with pytest.raises(ValueError):
        ObjectSpec("purple", "circle")
    with pytest.raises(ValueError):
        Spec((RED_CIRCLE,), "left of")
    with pytest.raises(ValueError):
        Spec((RED_CIRCLE, RED_CIRCLE), "above")
    with pytest.raises(ValueError):
        Spec(())


def test_normalise_identifies_same_meanings():
    assert normalise(parse("a red circle right of a blue square")) == normalise(
        parse("a blue square left of a red circle")
    )
    assert normalise(parse("a red circle below a blue square")) == normalise(
        parse("a blue square above a red circle")
    )
    assert normalise(parse("a red circle and a blue square")) == normalise(
        parse("a blue square and a red circle")
    )
    assert normalise(parse("a red circle left of a blue square")) != normalise(
        parse("a blue square left of a red circle")
    )


def test_palette_is_saturated_and_far_apart():
    colours = {name: np.array(rgb, dtype=float) for name, rgb in COLOURS.items()}
    assert BACKGROUND == (255, 255, 255)
    for a, b in itertools.combinations(colours.values(), 2):
        assert np.linalg.norm(a - b) >= 180
    for rgb in colours.values():
        assert np.linalg.norm(rgb - np.array(BACKGROUND)) >= 250
