"""The documented cluster flow: cluster/start_local_head.sh + `ray job submit`.

A private head with a second node joined to it (cluster/start_local_worker.sh, one logical
GPU each) and a second, separate head that listens on 127.0.0.1 only run side by side
(free ports, own temp dirs). On the second head a job whose outputs would land in Ray's
temporary copy of the working directory is refused with one line; meanwhile a colocated
job spreads its actors over both nodes of the first head (Ray's state API says where they
ran) and writes its run and its MLflow store under its absolute output_dir; stopping the
first head ends its joined node too and leaves the other head running.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
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


def _listen_addresses(head_dir: str) -> set[str]:
    """The addresses the processes of a head (one process group) accept TCP on."""
    pgid = int((Path(head_dir) / "pgid").read_text())
    pids = set()
    for proc in psutil.process_iter():
        try:
            if os.getpgid(proc.pid) == pgid:
                pids.add(proc.pid)
        except ProcessLookupError:
            pass
    return {
        c.laddr.ip.removeprefix("::ffff:")
        for c in psutil.net_connections("tcp")
        if c.status == psutil.CONN_LISTEN and c.pid in pids
    }


def _join_node(head: dict, cpus: int, gpus: int) -> Path:
    out = subprocess.run(
        ["bash", "cluster/start_local_worker.sh"],
        cwd=ROOT,
        env={**head, "RAY_NUM_CPUS": str(cpus), "RAY_NUM_GPUS": str(gpus)},
        capture_output=True,
        text=True,
        timeout=180,
        check=True,
    ).stdout
    return Path(re.search(r"B2_RAY_NODE_DIR=(\S+)", out).group(1))


def _submit(env: dict, *args: str, submission_id: str | None = None):
    named = ["--submission-id", submission_id] if submission_id else []
    return subprocess.run(
        ["ray", "job", "submit", "--runtime-env", "cluster/runtime_env.yaml", "--working-dir", "."]
        + named
        + ["--", "python", "-m", "learner.main", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


# Where a job's actors ran, from the head's state API (it keeps a finished job's dead actors
# with their node), run beside the test so that this process's Ray state stays untouched.
_PLACEMENT = """
import json, os, sys
from ray.job_submission import JobSubmissionClient
from ray.util.state import list_actors, list_nodes

address = os.environ["RAY_ADDRESS"]
job_id = JobSubmissionClient(address).get_job_info(sys.argv[1]).job_id
nodes = [n.node_id for n in list_nodes(address=address) if n.state == "ALIVE"]
actors = list_actors(address=address, filters=[("job_id", "=", job_id)], limit=1000)
print(json.dumps({"nodes": nodes, "actors": [[a.class_name, a.node_id] for a in actors]}))
"""


def _placement(env: dict, submission_id: str) -> tuple[list[str], list[tuple[str, str]]]:
    out = subprocess.run(
        [sys.executable, "-c", _PLACEMENT, submission_id],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    found = json.loads(out.strip().splitlines()[-1])
    return found["nodes"], [tuple(a) for a in found["actors"]]


def _stop(*envs: dict) -> None:
    """Stop the heads (and the nodes joined to them) at once: each waits for its GCS."""
    stops = [
        subprocess.Popen(["bash", "cluster/stop_local_head.sh"], cwd=ROOT, env=env)
        for env in envs
        if Path(env["B2_RAY_HEAD_DIR"]).exists()
    ]
    for stop in stops:
        stop.wait(timeout=60)


# rollout actor i and learner rank i share bundle i of one (logical) GPU, and each node has
# one GPU: the two bundles can only be placed on two nodes
RUNTIME = {
    "placement": "colocated",
    "rollout_actors": 2,
    "learner_workers": 2,
    "rollout_gpus": 0.5,
    "learner_gpus": 0.5,
    "rollout_cpus": 1,
    "learner_cpus": 0.5,
    "learner_threads": 1,
    "reward_actors": 1,
    "reward_cpus": 1,
}


def _second_head_refuses_a_relative_output_dir(base: dict, cfg_path: Path):
    other = _start_head(base)
    try:
        return other, _submit(other, "--config", str(cfg_path))
    except BaseException:
        _stop(other)
        raise


def test_a_job_spans_two_nodes_and_its_outputs_outlive_it(tiny_pipeline_dir, tmp_path):
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
        "runtime": RUNTIME,
        "logging": {"experiment": "job-test", "grid_every": 0},
    }
    cfg_path = tmp_path / "job.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    runs = tmp_path / "runs"
    # joinable: on the machine's address, where a second node can reach it; started first,
    # it writes the token file both heads read
    head = _start_head({**base, "RAY_NUM_GPUS": "1", "B2_RAY_JOINABLE": "1"})
    pool = ThreadPoolExecutor(1)
    # beside the two-node job: a separate Ray on the same machine (its own ports), with a
    # job submitted right after the script returned (the job agent must already answer)
    second = pool.submit(_second_head_refuses_a_relative_output_dir, base, cfg_path)
    try:
        node_dir = _join_node(head, cpus=2, gpus=1)
        job = _submit(
            head, "--config", str(cfg_path), "--set", f"output_dir={runs}", submission_id="b2"
        )
        other, refused = second.result(timeout=600)
        assert other["RAY_ADDRESS"] != head["RAY_ADDRESS"]
        # a head no node joins keeps every port on the loopback address
        listening = _listen_addresses(other["B2_RAY_HEAD_DIR"])
        assert listening and all(ipaddress.ip_address(a).is_loopback for a in listening)
        logs = refused.stdout + refused.stderr
        assert refused.returncode != 0, logs[-3000:]
        assert "error: output_dir='runs' is relative" in logs, logs[-3000:]
        assert "_ray_pkg_" in logs
        assert "Traceback" not in logs

        logs = job.stdout + job.stderr
        assert job.returncode == 0, logs[-3000:]
        assert f"run directory: {runs / 'job'}" in logs
        assert f"MLflow: sqlite:///{runs / 'mlflow.db'}" in logs
        nodes, actors = _placement(head, "b2")
        assert len(nodes) == 2
        on = {cls: sorted(n for c, n in actors if c == cls) for cls, _ in actors}
        assert sorted(len(v) for v in on.values()) == [1, 2, 2], actors  # 2+2 ranks, 1 reward
        assert on["RolloutWorker"] == on["LearnerWorker"] == sorted(nodes)  # one pair a node

        _stop(head)  # with the node joined to it
        assert not node_dir.exists()
        # the other head is untouched by stopping this one
        alive = subprocess.run(
            ["ray", "job", "list"], env=other, capture_output=True, text=True, timeout=60
        )
        assert alive.returncode == 0, alive.stderr[-2000:]
    finally:
        pool.shutdown(wait=True)
        done = second.exception() is None
        _stop(head, *([second.result()[0]] if done else []))
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
