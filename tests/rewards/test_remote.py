"""Remote rewards against the reference server on loopback: the same scores as the local
reward, and a server that dies, hangs or answers nonsense is one clear line, never a 0."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
import torch

from configs.load import PROJECT_ROOT
from configs.schema import RewardTerm
from rewards.composite import RewardModel
from rewards.registry import RewardSetupError, build
from rewards.remote import RemoteRewardError, encode_batch
from rewards.serve import make_server


def _batch(n: int = 7):
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 3, 16, 12), dtype=torch.uint8, generator=g)
    images[::2] //= 64  # some flatter pictures: the JPEG sizes differ
    return images, [f"prompt {i}" for i in range(n)]


def _serve(server):
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    return server


@pytest.fixture
def reference():
    server = _serve(make_server(build(RewardTerm(name="jpeg_compressibility"), "cpu"), port=0))
    yield server
    server.shutdown()
    server.server_close()


def _remote(url: str, **kw) -> RewardModel:
    term = {"timeout_s": 2.0, "retries": 1, **kw}
    return RewardModel([RewardTerm(name="remote", url=url, **term)])


def test_remote_scores_equal_the_local_reward_in_batches(reference):
    images, prompts = _batch(7)
    local = RewardModel([RewardTerm(name="jpeg_compressibility")]).score(images, prompts)
    remote = _remote(reference.url, batch_size=3).score(images, prompts)
    np.testing.assert_array_equal(remote.terms["remote"], local.terms["jpeg_compressibility"])
    assert reference.url.startswith("http://127.0.0.1:")
    assert len(set(local.total.tolist())) > 1


def test_a_server_that_dies_is_one_line_after_its_retries(reference):
    model = _remote(reference.url)
    reference.shutdown()
    reference.server_close()
    with pytest.raises(RemoteRewardError) as err:
        model.score(*_batch(2))
    msg = str(err.value)
    assert "\n" not in msg and "rewards.0.url" in msg and reference.url in msg
    assert "failed after 2 tries: cannot reach the server" in msg


def test_nothing_listening_at_setup_names_the_url_field():
    with pytest.raises(RewardSetupError) as err:
        _remote("http://127.0.0.1:9", retries=0)
    assert "\n" not in str(err.value)
    assert "rewards.0.url = 'http://127.0.0.1:9': health check failed after 1 tries" in str(
        err.value
    )


class _Misbehaving(BaseHTTPRequestHandler):
    """Healthy on /health; /score answers as `server.mode` says."""

    def do_GET(self):  # noqa: N802
        self._send(200, b'{"reward": "fake"}')

    def do_POST(self):  # noqa: N802
        body = self.rfile.read(int(self.headers["Content-Length"]))
        mode, count = self.server.mode, json.loads(body[4 : 4 + int.from_bytes(body[:4], "big")])
        count = len(count["prompts"])
        self.server.posts += 1
        if mode == "hang":
            self.server.release.wait(10)
            return
        if mode == "garbage":
            self._send(200, b"<html>502 Bad Gateway</html>")
        elif mode == "short":
            self._send(200, json.dumps({"scores": [1.0] * (count - 1)}).encode())
        elif mode == "error":
            self._send(500, b'{"error": "CUDA out of memory"}')

    def _send(self, code: int, body: bytes):
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def misbehaving():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Misbehaving)
    server.daemon_threads = True
    server.release, server.posts = threading.Event(), 0
    _serve(server)
    yield server
    server.release.set()
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize(
    "mode, needle, posts",
    [
        ("hang", "scoring failed after 2 tries: no answer within timeout_s = 0.5", 2),
        ("garbage", "not a scores answer (JSONDecodeError", 1),
        ("short", "2 scores for 3 images", 1),
        ("error", "scoring failed after 2 tries: HTTP 500: CUDA out of memory", 2),
    ],
)
def test_a_misbehaving_server_is_one_clear_line(misbehaving, mode, needle, posts):
    misbehaving.mode = mode
    url = f"http://127.0.0.1:{misbehaving.server_address[1]}"
    model = _remote(url, timeout_s=0.5)
    with pytest.raises(RemoteRewardError) as err:
        model.score(*_batch(3))
    msg = str(err.value)
    assert "\n" not in msg and needle in msg and "images 0..2 of 3" in msg, msg
    assert misbehaving.posts == posts  # transport failures are retried, nonsense is not


def test_the_reference_server_refuses_a_malformed_body_with_400(reference):
    images, prompts = _batch(2)
    body = encode_batch(images, prompts)[:-5]
    request = urllib.request.Request(reference.url + "/score", data=body, method="POST")
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(request, timeout=5)
    assert err.value.code == 400
    assert json.loads(err.value.read()) == {"error": "1147 pixel bytes for shape [2, 3, 16, 12]"}


def test_python_m_rewards_serve_binds_loopback_and_scores_like_the_local_reward():
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    cmd = [sys.executable, "-m", "rewards.serve", "--reward", "oracle_partial", "--port", "0"]
    proc = subprocess.Popen(
        cmd, cwd=PROJECT_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    try:
        line = proc.stdout.readline().strip()
        assert line.startswith("serving oracle_partial on http://127.0.0.1:"), line
        url = line.rpartition(" ")[2]
        from toyworld.render import render_prompt

        prompts = ["a red circle", "a blue square", "a red circle", "a green triangle"]
        pictures = [render_prompt(p, seed=i) for i, p in enumerate(prompts)]
        images = torch.from_numpy(np.stack(pictures)).permute(0, 3, 1, 2).contiguous()
        images[2] = images[3]  # one picture that does not match its prompt
        local = RewardModel([RewardTerm(name="oracle_partial")]).score(images, prompts)
        remote = _remote(url).score(images, prompts)
        np.testing.assert_array_equal(remote.total, local.total)
        assert local.total.tolist()[:2] == [1.0, 1.0] and local.total[2] < 1.0
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_serve_refuses_bad_settings_in_one_line(capsys):
    from rewards.serve import main

    assert main(["--reward", "vibes", "--port", "0"]) == 2
    assert "name: unknown reward; known:" in capsys.readouterr().err
    assert main(["--reward", "custom", "--set", "model=nope", "--port", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "rewards.0.model = 'nope'" in err[0]
