"""A reference scoring server: any registered reward behind the protocol of rewards.remote.

    python -m rewards.serve --reward clip_score --set model=ViT-H-14 \
        --set checkpoint=laion2b_s32b_b79k [--host 127.0.0.1] [--port 8700] [--device cuda]

It binds 127.0.0.1 unless --host says otherwise: it has no authentication, so expose it
beyond the machine only on a network you trust. One batch is scored at a time.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import torch
import yaml
from pydantic import ValidationError

from configs.schema import RewardTerm
from rewards.registry import Reward, RewardSetupError, build
from rewards.remote import decode_batch

DEFAULT_PORT = 8700


class RewardServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, reward: Reward, address: tuple[str, int], max_bytes: int):
        self.reward = reward
        self.max_bytes = max_bytes
        self.lock = threading.Lock()  # rewards need not be thread-safe
        super().__init__(address, _Handler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"


class _Handler(BaseHTTPRequestHandler):
    server: RewardServer

    def _reply(self, code: int, payload: dict) -> None:
        body = json.dumps(payload).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        if self.path.rstrip("/") == "/health":
            self._reply(200, {"reward": self.server.reward.name})
        else:
            self._reply(404, {"error": f"no such path {self.path!r}; use /health or /score"})

    def do_POST(self) -> None:  # noqa: N802
        if self.path.rstrip("/") != "/score":
            self._reply(404, {"error": f"no such path {self.path!r}; POST to /score"})
            return
        try:
            size = int(self.headers.get("Content-Length", ""))
        except ValueError:
            self._reply(411, {"error": "a Content-Length header is required"})
            return
        if size > self.server.max_bytes:
            self._reply(413, {"error": f"body of {size} bytes over --max-mb"})
            return
        try:
            images, prompts = decode_batch(self.rfile.read(size))
        except ValueError as exc:
            self._reply(400, {"error": str(exc)})
            return
        try:
            with self.server.lock:
                scores = self.server.reward(images, prompts)
        except Exception as exc:  # the reward's own failure, reported to the client
            first = (str(exc).splitlines() or [""])[0]
            self._reply(500, {"error": f"{type(exc).__name__}: {first}"})
            return
        self._reply(200, {"scores": [float(s) for s in scores]})

    def log_message(self, format: str, *args) -> None:  # noqa: A002
        sys.stderr.write(f"rewards.serve {self.address_string()} {format % args}\n")


def make_server(
    reward: Reward, host: str = "127.0.0.1", port: int = DEFAULT_PORT, max_mb: int = 1024
) -> RewardServer:
    """A server for `reward` on host:port (port 0: any free one); call serve_forever()."""
    return RewardServer(reward, (host, port), max_mb * 2**20)


def _term(name: str, settings: list[str]) -> RewardTerm:
    fields: dict = {"name": name}
    for item in settings:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--set {item!r}: expected KEY=VALUE")
        fields[key] = yaml.safe_load(raw) if raw else None
    try:
        return RewardTerm(**fields)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(p) for p in err["loc"]) or "reward"
        raise ValueError(f"{key}: {err['msg'].removeprefix('Value error, ')}") from None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m rewards.serve", description=__doc__.split("\n")[0])
    p.add_argument("--reward", required=True, help="a registered reward name")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a field of the reward's config term (model, checkpoint, options, ...)",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help="0: any free port")
    p.add_argument("--device", default="cpu", help="torch device of the reward (cpu, cuda)")
    p.add_argument("--max-mb", type=int, default=1024, help="largest request body accepted")
    args = p.parse_args(argv)
    try:
        term = _term(args.reward, args.set)
        reward = build(term, torch.device(args.device))
        server = make_server(reward, args.host, args.port, args.max_mb)
    except (ValueError, RewardSetupError, OSError, RuntimeError) as exc:
        print(f"error: {(str(exc).splitlines() or [''])[0]}", file=sys.stderr)
        return 2
    print(f"serving {term.name} on {server.url}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
