"""Ray's token file is private (0600): made by the project before a local ray.init, which
would otherwise write it with the umask (0644: any user of the machine could read it)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys

import pytest

from configs.load import PROJECT_ROOT
from learner.ray_auth import private_token_file


@pytest.fixture()
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    for key in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        monkeypatch.delenv(key, raising=False)
    return tmp_path


def _mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_new_token_file_is_0600(home):
    path = private_token_file()
    assert path == home / ".ray" / "auth_token"
    assert _mode(path) == 0o600 and len(path.read_text()) == 64
    assert [p.name for p in path.parent.iterdir()] == ["auth_token"]  # no temporary left
    assert private_token_file() == path and len(path.read_text()) == 64  # kept as it is


def test_an_existing_readable_token_file_is_tightened_and_kept(home, capsys):
    path = home / ".ray" / "auth_token"
    path.parent.mkdir()
    path.write_text("a" * 64)
    path.chmod(0o644)
    assert private_token_file() == path
    assert _mode(path) == 0o600 and path.read_text() == "a" * 64
    assert "made Ray's token file" in capsys.readouterr().err


def test_no_file_without_token_mode_or_with_the_token_in_the_environment(home, monkeypatch):
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    assert private_token_file() is None
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    monkeypatch.setenv("RAY_AUTH_TOKEN", "b" * 64)
    assert private_token_file() is None
    assert not (home / ".ray").exists()
    monkeypatch.delenv("RAY_AUTH_TOKEN")
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(home / "tok"))
    assert _mode(private_token_file()) == 0o600 and (home / "tok").is_file()


LOCAL_RAY = """
import json, os, stat
from pathlib import Path
import psutil, ray
from configs.schema import Config
from learner.run import connect
cfg = Config.model_validate({"runtime": {"rollout_actors": 1, "reward_actors": 1}})
assert connect(cfg)
try:
    token = Path.home() / ".ray" / "auth_token"
    assert ray.get(ray.remote(lambda: 1).remote()) == 1
    ours = {p.pid for p in psutil.Process().children(recursive=True)}
    listening = {
        c.laddr.ip for c in psutil.net_connections("tcp") if c.status == "LISTEN" and c.pid in ours
    }
    print(json.dumps(sorted(listening)))
    print(os.environ.get("RAY_AUTH_MODE"), oct(stat.S_IMODE(token.stat().st_mode)))
finally:
    ray.shutdown()
"""


def test_local_ray_runs_with_token_auth_on_a_private_token_file(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
    env.pop("RAY_ADDRESS", None)
    env.update(HOME=str(tmp_path), RAY_USAGE_STATS_ENABLED="0")
    out = subprocess.run(
        [sys.executable, "-c", LOCAL_RAY],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split()[-2:] == ["token", "0o600"], out.stdout
    # every port the local Ray listens on is a loopback one (Ray binds all interfaces
    # unless told it is not a cluster: learner.run._init_local does)
    listening = json.loads(out.stdout.splitlines()[-2])
    assert listening and set(listening) <= {"127.0.0.1", "::ffff:127.0.0.1", "::1"}, listening
