"""The documented cluster flow: cluster/start_local_head.sh + `ray job submit`.

Two private heads run side by side (free ports, own temp dirs); a job whose outputs would
land in Ray's temporary copy of the working directory is refused with one line; a job
with an absolute output_dir writes its run and its MLflow store there; stopping one head
leaves the other running.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def _start_head(env: dict) -> dict:
    out = subprocess.run(
        ["bash", "cluster/start_local_head.sh"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=True,
    ).stdout
    exports = dict(re.findall(r"\b(RAY_ADDRESS|B2_RAY_HEAD_DIR)=(\S+)", out))
    assert "RAY_AUTH_TOKEN" in out
    token_file = Path(env["HOME"]) / ".ray" / "auth_token"
    assert token_file.read_text().strip() not in out  # the token is read from the file
    return {
        **env,
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": token_file.read_text().strip(),
        "RAY_ADDRESS": exports["RAY_ADDRESS"],
        "B2_RAY_HEAD_DIR": exports["B2_RAY_HEAD_DIR"],
    }


def _submit(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["ray", "job", "submit", "--runtime-env", "cluster/runtime_env.yaml", "--working-dir", "."]
        + ["--", "python", "-m", "learner.main", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def _stop(env: dict) -> None:
    subprocess.run(["bash", "cluster/stop_local_head.sh"], env=env, timeout=60, check=False)


def test_job_outputs_outlive_the_job_and_heads_stay_apart(tiny_pipeline_dir, tmp_path):
    base = {
        **os.environ,
        "PATH": f"{BIN}:{os.environ['PATH']}",
        "RAY_NUM_CPUS": "4",
        "HOME": str(tmp_path),  # a private token file for this test's heads
    }
    base.pop("MLFLOW_TRACKING_URI", None)
    cfg = {
        "seed": 2,
        "stages": 2,
        "run_name": "job",
        "model": {"pretrained": tiny_pipeline_dir, "device": "cpu"},
        "sampling": {"num_steps": 4, "branches": 2, "trunks_per_stage": 2, "micro_batch": 8},
        "schedule": {"kind": "constant", "start": 2, "end": 2},
        "rewards": [{"name": "jpeg_compressibility"}],
        "logging": {"experiment": "job-test", "grid_every": 0},
    }
    cfg_path = tmp_path / "job.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    runs = tmp_path / "runs"
    head = _start_head(base)
    other = None
    try:
        other = _start_head(base)  # a second Ray on the same machine: its own ports
        assert other["RAY_ADDRESS"] != head["RAY_ADDRESS"]
        # submitted right after the script returned: the job agent must already answer
        refused = _submit(head, "--config", str(cfg_path))
        logs = refused.stdout + refused.stderr
        assert refused.returncode != 0
        assert "error: output_dir='runs' is relative" in logs and "_ray_pkg_" in logs
        assert "Traceback" not in logs

        job = _submit(head, "--config", str(cfg_path), "--set", f"output_dir={runs}")
        logs = job.stdout + job.stderr
        assert job.returncode == 0, logs[-3000:]
        assert f"run directory: {runs / 'job'}" in logs
        assert f"MLflow: sqlite:///{runs / 'mlflow.db'}" in logs
        _stop(head)
        # the other head is untouched by stopping this one
        alive = subprocess.run(
            ["ray", "job", "list"], env=other, capture_output=True, text=True, timeout=60
        )
        assert alive.returncode == 0, alive.stderr[-2000:]
    finally:
        _stop(head)
        if other is not None:
            _stop(other)
    assert not Path(head["B2_RAY_HEAD_DIR"]).exists()

    summary = json.loads((runs / "job" / "summary.json").read_text())
    assert summary["stages_completed"] == 2
    assert (runs / "job" / "lora" / "pytorch_lora_weights.safetensors").is_file()
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{runs / 'mlflow.db'}")
    run = client.get_run(summary["mlflow_run_id"])
    assert run.info.status == "FINISHED"
    assert len(client.get_metric_history(run.info.run_id, "reward_mean")) == 2
    artifacts = Path(run.info.artifact_uri.removeprefix("file://"))
    assert artifacts.is_relative_to(runs / "mlartifacts")
    assert (artifacts / "lora" / "pytorch_lora_weights.safetensors").is_file()
