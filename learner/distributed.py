"""Data-parallel learner ranks, without Ray: how the training units of one optimizer step
are shared out, how each rank scales its loss, and the collectives that join the ranks.

N ranks make the update one rank makes: every rank walks the same plan (the same
shuffles, the same micro-batches), takes its shard of each micro-batch, and scales its
loss by its shard's share of the micro-batch, so the all-reduced SUM of the ranks'
gradients is the one-rank gradient. Statistics are summed the same way, and decisions
(train.target_kl) are taken on the summed values, so every rank decides alike. With one
rank nothing is reduced and the arithmetic is the one-rank arithmetic.
"""

from __future__ import annotations

import datetime
import socket
from collections.abc import Sequence

import numpy as np
import torch


def shard(costs: Sequence[float] | np.ndarray, ranks: int) -> list[np.ndarray]:
    """Split items of the given costs (trajectory-steps) into `ranks` parts of near-equal
    total cost, deterministically: the costliest first, each to the least-loaded rank
    (ties: the lowest rank). Each part lists its item indices in ascending order; items of
    equal cost go round-robin."""
    costs = np.asarray(costs, dtype=np.float64)
    load = np.zeros(ranks)
    owner = np.empty(len(costs), dtype=int)
    for i in np.argsort(-costs, kind="stable"):
        r = int(np.argmin(load))
        owner[i] = r
        load[r] += costs[i]
    return [np.flatnonzero(owner == r) for r in range(ranks)]


def mean_share(local: int, total: int) -> float:
    """The factor that turns a mean over `local` of `total` items into their part of the
    mean over all `total`: the ranks' scaled means sum to the global mean (1.0 for one rank)."""
    return local / total if total else 0.0


class Collective:
    """One rank alone: every reduction is the identity."""

    rank = 0
    size = 1

    def sum(self, values: list[float]) -> list[float]:
        return values

    def min(self, value: float) -> float:
        return value

    def max(self, value: float) -> float:
        return value

    def sum_grads(self, params: list[torch.nn.Parameter]) -> None:
        pass

    def close(self) -> None:
        pass


def free_port(address: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((address, 0))
        return int(s.getsockname()[1])


class ProcessGroup(Collective):
    """One rank of a torch.distributed process group (NCCL on CUDA, gloo on the CPU),
    rendezvous over TCP at rank 0's `address:port`. Counts the bytes it all-reduces."""

    def __init__(
        self, address: str, port: int, rank: int, size: int, device: torch.device, timeout_s=1800
    ):
        import torch.distributed as dist

        self.dist = dist
        self.rank, self.size = rank, size
        self.device = device
        dist.init_process_group(
            backend="nccl" if device.type == "cuda" else "gloo",
            init_method=f"tcp://{address}:{port}",
            rank=rank,
            world_size=size,
            timeout=datetime.timedelta(seconds=timeout_s),
        )
        self.bytes = {"grads": 0, "other": 0}
        self.grad_reductions = 0

    def _all_reduce(self, t: torch.Tensor, op, kind: str = "other") -> torch.Tensor:
        on = t.to(self.device)
        self.dist.all_reduce(on, op=op)
        self.bytes[kind] += on.numel() * on.element_size()
        return on.to(t.device)

    def sum(self, values: list[float]) -> list[float]:
        t = torch.tensor(values, dtype=torch.float64)
        return self._all_reduce(t, self.dist.ReduceOp.SUM).tolist()

    def min(self, value: float) -> float:
        return float(self._all_reduce(torch.tensor([value]), self.dist.ReduceOp.MIN))

    def max(self, value: float) -> float:
        return float(self._all_reduce(torch.tensor([value]), self.dist.ReduceOp.MAX))

    def sum_grads(self, params: list[torch.nn.Parameter]) -> None:
        """All-reduce (SUM) the parameters' gradients in one flat buffer; a rank that had
        no units in this step contributes zeros."""
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = torch.cat([g.reshape(-1) for g in grads])
        self.dist.all_reduce(flat, op=self.dist.ReduceOp.SUM)
        self.bytes["grads"] += flat.numel() * flat.element_size()
        self.grad_reductions += 1
        offset = 0
        for p in params:
            p.grad = flat[offset : offset + p.numel()].view_as(p)
            offset += p.numel()

    def close(self) -> None:
        if self.dist.is_initialized():
            self.dist.destroy_process_group()
