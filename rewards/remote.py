"""A reward scored by an HTTP server (`python -m rewards.serve`, or any server speaking the
same protocol), with batching, a timeout, retries, and then a clear failure: a server that
is down, hangs or answers nonsense stops the stage; it never pays a silent 0.

Protocol (standard library only, both sides):
  GET  {url}/health  -> 200, JSON {"reward": NAME}
  POST {url}/score   body: 4-byte big-endian length L, then L bytes of UTF-8 JSON
                     {"shape": [N, 3, H, W], "prompts": [N strings]}, then N*3*H*W bytes of
                     uint8 RGB pixels in C order;
                     -> 200, JSON {"scores": [N numbers]}  (4xx / 5xx: JSON {"error": text})
"""

from __future__ import annotations

import http.client
import json
import struct
import time
import urllib.error
import urllib.request

import numpy as np
import torch

from configs.schema import RewardTerm
from rewards.registry import Reward, RewardSetupError

CONTENT_TYPE = "application/x-b2-images"
BACKOFF_S = 0.25  # first pause between tries, doubled each time


class RemoteRewardError(RuntimeError):
    """A remote reward batch that failed for good; str() is one line."""


def encode_batch(images: torch.Tensor, prompts: list[str]) -> bytes:
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be uint8 [N, 3, H, W], got {images.dtype} {images.shape}")
    header = json.dumps({"shape": list(images.shape), "prompts": list(prompts)}).encode()
    pixels = images.detach().cpu().contiguous().numpy().tobytes()
    return struct.pack(">I", len(header)) + header + pixels


def decode_batch(body: bytes) -> tuple[torch.Tensor, list[str]]:
    """The inverse of encode_batch; ValueError (one line) on a malformed body."""
    if len(body) < 4:
        raise ValueError("body shorter than its 4-byte header length")
    (size,) = struct.unpack(">I", body[:4])
    try:
        header = json.loads(body[4 : 4 + size])
        shape, prompts = header["shape"], header["prompts"]
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"malformed header: {exc}") from None
    if not (
        isinstance(shape, list)
        and len(shape) == 4
        and all(isinstance(d, int) and d > 0 for d in shape)
        and shape[1] == 3
    ):
        raise ValueError(f"shape must be [N, 3, H, W] of positive integers, got {shape!r}")
    if not (isinstance(prompts, list) and all(isinstance(p, str) for p in prompts)):
        raise ValueError("prompts must be a list of strings")
    if len(prompts) != shape[0]:
        raise ValueError(f"{len(prompts)} prompts for {shape[0]} images")
    pixels = body[4 + size :]
    if len(pixels) != int(np.prod(shape)):
        raise ValueError(f"{len(pixels)} pixel bytes for shape {shape}")
    images = torch.from_numpy(np.frombuffer(pixels, dtype=np.uint8).reshape(shape).copy())
    return images, prompts


def parse_scores(payload: bytes, count: int) -> np.ndarray:
    """float64 [count] from a server's answer; ValueError (one line) on anything else."""
    try:
        scores = json.loads(payload)["scores"]
        values = np.asarray(scores, dtype=np.float64)
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"not a scores answer ({type(exc).__name__}: {exc})") from None
    if values.ndim != 1 or values.shape[0] != count:
        raise ValueError(f"{values.size} scores for {count} images")
    return values


class _Retryable(Exception):
    """A failure another try may cure (connection refused or reset, timeout, 5xx)."""


class RemoteReward(Reward):
    def setup(self, term: RewardTerm, device: torch.device) -> None:
        self.url = (term.url or "").rstrip("/")
        self.timeout_s = term.timeout_s
        self.retries = term.retries
        self.batch_size = term.batch_size
        try:
            answer = self._with_retries(lambda: self._request("/health", None), "health check")
            self.served = json.loads(answer).get("reward")
        except (RemoteRewardError, ValueError, AttributeError) as exc:
            raise RewardSetupError(f"{self.field('url')} = {term.url!r}: {exc}") from None

    def _request(self, path: str, body: bytes | None) -> bytes:
        request = urllib.request.Request(
            self.url + path, data=body, method="GET" if body is None else "POST"
        )
        if body is not None:
            request.add_header("Content-Type", CONTENT_TYPE)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                return response.read()
        except urllib.error.HTTPError as exc:
            detail = _error_text(exc)
            if exc.code >= 500:
                raise _Retryable(f"HTTP {exc.code}: {detail}") from None
            raise RemoteRewardError(f"HTTP {exc.code}: {detail}") from None
        except TimeoutError:
            raise _Retryable(f"no answer within timeout_s = {self.timeout_s}") from None
        except urllib.error.URLError as exc:
            if isinstance(exc.reason, TimeoutError):
                raise _Retryable(f"no answer within timeout_s = {self.timeout_s}") from None
            raise _Retryable(f"cannot reach the server ({exc.reason})") from None
        except (ConnectionError, OSError, http.client.HTTPException) as exc:  # cut mid-answer
            raise _Retryable(f"connection lost ({type(exc).__name__}: {exc})") from None

    def _with_retries(self, call, what: str) -> bytes:
        for attempt in range(self.retries + 1):
            try:
                return call()
            except _Retryable as exc:
                if attempt == self.retries:
                    raise RemoteRewardError(
                        f"{what} failed after {attempt + 1} tries: {exc}"
                    ) from None
                time.sleep(BACKOFF_S * 2**attempt)
        raise AssertionError("unreachable")

    def score(self, images: torch.Tensor, prompts: list[str]) -> np.ndarray:
        n = len(prompts)
        step = self.batch_size or max(n, 1)
        out = []
        for start in range(0, n, step):
            part, texts = images[start : start + step], prompts[start : start + step]
            body = encode_batch(part, texts)
            where = f"remote reward {self.field('url')} = {self.url!r}"
            try:
                answer = self._with_retries(lambda b=body: self._request("/score", b), "scoring")
                out.append(parse_scores(answer, len(texts)))
            except (RemoteRewardError, ValueError) as exc:
                raise RemoteRewardError(
                    f"{where}: images {start}..{start + len(texts) - 1} of {n}: {exc}"
                ) from None
        return np.concatenate(out) if out else np.zeros(0)


def _error_text(exc: urllib.error.HTTPError) -> str:
    try:
        return str(json.loads(exc.read())["error"])[:300]
    except Exception:
        return exc.reason or "no detail"
