"""The Ray driver: actors on a placement group, the stage loop, logging and checkpoints.

One stage: publish the learner's LoRA (one `ray.put`, a version) -> rollout actors sample
chunks of trunks (their images go to reward actors as soon as a chunk is done, so scoring
overlaps sampling) -> the learner normalises and selects -> each rollout actor hands the
learner only the selected rows -> the learner updates -> metrics, grid, checkpoint.
A rollout actor that dies is restarted by Ray; its chunks are sampled again (same seeds)
by whichever actor is free, after it has been given the current weights.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import ray
import torch
from ray.exceptions import ActorDiedError, GetTimeoutError, RayActorError, RayTaskError
from ray.util.placement_group import placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from actors.rollout import RolloutWorker, StaleWeightsError
from configs.schema import Config
from learner.advantages import within_trunk_share
from learner.checkpoint import LearnerState
from learner.learner_group import LearnerGroup, LearnerLost
from learner.stage import check_rewards, sampler_settings, stage_prompts
from learner.training_grid import GRID_SEED, GRID_STREAM, grid_rows
from rewards.actor import RewardWorker


class RuntimeSetupError(RuntimeError):
    """The cluster cannot host the configured actors; str() is one line."""


class RewardFailure(RuntimeError):
    """A reward batch failed after its retries; the run stops rather than train without it."""


@dataclass
class StageOutput:
    metrics: dict[str, float]
    grid_images: torch.Tensor | None = None  # uint8 [N, 3, H, W], N = len(grid_prompts)
    grid_prompts: list[str] = field(default_factory=list)


def _is_actor_death(exc: BaseException) -> bool:
    return isinstance(exc, RayActorError | ActorDiedError)


def _cause(exc: BaseException) -> BaseException:
    if isinstance(exc, RayTaskError):
        return getattr(exc, "cause", None) or exc
    return exc


class Cluster:
    """The actors of one run, placed on one placement group."""

    def __init__(self, cfg: Config):
        self.cfg = cfg
        rt = cfg.runtime
        self._check_resources()
        # bundle i: rollout actor i (and, colocated, learner rank i); then the reward actors;
        # then, separate, the learner ranks
        colocated = rt.placement == "colocated"
        rollout = (
            self._bundle(rt.rollout_cpus + rt.learner_cpus, rt.rollout_gpus + rt.learner_gpus)
            if colocated
            else self._bundle(rt.rollout_cpus, rt.rollout_gpus)
        )
        bundles = [rollout] * rt.rollout_actors + [
            self._bundle(rt.reward_cpus, rt.reward_gpus)
        ] * rt.reward_actors
        if not colocated:
            bundles += [self._bundle(rt.learner_cpus, rt.learner_gpus)] * rt.learner_workers
        # colocated bundles are spread over the nodes so that every node's GPUs sample and
        # train; separate ones are packed onto as few nodes as possible
        self.pg = placement_group(bundles, strategy="SPREAD" if colocated else "PACK")
        try:
            ray.get(self.pg.ready(), timeout=120)
        except GetTimeoutError:
            raise RuntimeSetupError(
                f"runtime: could not place {len(bundles)} actor bundles {bundles} on the Ray "
                f"cluster ({ray.cluster_resources()}) within 120 s"
            ) from None

        def strategy(i: int) -> PlacementGroupSchedulingStrategy:
            return PlacementGroupSchedulingStrategy(self.pg, placement_group_bundle_index=i)

        self.rollouts = [
            ray.remote(RolloutWorker)
            .options(
                num_cpus=rt.rollout_cpus,
                num_gpus=rt.rollout_gpus,
                max_restarts=rt.max_restarts,
                max_task_retries=0,
                scheduling_strategy=strategy(i),
            )
            .remote(cfg, i)
            for i in range(rt.rollout_actors)
        ]
        self.rewards = [
            ray.remote(RewardWorker)
            .options(
                num_cpus=rt.reward_cpus,
                num_gpus=rt.reward_gpus,
                max_restarts=rt.max_restarts,
                max_task_retries=rt.max_task_retries,
                scheduling_strategy=strategy(rt.rollout_actors + i),
            )
            .remote(cfg, i)
            for i in range(rt.reward_actors)
        ]
        self._learner_bundle = 0 if colocated else rt.rollout_actors + rt.reward_actors
        self.learner = LearnerGroup(cfg, self.pg, self._learner_bundle)
        # surface construction errors (bad model, bad reward checkpoint) now, once
        try:
            ray.get([a.ping.remote() for a in self.rollouts])
            self.learner.connect()
            ray.get([r.__ray_ready__.remote() for r in self.rewards])
        except (RayActorError, RayTaskError) as exc:
            raise RuntimeSetupError(f"an actor failed to start: {_first_line(exc)}") from None

    @staticmethod
    def _bundle(cpus: float, gpus: float) -> dict[str, float]:
        return {"CPU": cpus, "GPU": gpus} if gpus > 0 else {"CPU": cpus}

    def _check_resources(self) -> None:
        rt = self.cfg.runtime
        have = ray.cluster_resources()
        need_gpu = (
            rt.rollout_actors * rt.rollout_gpus
            + rt.reward_actors * rt.reward_gpus
            + rt.learner_workers * rt.learner_gpus
        )
        if rt.learner_workers > 1 and 0 < rt.learner_gpus < 1 and rt.placement == "separate":
            raise RuntimeSetupError(
                f"runtime: learner_workers={rt.learner_workers} with learner_gpus="
                f"{rt.learner_gpus:g}: NCCL needs a whole GPU for each learner rank"
            )
        if need_gpu > have.get("GPU", 0.0) + 1e-9:
            raise RuntimeSetupError(
                f"runtime: the actors request {need_gpu:g} GPUs (rollout_gpus, reward_gpus, "
                f"learner_gpus x learner_workers) but the Ray cluster has {have.get('GPU', 0.0):g}"
            )

    def rebuild_learner(self, state: LearnerState | None, source: str) -> None:
        """A new learner group on the same bundles (Ray moves a lost node's bundles to a
        node with room), holding `state` (None: the initial one) read from `source`."""
        self.learner.kill()
        for _attempt in range(5):
            # until Ray has noticed a lost node, a new rank may still be sent to it and die
            if not self.pg.wait(timeout_seconds=120):
                break
            self.learner = LearnerGroup(self.cfg, self.pg, self._learner_bundle)
            try:
                self.learner.connect()
                if state is not None:
                    self.learner.restore(state, source)
                return
            except (RayActorError, ActorDiedError, LearnerLost):
                self.learner.kill()
                time.sleep(1.0)
        raise LearnerLost("could not rebuild the learner group: its bundles found no node")

    def shutdown(self) -> None:
        for a in [*self.rollouts, *self.rewards]:
            ray.kill(a, no_restart=True)
        self.learner.kill()
        remove_placement_group(self.pg)


def _first_line(exc: BaseException) -> str:
    cause = _cause(exc)
    text = str(cause).strip().splitlines()
    # Ray error texts start with a banner; the user's message is the last line
    lines = [ln for ln in text if ln.strip()]
    return (lines[-1] if lines else type(cause).__name__)[:300]


class StageRunner:
    """Runs stages on a Cluster; keeps what must survive between stages (versions, counts)."""

    def __init__(
        self,
        cfg: Config,
        cluster: Cluster,
        train_prompts: list[str],
        on_submit: Callable[[str, int, int, object], None] | None = None,
    ):
        self.cfg = cfg
        self.cluster = cluster
        self.train_prompts = train_prompts
        self.actor_version = [-1] * len(cluster.rollouts)
        self.alive = list(range(len(cluster.rollouts)))
        self.restarts = 0
        # fault-injection hook for tests: ("rollout" | "reward", stage, chunk, actor)
        self.on_submit = on_submit

    # -- weights -------------------------------------------------------------------------
    def publish(self) -> int:
        self.version, self.weights_ref = self.cluster.learner.publish()
        return self.version

    def _sync(self, actors: list[int]) -> None:
        todo = [a for a in actors if self.actor_version[a] != self.version]
        refs = {
            a: self.cluster.rollouts[a].set_weights.remote(self.version, self.weights_ref)
            for a in todo
        }
        for a, ref in refs.items():
            try:
                self.actor_version[a] = ray.get(ref)
            except ActorDiedError:
                self._lost(a, permanent=True)
            except RayActorError:
                self.actor_version[a] = -1

    def _lost(self, a: int, permanent: bool = False) -> None:
        self.actor_version[a] = -1
        if permanent and a in self.alive:
            self.alive.remove(a)
        if not self.alive:
            raise RuntimeError("every rollout actor has died; see the Ray logs")

    # -- one stage ----------------------------------------------------------------------
    def chunks(self, trunks: int) -> list[np.ndarray]:
        """The stage's rollout tasks. Their make-up depends on the config only, never on
        the number of actors, so every task computes bit-identical samples wherever it
        runs (BLAS results depend on batch composition)."""
        per = self.cfg.runtime.trunks_per_task or -(-trunks // 8)
        return [np.arange(i, min(i + per, trunks)) for i in range(0, trunks, per)]

    def run(self, stage: int, want_grid: bool) -> StageOutput:
        cfg = self.cfg
        settings = sampler_settings(cfg, stage)
        prompts = stage_prompts(self.train_prompts, cfg.sampling.trunks_per_stage, cfg.seed, stage)
        chunks = self.chunks(len(prompts))
        k = settings.branches
        t0 = time.perf_counter()
        self.publish()
        self._sync(self.alive)
        t_sync = time.perf_counter() - t0

        restarts_before = self.restarts
        owner, scored, stats = self._sample_and_score(stage, settings, prompts, chunks)
        t_rollout_done = max(s["done_at"] for s in stats.values())
        t_scored = time.perf_counter()

        row_prompts = [prompts[t] for c in chunks for t in c for _ in range(k)]
        trunk_ids = np.repeat(np.concatenate(chunks), k)
        rewards = check_rewards(
            np.concatenate([scored[c][0] for c in range(len(chunks))]), row_prompts
        )
        adv, sel = self.cluster.learner.select(row_prompts, trunk_ids, rewards)
        t_selected = time.perf_counter()
        update_stats = self._take_and_update(stage, settings, prompts, chunks, owner, adv, sel)
        t_end = time.perf_counter()

        calls = sum(s["calls"] for s in stats.values())
        evals = sum(s["evaluations"] for s in stats.values())
        row_bytes = stats[0]["row_bytes"]
        metrics = {
            "split_step": float(settings.split_step),
            "reward_mean": float(rewards.mean()),
            "reward_std": float(rewards.std()),
            "reward_within_trunk": within_trunk_share(rewards, trunk_ids),
            "positives": float(sel.positives),
            "negatives": float(sel.negatives),
            "images": float(len(rewards)),
            "unet_calls": float(calls),
            "unet_evaluations": float(evals),
            "rollout_restarts": float(self.restarts - restarts_before),
            "bytes_to_learner": float(len(sel.index) * row_bytes),
            "seconds_weight_sync": t_sync,
            "seconds_rollout": t_rollout_done - (t0 + t_sync),
            "seconds_reward": max(0.0, t_scored - t_rollout_done),
            "seconds_select": t_selected - t_scored,
            "seconds_update": t_end - t_selected,
            "images_per_second": len(rewards) / max(1e-9, t_end - t0),
        }
        for name in scored[0][1]:
            values = np.concatenate([scored[c][1][name] for c in range(len(chunks))])
            metrics[f"reward_{name}"] = float(values.mean())
        metrics.update({k2: float(v) for k2, v in update_stats.as_dict().items()})
        out = StageOutput(metrics)
        if want_grid:
            out.grid_prompts = grid_rows(self.train_prompts)
            out.grid_images = self._grid(stage, settings, out.grid_prompts)
            metrics["seconds_grid"] = time.perf_counter() - t_end
        return out

    def _grid(self, stage: int, settings, rows: list[str]) -> torch.Tensor | None:
        """The grid rows from their fixed noise with the weights this stage trained, on the
        first rollout actor that takes them; None (and training goes on) if none could."""
        self.publish()
        for a in list(self.alive):
            self._sync([a])
            if self.actor_version[a] != self.version:
                continue
            ref = self.cluster.rollouts[a].sample_fixed.remote(
                self.version, rows, settings, GRID_SEED, GRID_STREAM
            )
            try:
                return ray.get(ref)
            except (RayActorError, RayTaskError) as exc:
                if not self._recoverable(exc, a, f"the sample grid of stage {stage}"):
                    raise
        print(f"  stage {stage}: no rollout actor could sample the grid; skipped", flush=True)
        return None

    def _sample_and_score(self, stage, settings, prompts, chunks):
        rt = self.cfg.runtime
        queue = deque(range(len(chunks)))
        idle = deque(self.alive)
        pending_samples: dict = {}
        pending_rewards: dict = {}
        owner: dict[int, int] = {}
        scored: dict[int, tuple] = {}
        stats: dict[int, dict] = {}
        next_reward = 0
        while queue or pending_samples or pending_rewards:
            while queue and idle:
                a = idle.popleft()
                if a not in self.alive:
                    continue
                if self.actor_version[a] != self.version:
                    self._sync([a])
                    if self.actor_version[a] != self.version:
                        if a in self.alive:
                            idle.append(a)
                        continue
                c = queue.popleft()
                ids = chunks[c]
                images_ref, info_ref = (
                    self.cluster.rollouts[a]
                    .sample.options(num_returns=2)
                    .remote(
                        self.version, stage, c, [prompts[i] for i in ids], ids.tolist(), settings
                    )
                )
                pending_samples[info_ref] = (c, a, images_ref)
                if self.on_submit is not None:
                    self.on_submit("rollout", stage, c, self.cluster.rollouts[a])
            ready, _ = ray.wait(list(pending_samples) + list(pending_rewards), num_returns=1)
            ref = ready[0]
            if ref in pending_samples:
                c, a, images_ref = pending_samples.pop(ref)
                try:
                    info = ray.get(ref)
                except (RayActorError, RayTaskError) as exc:
                    if not self._recoverable(exc, a, f"chunk {c} of stage {stage}"):
                        raise
                    queue.appendleft(c)
                    if a in self.alive:
                        idle.append(a)
                    continue
                owner[c] = a
                idle.append(a)
                stats[c] = {
                    "calls": info[0],
                    "evaluations": info[1],
                    "row_bytes": info[2],
                    "done_at": time.perf_counter(),
                }
                r = self.cluster.rewards[next_reward % len(self.cluster.rewards)]
                next_reward += 1
                pending_rewards[r.score.remote(images_ref)] = (c, 0, images_ref)
                if self.on_submit is not None:
                    self.on_submit("reward", stage, c, r)
            else:
                c, attempt, images_ref = pending_rewards.pop(ref)
                try:
                    _, total, terms = ray.get(ref)
                    scored[c] = (total, terms)
                except (RayActorError, RayTaskError) as exc:
                    if attempt >= rt.max_task_retries:
                        raise RewardFailure(
                            f"reward scoring failed on chunk {c} of stage {stage} after "
                            f"{attempt + 1} tries: {_first_line(exc)}"
                        ) from None
                    r = self.cluster.rewards[next_reward % len(self.cluster.rewards)]
                    next_reward += 1
                    pending_rewards[r.score.remote(images_ref)] = (c, attempt + 1, images_ref)
        return owner, scored, stats

    def _recoverable(self, exc: BaseException, a: int, what: str) -> bool:
        """After a failed rollout task: True if the work can simply be done again."""
        if isinstance(_cause(exc), StaleWeightsError):
            self.actor_version[a] = -1
            return True
        if not _is_actor_death(exc):
            return False
        self.restarts += 1
        self.actor_version[a] = -1
        print(
            f"  rollout actor {a} died during {what}; restarting it and sampling again", flush=True
        )
        try:  # a restartable actor answers once Ray has rebuilt it
            ray.get(self.cluster.rollouts[a].ping.remote(), timeout=120)
        except (RayActorError, GetTimeoutError):
            self._lost(a, permanent=True)
        return True

    def _take_and_update(self, stage, settings, prompts, chunks, owner, adv, sel):
        k = settings.branches
        offsets = np.cumsum([0] + [len(c) * k for c in chunks])
        for _attempt in range(3):
            refs = []
            for c in range(len(chunks)):
                lo, hi = offsets[c], offsets[c + 1]
                rows = sel.index[(sel.index >= lo) & (sel.index < hi)] - lo
                if len(rows):
                    refs.append(
                        (c, self.cluster.rollouts[owner[c]].take.remote(stage, c, rows.tolist()))
                    )
            try:
                return self.cluster.learner.update(
                    stage, adv, sel, *[r for _, r in refs], on_submit=self._learner_submitted(stage)
                )
            except (RayActorError, RayTaskError) as exc:
                lost = self._lost_chunks(refs, owner, stage)
                if not lost:
                    raise
                print(
                    f"  stage {stage}: chunks {lost} were lost before the update "
                    f"({type(_cause(exc)).__name__}); sampling them again",
                    flush=True,
                )
                owner.update(self._resample(stage, settings, prompts, chunks, lost))
        raise RuntimeError(f"stage {stage}: could not gather the selected trajectories")

    def _learner_submitted(self, stage: int) -> Callable[[list], None] | None:
        if self.on_submit is None:
            return None
        return lambda ranks: self.on_submit("learner", stage, 0, ranks)

    def _lost_chunks(self, refs: list, owner: dict[int, int], stage: int) -> list[int]:
        """Chunks whose trajectories are gone: their actor died (or restarted and so forgot
        them). Other failures are real errors and are left to propagate."""
        lost = []
        for c, ref in refs:
            try:
                ray.get(ref)
            except (RayActorError, RayTaskError) as exc:
                if _is_actor_death(exc):
                    self._recoverable(exc, owner[c], f"stage {stage} before the update")
                elif not isinstance(_cause(exc), KeyError):
                    raise
                lost.append(c)
        return lost

    def _resample(self, stage, settings, prompts, chunks, which) -> dict[int, int]:
        """Sample the given chunks again (same seeds, so the same trajectories)."""
        owner = {}
        for c in which:
            for attempt in range(2 * len(self.cluster.rollouts) + 2):
                a = self.alive[(c + attempt) % len(self.alive)]
                self._sync([a])
                if self.actor_version[a] != self.version:
                    continue
                ids = chunks[c]
                _, info = (
                    self.cluster.rollouts[a]
                    .sample.options(num_returns=2)
                    .remote(
                        self.version, stage, c, [prompts[i] for i in ids], ids.tolist(), settings
                    )
                )
                try:
                    ray.get(info)
                except (RayActorError, RayTaskError) as exc:
                    if not self._recoverable(exc, a, f"chunk {c} of stage {stage}"):
                        raise
                    continue
                owner[c] = a
                break
            else:
                raise RuntimeError(f"stage {stage}: chunk {c} could not be sampled again")
        return owner
