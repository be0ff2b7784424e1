"""An MLflow tracking server that is down, then back: the outage is seen within seconds and
said once, and what the run logged meanwhile (metrics, an artifact, the run's end) reaches
MLflow when it answers again. Loopback only: the port is one where nothing listens until
the server starts on it."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from configs.schema import Config
from learner.tracking import HTTP_DEFAULTS, Tracker


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def mlflow_env(monkeypatch):
    """MLflow's HTTP settings as a user without any would have them: the Tracker's bounds."""
    for key in HTTP_DEFAULTS:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    import mlflow  # noqa: F401 - imported before the clock starts, as a run has it


def _log_while_down(tmp_path: Path, uri: str, capsys) -> Tracker:
    cfg = Config.model_validate({"logging": {"experiment": "outage"}, "seed": 5})
    (tmp_path / "grid.png").write_bytes(b"not really a png")
    t0 = time.perf_counter()
    tracker = Tracker(cfg, tmp_path, "r", tracking_uri=uri, retry_every=0.0)
    assert time.perf_counter() - t0 < 5.0  # MLflow's defaults: minutes before one warning
    for step in range(3):
        tracker.metrics(step, {"reward_mean": float(step), "loss": -float(step)})
    tracker.artifact(tmp_path / "grid.png", "grids")
    assert time.perf_counter() - t0 < 8.0  # every call while down stays fast
    assert tracker.run_id is None and tracker.pending == 4
    err = capsys.readouterr().err
    assert err.count("MLflow unavailable") == 1, err
    return tracker


def _check_all_arrived(tracker: Tracker, uri: str, capsys) -> None:
    import mlflow

    tracker.metrics(3, {"reward_mean": 3.0, "loss": -3.0})  # the first call after the outage
    tracker.finish()
    err = capsys.readouterr().err
    said = [line for line in err.splitlines() if line.startswith(("MLflow", "warning"))]
    # the three kept while down and the one that found MLflow back, the artifact
    assert len(said) == 1 and "sent 4 kept metric records and 1 artifacts" in said[0], err
    assert said[0].startswith("MLflow reachable again after")
    client = mlflow.MlflowClient(tracking_uri=uri)
    run = client.get_run(tracker.run_id)
    assert run.info.status == "FINISHED" and run.data.params["seed"] == "5"
    history = client.get_metric_history(tracker.run_id, "reward_mean")
    assert sorted((m.step, m.value) for m in history) == [(i, float(i)) for i in range(4)]
    assert [a.path for a in client.list_artifacts(tracker.run_id, "grids")] == ["grids/grid.png"]
    lines = (tracker.metrics_path).read_text().splitlines()
    assert len(lines) == 4


# MLflow's tracking server app (its REST handlers) served by werkzeug, artifacts to a local
# root as a server without artifact proxying has them: `mlflow server` without its
# uvicorn start-up and the CLI's own checks, which cost seconds (the slow test runs that)
SERVE = """
import sys
from mlflow.server import app
from mlflow.server.handlers import initialize_backend_stores
from werkzeug.serving import WSGIRequestHandler, make_server
class Quiet(WSGIRequestHandler):
    def log(self, *args):
        pass
store, port = sys.argv[1], int(sys.argv[2])
initialize_backend_stores(f"sqlite:///{store}/mlflow.db", None, f"{store}/artifacts")
make_server("127.0.0.1", port, app, threaded=True, request_handler=Quiet).serve_forever()
"""


@contextmanager
def _server(cmd: list[str], port: int, store: Path, timeout: float):
    """A server process (its own, so MLflow's server-side globals stay out of this one),
    yielded once its port accepts connections."""
    log = open(store / "server.log", "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(cmd, stdout=log, stderr=log, cwd=store, start_new_session=True)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert proc.poll() is None, (store / "server.log").read_text()
                assert time.monotonic() < deadline, "server did not start"
                time.sleep(0.2)
        yield proc
    finally:  # `mlflow server` runs its app in a child process: end the whole group
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


def test_server_down_then_back_loses_nothing(mlflow_env, tmp_path, capsys):
    port = _free_port()
    uri = f"http://127.0.0.1:{port}"
    tracker = _log_while_down(tmp_path, uri, capsys)
    # what learner.stage_loop wrote as the run started, MLflow down: no run to resume into yet
    (tmp_path / "run.json").write_text(json.dumps({"run_name": "r", "mlflow_run_id": None}))
    store = tmp_path / "server"
    store.mkdir()
    (store / "serve.py").write_text(SERVE)
    cmd = [sys.executable, str(store / "serve.py"), str(store), str(port)]
    with _server(cmd, port, store, timeout=120):
        _check_all_arrived(tracker, uri, capsys)
        info = json.loads((tmp_path / "run.json").read_text())  # a resume finds the run
        assert info == {
            "run_name": "r",
            "mlflow_run_id": tracker.run_id,
            "mlflow_tracking_uri": uri,
        }
        # a request MLflow answers with a refusal (a resumed run it does not know) is no
        # outage: said once, and MLflow is left alone rather than tried again and again
        refused = Tracker(Config(), tmp_path, "r", "0" * 32, uri, retry_every=0.0)
        refused.metrics(0, {"reward_mean": 1.0})
        refused.finish()
        said = [x for x in capsys.readouterr().err.splitlines() if x.startswith("warning")]
        assert len(said) == 1 and "MLflow refused the run" in said[0], said
        assert not refused.enabled and refused.pending == 0


def test_still_down_at_the_end_says_what_was_not_sent(mlflow_env, tmp_path, capsys):
    tracker = _log_while_down(tmp_path, f"http://127.0.0.1:{_free_port()}", capsys)
    tracker.finish("FAILED")
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "still unavailable at the end of the run: 3 metric records" in err[0]
    assert "1 artifacts not sent" in err[0]


@pytest.mark.slow
def test_real_mlflow_server_down_then_back_loses_nothing(mlflow_env, tmp_path, capsys):
    """The same with `mlflow server` itself (artifacts proxied over HTTP) on the port."""
    port = _free_port()
    uri = f"http://127.0.0.1:{port}"
    tracker = _log_while_down(tmp_path, uri, capsys)
    store = tmp_path / "server"
    store.mkdir()
    cmd = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port)]
    cmd += ["--backend-store-uri", f"sqlite:///{store / 'mlflow.db'}", "--workers", "1"]
    cmd += ["--artifacts-destination", str(store / "artifacts")]
    with _server(cmd, port, store, timeout=240):
        time.sleep(2.0)  # uvicorn opens the port a moment before the app answers
        _check_all_arrived(tracker, uri, capsys)
    assert list((store / "artifacts").rglob("grid.png"))  # sent through the server
