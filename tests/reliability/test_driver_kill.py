"""The driver SIGKILLed mid-run: --resume continues and ends where an undisturbed run ends."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[2]


def _cfg(tiny_pipeline_dir, out, name):
    return {
        "seed": 9,
        "stages": 4,
        "output_dir": str(out),
        "run_name": name,
        "model": {"pretrained": tiny_pipeline_dir, "device": "cpu"},
        "sampling": {
            "num_steps": 4,
            "branches": 3,
            "trunks_per_stage": 4,
            "micro_batch": 8,
            "guidance_scale": 3.0,
        },
        "schedule": {"kind": "linear", "start": 2, "end": 4},
        "selection": {"tau_pos": 0.2, "tau_neg": -0.2},
        "train": {"lr": 3e-3, "epochs": 1, "batch_size": 4, "lora": {"rank": 2}},
        "rewards": [{"name": "jpeg_compressibility"}],
        "logging": {"mlflow": False, "grid_every": 0},
    }


def _main(args, **kw):
    return subprocess.Popen(
        [sys.executable, "-m", "learner.main", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        **kw,
    )


@pytest.mark.slow
def test_sigkill_then_resume_equals_undisturbed(tiny_pipeline_dir, tmp_path):
    for name in ("whole", "killed"):
        (tmp_path / f"{name}.yaml").write_text(
            yaml.safe_dump(_cfg(tiny_pipeline_dir, tmp_path, name))
        )
    whole = _main(["--config", str(tmp_path / "whole.yaml")])
    assert whole.wait(timeout=600) == 0, whole.stdout.read()

    killed = _main(["--config", str(tmp_path / "killed.yaml")], start_new_session=True)
    run = tmp_path / "killed"
    deadline = time.time() + 600
    while not (run / "stages" / "stage_0001" / "state.json").exists():
        assert killed.poll() is None and time.time() < deadline, "run ended before the kill"
        time.sleep(0.2)
    os.killpg(killed.pid, signal.SIGKILL)  # the driver and the local Ray it started
    killed.wait(timeout=60)
    assert not (run / "summary.json").exists()

    resumed = _main(["--resume", str(run)])
    out, _ = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, out
    assert "resuming" in out
    a = load_file(str(tmp_path / "whole" / "lora" / "pytorch_lora_weights.safetensors"))
    b = load_file(str(run / "lora" / "pytorch_lora_weights.safetensors"))
    assert max(float((a[k] - b[k]).abs().max()) for k in a) <= 1e-6
