"""The reward plug-in API: registered names at the config door, entry points of installed
packages, unique metric keys, and CLIPScore's preprocessing equal to open_clip's."""

from __future__ import annotations

import sys
import textwrap

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from configs.schema import RewardTerm
from rewards import registry
from rewards.composite import RewardModel, term_keys
from rewards.registry import Reward, RewardSetupError

PLUGIN = '''
import numpy as np
from rewards.registry import Reward

class Brightness(Reward):
    """Mean pixel value times options.scale; remembers what setup received."""

    def setup(self, term, device):
        self.scale = float(term.options.get("scale", 1.0))
        self.device = device

    def score(self, images, prompts):
        return self.scale * images.float().mean(dim=(1, 2, 3)).numpy()

def prompt_length(images, prompts):
    return np.array([len(p) for p in prompts], dtype=float)
'''


@pytest.fixture
def installed_plugin(tmp_path, monkeypatch):
    """A package installed the way pip leaves it: a module and a dist-info with entry points."""
    (tmp_path / "b2_test_plugin.py").write_text(PLUGIN)
    (tmp_path / "b2_broken_plugin.py").write_text("raise ImportError('needs torch 9')\n")
    info = tmp_path / "b2_test_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: b2-test-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(
        textwrap.dedent(f"""\
        [{registry.ENTRY_POINT_GROUP}]
        brightness = b2_test_plugin:Brightness
        prompt_length = b2_test_plugin:prompt_length
        broken = b2_broken_plugin:Thing
        clip_score = b2_test_plugin:Brightness
        """)
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    registry.refresh_entry_points()
    with pytest.warns(UserWarning, match="entry point 'clip_score' .* is ignored"):
        registry.known_names()  # read once here: a built-in name is not taken over
    yield
    monkeypatch.undo()
    for name in ("b2_test_plugin", "b2_broken_plugin"):
        sys.modules.pop(name, None)
    registry.refresh_entry_points()


def _batch(n: int = 4):
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 3, 8, 8), dtype=torch.uint8, generator=g)
    return images, [f"a prompt {'x' * i}" for i in range(n)]


def test_an_unknown_name_is_one_line_at_config_load_listing_the_known_ones(tmp_path):
    from configs.load import ConfigError, load_config

    with pytest.raises(ConfigError) as err:
        load_config(None, ["rewards=[{name: vibes}]"])
    msg = str(err.value)
    assert "\n" not in msg and "rewards.0.name = 'vibes': unknown reward; known: " in msg
    assert "clip_score" in msg and "remote" in msg and "jpeg_compressibility" in msg


def test_entry_point_rewards_are_named_in_config_and_set_up_with_device_and_term(
    installed_plugin,
):
    assert {"brightness", "prompt_length", "broken"} <= set(registry.known_names())
    terms = [
        RewardTerm(name="brightness", options={"scale": 2.0}, weight=0.5),
        RewardTerm(name="prompt_length"),
    ]
    model = RewardModel(terms, torch.device("cpu"))
    images, prompts = _batch()
    result = model.score(images, prompts)
    bright = 2.0 * images.float().mean(dim=(1, 2, 3)).double().numpy()
    lengths = np.array([len(p) for p in prompts], dtype=float)
    np.testing.assert_allclose(result.terms["brightness"], bright, rtol=1e-6)
    np.testing.assert_array_equal(result.terms["prompt_length"], lengths)
    np.testing.assert_allclose(result.total, 0.5 * bright + lengths, rtol=1e-6)
    assert model.scorers[0].device == torch.device("cpu") and model.scorers[0].where == "rewards.0"


def test_a_plugin_cannot_shadow_a_builtin_and_a_broken_one_fails_in_one_line(installed_plugin):
    from rewards.scorers import ClipScore

    assert registry.reward_class("clip_score") is ClipScore
    with pytest.raises(RewardSetupError) as err:
        RewardModel([RewardTerm(name="broken")])
    assert "\n" not in str(err.value)
    assert "reward 'broken': entry point 'b2_broken_plugin:Thing'" in str(err.value)
    assert "needs torch 9" in str(err.value)


