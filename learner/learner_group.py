"""The learner as Ray actors: `runtime.learner_workers` ranks of one process group.

Each rank is a `LearnerWorker` actor on its own placement-group bundle. With more than one,
rank 0 picks its node's address and a free port and every rank joins a torch.distributed
group there (NCCL on CUDA, gloo on the CPU);
the update's LoRA gradients are all-reduced by it (`learner.distributed`), never sent
through the object store. Rank 0 alone keeps the per-prompt reward history, selects,
publishes the weights (one `ray.put`, one version) and is what a checkpoint saves; every
rank updates and restores.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import ray
from ray.exceptions import ActorDiedError, GetTimeoutError, RayActorError, RayTaskError
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from configs.schema import Config
from diffusion.trajectory import TrajectoryBatch
from learner.checkpoint import LearnerState
from learner.learner_worker import LearnerWorker
from learner.records import PublishedWeights, Rows, Selected
from learner.update import UpdateStats
from learner.update_plan import held_rows


class LearnerDivergedError(RuntimeError):
    """Learner ranks whose LoRA or optimizer state differ; str() is one line."""


class LearnerLost(RuntimeError):
    """A learner rank died; the group's other ranks have been ended too (a collective
    cannot go on without it). The driver rebuilds the group from the last checkpoint."""


class RayLearnerGroup:
    """The learner ranks of one run, behind the learner group interface
    (`learner.groups.LearnerGroup`)."""

    def __init__(
        self,
        cfg: Config,
        placement_group=None,
        first_bundle: int = 0,
        on_submit: Callable[[str, int, int, object], None] | None = None,
    ):
        rt = cfg.runtime
        self.cfg = cfg
        self.on_submit = on_submit  # fault-injection hook for tests ("learner", stage, 0, ranks)

        def strategy(i: int):
            if placement_group is None:
                return "DEFAULT"
            return PlacementGroupSchedulingStrategy(
                placement_group, placement_group_bundle_index=first_bundle + i
            )

        self.ranks = [
            ray.remote(LearnerWorker)
            .options(
                num_cpus=rt.learner_cpus,
                num_gpus=rt.learner_gpus,
                max_restarts=0,
                scheduling_strategy=strategy(i),
            )
            .remote(cfg)
            for i in range(rt.learner_workers)
        ]

    def connect(self) -> None:
        """Wait for every rank to be built and, with several, to join the process group
        (construction errors surface here)."""
        if len(self.ranks) == 1:
            ray.get(self.ranks[0].__ray_ready__.remote())
            return
        address, port = ray.get(self.ranks[0].rendezvous.remote())
        n = len(self.ranks)
        ray.get([a.join_group.remote(address, port, r, n) for r, a in enumerate(self.ranks)])

    @property
    def lead(self):
        return self.ranks[0]

    def _get(self, refs: list[ray.ObjectRef]) -> list:
        """The ranks' results. A dead rank ends the group at once: its peers may be waiting
        in a collective for it, so they are killed rather than waited for."""
        pending = list(refs)
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            try:
                ray.get(done[0])
            except (RayActorError, ActorDiedError) as exc:
                self._lost(refs.index(done[0]), exc)
            except RayTaskError:
                # a rank whose peer died fails in the collective; the peer is the news
                dead = self._dead_ranks()
                if not dead:
                    raise
                self._lost(dead[0], None)
        return ray.get(refs)

    def _dead_ranks(self, timeout: float = 60.0) -> list[int]:
        probes = [a.__ray_ready__.remote() for a in self.ranks]
        dead = []
        for rank, probe in enumerate(probes):
            try:
                ray.get(probe, timeout=timeout)
            except (RayActorError, ActorDiedError, GetTimeoutError):
                dead.append(rank)
        return dead

    def _lost(self, rank: int, exc: BaseException | None) -> None:
        self.kill()
        why = (str(exc).strip().splitlines() or [""])[0][:200] if exc is not None else ""
        raise LearnerLost(f"learner rank {rank} died" + (f" ({why})" if why else ""))

    def publish(self, ema: bool = False) -> PublishedWeights:
        """The weights rollouts sample with; `ema`: the evaluation weights under their own
        version (`LearnerWorker.publish`), for the training grid only."""
        return self._get([self.lead.publish.remote(ema)])[0]

    def select(self, stage: int, rows: Rows, rewards: np.ndarray) -> Selected:
        return self._get([self.lead.select.remote(stage, rows, rewards)])[0]

    def held_rows(self, stage: int, selected: Selected) -> list[np.ndarray]:
        return held_rows(self.cfg, selected.selection, stage, len(self.ranks))

    def update(
        self, stage: int, selected: Selected, parts: list[list[ray.ObjectRef | TrajectoryBatch]]
    ) -> UpdateStats:
        """Rank r fetches only parts[r], the trajectories it trains (`held_rows`); every
        rank returns the same stats, rank 0's are returned."""
        ref = ray.put(selected)
        ranks = zip(self.ranks, parts, strict=True)
        refs = [a.update.remote(stage, ref, *mine) for a, mine in ranks]
        if self.on_submit is not None:
            self.on_submit("learner", stage, 0, self.ranks)
        return self._get(refs)[0]

    def state(self, stage: int, split_step: int) -> LearnerState:
        """Rank 0's state. With the gradients all-reduced every rank takes the same AdamW
        steps, so rank 0's optimizer state is every rank's: checked here, at every
        checkpoint, by comparing the ranks' digests."""
        state = self.lead.state.remote(stage, split_step)
        if len(self.ranks) > 1:
            prints = self._get([a.fingerprint.remote() for a in self.ranks])
            if len(set(prints)) > 1:
                raise LearnerDivergedError(
                    f"learner ranks hold different LoRA / optimizer states at stage {stage} "
                    f"(digests {[p[:12] for p in prints]}); refusing to checkpoint rank 0 alone"
                )
        return self._get([state])[0]

    def restore(self, state: LearnerState, source: str) -> int:
        ref = ray.put(state)
        return self._get([a.restore.remote(ref, source) for a in self.ranks])[0]

    def weights(self) -> dict:
        return self._get([self.lead.weights.remote()])[0]

    def ema_weights(self) -> dict:
        """What evaluation and the exported LoRA use (`LearnerWorker.ema_weights`)."""
        return self._get([self.lead.ema_weights.remote()])[0]

    def comm_bytes(self) -> list[dict[str, int]]:
        return ray.get([a.comm_bytes.remote() for a in self.ranks])

    def cpu_seconds(self) -> list[float]:
        return ray.get([a.cpu_seconds.remote() for a in self.ranks])

    def kill(self) -> None:
        for a in self.ranks:
            ray.kill(a, no_restart=True)
