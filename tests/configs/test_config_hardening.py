"""Config input hardening: non-finite numbers, YAML alias bombs, duplicate keys, a directory
given as --config, seeds out of range, a CLIP reward without weights. Each is refused with
one line naming the file and the key."""

from __future__ import annotations

import time

import pytest

from configs.load import MAX_VALUES, ConfigError, load_config
from configs.schema import Config
from learner.main import main
from learner.preflight import check_clip_weights
from rewards.scorers import RewardSetupError


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("train.lr=inf", "train.lr = 'inf': Input should be a finite number"),
        ("train.lr=nan", "train.lr = 'nan': Input should be a finite number"),
        ("train.lr=.inf", "train.lr = inf: Input should be a finite number"),
        ("train.betas=[0.9, .nan]", "train.betas.1 = nan: Input should be a finite number"),
        ("sampling.eta=1e400", "sampling.eta = '1e400': Input should be a finite number"),
        ("rewards=[{name: oracle, weight: -.inf}]", "rewards.0.weight = -inf"),
        ("seed=18446744073709551616", "seed = 18446744073709551616: Input should be less than"),
        ("seed=-1", "seed = -1: Input should be greater than or equal to 0"),
    ],
)
def test_non_finite_numbers_and_out_of_range_seeds_are_refused(override, needle):
    with pytest.raises(ConfigError) as err:
        load_config(None, [override])
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_non_finite_number_in_a_file_is_refused(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  lr: .nan\n")
    with pytest.raises(ConfigError, match=r"c.yaml: train.lr = nan: Input should be a finite"):
        load_config(path)


def _alias_bomb(key: str, depth: int = 9) -> str:
    """`key` holding the classic "billion laughs": 9 ** depth values from ~depth lines."""
    lines = [f"{key}:", "  - &a0 [x, x, x, x, x, x, x, x, x]"]
    lines += [f"  - &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, depth)]
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("key", ["stages", "prompts", "train"])
def test_alias_bomb_under_a_known_key_is_refused_quickly(tmp_path, key):
    path = tmp_path / "bomb.yaml"
    path.write_text(_alias_bomb(key))
    t0 = time.perf_counter()
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert time.perf_counter() - t0 < 1.0
    msg = str(err.value)
    assert f"expands to more than {MAX_VALUES} values through YAML aliases" in msg
    assert msg.startswith(f"{path}: {key}.") and len(msg) < 200


def test_aliases_of_a_modest_size_still_work(tmp_path):
    path = tmp_path / "ok.yaml"
    path.write_text("train:\n  lora: &l {rank: 2, targets: [to_q, to_v]}\n  lr: 0.001\nstages: 3\n")
    cfg = load_config(path)
    assert (cfg.train.lora.rank, cfg.train.lora.targets) == (2, ["to_q", "to_v"])


def test_a_self_referring_alias_is_refused(tmp_path):
    path = tmp_path / "loop.yaml"
    path.write_text("train: &t\n  lora: *t\n")
    with pytest.raises(ConfigError, match=r"train.lora: a YAML alias refers to itself"):
        load_config(path)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("stages: 2\nseed: 1\nstages: 3\n", "duplicate key 'stages' (line 3; first at line 1)"),
        (
            "sampling:\n  branches: 3\ntrain:\n  lr: 0.1\nsampling:\n  num_steps: 10\n",
            "duplicate key 'sampling' (line 5; first at line 1)",
        ),
        ("sampling:\n  branches: 3\n  branches: 4\n", "duplicate key 'sampling.branches'"),
        ("rewards:\n  - {name: oracle, name: jpeg_compressibility}\n", "'rewards.0.name'"),
    ],
)
def test_duplicate_keys_and_repeated_sections_are_refused(tmp_path, text, needle):
    path = tmp_path / "dup.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(err.value).startswith(f"{path}: ") and needle in str(err.value)


def test_deeply_nested_yaml_is_one_line(tmp_path):
    path = tmp_path / "deep.yaml"
    path.write_text("stages: " + "[" * 1000 + "]" * 1000 + "\n")
    with pytest.raises(ConfigError, match="nested too deeply"):
        load_config(path)


def test_config_directory_is_one_line_and_exit_2(tmp_path, capsys):
    assert main(["--config", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: {tmp_path}: is a directory; --config takes a YAML file"]


def test_clip_score_without_weights_is_refused():
    cfg = Config.model_validate({"rewards": [{"name": "oracle"}, {"name": "clip_score"}]})
    with pytest.raises(RewardSetupError) as err:
        check_clip_weights(cfg)
    assert str(err.value).startswith("rewards.1.checkpoint = None: a clip_score term needs")
    with_tag = {"name": "clip_score", "model": "ViT-B-32", "checkpoint": "laion2b_s34b_b79k"}
    check_clip_weights(Config.model_validate({"rewards": [with_tag]}))  # accepted


def test_clip_score_without_weights_stops_training_before_anything_is_written(tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["--set", f"output_dir={out}", f"model.pretrained={tmp_path / 'no-model'}"]
    code = main([*argv, "rewards=[{name: clip_score, model: toy-clip}]"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err  # refused before the model is looked at
    assert err[0].startswith("error: rewards.0.checkpoint = None: a clip_score term needs")
    assert not out.exists()
