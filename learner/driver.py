"""The Ray driver's cluster: the run's actors on one placement group, as the three groups
a stage runs on (`learner.groups`, `learner.stage.run_stage`).

Bundle i holds rollout actor i (and, with `runtime.placement: colocated`, learner rank i on
the same GPU); then come the reward actors and, `separate`, the learner ranks. The groups
own what a cluster needs (weight versions, retries, restarts, resampling of lost chunks);
the driver only builds them, and rebuilds the learner group when one of its ranks is lost.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import ray
from ray.exceptions import ActorDiedError, GetTimeoutError, RayActorError, RayTaskError
from ray.util.placement_group import placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from actors.rollout_group import RayRolloutGroup, first_line
from actors.rollout_worker import RolloutWorker
from configs.schema import Config
from learner.checkpoint import LearnerState
from learner.groups import StageGroups
from learner.learner_group import LearnerLost, RayLearnerGroup
from rewards.reward_group import RayRewardGroup
from rewards.reward_worker import RewardWorker

OnSubmit = Callable[[str, int, int, object], None]


class RuntimeSetupError(RuntimeError):
    """The cluster cannot host the configured actors; str() is one line."""


class Cluster:
    """The actors of one run, placed on one placement group."""

    def __init__(self, cfg: Config, on_submit: OnSubmit | None = None):
        self.cfg = cfg
        self.on_submit = on_submit  # fault-injection hook for tests
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

        rollouts = [
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
        rewards = [
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
        self.rollouts = RayRolloutGroup(rollouts, on_submit)
        self.rewards = RayRewardGroup(rewards, rt.max_task_retries, on_submit)
        self.learner = RayLearnerGroup(cfg, self.pg, self._learner_bundle, on_submit)
        # surface construction errors (bad model, bad reward checkpoint) now, once
        try:
            ray.get([a.ping.remote() for a in rollouts])
            self.learner.connect()
            ray.get([r.__ray_ready__.remote() for r in rewards])
        except (RayActorError, RayTaskError) as exc:
            raise RuntimeSetupError(f"an actor failed to start: {first_line(exc)}") from None

    @property
    def groups(self) -> StageGroups:
        return StageGroups(self.rollouts, self.rewards, self.learner)

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
            self.learner = RayLearnerGroup(self.cfg, self.pg, self._learner_bundle, self.on_submit)
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
        self.rollouts.kill()
        self.rewards.kill()
        self.learner.kill()
        remove_placement_group(self.pg)
