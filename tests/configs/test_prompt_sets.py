"""The paper's three prompt templates (ALGORITHM.md), each a train and a test file, and
`prompts.set` naming them."""

from __future__ import annotations

import itertools

import pytest

from configs.load import PRESET_DIR, ConfigError, dump_config, load_config
from configs.schema import PROMPT_SETS
from learner.prompts import load_prompts


def _split(name: str) -> tuple[list[str], list[str]]:
    return (
        load_prompts(f"configs/prompts/{name}_train.txt"),
        load_prompts(f"configs/prompts/{name}_test.txt"),
    )


# fmt: off
ANIMALS = [
    "cat", "dog", "horse", "monkey", "rabbit", "zebra", "spider", "bird", "sheep", "deer",
    "cow", "goat", "lion", "tiger", "bear", "raccoon", "fox", "wolf", "lizard", "beetle", "ant",
    "butterfly", "fish", "shark", "whale", "dolphin", "squirrel", "mouse", "rat", "snake",
    "turtle", "frog", "chicken", "duck", "goose", "bee", "pig", "turkey", "fly", "llama",
    "camel", "bat", "gorilla", "hedgehog", "kangaroo",
]
# fmt: on
ACTIVITIES = ["washing dishes", "riding a bike", "playing chess"]


def test_animals_activities_one_activity_each_in_training_the_other_two_held_out():
    train, test = _split("animals_activities")
    # 15 animals per activity, in the order listed
    assert train == [f"a {a} {ACTIVITIES[i // 15]}" for i, a in enumerate(ANIMALS)]
    assert sorted(train + test) == sorted(f"a {a} {act}" for a in ANIMALS for act in ACTIVITIES)


# natural colours of each fruit: the training prompts
FRUITS = {
    "apple": {"red", "green"},
    "banana": {"yellow", "brown"},
    "lemon": {"yellow"},
    "orange": {"orange"},
    "strawberry": {"red"},
    "cherry": {"red"},
    "grape": {"purple", "green"},
    "blueberry": {"blue"},
    "pear": {"green", "yellow"},
    "kiwi": {"brown"},
}
VEGETABLES = {
    "carrot": "orange",
    "tomato": "red",
    "broccoli": "green",
    "eggplant": "purple",
    "potato": "brown",
    "corn": "yellow",
}
PALETTE = {"red", "orange", "yellow", "green", "blue", "purple", "brown", "white"}


def test_colour_fruit_natural_colours_in_training_unusual_ones_and_vegetables_held_out():
    train, test = _split("colour_fruit")
    pairs = [tuple(p.split(" ", 1)) for p in train + test]
    assert all(c in PALETTE for c, _ in pairs)
    assert {(c, f) for c, f in (tuple(p.split(" ", 1)) for p in train)} == {
        (c, f) for f, cs in FRUITS.items() for c in cs
    }
    unusual = {(c, f) for f, cs in FRUITS.items() for c in PALETTE - cs}
    vegetables = {(c, v) for v, natural in VEGETABLES.items() for c in PALETTE - {natural}}
    assert {tuple(p.split(" ", 1)) for p in test} == unusual | vegetables
    assert "yellow apple" in test and "white carrot" in test and "brown banana" in train
    assert (len(train), len(test)) == (14, 108)


TRAIN_RELATIONS = ["on", "under", "left of", "right of"]
TEST_RELATIONS = ["behind", "in front of"]


def _relation(prompt: str, relations: list[str]) -> tuple[str, str, str]:
    """(object, relation, object): the one relation the prompt holds, with spaces round it."""
    found = [(prompt.split(f" {r} ")[0], r, prompt.split(f" {r} ")[1]) for r in relations
             if f" {r} " in prompt]  # fmt: skip
    assert len(found) == 1, prompt
    return found[0]


def test_object_relation_four_relations_in_training_two_unseen_ones_held_out():
    train, test = _split("object_relation")
    assert "chair under umbrella" in train
    seen = [_relation(p, TRAIN_RELATIONS) for p in train]
    unseen = [_relation(p, TEST_RELATIONS) for p in test]
    pairs = list(dict.fromkeys((a, b) for a, _, b in seen))
    assert len(pairs) == 12 and all(a != b for a, b in pairs)
    # every pair in every relation: the train set with the four, the test set with the two
    assert sorted(seen) == sorted(
        (a, r, b) for (a, b), r in itertools.product(pairs, TRAIN_RELATIONS)
    )
    assert sorted(unseen) == sorted(
        (a, r, b) for (a, b), r in itertools.product(pairs, TEST_RELATIONS)
    )
    assert not any(f" {r} " in p for p in test for r in TRAIN_RELATIONS)


@pytest.mark.parametrize("name", PROMPT_SETS)
def test_a_set_names_its_two_files(name):
    cfg = load_config(PRESET_DIR / "sd14_b2.yaml", [f"prompts.set={name}"])
    assert cfg.prompts.train == f"configs/prompts/{name}_train.txt"
    assert cfg.prompts.test == f"configs/prompts/{name}_test.txt"
    train, test = _split(name)
    assert not set(train) & set(test)


def test_the_sd_presets_use_the_animals_set_and_files_still_work(tmp_path):
    for preset in ("sd14_b2.yaml", "sd14_ddpo.yaml"):
        cfg = load_config(PRESET_DIR / preset)
        assert cfg.prompts.set == "animals_activities"
        # the resolved config a run saves names the set and its files: it loads again
        saved = tmp_path / "config.yaml"
        saved.write_text(dump_config(cfg))
        assert load_config(saved) == cfg
    files = load_config(None, ["prompts.train=configs/prompts/colour_fruit_train.txt"])
    assert files.prompts.set is None and files.prompts.train.endswith("colour_fruit_train.txt")


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        (["prompts.set=fruit"], "prompts.set = 'fruit': Input should be 'animals_activities'"),
        (["prompts.train=my.txt"], "prompts.train = 'my.txt': prompts.set=animals_activities "
         "names the prompt files itself: give a set or files, not both"),
    ],
)  # fmt: skip
def test_unknown_set_or_set_and_files_is_one_line(overrides, needle):
    with pytest.raises(ConfigError) as err:
        load_config(PRESET_DIR / "sd14_b2.yaml", overrides)
    assert needle in str(err.value) and "\n" not in str(err.value)
    # without the set, the files are taken
    cfg = load_config(PRESET_DIR / "sd14_b2.yaml", ["prompts.set=null", "prompts.train=my.txt"])
    assert cfg.prompts.train == "my.txt"
