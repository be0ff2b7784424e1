"""Config sections of the run's execution: Ray actors, their resources and placement, and
logging."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from configs.schema_section import Section


class RuntimeConfig(Section):
    """Actor counts and resources. Threads: 0 = as many as the actor's CPUs."""

    rollout_actors: int = Field(2, ge=1)
    rollout_cpus: float = Field(1.0, gt=0.0)
    rollout_gpus: float = Field(0.0, ge=0.0)
    rollout_threads: int = Field(0, ge=0)
    reward_actors: int = Field(1, ge=1)
    reward_cpus: float = Field(1.0, gt=0.0)
    reward_gpus: float = Field(0.0, ge=0.0)
    reward_threads: int = Field(0, ge=0)
    learner_cpus: float = Field(1.0, gt=0.0)
    learner_gpus: float = Field(0.0, ge=0.0)
    learner_threads: int = Field(0, ge=0)
    learner_workers: int = Field(
        1,
        ge=1,
        description="Learner ranks in one torch.distributed group (NCCL on CUDA, gloo on the "
        "CPU), each on its own bundle of learner_cpus / learner_gpus; the update's work is "
        "sharded over them and their LoRA gradients all-reduced: the same update as one.",
    )
    placement: Literal["separate", "colocated"] = Field(
        "separate",
        description="separate: rollout actors, reward actors and learner ranks each on "
        "bundles of their own; colocated: rollout actor i and learner rank i share bundle i "
        "(one GPU: rollout_gpus + learner_gpus = 1), so every GPU samples, then trains.",
    )
    trunks_per_task: int = Field(
        0, ge=0, description="Trunks per rollout task (0: an eighth of the stage's trunks)."
    )
    max_restarts: int = Field(3, ge=0)
    max_task_retries: int = Field(2, ge=0)

    @model_validator(mode="after")
    def _check(self) -> RuntimeConfig:
        if self.placement != "colocated":
            return self
        if self.rollout_actors != self.learner_workers:
            raise ValueError(
                f"runtime.placement=colocated pairs each rollout actor with a learner rank: "
                f"rollout_actors={self.rollout_actors} must equal "
                f"learner_workers={self.learner_workers}"
            )
        gpus = self.rollout_gpus + self.learner_gpus
        if gpus > 0 and abs(gpus - 1.0) > 1e-9:
            raise ValueError(
                f"runtime.placement=colocated: rollout_gpus + learner_gpus = {gpus:g}; a "
                "colocated bundle is one GPU, so they must add up to 1"
            )
        return self


class LoggingConfig(Section):
    experiment: str = "b2-diffurl"
    mlflow: bool = True
    grid_every: int = Field(5, ge=0, description="Log a sample grid every N stages (0: never).")
