"""The reward group on Ray: restartable `RewardWorker` actors, behind the reward group
interface (`learner.groups.RewardGroup`).

A chunk's images go from its rollout actor straight to a reward actor (by reference, not
through the driver), round robin, as soon as the chunk is sampled, so scoring overlaps
sampling. A failed batch is sent again, to the next actor, up to `runtime.max_task_retries`
times; then the stage stops rather than train without it.
"""

from __future__ import annotations

from collections.abc import Callable

import ray
from ray.exceptions import RayActorError, RayTaskError

from actors.rollout_group import first_line
from learner.records import SampledChunk, ScoredChunk


class RewardFailure(RuntimeError):
    """A reward batch failed after its retries; the run stops rather than train without it."""


class RayRewardGroup:
    def __init__(
        self,
        actors: list,
        max_task_retries: int,
        on_submit: Callable[[str, int, int, object], None] | None = None,
    ):
        self.actors = actors
        self.max_task_retries = max_task_retries
        self.on_submit = on_submit  # fault-injection hook for tests ("reward", stage, chunk, actor)
        self.stage = -1  # the stage being scored (for messages and the hook)
        self._next = 0
        self._pending: dict = {}  # score ref -> (chunk, attempt, images ref)

    def _send(self, chunk: int, attempt: int, images) -> None:
        actor = self.actors[self._next % len(self.actors)]
        self._next += 1
        self._pending[actor.score.remote(images)] = (chunk, attempt, images)
        if self.on_submit is not None:
            self.on_submit("reward", self.stage, chunk, actor)

    def submit(self, chunk: SampledChunk) -> None:
        self.stage = chunk.stage
        self._send(chunk.chunk, 0, chunk.images)

    def gather(self) -> list[ScoredChunk]:
        scored: list[ScoredChunk] = []
        while self._pending:
            (ref,), _ = ray.wait(list(self._pending), num_returns=1)
            chunk, attempt, images = self._pending.pop(ref)
            try:
                scored.append(ray.get(ref))
            except (RayActorError, RayTaskError) as exc:
                if attempt >= self.max_task_retries:
                    self._pending.clear()
                    raise RewardFailure(
                        f"reward scoring failed on chunk {chunk} of stage {self.stage} after "
                        f"{attempt + 1} tries: {first_line(exc)}"
                    ) from None
                self._send(chunk, attempt + 1, images)
        return sorted(scored, key=lambda s: s.chunk)

    def kill(self) -> None:
        for a in self.actors:
            ray.kill(a, no_restart=True)
