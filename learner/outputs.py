"""Where a run's outputs go: the run directory and the MLflow store.

Under `ray job submit` the driver runs in a directory Ray prepared for the job (with
`--working-dir`, a temporary copy of the submitted folder that Ray deletes when it cleans
up). A relative `output_dir` or MLflow's default store (`./mlflow.db` in the current
directory) would silently land there, so under a job they are refused with one line; an
absolute `output_dir` is used as given, and MLflow, unless MLFLOW_TRACKING_URI names a
store, goes into `OUTPUT_DIR/mlflow.db` (artifacts in `OUTPUT_DIR/mlartifacts`).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

# set by Ray's job supervisor in the environment of every submitted entrypoint
JOB_ENV_VAR = "RAY_JOB_CONFIG_JSON_ENV_VAR"
REMOTE_SCHEMES = ("http", "https", "databricks", "postgresql", "mysql", "mssql")


class OutputError(ValueError):
    """Outputs that cannot be written or would not outlive the job; str() is one line."""


@dataclass(frozen=True)
class Outputs:
    """Where MLflow logs. `tracking_uri` None: MLflow's own default (a local run);
    `artifact_location` for an experiment the run creates."""

    tracking_uri: str | None = None
    artifact_location: str | None = None


def job_directory() -> Path | None:
    """The directory this process runs in when it is a `ray job submit` entrypoint (with
    `--working-dir`, Ray's temporary copy of it); None outside a Ray job."""
    return Path.cwd() if os.environ.get(JOB_ENV_VAR) else None


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def _local_store_path(uri: str) -> str | None:
    """The filesystem path of a local MLflow store URI (sqlite:///, file:, a bare path);
    None for a server or remote database."""
    parsed = urlparse(uri)
    if parsed.scheme in REMOTE_SCHEMES:
        return None
    if parsed.scheme == "sqlite":
        return uri[len("sqlite:///") :] if uri.startswith("sqlite:///") else uri[len("sqlite:") :]
    if parsed.scheme == "file":
        return parsed.path
    return uri if not parsed.scheme or len(parsed.scheme) == 1 else None


def _where(job_dir: Path) -> str:
    return f"Ray's job directory {job_dir}, which Ray deletes when it cleans up"


def check_job_path(name: str, value: str | Path) -> None:
    """Refuse a path that, under a Ray job, would resolve into the job's directory."""
    job_dir = job_directory()
    if job_dir is None:
        return
    path = Path(value)
    if not path.is_absolute():
        raise OutputError(
            f"{name}={str(value)!r} is relative: under ray job submit it would be written "
            f"into {_where(job_dir)}; give an absolute path that outlives the job (storage "
            "every node sees on a multi-node cluster), e.g. --set output_dir=$PWD/runs"
        )
    if _inside(path.resolve(), job_dir.resolve()):
        raise OutputError(f"{name}={str(value)!r} lies inside {_where(job_dir)}")


def resolve_outputs(output_dir: str) -> Outputs:
    """The run's destinations; raises OutputError where they would vanish with a job."""
    if "://" in output_dir:
        raise OutputError(
            f"output_dir={output_dir!r}: object-store URIs are not supported; mount the bucket "
            "(s3fs, gcsfuse, a CSI volume) and give its path"
        )
    env_uri = os.environ.get("MLFLOW_TRACKING_URI") or None
    job_dir = job_directory()
    if job_dir is None:
        return Outputs(env_uri)
    check_job_path("output_dir", output_dir)
    root = Path(output_dir)
    if env_uri is None:
        return Outputs(f"sqlite:///{root / 'mlflow.db'}", str(root / "mlartifacts"))
    local = _local_store_path(env_uri)
    if local is not None and (
        not Path(local).is_absolute() or _inside(Path(local).resolve(), job_dir.resolve())
    ):
        raise OutputError(
            f"MLFLOW_TRACKING_URI={env_uri!r} would be written into {_where(job_dir)}; give a "
            "tracking server or an absolute path, or leave it unset to use OUTPUT_DIR/mlflow.db"
        )
    return Outputs(env_uri)


def run_tracking_uri(run_dir: Path, outputs: Outputs) -> str | None:
    """The MLflow store a run logs to: MLFLOW_TRACKING_URI when set; else, for a resumed
    run, the store it started in (run.json); else `outputs`' (None: MLflow's default)."""
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    info = run_dir / "run.json"
    if info.is_file():
        try:
            recorded = json.loads(info.read_text()).get("mlflow_tracking_uri")
        except (OSError, ValueError):
            recorded = None
        if recorded:
            return recorded
    return outputs.tracking_uri


def describe_uri(uri: str | None) -> str:
    """`uri`, or the store MLflow uses by default."""
    if uri:
        return uri
    try:
        import mlflow

        return mlflow.get_tracking_uri()
    except Exception:  # noqa: BLE001 - only used to say where metrics go
        return "(MLflow unavailable)"


# a full or read-only disk, or no permission: said in one line wherever a write meets them
WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}


def _reason(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__


def write_synced(path: Path, text: str) -> None:
    """Write `path` under a temporary name, fsync it and rename it into place."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def claim_run_dir(output_dir: str, name: str, generated: bool, config_text: str) -> Path:
    """Create the run directory with os.mkdir, which fails for all but one of several runs
    claiming the same path, and write its config.yaml (a full or read-only disk shows here,
    before Ray starts). A taken generated name gets a suffix (-2, -3, ...); a taken given
    name is refused."""
    root = Path(output_dir)
    if root.exists() and not root.is_dir():
        raise OutputError(f"output_dir={output_dir!r} is a file, not a directory")
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"output_dir={output_dir!r}: cannot create it ({_reason(exc)})") from None
    for n in range(1, 1000):
        run_dir = root / (name if n == 1 else f"{name}-{n}")
        try:
            os.mkdir(run_dir)
            break
        except FileExistsError:
            if not generated:
                raise OutputError(
                    f"run directory {run_dir} exists (another run has it); use --resume "
                    f"{run_dir} or a new run_name"
                ) from None
        except OSError as exc:
            raise OutputError(
                f"output_dir={output_dir!r}: cannot create the run directory {run_dir} "
                f"({_reason(exc)})"
            ) from None
    else:
        raise OutputError(f"output_dir={output_dir!r}: {name}-2 ... {name}-999 all exist")
    try:
        write_synced(run_dir / "config.yaml", config_text)
    except OSError as exc:
        shutil.rmtree(run_dir, ignore_errors=True)
        raise OutputError(
            f"output_dir={output_dir!r}: cannot write into {run_dir} ({_reason(exc)})"
        ) from None
    return run_dir