def test_register_in_process_and_builtins_are_protected():
    class Half(Reward):
        def score(self, images, prompts):
            return np.full(len(prompts), 0.5)

    registry.register("half", Half)
    try:
        images, prompts = _batch(3)
        assert (
            RewardModel([RewardTerm(name="half")]).score(images, prompts).total.tolist()
            == [0.5] * 3
        )
    finally:
        registry.unregister("half")
    with pytest.raises(ValidationError, match="unknown reward"):
        RewardTerm(name="half")
    with pytest.raises(ValueError, match="built in"):
        registry.register("oracle", Half)


def test_terms_of_one_name_get_their_own_metric_keys():
    terms = [
        RewardTerm(name="jpeg_compressibility"),
        RewardTerm(name="jpeg_compressibility", weight=2.0),
        RewardTerm(name="jpeg_compressibility", label="jpeg_compressibility_2"),
        RewardTerm(name="jpeg_compressibility", label="sharp"),
    ]
    keys = ["jpeg_compressibility", "jpeg_compressibility_2", "jpeg_compressibility_2_2", "sharp"]
    assert term_keys(terms) == keys
    images, prompts = _batch()
    result = RewardModel(terms).score(images, prompts)
    assert list(result.terms) == keys
    one = result.terms["sharp"]
    np.testing.assert_array_equal(result.total, 5.0 * one)
    with pytest.raises(ValidationError, match="label"):
        RewardTerm(name="oracle", label="has space")


def test_custom_accepts_a_reward_class(monkeypatch, installed_plugin):
    term = RewardTerm(name="custom", model="b2_test_plugin:Brightness", options={"scale": 3})
    images, prompts = _batch(2)
    got = RewardModel([term]).score(images, prompts).terms["custom"]
    np.testing.assert_allclose(got, 3.0 * images.float().mean(dim=(1, 2, 3)).numpy(), rtol=1e-6)


def test_remote_terms_need_a_url_and_only_they_take_one():
    with pytest.raises(ValidationError, match="needs url"):
        RewardTerm(name="remote")
    with pytest.raises(ValidationError, match="url is for remote"):
        RewardTerm(name="oracle", url="http://127.0.0.1:1")
    with pytest.raises(ValidationError, match="url"):
        RewardTerm(name="remote", url="ftp://x")


def test_clip_preprocessing_is_open_clips_own_transform():
    """Non-square, larger-than-model images: the reward's input equals open_clip's preprocess
    of the same picture (shorter side resized with antialiasing, centre crop, normalise)."""
    import open_clip
    import torch.nn.functional as F
    from PIL import Image

    from rewards.scorers import ClipScore
    from toyworld.clip import ARCH, CHECKPOINT_NAME, CLIP_DIR

    term = RewardTerm(name="clip_score", model=ARCH, checkpoint=str(CLIP_DIR / CHECKPOINT_NAME))
    scorer = ClipScore(term, torch.device("cpu"))
    cfg = open_clip.transform.PreprocessCfg(**open_clip.get_model_preprocess_cfg(scorer.model))
    reference = open_clip.transform.image_transform_v2(cfg, is_train=False)
    g = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (3, 3, 70, 97), dtype=torch.uint8, generator=g)
    ours = scorer.preprocess(images)
    theirs = torch.stack([reference(Image.fromarray(im.permute(1, 2, 0).numpy())) for im in images])
    assert ours.shape == (3, 3, 32, 32)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=0)
    # a plain bicubic interpolation (no antialiasing) of noise is a different picture
    mean = torch.tensor(cfg.mean).view(1, 3, 1, 1)
    std = torch.tensor(cfg.std).view(1, 3, 1, 1)
    naive = F.interpolate(images[..., 13:83].float() / 255, size=(32, 32), mode="bicubic")
    assert ((naive.clamp(0, 1) - mean) / std - ours).abs().mean() > 0.1
