"""Run tracking: MLflow when it is reachable, a local metrics.jsonl always.

MLflow failures never stop training. An outage is seen within seconds (MLflow's HTTP client
is bounded: `HTTP_DEFAULTS`) and said once; metrics, artifacts and the run's end are then
kept in order and sent when MLflow answers again (tried at most every `retry_every`
seconds, and once more at the end), so nothing is lost. A request MLflow refuses (a 4xx:
a deleted run, no permission) is said once and MLflow is left alone for the rest of the
run. Every metric is in `RUN_DIR/metrics.jsonl` whatever happens.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections import deque
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit
from urllib.request import getproxies, proxy_bypass

from configs.load import PROJECT_ROOT, flatten
from configs.schema import Config

# MLflow's own defaults retry a request 7 times with growing backoff and wait up to 120 s
# for an answer: an unreachable server stalled a run for 4.5 minutes before its first
# warning. Set only where the user has not (their environment wins).
HTTP_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0.5",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
}
RETRY_EVERY = 30.0  # seconds between attempts to reach MLflow again while it is down
PROBE_TIMEOUT = 2.0  # seconds a TCP connect to a tracking server may take before it is down
METRICS_PER_BATCH = 1000  # MLflow's limit per log_batch


def git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return out.stdout.strip() or "unknown"


def _first_line(exc: Exception) -> str:
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
    return f"{type(exc).__name__}: {first}"


def _refused(exc: Exception) -> bool:
    """MLflow answered and said no (4xx other than timeout / rate limit): retrying the same
    request cannot help. Anything else (no connection, 5xx, a locked database) is an outage."""
    from mlflow.exceptions import MlflowException

    if not isinstance(exc, MlflowException):
        return False
    status = exc.get_http_status_code()
    return 400 <= status < 500 and status not in (408, 429)


class Tracker:
    """One MLflow run, through an `MlflowClient` bound to its store: no process-wide MLflow
    state is set (beyond `HTTP_DEFAULTS` in the environment), so runs in one process
    (tests, experiments) never leak into each other."""

    def __init__(
        self,
        cfg: Config,
        run_dir: Path,
        run_name: str,
        resume_id: str | None = None,
        tracking_uri: str | None = None,
        artifact_location: str | None = None,
        retry_every: float = RETRY_EVERY,
    ):
        """`tracking_uri` None: MLflow's own default (MLFLOW_TRACKING_URI, else ./mlflow.db);
        `artifact_location` is used when this call creates the experiment. The run is
        opened here, or when MLflow is first reachable (`run_id` None until then)."""
        self.run_dir = run_dir
        self.metrics_path = run_dir / "metrics.jsonl"
        self.enabled = cfg.logging.mlflow
        self.run_id: str | None = None
        self.experiment_id: str | None = None
        self.tracking_uri: str | None = None
        self.problem: str | None = None  # the first failure, as said
        self.retry_every = retry_every
        self._cfg, self._run_name, self._resume_id = cfg, run_name, resume_id
        self._artifact_location = artifact_location
        self._pending: deque[tuple] = deque()  # ("params" | "metrics" | "artifact" | "end", ...)
        self._down_since: float | None = None
        self._next_try = 0.0
        if not self.enabled:
            return
        for key, value in HTTP_DEFAULTS.items():
            os.environ.setdefault(key, value)
        try:
            import mlflow

            self._client = mlflow.MlflowClient(tracking_uri=tracking_uri)
            self.tracking_uri = self._client.tracking_uri
        except Exception as exc:  # noqa: BLE001 - an unusable URI: say so, train on
            self._give_up(exc)
            return
        self._try_flush()

    # -- what the run logs -------------------------------------------------------------

    def metrics(self, step: int, values: dict[str, float]) -> None:
        with open(self.metrics_path, "a", encoding="utf-8") as f:
            f.write(json.dumps({"step": step, **values}) + "\n")
        self._queue(("metrics", step, dict(values), int(time.time() * 1000)))

    def artifact(self, path: Path, artifact_path: str | None = None) -> None:
        self._queue(("artifact", Path(path), artifact_path))

    def finish(self, status: str = "FINISHED") -> None:
        """End the MLflow run; while MLflow is down, one last try to send what is pending,
        and a line saying what was not sent."""
        if not self.enabled:
            return
        self._pending.append(("end", status))
        if self._down_since is None or self._reachable():
            self._try_flush()
        if self._pending and self.enabled:
            metrics = sum(op[0] == "metrics" for op in self._pending)
            artifacts = sum(op[0] == "artifact" for op in self._pending)
            self._say(
                f"warning: MLflow still unavailable at the end of the run: {metrics} metric "
                f"records and {artifacts} artifacts not sent to {self.tracking_uri}; the "
                f"metrics are in {self.metrics_path}, the artifacts in {self.run_dir}"
            )

    @property
    def pending(self) -> int:
        """Operations kept for MLflow while it is down."""
        return len(self._pending)

    # -- sending -----------------------------------------------------------------------

    def _queue(self, op: tuple) -> None:
        if not self.enabled:
            return
        self._pending.append(op)
        if self._down_since is None:
            self._try_flush()
        elif time.monotonic() >= self._next_try:
            if self._reachable():
                self._try_flush()
            else:
                self._next_try = time.monotonic() + self.retry_every

    def _reachable(self) -> bool:
        """For a tracking server: does its port accept a connection within PROBE_TIMEOUT?
        (cheaper than a request through MLflow's retries). Other stores: try them."""
        url = urlsplit(self.tracking_uri or "")
        if url.scheme not in ("http", "https") or not url.hostname:
            return True
        if getproxies().get(url.scheme) and not proxy_bypass(url.hostname):
            return True  # reached through a proxy: only a request can tell
        try:
            port = url.port or (443 if url.scheme == "https" else 80)
            socket.create_connection((url.hostname, port), timeout=PROBE_TIMEOUT).close()
        except ValueError:  # a port MLflow will refuse in its own words
            return True
        except OSError:
            return False
        return True

    def _try_flush(self) -> None:
        """Open the run if it is not yet, then send what is pending, oldest first."""
        if self._down_since is None and self.run_id is None and not self._reachable():
            self._went_down(ConnectionError(f"nothing answers at {self.tracking_uri}"))
            return
        sent = {"metrics": 0, "artifact": 0}
        try:
            if self.run_id is None:
                self._open()
            while self._pending:
                op = self._pending[0]
                self._send(op)
                self._pending.popleft()
                sent[op[0]] = sent.get(op[0], 0) + 1
        except Exception as exc:  # noqa: BLE001 - any tracking failure is survivable
            if _refused(exc):
                self._give_up(exc)
            else:
                self._went_down(exc)
            return
        if self._down_since is not None:
            self._say(
                f"MLflow reachable again after {time.monotonic() - self._down_since:.0f} s: "
                f"sent {sent['metrics']} kept metric records and {sent['artifact']} artifacts"
            )
            self._down_since = None

    def _open(self) -> None:
        import mlflow

        client, cfg = self._client, self._cfg
        if self._resume_id:
            run = client.get_run(self._resume_id)
            client.update_run(self._resume_id, status="RUNNING")
        else:
            name = cfg.logging.experiment
            experiment = client.get_experiment_by_name(name)
            experiment_id = (
                experiment.experiment_id
                if experiment is not None
                else client.create_experiment(name, artifact_location=self._artifact_location)
            )
            run = client.create_run(
                experiment_id,
                run_name=self._run_name,
                tags={"algorithm": cfg.algorithm, "git_commit": git_commit()},
            )
            params = [mlflow.entities.Param(k, v) for k, v in flatten(cfg).items()]
            self._pending.appendleft(("params", params))  # sent first, retried if need be
        self.run_id = run.info.run_id
        self.experiment_id = run.info.experiment_id
        self._remember_run()

    def _remember_run(self) -> None:
        """Record the MLflow run in the run directory's run.json (when there is one), so
        that a resume logs to it: also when MLflow was down as the run started."""
        path = self.run_dir / "run.json"
        if not path.is_file():
            return
        info = json.loads(path.read_text())
        if info.get("mlflow_run_id") == self.run_id:
            return
        info.update(mlflow_run_id=self.run_id, mlflow_tracking_uri=self.tracking_uri)
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(info, indent=2))
        os.replace(tmp, path)

    def _send(self, op: tuple) -> None:
        import mlflow

        kind, client = op[0], self._client
        if kind == "params":
            for i in range(0, len(op[1]), 100):  # MLflow's limit per batch
                client.log_batch(self.run_id, params=op[1][i : i + 100])
        elif kind == "metrics":
            _, step, values, stamp = op
            batch = [mlflow.entities.Metric(k, float(v), stamp, step) for k, v in values.items()]
            for i in range(0, len(batch), METRICS_PER_BATCH):
                client.log_batch(self.run_id, metrics=batch[i : i + METRICS_PER_BATCH])
        elif kind == "artifact":
            _, path, artifact_path = op
            if path.is_dir():
                client.log_artifacts(self.run_id, str(path), artifact_path)
            elif path.is_file():
                client.log_artifact(self.run_id, str(path), artifact_path)
            else:
                self._say(f"warning: {path} is gone; not sent to MLflow")
        else:
            client.set_terminated(self.run_id, op[1])

    # -- saying it once ----------------------------------------------------------------

    def _went_down(self, exc: Exception) -> None:
        self._next_try = time.monotonic() + self.retry_every
        if self._down_since is not None:
            return
        self._down_since = time.monotonic()
        problem = _first_line(exc)
        self.problem = self.problem or problem
        self._say(
            f"warning: MLflow unavailable ({problem}); training goes on, metrics are kept in "
            f"{self.metrics_path} and sent to MLflow when it answers again"
        )

    def _give_up(self, exc: Exception) -> None:
        problem = _first_line(exc)
        self.problem = self.problem or problem
        self._say(
            f"warning: MLflow refused the run ({problem}); MLflow is left alone for the rest "
            f"of it, metrics are kept in {self.metrics_path}"
        )
        self.enabled = False
        self._pending.clear()

    @staticmethod
    def _say(line: str) -> None:
        print(line, file=sys.stderr, flush=True)


def run_page(tracking_uri: str, experiment_id: str, run_id: str) -> list[str]:
    """How to open a run's page in the MLflow UI, as lines to print: on a tracking server
    its URL (without any user:password@); for a store `mlflow ui` serves (sqlite, a folder,
    a database) that command and the URL of the page it then serves."""
    page = f"#/experiments/{experiment_id}/runs/{run_id}"
    url = urlsplit(tracking_uri)
    if url.scheme in ("http", "https"):
        host = url.netloc.rpartition("@")[2]
        return [urlunsplit((url.scheme, host, url.path.rstrip("/") + "/", "", "")) + page]
    if url.scheme == "databricks":
        return [f"run {run_id} of experiment {experiment_id} in the Databricks workspace"]
    return [
        f"mlflow ui --backend-store-uri {tracking_uri} --host 127.0.0.1 --workers 1",
        f"then browse http://127.0.0.1:5000/{page}",
    ]
