import warnings

import pytest

from toyworld.grammar import COLOURS, RELATIONS, SHAPES, normalise, parse
from toyworld.prompts import (
    BRIDGE_CAPTIONS,
    NATURAL_BINDINGS,
    PROMPTS_DIR,
    SPLITS,
    TEMPLATES,
    load_prompts,
    pretraining_captions,
    prompt_file,
)


def meanings(prompts):
    return {normalise(parse(p)) for p in prompts}


def words(prompts):
    return {w for p in prompts for w in p.split()}


@pytest.mark.parametrize("template", TEMPLATES)
@pytest.mark.parametrize("split", SPLITS)
def test_packaged_files_are_canonical_grammar_lines(template, split):
    path = prompt_file(template, split)
    prompts = load_prompts(path)
    size = {"all": (16, 24), "unusual": (5, 5), "recombine": (5, 5), "relations": (5, 20)}.get(
        template, (8, 12)
    )
    assert size[0] <= len(prompts) <= size[1]
    text = path.read_text(encoding="utf-8")
    # no blank lines, no variant spellings, no duplicates: the file is what load_prompts gives
    assert text == "".join(p + "\n" for p in prompts)


def test_no_stray_prompt_files():
    expected = {prompt_file(t, s).name for t in TEMPLATES for s in SPLITS}
    assert {p.name for p in PROMPTS_DIR.iterdir()} == expected


@pytest.mark.parametrize("split", SPLITS)
def test_all_is_the_union_of_the_templates(split):
    binding = load_prompts(prompt_file("binding", split))
    spatial = load_prompts(prompt_file("spatial", split))
    assert load_prompts(prompt_file("all", split)) == binding + spatial


@pytest.mark.parametrize("template", TEMPLATES)
def test_train_and_test_are_disjoint_in_meaning(template):
    train = load_prompts(prompt_file(template, "train"))
    test = load_prompts(prompt_file(template, "test"))
    assert not meanings(train) & meanings(test)


def test_binding_test_holds_out_colour_shape_pairs_with_seen_words():
    train = load_prompts(prompt_file("binding", "train"))
    test = load_prompts(prompt_file("binding", "test"))
    for prompt in train:
        assert set(parse(prompt).objects) <= NATURAL_BINDINGS
    train_pairs = {obj for p in train for obj in parse(p).objects}
    for prompt in test:
        spec = parse(prompt)
        assert len(spec.objects) == 2 and spec.relation is None
        assert not set(spec.objects) <= train_pairs, prompt
    assert words(test) <= words(train)


def test_unusual_sets_split_the_binding_test_prompts_and_were_never_pretrained():
    train = load_prompts(prompt_file("unusual", "train"))
    test = load_prompts(prompt_file("unusual", "test"))
    binding_test = load_prompts(prompt_file("binding", "test"))
    assert (train, test) == (binding_test[0::2], binding_test[1::2])
    assert not meanings(pretraining_captions()) & meanings(train + test)


def test_recombine_sets_train_every_held_out_unusual_object_beside_another_partner():
    train = load_prompts(prompt_file("recombine", "train"))
    test = load_prompts(prompt_file("recombine", "test"))
    binding_test = load_prompts(prompt_file("binding", "test"))
    assert (train, test) == (binding_test[:5], binding_test[5:])
    trained = {obj for p in train for obj in parse(p).objects if obj not in NATURAL_BINDINGS}
    for prompt in test:
        unusual = {obj for obj in parse(prompt).objects if obj not in NATURAL_BINDINGS}
        assert unusual and unusual <= trained, prompt


def test_relations_hold_out_the_unusual_train_pairs_in_every_relation_sentence():
    # the default presets' set: the trained pairs, asked for in sentences never trained or
    # pretrained
    assert prompt_file("relations", "train") == prompt_file("unusual", "train")
    train = [parse(p) for p in load_prompts(prompt_file("relations", "train"))]
    test = load_prompts(prompt_file("relations", "test"))
    assert {(s.objects, s.relation) for s in map(parse, test)} == {
        (s.objects, relation) for s in train for relation in RELATIONS
    }
    assert len(meanings(test)) == len(test) == 4 * len(train)
    assert not meanings(pretraining_captions()) & meanings(test)


def test_unusual_held_out_prompts_all_ask_for_yellow_which_no_train_prompt_has():
    # what toyworld/prompts.py says of the default split
    train = load_prompts(prompt_file("unusual", "train"))
    test = load_prompts(prompt_file("unusual", "test"))
    assert "yellow" not in words(train)
    assert all("yellow" in p.split() for p in test)


def test_spatial_sets_cover_relations_and_counting():
    train = [parse(p) for p in load_prompts(prompt_file("spatial", "train"))]
    test = [parse(p) for p in load_prompts(prompt_file("spatial", "test"))]
    for specs in (train, test):
        assert any(spec.is_counting for spec in specs)
        assert any(spec.relation for spec in specs)
    assert {spec.relation for spec in test} - {None} == set(RELATIONS)
    assert "below" not in {spec.relation for spec in train}  # the unseen relation


def test_pretraining_captions_cover_words_but_not_test_meanings():
    captions = pretraining_captions()
    assert captions == pretraining_captions()
    assert len(set(captions)) == len(captions)
    singles = {f"a {c} {s}" for c in COLOURS for s in SHAPES}
    assert singles <= set(captions)
    assert set(load_prompts(prompt_file("all", "train"))) <= set(captions)
    assert set(BRIDGE_CAPTIONS) <= set(captions)
    test = load_prompts(prompt_file("all", "test"))
    assert not meanings(captions) & meanings(test)
    assert words(test) <= words(captions)
    assert {"two", "and", "left", "right", "above", "below"} <= words(captions)


def test_load_prompts_missing_file(tmp_path):
    path = tmp_path / "nope.txt"
    with pytest.raises(ValueError, match="nope.txt"):
        load_prompts(path)


@pytest.mark.parametrize("content", [b"", b"\n  \n"])
def test_load_prompts_empty_file(tmp_path, content):
    path = tmp_path / "empty.txt"
    path.write_bytes(content)
    with pytest.raises(ValueError, match="empty.txt.*no prompts"):
        load_prompts(path)


def test_load_prompts_not_utf8(tmp_path):
    path = tmp_path / "latin.txt"
    path.write_bytes("a red circle\na r\xe9d circle\n".encode("latin-1"))
    with pytest.raises(ValueError, match="latin.txt.*not UTF-8"):
        load_prompts(path)


def test_load_prompts_line_outside_grammar_names_the_line(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_text("a red circle\na purple circle\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad.txt:2: 'a purple circle'") as info:
        load_prompts(path)
    assert "\n" not in str(info.value)


def test_load_prompts_warns_on_duplicates_and_drops_them(tmp_path):
    path = tmp_path / "dup.txt"
    path.write_text("a red circle\ntwo blue squares\nA red  circle\n", encoding="utf-8")
    with pytest.warns(UserWarning, match="dup.txt.*'a red circle'"):
        prompts = load_prompts(path)
    assert prompts == ["a red circle", "two blue squares"]


def test_load_prompts_free_text_and_bom(tmp_path):
    path = tmp_path / "free.txt"
    path.write_bytes("\ufeffa cat riding a bike\n\na dog playing chess  \n".encode())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        prompts = load_prompts(path, in_grammar=False)
    assert prompts == ["a cat riding a bike", "a dog playing chess"]


def test_prompt_file_rejects_unknown_sets():
    with pytest.raises(ValueError, match="animals"):
        prompt_file("animals", "train")
