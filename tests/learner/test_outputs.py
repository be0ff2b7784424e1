"""Where a run's outputs go, in and out of a Ray job (no Ray needed)."""

from __future__ import annotations

import json

import pytest

from learner.main import main
from learner.outputs import (
    JOB_ENV_VAR,
    OutputError,
    Outputs,
    check_job_path,
    resolve_outputs,
    run_tracking_uri,
)


@pytest.fixture()
def in_job(monkeypatch, tmp_path):
    """This process as a `ray job submit` entrypoint running in a working-dir copy."""
    copy = tmp_path / "runtime_resources" / "working_dir_files" / "_ray_pkg_abc"
    copy.mkdir(parents=True)
    monkeypatch.chdir(copy)
    monkeypatch.setenv(JOB_ENV_VAR, json.dumps({"runtime_env": {}}))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return copy


def test_outside_a_job_nothing_changes(monkeypatch):
    monkeypatch.delenv(JOB_ENV_VAR, raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert resolve_outputs("runs") == Outputs(None, None)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///local.db")
    assert resolve_outputs("runs").tracking_uri == "sqlite:///local.db"
    check_job_path("--resume", "runs/x")  # relative paths are fine outside a job


def test_a_job_refuses_its_temporary_directory(in_job, tmp_path):
    with pytest.raises(OutputError, match=r"^output_dir='runs' is relative: .*_ray_pkg_abc"):
        resolve_outputs("runs")
    with pytest.raises(OutputError, match="lies inside Ray's job directory"):
        resolve_outputs(str(in_job / "runs"))
    with pytest.raises(OutputError, match=r"^--resume='runs/a' is relative"):
        check_job_path("--resume", "runs/a")
    with pytest.raises(OutputError, match="object-store URIs are not supported"):
        resolve_outputs("s3://bucket/runs")


def test_a_job_logs_mlflow_next_to_its_outputs(in_job, tmp_path, monkeypatch):
    out = tmp_path / "shared" / "runs"
    resolved = resolve_outputs(str(out))
    assert resolved.tracking_uri == f"sqlite:///{out / 'mlflow.db'}"
    assert resolved.artifact_location == str(out / "mlartifacts")
    for bad in ("sqlite:///mlflow.db", "mlruns", f"file://{in_job}/mlruns"):
        monkeypatch.setenv("MLFLOW_TRACKING_URI", bad)
        with pytest.raises(OutputError, match="^MLFLOW_TRACKING_URI="):
            resolve_outputs(str(out))
    for good in ("http://mlflow.svc:5000", f"sqlite:///{tmp_path}/m.db"):
        monkeypatch.setenv("MLFLOW_TRACKING_URI", good)
        assert resolve_outputs(str(out)) == Outputs(good, None)


def test_a_resumed_run_keeps_its_store(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    run = tmp_path / "run"
    run.mkdir()
    assert run_tracking_uri(run, Outputs("sqlite:///new.db")) == "sqlite:///new.db"
    (run / "run.json").write_text(json.dumps({"mlflow_tracking_uri": "sqlite:////old.db"}))
    assert run_tracking_uri(run, Outputs("sqlite:///new.db")) == "sqlite:////old.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://server")
    assert run_tracking_uri(run, Outputs(None)) == "http://server"


def test_the_command_refuses_in_one_line_before_writing(in_job, capsys):
    assert main(["--set", "stages=1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: output_dir='runs' is relative")
    assert not (in_job / "runs").exists() and not (in_job / "mlflow.db").exists()
