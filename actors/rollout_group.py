"""The rollout group on Ray: restartable `RolloutWorker` actors, behind the rollout group
interface (`learner.groups.RolloutGroup`).

Weights travel by version: the learner's LoRA is one `ray.put`, and an actor is given it
before its next task whenever it holds another version (a restarted actor holds none and
refuses to sample). Chunks go to whichever actor is free; an actor that dies is restarted
by Ray and its chunk is sampled again, with the same seeds, by the next free actor. The
chunks' trajectories stay on the actors until the learner takes the selected rows; a chunk
lost by then (its actor restarted, its node gone) is sampled again before it is handed over.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterator

import ray
import torch
from ray.exceptions import ActorDiedError, GetTimeoutError, RayActorError, RayTaskError

from actors.rollout_worker import StaleWeightsError
from diffusion.sampler import SamplerSettings
from learner.records import PublishedWeights, RolloutTask, SampledChunk

OnSubmit = Callable[[str, int, int, object], None]


def cause(exc: BaseException) -> BaseException:
    """The exception a Ray task raised, unwrapped."""
    if isinstance(exc, RayTaskError):
        return getattr(exc, "cause", None) or exc
    return exc


def first_line(exc: BaseException) -> str:
    """The user's message of a Ray error (its text starts with a banner)."""
    inner = cause(exc)
    lines = [ln for ln in str(inner).strip().splitlines() if ln.strip()]
    return (lines[-1] if lines else type(inner).__name__)[:300]


