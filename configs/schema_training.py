"""Config sections of the algorithm and its update: the interval schedule, advantages,
selection, the loss, the LoRA and the optimizer."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from configs.schema_section import Section


class ScheduleConfig(Section):
    """Which denoising steps (the interval) stage i trains.

    backward (the paper; `linear` is accepted as the same): the last s_i steps, with the
    reference ramp s_i = start + floor((end - start + 1) * i / stages), capped at end;
    forward: the first s_i steps of the same ramp; window: `width` steps whose first index
    slides from 0 (the noisiest step) to num_steps - width over the stages, by the same
    rule; list: the last values[i] steps (the last value repeats); constant: the last
    `start` steps.
    """

    kind: Literal["backward", "forward", "window", "list", "constant"] = "backward"
    start: int = Field(14, ge=1)
    end: int = Field(20, ge=1)
    stages: int | None = Field(None, ge=1, description="Stages the ramp spans; default: all.")
    values: list[int] | None = None
    width: int | None = Field(None, ge=1, description="window: steps in the interval.")

    @field_validator("kind", mode="before")
    @classmethod
    def _linear_is_backward(cls, kind: object) -> object:
        return "backward" if kind == "linear" else kind

    @model_validator(mode="after")
    def _check(self) -> ScheduleConfig:
        if self.kind == "list" and not self.values:
            raise ValueError("schedule.values must list one interval per stage when kind=list")
        if self.kind in ("backward", "forward") and self.start > self.end:
            raise ValueError(f"schedule.start={self.start} is above schedule.end={self.end}")
        if self.values and min(self.values) < 1:
            raise ValueError(f"schedule.values={self.values} must all be >= 1")
        if (self.kind == "window") != (self.width is not None):
            raise ValueError("schedule.width is the interval of kind=window, and only of it")
        return self


class AdvantageConfig(Section):
    """prompt_history: B² (this stage + last `history` stages per prompt);
    stat_tracker: DDPO's per-prompt ring buffer; group: GRPO-style, within each trunk.

    `group_scale` (group only) is what a trunk's centred rewards are divided by: `trunk`, the
    trunk's own std (GRPO), so branches that differ by noise alone still get advantages of
    +-1 and pass any selection threshold; `prompt`, the std of all this stage's rewards of
    the trunk's prompt, so a trunk whose branches barely differ gets small advantages."""

    mode: Literal["prompt_history", "stat_tracker", "group"] = "prompt_history"
    group_scale: Literal["trunk", "prompt"] = "trunk"
    history: int = Field(8, ge=0)
    buffer_size: int = Field(32, ge=1)
    min_count: int = Field(16, ge=1)

    @model_validator(mode="after")
    def _check(self) -> AdvantageConfig:
        if self.group_scale != "trunk" and self.mode != "group":
            raise ValueError(
                f"advantage.group_scale={self.group_scale} applies to advantage.mode=group "
                f"only, not {self.mode}"
            )
        return self


class SelectionConfig(Section):
    mode: Literal["extremes", "all"] = "extremes"
    tau_pos: float = 0.5
    tau_neg: float = -0.5

    @model_validator(mode="after")
    def _check(self) -> SelectionConfig:
        if self.tau_neg > self.tau_pos:
            raise ValueError(f"selection.tau_neg={self.tau_neg} is above tau_pos={self.tau_pos}")
        return self


class LossConfig(Section):
    name: Literal["ppo_clip", "pairwise"] = "ppo_clip"
    clip_range: float = Field(0.1, gt=0.0)
    adv_clip: float = Field(5.0, gt=0.0)
    beta_pos: float = Field(1.0, ge=0.0)
    beta_neg: float = Field(1.0, ge=0.0)
    pairwise_beta: float = Field(
        100.0, gt=0.0, description="Scale of the log-ratio margin in the pairwise loss."
    )
    step_weight: Literal["none", "noise"] = Field(
        "none",
        description="'noise': a step whose log-prob reacts more strongly to the noise "
        "prediction than the median step (|d mean/d eps| / std) has its loss term scaled "
        "down by that excess, so one near-deterministic step cannot dominate the update.",
    )
    kl_coef: float = Field(
        0.0,
        ge=0.0,
        description="Weight of a penalty on the KL divergence from the pretrained model "
        "(LoRA off) of each trained transition, DPOK-style; 0 (the paper's B²) adds none.",
    )
    kl_from_step: int = Field(
        0,
        ge=0,
        description="The KL penalty covers the transitions of DDIM steps from this index "
        "on (0 = the noisiest step: all of them; num_steps - 3: the last three only).",
    )


class LoraConfig(Section):
    rank: int = Field(4, ge=1)
    alpha: float | None = Field(None, gt=0.0, description="Default: equal to rank.")
    targets: list[str] = ["to_q", "to_k", "to_v", "to_out.0"]


class TrainConfig(Section):
    lr: float = Field(1e-4, gt=0.0)
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = Field(1e-4, ge=0.0)
    max_grad_norm: float = Field(1.0, gt=0.0)
    epochs: int = Field(2, ge=1)
    batch_size: int = Field(
        8,
        ge=1,
        description="Training units (trajectories; pairs with loss.name=pairwise) per batch; "
        "grad_accum batches make one optimizer step.",
    )
    grad_accum: int = Field(1, ge=1, description="Batches per optimizer step.")
    micro_batch: int = Field(
        0,
        ge=0,
        description="Most training units per forward / backward: a batch (a rank's shard of "
        "it) larger than this is cut into pieces whose gradients add up to the batch's, so "
        "it sets memory, not the update. 0: the whole batch.",
    )
    gradient_checkpointing: bool = Field(
        False,
        description="Recompute the UNet's activations in the backward pass instead of "
        "keeping them (diffusers' enable_gradient_checkpointing): much less memory per "
        "trajectory, about one more forward of time.",
    )
    onpolicy_tolerance: float | None = Field(
        None,
        gt=0.0,
        description="Largest |ratio - 1| of the recomputed to the sampled log-probs before a "
        "stage's first optimizer step that passes without a warning. None: 1e-4 when the "
        "UNet computes in float32, 1e-3 in half precision.",
    )
    target_kl: float | None = Field(
        None,
        gt=0.0,
        description="PPO early stopping: end a stage's update before an optimizer step whose "
        "micro-batches' approx. KL to the sampling policy exceeds this. None: never.",
    )
    shuffle_timesteps: bool = True
    ema: float | None = Field(
        None,
        gt=0.0,
        lt=1.0,
        description="Decay of an exponential moving average of the LoRA weights, updated "
        "after every optimizer step (ema = decay * ema + (1 - decay) * weights, starting at "
        "the initial LoRA). The average is what evaluation, the training grid and the "
        "exported LoRA use; rollouts keep sampling with the trained weights, so the PPO "
        "ratio stays on-policy. None: off.",
    )
    lora: LoraConfig = LoraConfig()
