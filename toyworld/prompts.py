"""Prompt files of the toy world, and the captions the toy diffusion model is pretrained on.

The packaged sets (toyworld/prompts/<template>_<split>.txt) mirror the paper's templates:
train prompts for RL, unseen test prompts (held-out combinations of seen words) to measure
generalisation. "binding": two objects whose colour-shape pairs in test are unusual ones
(see NATURAL_BINDINGS); "spatial": relations and counting, test with the relation "below",
swapped object orders and unusual pairs; "all": both. "unusual": the binding test prompts
split in two (odd lines train, even lines test), five colour-shape combinations that are
not pretraining captions to train and five others held out: the default presets' set. The
build's late exposure (`toyworld.build_settings.BuildSettings.exposure`) shows the UNet the five
train ones after pretraining, less than a pretraining caption, so that the pretrained model
draws them sometimes (as Stable Diffusion has seen most of what it is asked for a little)
and RL has room; so five of the ten "binding" (and "all") test prompts are seen late by the
shipped UNet. Every "unusual" held-out prompt has a yellow object and no train prompt has
one (the yellow square, the unusual object of three of them, is never trained).
"recombine": the same ten prompts split so that every held-out prompt's unusual objects are
trained beside other partners (first five lines train, last five test), a test of
recombination. "relations" (the default presets' set): the "unusual" train prompts, held
out in relation sentences: each of the five trained pairs with "left of", "right of",
"above" and "below" (20 prompts, none a pretraining caption, none shown in the exposure):
new prompts for the pairs RL trained, where what RL teaches this model carries; to new
pairs it does not (docs/RESULTS.md).
"""

from __future__ import annotations

import warnings
from pathlib import Path

from toyworld.grammar import ObjectSpec, Spec, all_specs, caption, normalise, parse

PROMPTS_DIR = Path(__file__).parent / "prompts"
TEMPLATES = ("binding", "spatial", "all", "unusual", "recombine", "relations")
SPLITS = ("train", "test")
# sets that share another set's file for one split (one file per meaning, not a copy)
_SHARED = {("relations", "train"): ("unusual", "train")}

# The colour-shape pairs multi-object train prompts use, like the paper's natural fruit
# colours; the other four (red triangle, green square, blue circle, yellow square) appear in
# multi-object prompts only in test sets and, sparsely, in BRIDGE_CAPTIONS.
NATURAL_BINDINGS: frozenset[ObjectSpec] = frozenset(
    ObjectSpec(colour, shape)
    for colour, shapes in {
        "red": ("circle", "square"),
        "green": ("triangle", "circle"),
        "blue": ("square", "triangle"),
        "yellow": ("circle", "triangle"),
    }.items()
    for shape in shapes
)
# Sparse pretraining exposure to what the train prompts never say (the relation "below",
# unusual pairs next to another object), so that every test prompt is made of known pieces.
# None of them means the same as a test prompt.
BRIDGE_CAPTIONS = (
    "a yellow triangle below a green circle",
    "a blue square below a red circle",
    "a red triangle and a blue triangle",
    "a green square and a red circle",
)


def prompt_file(template: str, split: str) -> Path:
    if template not in TEMPLATES or split not in SPLITS:
        raise ValueError(
            f"no packaged prompt set {template!r}/{split!r}; templates {TEMPLATES}, splits {SPLITS}"
        )
    template, split = _SHARED.get((template, split), (template, split))
    return PROMPTS_DIR / f"{template}_{split}.txt"


def load_prompts(path: str | Path, in_grammar: bool = True) -> list[str]:
    """Prompts of a UTF-8 text file, one a line, in file order; blank lines are skipped.

    With `in_grammar` (the toy world), every line must parse and comes back in its canonical
    spelling (`caption(parse(line))`); without it (free-text prompts of the paper's sets),
    lines come back stripped. Duplicates warn and are dropped. A missing, empty or non-UTF-8
    file or a line outside the grammar raises ValueError naming the file."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise ValueError(f"cannot read prompt file {path}: {err.strerror}") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise ValueError(
            f"prompt file {path} is not UTF-8 (bad byte at offset {err.start})"
        ) from None
    prompts: list[str] = []
    for number, line in enumerate(text.splitlines(), start=1):
        prompt = line.strip()
        if not prompt:
            continue
        if in_grammar:
            try:
                prompt = caption(parse(prompt))
            except ValueError:
                raise ValueError(
                    f"{path}:{number}: {prompt!r} is outside the toy grammar"
                ) from None
        if prompt in prompts:
            warnings.warn(f"{path}: duplicate prompt {prompt!r} dropped", stacklevel=2)
            continue
        prompts.append(prompt)
    if not prompts:
        raise ValueError(f"prompt file {path} has no prompts")
    return prompts


def _natural(spec: Spec) -> bool:
    return all(obj in NATURAL_BINDINGS for obj in spec.objects)


def pretraining_captions() -> list[str]:
    """Captions the toy diffusion model is pretrained on, in a fixed order, without repeats.

    - every single-object caption (all 12 colour-shape pairs, unusual ones included: the
      model knows each object alone, as Stable Diffusion knows a white carrot's parts);
    - every two-object caption of NATURAL_BINDINGS with "and", "left of", "right of",
      "above" or counting, except those meaning the same as a test prompt (compared after
      `normalise`, so "X right of Y" is held out with "Y left of X");
    - the train prompts of all templates (already in the list above; kept explicitly);
    - BRIDGE_CAPTIONS: four captions, the only ones with "below" or an unusual pair beside
      another object.
    So every word is seen and no test prompt's meaning is: the pretrained model should do
    held-out prompts worse than train prompts, which is what RL generalisation is measured on.
    """
    held_out = {normalise(parse(p)) for p in load_prompts(prompt_file("all", "test"))}
    singles = [caption(spec) for spec in all_specs() if len(spec.objects) == 1]
    pairs = [
        caption(spec)
        for spec in all_specs()
        if len(spec.objects) == 2
        and _natural(spec)
        and spec.relation != "below"
        and normalise(spec) not in held_out
    ]
    train = load_prompts(prompt_file("all", "train"))
    return list(dict.fromkeys([*singles, *pairs, *train, *BRIDGE_CAPTIONS]))
