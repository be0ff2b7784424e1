"""Checkpoints: atomic writes, checksums, survivable tracking failures."""

from __future__ import annotations

import pytest
import torch

from learner import checkpoint
from learner.checkpoint import CheckpointError, LearnerState


def _state(stage: int) -> LearnerState:
    p = torch.nn.Parameter(torch.ones(3))
    opt = torch.optim.AdamW([p], lr=0.1)
    p.grad = torch.ones(3)
    opt.step()
    return LearnerState(
        stage,
        4,
        stage + 1,
        {"w.lora_A.default.weight": torch.full((2, 2), stage)},
        opt.state_dict(),
        {"mode": "prompt_history", "memory": {"p": [[1.0]]}},
        torch.get_rng_state(),
    )


def test_round_trip_and_latest(tmp_path):
    checkpoint.save(tmp_path, _state(0))
    checkpoint.save(tmp_path, _state(1))
    last = checkpoint.latest(tmp_path)
    assert last.name == "stage_0001"
    got = checkpoint.load(last)
    assert got.stage == 1 and got.version == 2 and got.advantages["memory"] == {"p": [[1.0]]}
    assert torch.equal(got.lora["w.lora_A.default.weight"], torch.full((2, 2), 1.0))
    p = torch.nn.Parameter(torch.ones(3))
    opt = torch.optim.AdamW([p], lr=0.1)
    opt.load_state_dict(got.optimizer)  # a real optimizer accepts it
    assert torch.equal(
        opt.state_dict()["state"][0]["exp_avg"], _state(0).optimizer["state"][0]["exp_avg"]
    )


def test_crash_while_writing_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    checkpoint.save(tmp_path, _state(0))
    calls = []

    def failing_save(tensors, path):
        calls.append(path)
        if len(calls) == 2:
            raise OSError("disk full")
        from safetensors.torch import save_file

        save_file(tensors, path)

    monkeypatch.setattr(checkpoint, "save_file", failing_save)
    with pytest.raises(OSError, match="disk full"):
        checkpoint.save(tmp_path, _state(1))
    assert checkpoint.latest(tmp_path).name == "stage_0000"
    assert [p.name for p in (tmp_path / "stages").iterdir()] == ["stage_0000"]  # no leftovers
    assert checkpoint.load(checkpoint.latest(tmp_path)).stage == 0


def test_tampered_checkpoint_is_refused(tmp_path):
    path = checkpoint.save(tmp_path, _state(0))
    data = bytearray((path / "lora.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (path / "lora.safetensors").write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="checksum does not match"):
        checkpoint.load(path)


def test_unreachable_mlflow_is_reported_once_and_metrics_kept(tmp_path, monkeypatch, capsys):
    from configs.schema import Config
    from learner.tracking import Tracker

    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    tracker = Tracker(Config(), tmp_path, "r")
    for step in range(3):
        tracker.metrics(step, {"reward_mean": float(step)})
    tracker.finish()
    err = capsys.readouterr().err
    assert err.count("MLflow unavailable") == 1
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 3
