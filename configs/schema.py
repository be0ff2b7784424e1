"""The one config schema, validated once at the door.

Every section forbids unknown keys so a typo never silently falls back to a default.
Inner code receives these typed objects, never raw dicts. The sections live in the
schema_* modules beside this one; `Config` joins them and checks what spans sections.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from configs.schema_model import ModelConfig, SamplingConfig
from configs.schema_runtime import LoggingConfig, RuntimeConfig
from configs.schema_section import Section
from configs.schema_task import PROMPT_SETS, PromptsConfig, RewardTerm, prompt_set_files
from configs.schema_training import (
    AdvantageConfig,
    LoraConfig,
    LossConfig,
    ScheduleConfig,
    SelectionConfig,
    TrainConfig,
)

__all__ = [
    "PROMPT_SETS",
    "AdvantageConfig",
    "Config",
    "LoggingConfig",
    "LoraConfig",
    "LossConfig",
    "ModelConfig",
    "PromptsConfig",
    "RewardTerm",
    "RuntimeConfig",
    "SamplingConfig",
    "ScheduleConfig",
    "Section",
    "SelectionConfig",
    "TrainConfig",
    "prompt_set_files",
]


class Config(Section):
    algorithm: Literal["b2", "ddpo"] = "b2"
    seed: int = Field(0, ge=0, lt=2**63, description="Every noise stream derives from it.")
    stages: int = Field(100, ge=1)
    output_dir: str = "runs"
    run_name: str | None = None
    model: ModelConfig = ModelConfig()
    sampling: SamplingConfig = SamplingConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    advantage: AdvantageConfig = AdvantageConfig()
    selection: SelectionConfig = SelectionConfig()
    loss: LossConfig = LossConfig()
    train: TrainConfig = TrainConfig()
    prompts: PromptsConfig = PromptsConfig()
    rewards: list[RewardTerm] = [RewardTerm(name="clip_score")]
    runtime: RuntimeConfig = RuntimeConfig()
    logging: LoggingConfig = LoggingConfig()

    @model_validator(mode="after")
    def _check(self) -> Config:
        steps = self.sampling.num_steps
        sch = self.schedule
        if sch.kind == "list":
            bad = [v for v in sch.values or [] if v > steps]
            if bad:
                raise ValueError(f"schedule.values={bad} exceed sampling.num_steps={steps}")
        elif sch.kind == "window":
            if sch.width > steps:
                raise ValueError(f"schedule.width={sch.width} exceeds sampling.num_steps={steps}")
        elif sch.end > steps:
            raise ValueError(f"schedule.end={sch.end} exceeds sampling.num_steps={steps}")
        elif sch.kind == "constant" and sch.start > steps:
            raise ValueError(f"schedule.start={sch.start} exceeds sampling.num_steps={steps}")
        if self.loss.kl_from_step >= steps:
            raise ValueError(
                f"loss.kl_from_step={self.loss.kl_from_step} leaves no step of "
                f"sampling.num_steps={steps} under the KL penalty"
            )
        if self.loss.name == "pairwise" and self.sampling.branches < 2:
            raise ValueError("loss.name=pairwise needs sampling.branches >= 2")
        if not self.rewards:
            raise ValueError("rewards must name at least one scorer")
        reason = self._trains_nothing()
        if reason:
            raise ValueError(f"{reason}: no sample could ever be trained")
        return self

    def _trains_nothing(self) -> str | None:
        """Why no stage of a run with this config could train anything (None: it can)."""
        k, sel, adv = self.sampling.branches, self.selection, self.advantage
        if k < 2 and sel.mode == "extremes":
            return (
                f"sampling.branches={k}: selection.mode=extremes takes the best and worst of "
                "each trunk's branches and needs branches >= 2"
            )
        if k < 2 and adv.mode == "group":
            return f"sampling.branches={k}: advantage.mode=group centres within each trunk"
        if self.loss.name == "ppo_clip" and self.loss.beta_pos == 0 and self.loss.beta_neg == 0:
            return "loss.beta_pos=0 and loss.beta_neg=0 weight every sample by zero"
        if sel.mode == "extremes" and adv.mode == "group" and adv.group_scale == "trunk":
            # a trunk's standardised advantages lie within +-sqrt(K - 1)
            bound = (k - 1) ** 0.5
            no_pos, no_neg = sel.tau_pos > bound, sel.tau_neg <= -bound
            if (no_pos and no_neg) or (self.loss.name == "pairwise" and (no_pos or no_neg)):
                return (
                    f"selection.tau_pos={sel.tau_pos}, tau_neg={sel.tau_neg}: with "
                    f"sampling.branches={k} a trunk's advantages lie within +-{bound:.3g}"
                )
        return None