class RayRolloutGroup:
    def __init__(self, actors: list, on_submit: OnSubmit | None = None):
        self.actors = actors
        self.version_of = [-1] * len(actors)  # the weights version each actor holds
        self.alive = list(range(len(actors)))
        self.restarts = 0
        self.on_submit = (
            on_submit  # fault-injection hook for tests ("rollout", stage, chunk, actor)
        )
        self.weights: PublishedWeights | None = None
        self._settings: SamplerSettings | None = None
        self._tasks: dict[int, RolloutTask] = {}
        self._owner: dict[int, int] = {}  # chunk -> the actor that keeps its trajectories

    # -- weights ----------------------------------------------------------------------------
    def sync(self, weights: PublishedWeights) -> None:
        self.weights = weights
        self._sync(self.alive)

    def _sync(self, which: list[int]) -> None:
        w = self.weights
        todo = [a for a in which if self.version_of[a] != w.version]
        refs = {a: self.actors[a].set_weights.remote(w.version, w.weights) for a in todo}
        for a, ref in refs.items():
            try:
                self.version_of[a] = ray.get(ref)
            except ActorDiedError:
                self._lose(a)
            except RayActorError:
                self.version_of[a] = -1

    def _ready(self, a: int) -> bool:
        """Actor `a` holds the current weights (given them now if it did not)."""
        if self.version_of[a] != self.weights.version:
            self._sync([a])
        return a in self.alive and self.version_of[a] == self.weights.version

    def _lose(self, a: int) -> None:
        self.version_of[a] = -1
        if a in self.alive:
            self.alive.remove(a)
        if not self.alive:
            raise RuntimeError("every rollout actor has died; see the Ray logs")

    def _recoverable(self, exc: BaseException, a: int, what: str) -> bool:
        """After a failed task of actor `a`: True if the work can simply be done again."""
        if isinstance(cause(exc), StaleWeightsError):
            self.version_of[a] = -1
            return True
        if not isinstance(exc, RayActorError | ActorDiedError):
            return False
        self.restarts += 1
        self.version_of[a] = -1
        print(
            f"  rollout actor {a} died during {what}; restarting it and sampling again", flush=True
        )
        try:  # a restartable actor answers once Ray has rebuilt it
            ray.get(self.actors[a].ping.remote(), timeout=120)
        except (RayActorError, GetTimeoutError):
            self._lose(a)
        return True

    # -- sampling ---------------------------------------------------------------------------
    def _submit(self, a: int, task: RolloutTask):
        images, cost = (
            self.actors[a]
            .sample.options(num_returns=2)
            .remote(self.weights.version, task, self._settings)
        )
        if self.on_submit is not None:
            self.on_submit("rollout", task.stage, task.chunk, self.actors[a])
        return images, cost

    def sample(self, settings: SamplerSettings, tasks: list[RolloutTask]) -> Iterator[SampledChunk]:
        self._settings = settings
        self._tasks = {t.chunk: t for t in tasks}
        self._owner = {}
        queue = deque(tasks)
        idle = deque(self.alive)
        pending: dict = {}  # cost ref -> (task, actor, images ref)
        while queue or pending:
            for _ in range(len(idle)):
                if not queue:
                    break
                a = idle.popleft()
                if a not in self.alive:
                    continue
                if not self._ready(a):
                    if a in self.alive:
                        idle.append(a)
                    continue
                task = queue.popleft()
                images, cost = self._submit(a, task)
                pending[cost] = (task, a, images)
            if not pending:  # every live actor refused the weights: give them a moment
                time.sleep(0.5)
                idle = deque(self.alive)
                continue
            (ref,), _ = ray.wait(list(pending), num_returns=1)
            task, a, images = pending.pop(ref)
            try:
                cost = ray.get(ref)
            except (RayActorError, RayTaskError) as exc:
                if not self._recoverable(exc, a, f"chunk {task.chunk} of stage {task.stage}"):
                    raise
                queue.appendleft(task)
                if a in self.alive:
                    idle.append(a)
                continue
            self._owner[task.chunk] = a
            idle.append(a)
            yield SampledChunk(task.stage, task.chunk, images, cost, time.perf_counter())

    def _resample(self, chunk: int) -> None:
        """Sample a chunk again (same seeds, so the same trajectories) on a live actor."""
        task = self._tasks[chunk]
        for attempt in range(2 * len(self.actors) + 2):
            a = self.alive[(chunk + attempt) % len(self.alive)]
            if not self._ready(a):
                continue
            _, cost = self._submit(a, task)
            try:
                ray.get(cost)
            except (RayActorError, RayTaskError) as exc:
                if not self._recoverable(exc, a, f"chunk {chunk} of stage {task.stage}"):
                    raise
                continue
            self._owner[chunk] = a
            return
        raise RuntimeError(f"stage {task.stage}: chunk {chunk} could not be sampled again")

    def take(self, stage: int, picks: dict[int, list[int]]) -> list[ray.ObjectRef]:
        """References to the picked rows, each checked to exist before it is handed on:
        a chunk whose actor died or restarted since is sampled again first."""
        parts: dict[int, ray.ObjectRef] = {}
        for attempt in range(4):
            todo = [c for c in picks if c not in parts]
            if not todo:
                return [parts[c] for c in picks]
            if attempt == 3:
                break
            if self.on_submit is not None:
                for c in todo:
                    self.on_submit("take", stage, c, self.actors[self._owner[c]])
            refs = {
                c: self.actors[self._owner[c]]
                .take.options(num_returns=2)
                .remote(stage, c, picks[c])
                for c in todo
            }
            lost = []
            for c, (rows, count) in refs.items():
                try:
                    ray.get(count)
                    parts[c] = rows
                except (RayActorError, RayTaskError) as exc:
                    if isinstance(exc, RayActorError | ActorDiedError):
                        self._recoverable(exc, self._owner[c], f"stage {stage} before the update")
                    elif not isinstance(cause(exc), KeyError):
                        raise
                    lost.append(c)
            if lost:
                print(
                    f"  stage {stage}: chunks {lost} were lost before the update; "
                    "sampling them again",
                    flush=True,
                )
                for c in lost:
                    self._resample(c)
        raise RuntimeError(f"stage {stage}: could not gather the selected trajectories")

    def sample_fixed(
        self,
        weights: PublishedWeights,
        prompts: list[str],
        settings: SamplerSettings,
        seed: int,
        stream: int,
    ) -> torch.Tensor | None:
        """On the first live actor that takes the task; None if none could."""
        self.weights = weights
        for a in list(self.alive):
            if not self._ready(a):
                continue
            ref = self.actors[a].sample_fixed.remote(
                weights.version, prompts, settings, seed, stream
            )
            try:
                return ray.get(ref)
            except (RayActorError, RayTaskError) as exc:
                if not self._recoverable(exc, a, "the sample grid"):
                    raise
        return None

    def kill(self) -> None:
        for a in self.actors:
            ray.kill(a, no_restart=True)
