"""Run tracking: MLflow when it is reachable, a local metrics.jsonl always.

MLflow failures never stop training: the first one is reported once, MLflow is left alone
for the rest of the run, and every metric is still in `RUN_DIR/metrics.jsonl`.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from configs.load import PROJECT_ROOT, flatten
from configs.schema import Config


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


class Tracker:
    """One MLflow run, through an `MlflowClient` bound to its store: no process-wide MLflow
    state is set, so runs in one process (tests, experiments) never leak into each other."""

    def __init__(
        self,
        cfg: Config,
        run_dir: Path,
        run_name: str,
        resume_id: str | None = None,
        tracking_uri: str | None = None,
        artifact_location: str | None = None,
    ):
        """`tracking_uri` None: MLflow's own default (MLFLOW_TRACKING_URI, else ./mlflow.db);
        `artifact_location` is used when this call creates the experiment."""
        self.run_dir = run_dir
        self.metrics_path = run_dir / "metrics.jsonl"
        self.enabled = cfg.logging.mlflow
        self.run_id: str | None = None
        self.experiment_id: str | None = None
        self.tracking_uri: str | None = None
        self.problem: str | None = None
        if not self.enabled:
            return
        try:
            import mlflow

            self._client = client = mlflow.MlflowClient(tracking_uri=tracking_uri)
            self.tracking_uri = client.tracking_uri
            if resume_id:
                run = client.get_run(resume_id)
                client.update_run(resume_id, status="RUNNING")
            else:
                name = cfg.logging.experiment
                experiment = client.get_experiment_by_name(name)
                experiment_id = (
                    experiment.experiment_id
                    if experiment is not None
                    else client.create_experiment(name, artifact_location=artifact_location)
                )
                run = client.create_run(
                    experiment_id,
                    run_name=run_name,
                    tags={"algorithm": cfg.algorithm, "git_commit": git_commit()},
                )
                params = [mlflow.entities.Param(k, v) for k, v in flatten(cfg).items()]
                for i in range(0, len(params), 100):  # MLflow's limit per batch
                    client.log_batch(run.info.run_id, params=params[i : i + 100])
            self.run_id = run.info.run_id
            self.experiment_id = run.info.experiment_id
        except Exception as exc:  # noqa: BLE001 - any tracking failure is survivable
            self._fail(exc)

    def _fail(self, exc: Exception) -> None:
        if self.problem is None:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
            self.problem = f"{type(exc).__name__}: {first}"
            print(
                f"warning: MLflow unavailable ({self.problem}); training goes on, metrics are "
                f"kept in {self.metrics_path}",
                file=sys.stderr,
                flush=True,
            )
        self.enabled = False

    def metrics(self, step: int, values: dict[str, float]) -> None:
        with open(self.metrics_path, "a", encoding="utf-8") as f:
            f.write(json.dumps({"step": step, **values}) + "\n")
        if self.enabled:
            try:
                import mlflow

                now = int(time.time() * 1000)
                batch = [mlflow.entities.Metric(k, float(v), now, step) for k, v in values.items()]
                self._client.log_batch(self.run_id, metrics=batch)
            except Exception as exc:  # noqa: BLE001
                self._fail(exc)

    def artifact(self, path: Path, artifact_path: str | None = None) -> None:
        if self.enabled:
            try:
                if path.is_dir():
                    self._client.log_artifacts(self.run_id, str(path), artifact_path)
                else:
                    self._client.log_artifact(self.run_id, str(path), artifact_path)
            except Exception as exc:  # noqa: BLE001
                self._fail(exc)

    def finish(self, status: str = "FINISHED") -> None:
        if self.enabled:
            try:
                self._client.set_terminated(self.run_id, status)
            except Exception as exc:  # noqa: BLE001
                self._fail(exc)


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
