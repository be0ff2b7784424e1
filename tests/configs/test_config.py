import subprocess
import sys
from pathlib import Path

import pytest
import torch

from configs.load import PRESET_DIR, ConfigError, dump_config, flatten, load_config
from configs.schema import Config
from diffusion import pipeline
from diffusion.pipeline import PipelineLoadError, load_model, set_tf32
from learner.prompts import PromptFileError, load_prompts

PRESETS = sorted(PRESET_DIR.glob("*.yaml")) + sorted(PRESET_DIR.glob("ablations/*.yaml"))


def test_presets_validate():
    names = {p.stem for p in PRESETS}
    assert {"toy_b2", "toy_ddpo", "toy_sd3_b2", "toy_sd3_ddpo", "sd14_b2", "sd14_ddpo"} <= names
    for p in PRESETS:
        load_config(p)
    sd = load_config(PRESET_DIR / "sd14_b2.yaml")
    assert sd.model.pretrained == "CompVis/stable-diffusion-v1-4"
    assert (sd.sampling.num_steps, sd.sampling.eta, sd.sampling.guidance_scale) == (20, 1.0, 5.0)
    assert (sd.sampling.branches, sd.schedule.start, sd.schedule.end, sd.stages) == (5, 14, 20, 100)
    assert (sd.selection.tau_pos, sd.selection.tau_neg, sd.advantage.history) == (0.5, -0.5, 8)
    assert (sd.loss.clip_range, sd.train.lr) == (0.1, 1e-4)
    assert (sd.rewards[0].model, sd.rewards[0].checkpoint) == ("ViT-H-14", "laion2b_s32b_b79k")
    ddpo = load_config(PRESET_DIR / "sd14_ddpo.yaml")
    assert (
        ddpo.sampling.trunks_per_stage * ddpo.sampling.branches == sd.sampling.trunks_per_stage * 5
    )


def test_default_is_the_toy_b2_preset_and_overrides_apply():
    cfg = load_config(None, ["stages=2", "sampling.branches=3", "output_dir=/tmp/x", "seed=7"])
    assert (cfg.stages, cfg.sampling.branches, cfg.output_dir, cfg.seed) == (2, 3, "/tmp/x", 7)
    assert cfg.algorithm == "b2"


def test_resolved_config_round_trips(tmp_path):
    cfg = load_config(None, ["stages=3"])
    path = tmp_path / "config.yaml"
    path.write_text(dump_config(cfg))
    assert load_config(path) == cfg
    assert flatten(cfg)["sampling.branches"] == str(cfg.sampling.branches)


@pytest.mark.parametrize(
    ("text", "overrides", "needle"),
    [
        ("stages: [1\n", [], "malformed YAML"),
        ("stagez: 3\n", [], "unknown key 'stagez'"),
        ("sampling:\n  brnches: 3\n", [], "unknown key 'sampling.brnches'"),
        ("stages: many\n", [], "stages = 'many'"),
        ("sampling:\n  branches: 0\n", [], "sampling.branches = 0"),
        ("", ["schedule.end=40"], "schedule.end=40 exceeds sampling.num_steps=20"),
        ("", ["selection.tau_pos=-1", "selection.tau_neg=1"], "tau_neg=1.0 is above tau_pos=-1.0"),
        ("", ["advantage.group_scale=prompt"], "group_scale=prompt applies to advantage.mode"),
        ("", ["train.lr=-0.1"], "train.lr = -0.1"),
        ("", ["loss.name=reinforce"], "loss.name = 'reinforce'"),
        ("", ["rewards=[{name: vibes}]"], "rewards.0.name = 'vibes'"),
        ("", ["algorithm=grpo"], "algorithm = 'grpo'"),
        ("- 1\n", [], "top level must be a mapping"),
    ],
)
def test_bad_config_is_one_line_naming_file_key_value(tmp_path, text, overrides, needle):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(path, overrides)
    msg = str(err.value)
    assert "\n" not in msg and str(path) in msg and needle in msg, msg


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        (["sampling.branches=1"], "sampling.branches=1: selection.mode=extremes"),
        (
            ["sampling.branches=1", "selection.mode=all"],
            "sampling.branches=1: advantage.mode=group",
        ),
        (["loss.beta_pos=0", "loss.beta_neg=0"], "loss.beta_pos=0 and loss.beta_neg=0"),
        (
            ["selection.tau_pos=1.8", "selection.tau_neg=-1.8"],
            "within +-1.73",  # the preset's 4 branches: standardised advantages <= sqrt(3)
        ),
        (["sampling.branches=2", "selection.tau_pos=1.01", "loss.name=pairwise"], "+-1"),
    ],
)
def test_a_config_that_can_train_nothing_is_refused(overrides, needle):
    with pytest.raises(ConfigError) as err:
        load_config(None, overrides)
    msg = str(err.value)
    assert needle in msg and msg.endswith("no sample could ever be trained"), msg


