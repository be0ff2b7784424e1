"""The documented cluster flow: `ray start --head` on loopback + `ray job submit`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


@pytest.mark.slow
def test_ray_job_submit_runs_the_main_job(tiny_pipeline_dir, tmp_path):
    env = {
        **os.environ,
        "PATH": f"{BIN}:{os.environ['PATH']}",
        "RAY_NUM_CPUS": "4",
        "HOME": str(tmp_path),
    }  # a private token file for this test's head
    exports = subprocess.run(
        ["bash", "cluster/start_local_head.sh"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    assert "RAY_AUTH_TOKEN" in exports and (tmp_path / ".ray" / "auth_token").is_file()
    token = (tmp_path / ".ray" / "auth_token").read_text().strip()
    assert token not in exports  # the token is read from the file, never printed
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token)
    cfg = {
        "seed": 2,
        "stages": 2,
        "output_dir": str(tmp_path / "runs"),
        "run_name": "job",
        "model": {"pretrained": tiny_pipeline_dir, "device": "cpu"},
        "sampling": {"num_steps": 4, "branches": 2, "trunks_per_stage": 2, "micro_batch": 8},
        "schedule": {"kind": "constant", "start": 2, "end": 2},
        "rewards": [{"name": "jpeg_compressibility"}],
        "logging": {"mlflow": False},
    }
    cfg_path = tmp_path / "job.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    try:
        job = subprocess.run(
            [
                "ray",
                "job",
                "submit",
                "--address",
                "http://127.0.0.1:8265",
                "--runtime-env",
                "cluster/runtime_env.yaml",
                "--working-dir",
                ".",
                "--",
                "python",
                "-m",
                "learner.main",
                "--config",
                str(cfg_path),
            ],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert job.returncode == 0, job.stdout[-3000:] + job.stderr[-3000:]
        assert "succeeded" in job.stdout + job.stderr
    finally:
        subprocess.run(["ray", "stop", "--force"], env=env, capture_output=True, timeout=120)
    summary = json.loads((tmp_path / "runs" / "job" / "summary.json").read_text())
    assert summary["stages_completed"] == 2
