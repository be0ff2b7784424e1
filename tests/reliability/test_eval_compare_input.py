"""Bad input to `learner.evaluate` and `learner.compare`: one line, exit 2, found before
any image is sampled, and no output half-written."""

from __future__ import annotations

import json

import pytest
import torch

from configs.load import dump_config
from configs.schema import Config
from learner import checkpoint
from learner.compare import main as compare_main
from learner.evaluate import MAX_IMAGES_PER_SPLIT
from learner.evaluate import main as evaluate_main


def _cfg(tmp_path) -> Config:
    # a model that does not exist: a command that got as far as sampling would say so
    return Config.model_validate(
        {
            "output_dir": str(tmp_path / "runs"),
            "model": {"pretrained": str(tmp_path / "no-model"), "device": "cpu"},
            "prompts": {
                "train": "toyworld/prompts/binding_train.txt",
                "test": "toyworld/prompts/binding_test.txt",
            },
            "rewards": [{"name": "oracle"}],
            "logging": {"mlflow": False},
        }
    )


def _config_file(tmp_path):
    path = tmp_path / "cfg.yaml"
    path.write_text(dump_config(_cfg(tmp_path)))
    return path


def _run(tmp_path, name: str, corrupt: bool = False):
    """A run directory with config, metrics and one stage checkpoint (its LoRA's last byte
    flipped where `corrupt`)."""
    run = tmp_path / "runs" / name
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(dump_config(_cfg(tmp_path)))
    (run / "metrics.jsonl").write_text(json.dumps({"step": 0, "images": 4, "reward_mean": 0.5}))
    p = torch.nn.Parameter(torch.ones(2))
    state = checkpoint.LearnerState(
        0, 2, 1, {"w.lora_A.default.weight": torch.ones(2, 2)},
        torch.optim.AdamW([p]).state_dict(), {"mode": "prompt_history", "memory": {}},
        torch.get_rng_state(),
    )  # fmt: skip
    path = checkpoint.save(run, state) / "lora.safetensors"
    if corrupt:
        data = bytearray(path.read_bytes())
        data[-1] ^= 0xFF
        path.write_bytes(bytes(data))
    return run


def _one_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


@pytest.mark.parametrize("existing", [False, True])
def test_compare_with_a_corrupt_lora_writes_nothing(tmp_path, capsys, existing):
    good, bad = _run(tmp_path, "good"), _run(tmp_path, "bad", corrupt=True)
    out = tmp_path / "cmp"
    if existing:
        out.mkdir()
        (out / "comparison.md").write_text("an earlier comparison")
    assert compare_main([str(good), str(bad), "--out", str(out)]) == 2
    assert "lora.safetensors: checksum does not match" in _one_line(capsys)
    if existing:
        assert [p.name for p in out.iterdir()] == ["comparison.md"]
        assert (out / "comparison.md").read_text() == "an earlier comparison"
    else:
        assert not out.exists()


def test_compare_out_a_file_or_under_one(tmp_path, capsys):
    run = _run(tmp_path, "a")
    afile = tmp_path / "afile"
    afile.write_text("x")
    assert compare_main([str(run), "--out", str(afile), "--no-images"]) == 2
    assert _one_line(capsys) == f"error: --out {afile}: is a file; give a directory"
    assert compare_main([str(run), "--out", str(afile / "sub"), "--no-images"]) == 2
    assert f"--out {afile / 'sub'}: cannot write the comparison" in _one_line(capsys)
    assert afile.read_text() == "x"


def test_compare_writes_its_files_when_all_is_well(tmp_path, capsys):
    out = tmp_path / "cmp"
    assert compare_main([str(_run(tmp_path, "a")), "--out", str(out), "--no-images"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["comparison.md", "eval.png", "reward.png"]


@pytest.mark.parametrize(
    ("flags", "needle"),
    [
        (["--images-per-prompt", "1000000000000"], "--images-per-prompt 1000000000000: at most"),
        (["--images-per-split", str(MAX_IMAGES_PER_SPLIT + 1)], "--images-per-split 20001"),
        (["--images-per-prompt", "5000"], "images for the"),
    ],
)
def test_evaluate_image_counts_are_bounded(tmp_path, capsys, flags, needle):
    argv = ["--checkpoint", "base", "--config", str(_config_file(tmp_path)), *flags]
    assert evaluate_main(argv) == 2
    line = _one_line(capsys)
    assert needle in line and f"at most {MAX_IMAGES_PER_SPLIT} images per split" in line


def test_evaluate_unwritable_output_is_found_before_sampling(tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("x")
    base = ["--checkpoint", "base", "--config", str(_config_file(tmp_path))]
    assert evaluate_main([*base, "--json", str(afile / "out.json")]) == 2
    assert f"error: {afile}: cannot write the evaluation there" in _one_line(capsys)
    assert evaluate_main([*base, "--json", str(tmp_path)]) == 2
    assert _one_line(capsys) == f"error: {tmp_path}: is a directory; --json takes a file name"
    assert evaluate_main([*base, "--set", f"output_dir={afile}"]) == 2  # default: OUT/eval/
    assert "cannot write the evaluation there" in _one_line(capsys)
    # where it can write, it goes on to sampling: here the missing model
    assert evaluate_main([*base, "--json", str(tmp_path / "ok" / "out.json")]) == 2
    assert "no-model" in _one_line(capsys)