def test_a_config_that_trains_on_one_side_is_accepted():
    # no positives can pass tau_pos=1.8 with 4 branches, but the worst branches still train
    assert load_config(None, ["selection.tau_pos=1.8"]).selection.tau_neg == -0.5
    assert load_config(None, ["sampling.branches=2"]).sampling.branches == 2


def test_missing_and_non_utf8_config(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    p = tmp_path / "latin.yaml"
    p.write_bytes(b"seed: 1 # caf\xe9\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(p)


def test_prompt_files(tmp_path):
    assert len(load_prompts("configs/prompts/animals_activities_train.txt")) == 45
    assert len(load_prompts("configs/prompts/animals_activities_test.txt")) == 90
    with pytest.raises(PromptFileError, match="not found"):
        load_prompts(tmp_path / "none.txt")
    (tmp_path / "empty.txt").write_text("\n  \n")
    with pytest.raises(PromptFileError, match="empty"):
        load_prompts(tmp_path / "empty.txt")
    (tmp_path / "bin.txt").write_bytes(b"a cat\n\xff\xfe\n")
    with pytest.raises(PromptFileError, match="not UTF-8"):
        load_prompts(tmp_path / "bin.txt")
    (tmp_path / "dup.txt").write_text("a cat\na dog\na cat\n")
    with pytest.warns(UserWarning, match="duplicate prompt 'a cat'"):
        assert load_prompts(tmp_path / "dup.txt") == ["a cat", "a dog"]


def test_offline_hub_id_says_what_to_download(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cfg = Config().model.model_copy(update={"pretrained": "CompVis/stable-diffusion-v1-4"})
    with pytest.raises(PipelineLoadError) as err:
        load_model(cfg)
    msg = str(err.value)
    assert (
        "huggingface-cli download CompVis/stable-diffusion-v1-4" in msg
        and "model.pretrained=DIR" in msg
    )


def test_not_a_pipeline_dir(tmp_path):
    cfg = Config().model.model_copy(update={"pretrained": str(tmp_path)})
    with pytest.raises(PipelineLoadError, match="not a diffusers pipeline"):
        load_model(cfg)
    cfg = Config().model.model_copy(update={"pretrained": str(tmp_path / "missing")})
    with pytest.raises(PipelineLoadError, match="no such directory"):
        load_model(cfg)


def test_packages_import_without_ray():
    code = (
        "import sys, configs, learner, actors, rewards, diffusion, toyworld\n"
        "import diffusion.sampler, learner.update, learner.stage\n"
        "assert 'ray' not in sys.modules, 'the core must not import ray'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[2])


@pytest.fixture()
def tf32_flags():
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def test_tf32_is_off_on_cuda_unless_the_config_allows_it(tf32_flags):
    assert Config().model.allow_tf32 is False
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    set_tf32(torch.device("cpu"), False)  # the CPU has no TF32: nothing changes
    assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
    set_tf32(torch.device("cuda"), False)
    assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
    set_tf32(torch.device("cuda", 0), True)
    assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32


def test_load_model_applies_allow_tf32(monkeypatch, tiny_pipeline_dir):
    seen = []
    monkeypatch.setattr(pipeline, "set_tf32", lambda device, allow: seen.append((device, allow)))
    cfg = Config().model.model_copy(update={"pretrained": str(tiny_pipeline_dir)})
    load_model(cfg, torch.device("cpu"))
    load_model(cfg.model_copy(update={"allow_tf32": True}), torch.device("cpu"))
    assert seen == [(torch.device("cpu"), False), (torch.device("cpu"), True)]
