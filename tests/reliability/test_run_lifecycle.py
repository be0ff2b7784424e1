"""A run's lifecycle without Ray: its directory claimed once, resume that keeps the run the
same run, summaries and metrics after a resume, broken checkpoints, disks and signals."""

from __future__ import annotations

import errno
import json
import os
import signal
import threading
from pathlib import Path

import pytest
import ray
import torch
import yaml

from configs.load import dump_config, load_config
from diffusion.lora import attach_lora, lora_state
from learner import checkpoint, outputs, resume, run, stage_loop
from learner.checkpoint import LearnerState, TrainingDiverged
from learner.main import main
from learner.outputs import OutputError


@pytest.fixture()
def base(tiny_pipeline_dir, tmp_path):
    return {
        "stages": 2,
        "output_dir": str(tmp_path / "out"),
        "run_name": "same",
        "model": {"pretrained": tiny_pipeline_dir, "device": "cpu"},
        "sampling": {"num_steps": 4, "branches": 2, "trunks_per_stage": 2},
        "schedule": {"kind": "constant", "start": 2, "end": 2},
        "rewards": [{"name": "jpeg_compressibility"}],
        "logging": {"mlflow": False, "grid_every": 0},
    }


def _write(tmp_path, data, name="cfg.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


def _main(argv, capsys) -> tuple[int, list[str]]:
    code = main([str(a) for a in argv])
    return code, capsys.readouterr().err.strip().splitlines()


@pytest.fixture()
def finished(base, tmp_path, tiny_model):
    """A finished two-stage run as the driver leaves it: two checkpoints with a real LoRA of
    the tiny UNet, metrics.jsonl, summary.json and config.yaml."""
    cfg = load_config(_write(tmp_path, base))
    run_dir = tmp_path / "out" / "same"
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text(dump_config(cfg))
    attach_lora(tiny_model.unet, cfg.train.lora)
    p = torch.nn.Parameter(torch.ones(2))
    opt = torch.optim.AdamW([p], lr=cfg.train.lr)
    for stage in range(2):
        lora = {k: v + 0.01 * (stage + 1) for k, v in lora_state(tiny_model.unet).items()}
        memory = {"mode": "prompt_history", "next_stage": stage + 1, "stages": []}
        state = LearnerState(stage, 2, stage + 1, lora, opt.state_dict(), memory, torch.ones(3))
        checkpoint.save(run_dir, state)
        with open(run_dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps({"step": stage, "loss": 0.5 + stage, "reward_mean": -1.0}) + "\n")
    (run_dir / "summary.json").write_text(
        json.dumps({"stages_completed": 2, "final_metrics": {"loss": 1.5, "reward_mean": -1.0}})
    )
    return run_dir


# Finding 1: a run directory is claimed atomically


def test_a_second_run_with_the_same_name_is_refused_before_training(base, tmp_path, capsys):
    cfg = load_config(_write(tmp_path, base))
    _, first, _ = run.prepare(cfg, None, [], False)
    assert first.is_dir() and (first / "config.yaml").is_file()
    code, err = _main(["--config", _write(tmp_path, base)], capsys)
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith("error: ") and f"run directory {first} exists" in err[0]
    assert not ray.is_initialized()  # refused before Ray, actors or a stage
    assert sorted(p.name for p in first.iterdir()) == ["config.yaml"]


def test_concurrent_claims_get_one_directory_each(tmp_path):
    """Eight runs claim at once: a given name goes to exactly one of them; generated names
    that collide (two runs started in the same second) get a suffix each."""
    for generated in (False, True):
        got, errors, gate = [], [], threading.Barrier(8)

        def claim(generated=generated, got=got, errors=errors, gate=gate):
            gate.wait()
            try:
                got.append(
                    outputs.claim_run_dir(str(tmp_path / "out"), f"r{generated}", generated, "")
                )
            except OutputError as exc:
                errors.append(str(exc))

        threads = [threading.Thread(target=claim) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if generated:
            assert len(set(got)) == 8 and not errors
            assert {p.name for p in got} == {"rTrue", *(f"rTrue-{n}" for n in range(2, 9))}
        else:
            assert len(got) == 1 and len(errors) == 7 and "exists" in errors[0]


def test_per_second_default_names_do_not_share_a_directory(base, tmp_path, monkeypatch):
    class Frozen:  # every run starts in the same second
        @staticmethod
        def now(tz):
            from datetime import datetime

            return datetime(2026, 1, 2, 3, 4, 5, tzinfo=tz)

    monkeypatch.setattr(run, "datetime", Frozen)
    cfg = load_config(_write(tmp_path, {**base, "run_name": None}))
    dirs = [run.prepare(cfg, None, [], False)[1] for _ in range(3)]
    assert [d.name for d in dirs] == [
        "b2-20260102-030405-s0",
        "b2-20260102-030405-s0-2",
        "b2-20260102-030405-s0-3",
    ]


# Finding 2: --resume --set keeps the training config unless --force


def test_resume_with_set_cannot_change_training_without_force(finished, capsys):
    before = (finished / "config.yaml").read_bytes()
    code, err = _main(["--resume", finished, "--set", "train.lr=0.5"], capsys)
    assert code == 2 and len(err) == 1, err
    assert "--set changes how it trains, at 'train'" in err[0] and "--force" in err[0]
    assert (finished / "config.yaml").read_bytes() == before
    cfg, _, _ = run.prepare(None, finished, ["stages=3", "logging.grid_every=1"], False)
    assert cfg.stages == 3  # how long and how it logs may change
    cfg, _, _ = run.prepare(None, finished, ["train.lr=0.5"], True)
    assert cfg.train.lr == 0.5


def test_forced_resume_keeps_the_config_it_trained_with(finished):
    before = (finished / "config.yaml").read_text()
    cfg, _, _ = run.prepare(None, finished, ["train.lr=0.5"], True)
    resume.save_config(finished, cfg, 2)
    assert (finished / "config.until_stage_0001.yaml").read_text() == before
    assert load_config(finished / "config.yaml").train.lr == 0.5
    cfg, _, _ = run.prepare(None, finished, ["stages=4"], False)
    resume.save_config(finished, cfg, 2)  # a resumable key: config.yaml simply follows
    assert load_config(finished / "config.yaml").stages == 4
    assert sorted(p.name for p in finished.glob("config*.yaml")) == [
        "config.until_stage_0001.yaml",
        "config.yaml",
    ]


# Finding 3 (the run's half): a diverged stage stops the run before anything is saved


def test_non_finite_loss_or_lora_stops_the_run(finished, base, tmp_path):
    cfg = load_config(_write(tmp_path, base))
    last = checkpoint.latest(finished)
    stage_loop.check_finite(cfg, finished, 2, {"loss": 0.1}, checkpoint.load(last))  # goes on
    for loss, poison in ((float("nan"), False), (0.1, True), (float("inf"), False)):
        state = checkpoint.load(last)
        if poison:
            state.lora[next(iter(state.lora))][0, 0] = float("nan")
        with pytest.raises(TrainingDiverged) as info:
            stage_loop.check_finite(cfg, finished, 2, {"loss": loss}, state)
        msg = str(info.value)
        assert "\n" not in msg and msg.startswith("stage 3: training diverged")
        assert "the LoRA holds non-finite values" in msg if poison else f"loss is {loss}" in msg
        assert f"last good checkpoint is {finished / 'stages' / 'stage_0001'}" in msg
        assert "train.lr" in msg
    fp16 = cfg.model_copy(update={"model": cfg.model.model_copy(update={"autocast": "fp16"})})
    good = checkpoint.load(checkpoint.latest(finished))
    stage_loop.check_finite(fp16, finished, 2, {"loss": float("inf")}, good)  # the scaler skips it


# Finding 5: the summary of a resume says what the run has done


def test_resuming_a_finished_run_keeps_its_summary(finished, capsys):
    code, _ = _main(["--resume", finished], capsys)
    assert code == 0 and not ray.is_initialized()  # nothing to train: no Ray
    summary = json.loads((finished / "summary.json").read_text())
    assert summary["stages_completed"] == 2
    assert summary["final_metrics"] == {"loss": 1.5, "reward_mean": -1.0}
    assert summary["split_step"] == 2
    assert (finished / "lora" / "pytorch_lora_weights.safetensors").is_file()
    cfg, run_dir, resuming = run.prepare(None, finished, ["stages=1"], False)
    summary = run.execute(cfg, run_dir, resuming)
    assert summary["stages_completed"] == 2  # the LoRA has two stages, whatever stages says
    assert json.loads((finished / "summary.json").read_text())["stages_completed"] == 2


def test_a_disk_that_fills_up_during_a_resume_is_one_line(finished, monkeypatch):
    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(outputs.os, "fsync", full)  # summary.json is the write that fails
    with pytest.raises(OutputError) as info:
        run.execute(*run.prepare(None, finished, [], False))
    assert str(info.value).endswith(
        f"No space left on device; the run stopped; continue with --resume {finished} once "
        "it is fixed"
    )
    assert checkpoint.latest(finished).name == "stage_0001"  # the checkpoints stay


# Finding 9: a metrics.jsonl cut mid-line is repaired before a resume appends to it


def test_metrics_cut_mid_line_are_repaired_before_resuming(finished, capsys):
    path = finished / "metrics.jsonl"
    with open(path, "a") as f:
        f.write('{"step": 2, "loss": 0.')  # the crash came while writing a record
    run.execute(*run.prepare(None, finished, [], False))
    assert "dropped 1 record(s)" in capsys.readouterr().err
    text = path.read_text()
    assert text.endswith("\n")
    assert [json.loads(line)["step"] for line in text.splitlines()] == [0, 1]
    path.write_text(text + '{"step": 5, "loss": 1}\n{"step": 1, "lo')
    assert resume.repair_metrics(path, 1) == 2  # a later stage will run again: dropped too
    assert [json.loads(line)["step"] for line in path.read_text().splitlines()] == [0, 1]
    assert resume.repair_metrics(path, 1) == 0


# Finding 10: bad output directories, a malformed state.json, SIGTERM and SIGINT


def test_unwritable_output_dirs_are_one_line_before_ray(base, tmp_path, capsys, monkeypatch):
    (tmp_path / "a_file").write_text("x")
    cases = {
        str(tmp_path / "a_file"): "is a file, not a directory",
        str(tmp_path / "a_file" / "below"): "cannot create it (Not a directory)",
        "/proc/b2-diffurl-runs": "cannot create it (No such file or directory)",
        "/sys/b2-diffurl-runs": "cannot create it (Operation not permitted)",
    }
    for output_dir, needle in cases.items():
        code, err = _main(
            ["--config", _write(tmp_path, {**base, "output_dir": output_dir})], capsys
        )
        assert code == 2 and len(err) == 1 and needle in err[0], (output_dir, err)
        assert err[0].startswith(f"error: output_dir={output_dir!r}")

    def full(fd):  # the disk fills up as the run writes its first file
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(outputs.os, "fsync", full)
    code, err = _main(["--config", _write(tmp_path, base)], capsys)
    assert code == 2 and len(err) == 1 and "No space left on device" in err[0], err
    assert not (tmp_path / "out" / "same").exists()  # the claim is given back
    assert not ray.is_initialized()


def test_malformed_state_json_falls_back_to_the_stage_before(finished, capsys):
    (finished / "stages" / "stage_0001" / "state.json").write_text('{"stage": 1, "spl')
    skipped = []
    assert checkpoint.latest(finished, skipped.append).name == "stage_0000"
    assert len(skipped) == 1 and "state.json: unreadable" in skipped[0]
    with pytest.raises(checkpoint.CheckpointError, match="unreadable"):
        checkpoint.load(finished / "stages" / "stage_0001")
    (finished / "stages" / "stage_0001" / "state.json").write_text('{"stage": 1}')
    assert "malformed" in checkpoint.problem(finished / "stages" / "stage_0001")
    summary = run.execute(*run.prepare(None, finished, ["stages=1"], False))
    assert summary["stages_completed"] == 1  # stage 0's checkpoint, exported
    assert "falling back to the stage before" in capsys.readouterr().err


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGINT"])
def test_a_signal_ends_with_the_resume_hint_for_this_run(finished, capsys, monkeypatch, sig):
    def arrives(cfg):  # the signal comes as Ray starts: a stage is left to run
        if sig == "SIGTERM":
            os.kill(os.getpid(), signal.SIGTERM)
        raise KeyboardInterrupt

    monkeypatch.setattr(run, "connect", arrives)
    before = signal.getsignal(signal.SIGTERM)
    code, err = _main(["--resume", finished, "--set", "stages=3"], capsys)
    assert code == (143 if sig == "SIGTERM" else 130)
    assert err == [
        f"interrupted ({sig}); continue with: python -m learner.main --resume {finished.resolve()}"
    ]
    assert signal.getsignal(signal.SIGTERM) is before  # main gives the handler back


# the same through Ray and the command line (slow: a local Ray starts each time)

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_a_diverged_run_exits_nonzero_and_exports_nothing(base, tmp_path, capsys):
    """lr=1e30 turns the LoRA non-finite in the first update: the run stops there, before
    any checkpoint, so nothing of it stays (the unit test above covers a later stage)."""
    code, err = _main(["--config", _write(tmp_path, {**base, "train": {"lr": 1e30}})], capsys)
    assert code == 2, err  # stderr also holds Ray's own start-up warning
    assert err[-1].startswith("error: stage 1: training diverged, the LoRA holds non-finite")
    assert "the run stopped before any checkpoint; lower train.lr (now 1e+30)" in err[-1]
    assert not (tmp_path / "out" / "same").exists()  # no LoRA exported, nothing half-written


@pytest.mark.slow
def test_sigterm_mid_run_stops_cleanly_with_the_resume_hint(base, tmp_path):
    import subprocess
    import sys

    path = _write(tmp_path, {**base, "stages": 60})
    proc = subprocess.Popen(
        [sys.executable, "-m", "learner.main", "--config", str(path)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if line.startswith("stage   2/"):
            proc.send_signal(signal.SIGTERM)
            break
    lines += proc.stdout.readlines()
    out = "".join(lines)
    assert proc.wait(timeout=120) == 143, out
    run_dir = (tmp_path / "out" / "same").resolve()
    assert f"interrupted (SIGTERM); continue with: python -m learner.main --resume {run_dir}" in out
    assert "SIGTERM received" not in out and "Traceback" not in out, out
    assert checkpoint.latest(run_dir) is not None
