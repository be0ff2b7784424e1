"""PickScore and the LAION aesthetic predictor on tiny random weights of the same
architectures, saved to folders and loaded the way a user's would be."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from configs.schema import RewardTerm
from rewards.registry import RewardSetupError, build
from rewards.scorers import check_terms
from rewards.tiny import save_tiny_clip

TOY_CLIP = "toyworld/assets/clip/toy_clip.safetensors"


def _images(n: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return torch.randint(0, 256, (n, 3, 48, 40), generator=g, dtype=torch.uint8)


@pytest.fixture(scope="module")
def tiny_pickscore(tmp_path_factory) -> str:
    return str(save_tiny_clip(tmp_path_factory.mktemp("pickscore")))


def test_pickscore_is_scaled_cosine_of_the_clip_embeddings(tiny_pickscore):
    from PIL import Image
    from transformers import CLIPModel, CLIPProcessor

    reward = build(RewardTerm(name="pickscore", model=tiny_pickscore), torch.device("cpu"))
    images = _images(3)
    prompts = ["a red circle", "a blue square", "a red circle"]
    scores = reward(images, prompts)
    assert scores.shape == (3,) and np.isfinite(scores).all()

    # by hand, through the towers and projections (PickScore's own recipe)
    model = CLIPModel.from_pretrained(tiny_pickscore, use_safetensors=True).eval()
    proc = CLIPProcessor.from_pretrained(tiny_pickscore)
    pil = [Image.fromarray(im) for im in images.permute(0, 2, 3, 1).numpy()]
    with torch.no_grad():
        pix = proc(images=pil, return_tensors="pt")["pixel_values"]
        img = model.visual_projection(model.vision_model(pixel_values=pix).pooler_output)
        txt_in = proc(text=prompts, padding=True, return_tensors="pt")
        txt = model.text_projection(model.text_model(**txt_in).pooler_output)
        img, txt = img / img.norm(dim=-1, keepdim=True), txt / txt.norm(dim=-1, keepdim=True)
        expected = model.logit_scale.exp() * (img * txt).sum(-1)
    np.testing.assert_allclose(scores, expected.double().numpy(), rtol=1e-5, atol=1e-5)
    assert scores[0] != scores[2]  # same prompt, different images


def test_pickscore_refuses_pickle_only_and_missing_folders(tiny_pickscore, tmp_path):
    import shutil

    pickled = tmp_path / "pickled"
    shutil.copytree(tiny_pickscore, pickled)
    (pickled / "model.safetensors").rename(pickled / "pytorch_model.bin")
    with pytest.raises(RewardSetupError) as info:
        build(RewardTerm(name="pickscore", model=str(pickled)), torch.device("cpu"))
    msg = str(info.value)
    assert msg.startswith("rewards.0.model = ") and "safetensors" in msg and "\n" not in msg
    missing = RewardTerm(name="pickscore", model=str(tmp_path / "no"))
    with pytest.raises(RewardSetupError, match="rewards.0.model = .*no such model folder"):
        build(missing, torch.device("cpu"))
    with pytest.raises(RewardSetupError, match="rewards.0.model = .*no such model folder"):
        check_terms([missing])


def _head(path, widths, seed=0):
    """The LAION predictor's layout: layers 0, 2, 4, 6, 7 (dropouts between carry no
    weights), here over a narrower input."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for index, (a, b) in zip((0, 2, 4, 6, 7), zip(widths, widths[1:], strict=False), strict=False):
        state[f"layers.{index}.weight"] = torch.randn(b, a, generator=g) / a**0.5
        state[f"layers.{index}.bias"] = torch.randn(b, generator=g)
    save_file(state, str(path))
    return state


def test_aesthetic_is_the_mlp_over_normalised_clip_embeddings(tmp_path):
    from rewards.scorers import ClipScore

    clip_term = RewardTerm(name="clip_score", model="toy-clip", checkpoint=TOY_CLIP)
    clip = ClipScore(clip_term, torch.device("cpu"))
    width = clip.model.visual.output_dim
    state = _head(tmp_path / "head.safetensors", [width, 24, 12, 8, 4, 1])
    term = RewardTerm(
        name="aesthetic",
        model="toy-clip",
        checkpoint=TOY_CLIP,
        options={"head": str(tmp_path / "head.safetensors")},
    )
    reward = build(term, torch.device("cpu"))
    images = _images(4)
    scores = reward(images, ["ignored"] * 4)
    x = clip.embed_images(images)
    for i in (0, 2, 4, 6, 7):
        x = x @ state[f"layers.{i}.weight"].T + state[f"layers.{i}.bias"]
    np.testing.assert_allclose(scores, x[:, 0].double().numpy(), rtol=1e-5, atol=1e-5)
    assert len(set(scores.round(6))) == 4


def test_aesthetic_head_is_checked(tmp_path):
    base = {"name": "aesthetic", "model": "toy-clip", "checkpoint": TOY_CLIP}
    (tmp_path / "head.pth").write_bytes(b"\x80\x04pickle")
    cases = {
        None: "options.head = None: the MLP's .safetensors file is needed",
        str(tmp_path / "head.pth"): "only .safetensors files are loaded",
        str(tmp_path / "none.safetensors"): "no such file",
    }
    _head(tmp_path / "wide.safetensors", [7, 3, 1])
    cases[str(tmp_path / "wide.safetensors")] = "the MLP takes 7 inputs, toy-clip embeds"
    for head, message in cases.items():
        term = RewardTerm(**base, options={} if head is None else {"head": head})
        with pytest.raises(RewardSetupError, match=message) as info:
            build(term, torch.device("cpu"))
        assert str(info.value).startswith("rewards.0.options.head")
        if "inputs" not in message:  # found before any model loads (learner.preflight)
            with pytest.raises(RewardSetupError, match=message):
                check_terms([RewardTerm(name="clip_score", model="toy-clip"), term])
