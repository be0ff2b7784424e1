"""BERTScore with a transformers captioner: a tiny random BLIP saved as a user's folder is
loaded by the project, captions one string per image, and the bert_score term scores them."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from configs.schema import RewardTerm
from rewards.captioner import TransformersCaptioner, load_captioner
from rewards.registry import RewardSetupError, build
from rewards.scorers import check_terms
from rewards.tiny import save_tiny_blip, save_tiny_llava


@pytest.fixture(scope="module")
def tiny_blip(tmp_path_factory) -> str:
    folder = save_tiny_blip(tmp_path_factory.mktemp("blip"))
    assert (folder / "model.safetensors").is_file() and not list(folder.glob("*.bin"))
    return str(folder)


def _images(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, 40, 40), generator=g, dtype=torch.uint8)


def test_blip_captions_one_string_per_image_in_batches(tiny_blip):
    term = RewardTerm(
        name="bert_score",
        captioner=tiny_blip,
        options={"captioner_batch_size": 2, "captioner_max_tokens": 5},
    )
    caption = load_captioner(term, torch.device("cpu"), "rewards.0")
    assert isinstance(caption, TransformersCaptioner) and caption.blip
    images = _images(5)
    captions = caption(images)
    assert len(captions) == 5 and all(isinstance(c, str) and c for c in captions)
    # greedy: an image's caption does not depend on its batch
    assert caption(images[3:4]) == captions[3:4]


def test_bert_score_term_scores_blip_captions(tiny_blip):
    term = RewardTerm(name="bert_score", captioner=tiny_blip, options={"captioner_max_tokens": 6})
    reward = build(term, torch.device("cpu"))
    images = _images(3)
    prompts = ["a red cat", "a blue dog", "two birds"]
    scores = reward(images, prompts)
    assert scores.shape == (3,) and np.isfinite(scores).all()
    # the same F1 as BERTScore of the captions the captioner writes
    _, _, f1 = reward.scorer.score(reward.caption(images), prompts, verbose=False)
    np.testing.assert_allclose(scores, f1.double().numpy())


def test_llava_style_model_is_asked_through_its_chat_template(tmp_path):
    folder = save_tiny_llava(tmp_path / "llava")
    term = RewardTerm(
        name="bert_score",
        captioner=str(folder),
        options={"captioner_prompt": "What is shown?", "captioner_max_tokens": 4},
    )
    caption = load_captioner(term, torch.device("cpu"), "rewards.0")
    assert not caption.blip
    assert caption.text == "USER: <image>\nWhat is shown?\nASSISTANT:"
    images = _images(3, seed=1)
    captions = caption(images)
    assert len(captions) == 3 and all(isinstance(c, str) and c for c in captions)
    assert "USER" not in " ".join(captions)  # only the generated tokens are kept
    assert caption(images[1:2]) == captions[1:2]
    scores = build(term, torch.device("cpu"))(images, ["a", "b", "c"])
    assert scores.shape == (3,) and np.isfinite(scores).all()


def test_toy_captioner_is_the_default():
    from toyworld.render import render_prompt

    reward = build(RewardTerm(name="bert_score"), torch.device("cpu"))
    prompt = "a red circle"
    image = torch.from_numpy(render_prompt(prompt, seed=0)).permute(2, 0, 1)[None]
    assert reward.caption(image) == [prompt]
    assert reward(image, [prompt])[0] == pytest.approx(1.0, abs=1e-4)


def test_bad_captioners_are_one_line(tmp_path):
    missing = RewardTerm(name="bert_score", captioner=str(tmp_path / "nope"))
    with pytest.raises(RewardSetupError, match=r"^rewards.0.captioner = .*no such model folder"):
        check_terms([missing])
    (tmp_path / "empty").mkdir()
    empty = RewardTerm(name="bert_score", captioner=str(tmp_path / "empty"))
    with pytest.raises(RewardSetupError) as info:
        build(empty, torch.device("cpu"))
    assert str(info.value).startswith("rewards.0.captioner = ") and "\n" not in str(info.value)
    bad = RewardTerm(name="bert_score", captioner="org/x", options={"captioner_max_tokens": 0})
    with pytest.raises(RewardSetupError, match="options.captioner_max_tokens = 0: must be >= 1"):
        load_captioner(bad, torch.device("cpu"), "rewards.0")
