"""Bad input: non-zero exit, one line naming the problem, nothing written."""

from __future__ import annotations

import pytest
import yaml

from learner.main import main


def _write(tmp_path, data: dict, name="cfg.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture()
def base(tiny_pipeline_dir, tmp_path):
    return {
        "stages": 1,
        "output_dir": str(tmp_path / "out"),
        "model": {"pretrained": tiny_pipeline_dir, "device": "cpu"},
        "sampling": {"num_steps": 4, "branches": 2, "trunks_per_stage": 2},
        "schedule": {"kind": "constant", "start": 2, "end": 2},
        "rewards": [{"name": "jpeg_compressibility"}],
        "logging": {"mlflow": False},
    }


def _run(argv, capsys):
    code = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    return code, err


CASES = {
    "malformed yaml": (None, "malformed YAML"),
    "unknown key": ({"stagez": 2}, "unknown key 'stagez'"),
    "wrong type": ({"seed": "abc"}, "seed = 'abc'"),
    "branches < 1": ({"sampling": {"branches": 0}}, "sampling.branches = 0"),
    "split > steps": ({"schedule": {"kind": "constant", "start": 9, "end": 9}}, "exceeds"),
    "inverted thresholds": ({"selection": {"tau_pos": -1, "tau_neg": 1}}, "is above tau_pos"),
    "negative lr": ({"train": {"lr": -1}}, "train.lr = -1"),
    "unknown reward": ({"rewards": [{"name": "vibes"}]}, "rewards.0.name = 'vibes'"),
    "unknown algorithm": ({"algorithm": "grpo"}, "algorithm = 'grpo'"),
    "missing prompt file": ({"prompts": {"train": "nope.txt"}}, "prompts.train = 'nope.txt'"),
    "model dir missing": ({"model": {"pretrained": "/nonexistent/model"}}, "no such directory"),
    "not a pipeline": ({"model": {"pretrained": "configs"}}, "not a diffusers pipeline"),
    "gpu where none": ({"runtime": {"rollout_gpus": 1}}, "GPUs requested"),
    "clip checkpoint missing": (
        {"rewards": [{"name": "clip_score", "model": "ViT-B-32", "checkpoint": "x/y.safetensors"}]},
        "rewards.0.checkpoint",
    ),
    "pickle checkpoint": (
        {"rewards": [{"name": "clip_score", "model": "ViT-B-32", "checkpoint": "pyproject.toml"}]},
        "only .safetensors",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_one_line_nothing_written(case, base, tmp_path, capsys):
    change, needle = CASES[case]
    if change is None:
        path = tmp_path / "bad.yaml"
        path.write_text("stages: [1\n")
    else:
        data = dict(base)
        for k, v in change.items():
            data[k] = (
                {**data[k], **v} if isinstance(v, dict) and isinstance(data.get(k), dict) else v
            )
        path = _write(tmp_path, data)
    code, err = _run(["--config", str(path)], capsys)
    assert code == 2
    assert len(err) == 1 and err[0].startswith("error: ") and needle in err[0], err
    assert not (tmp_path / "out").exists()


def test_empty_and_non_utf8_prompt_files(base, tmp_path, capsys):
    (tmp_path / "empty.txt").write_text("\n")
    (tmp_path / "latin.txt").write_bytes(b"a red circle\n\xe9\n")
    for name, needle in (("empty.txt", "empty"), ("latin.txt", "not UTF-8")):
        data = {**base, "prompts": {"train": str(tmp_path / name), "test": str(tmp_path / name)}}
        code, err = _run(["--config", str(_write(tmp_path, data))], capsys)
        assert code == 2 and len(err) == 1 and needle in err[0], err
    assert not (tmp_path / "out").exists()


def test_resume_of_a_different_config_is_refused(base, tmp_path, capsys):
    run = tmp_path / "out" / "old"
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump({**base, "seed": 1}))
    code, err = _run(
        ["--config", str(_write(tmp_path, {**base, "seed": 2})), "--resume", str(run)], capsys
    )
    assert code == 2 and "differs from the given one at 'seed'" in err[0] and "--force" in err[0]
    assert sorted(p.name for p in run.iterdir()) == ["config.yaml"]


def test_non_finite_reward_from_a_custom_scorer(base, tmp_path, capsys, monkeypatch):
    (tmp_path / "my_scorers.py").write_text(
        "import numpy as np\n"
        "def broken(images, prompts):\n"
        "    r = np.zeros(len(prompts)); r[-1] = float('nan'); return r\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))  # the Ray workers import it too
    data = {**base, "rewards": [{"name": "custom", "model": "my_scorers:broken"}]}
    code, err = _run(["--config", str(_write(tmp_path, data))], capsys)
    assert code == 2 and "non-finite reward nan for prompt" in err[-1], err
    assert err[-1].startswith("error: ")
    assert not any((tmp_path / "out").iterdir())  # the failed run left nothing behind


def test_custom_scorer_path_must_be_importable(base, tmp_path, capsys):
    data = {**base, "rewards": [{"name": "custom", "model": "no_such_module:fn"}]}
    code, err = _run(["--config", str(_write(tmp_path, data))], capsys)
    assert code == 2 and "rewards.0.model = 'no_such_module:fn'" in err[-1], err
