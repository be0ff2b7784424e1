"""The shipped cluster files, read as a user with a cluster reads them."""

import ipaddress
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CLUSTER = ROOT / "cluster"


def _yaml(name: str):
    return yaml.safe_load((CLUSTER / name).read_text())


def _dockerfile() -> str:
    return (CLUSTER / "Dockerfile").read_text()


def test_launcher_runs_ray_in_the_project_image():
    launcher = _yaml("cluster.yaml")
    assert launcher["head_node_type"] in launcher["available_node_types"]
    assert launcher["docker"]["image"]  # the project and its dependencies: cluster/Dockerfile
    commands = [
        *launcher.get("initialization_commands", []),
        *launcher.get("setup_commands", []),
        *launcher.get("head_setup_commands", []),
        *launcher.get("worker_setup_commands", []),
    ]
    assert not any("|| true" in c for c in commands), "a failed install must stop `ray up`"
    # the launcher's dashboard stays on the head's loopback; `ray dashboard` forwards it
    assert any("--dashboard-host=127.0.0.1" in c for c in launcher["head_start_ray_commands"])


def test_rayjob_reaches_its_dashboard_with_a_token():
    job = _yaml("rayjob.yaml")
    spec = job["spec"]
    assert job["kind"] == "RayJob" and "python -m learner.main" in spec["entrypoint"]
    cluster = spec["rayClusterSpec"]
    host = cluster["headGroupSpec"]["rayStartParams"]["dashboard-host"]
    assert not ipaddress.ip_address(host).is_loopback
    assert cluster["authOptions"]["mode"] == "token"
    env = yaml.safe_load(spec["runtimeEnvYAML"])
    assert "HF_HUB_OFFLINE" not in env.get("env_vars", {})
    pinned = re.search(r'"ray\[default\]==([\d.]+)"', _dockerfile())
    assert pinned and pinned.group(1) == cluster["rayVersion"]
    images = {
        c["image"]
        for group in [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]
        for c in group["template"]["spec"]["containers"]
    }
    assert images == {_yaml("cluster.yaml")["docker"]["image"]}


def test_runtime_envs_carry_the_dependencies_without_forcing_offline():
    plain = _yaml("runtime_env.yaml")
    with_pip = _yaml("runtime_env.pip.yaml")
    for env in (plain, with_pip):
        assert ".venv" in env["excludes"]
        assert "HF_HUB_OFFLINE" not in env["env_vars"]
    # the plain env relies on the image (or a local venv): no install step on job start
    assert "pip" not in plain and "uv" not in plain
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert with_pip["pip"] == [d for d in deps if not d.startswith("ray")]


def test_dockerfile_installs_the_project_on_a_cuda_base():
    text = _dockerfile()
    base = re.search(r"^FROM\s+(\S+)", text, re.M).group(1)
    assert base.startswith("nvidia/cuda:") and "cudnn" in base
    assert re.search(r"pip install .*\s\.\s", text.replace("\\\n", " "))
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert ".venv" in ignored and ".git" in ignored
