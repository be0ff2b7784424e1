"""The one config schema, validated once at the door.

Every section forbids unknown keys so a typo never silently falls back to a default.
Inner code receives these typed objects, never raw dicts.
"""

from __future__ import annotations

from typing import Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)


class Section(BaseModel):
    # allow_inf_nan=False: a learning rate of inf or nan passes `gt=0` and diverges the run
    model_config = ConfigDict(
        extra="forbid", frozen=True, protected_namespaces=(), allow_inf_nan=False
    )


class ModelConfig(Section):
    pretrained: str = Field(
        "toyworld/assets/pipeline",
        description="A local diffusers text-to-image directory or a Hugging Face hub id.",
    )
    revision: str | None = None
    dtype: Literal["float32", "float16", "bfloat16"] = "float32"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    allow_tf32: bool = Field(
        False,
        description="On a CUDA GPU, let float32 matrix products and convolutions run in TF32 "
        "(faster, about 1e-3 relative error; PyTorch allows it for convolutions by default). "
        "Off: TF32 breaks the ratio-1 identity of PPO at unchanged weights a thousandfold and "
        "can collapse training (docs/RESULTS.md). "
        "No effect on float16 / bfloat16 models or on the CPU.",
    )
    resolution: int | None = Field(
        None,
        ge=8,
        description="Image side in pixels that sampling, training and evaluation use; None: "
        "the denoiser's own sample_size (e.g. 1024 for SD3.5 and SDXL). A multiple of the "
        "VAE's downsampling times 8.",
    )
    max_sequence_length: int | None = Field(
        None,
        ge=0,
        le=512,
        description="sd3 / flux: the T5 tokens of the joint text sequence (diffusers' "
        "max_sequence_length); without a T5 encoder, that many zero embeddings. None: the "
        "family's default (256 for sd3, 512 for flux). Ignored by sd and sdxl.",
    )
    autocast: Literal["none", "bf16", "fp16"] = Field(
        "none",
        description="Run the UNet under torch.autocast in this half precision wherever the "
        "policy runs (sampling, training, evaluation), so the learner recomputes log-probs "
        "with the sampler's arithmetic; the LoRA and its optimizer state stay float32. fp16 "
        "scales the loss with torch's GradScaler. model.dtype is then float32 or the same "
        "half type.",
    )

    @model_validator(mode="after")
    def _check(self) -> ModelConfig:
        half = {"bf16": "bfloat16", "fp16": "float16"}.get(self.autocast)
        if half and self.dtype not in ("float32", half):
            raise ValueError(
                f"model.autocast={self.autocast} with model.dtype={self.dtype}: autocast "
                f"computes in {half}, so the weights must be float32 or {half}"
            )
        return self


class SamplingConfig(Section):
    num_steps: int = Field(20, ge=1, le=1000)
    eta: float = Field(
        1.0,
        gt=0.0,
        le=1.0,
        description="The policy step's noise: DDIM's eta for UNet models (sd); for "
        "flow-matching models (sd3) the SDE noise level a of the trained steps, std "
        "a * sqrt(sigma / (1 - sigma)) (Flow-GRPO uses 0.7).",
    )
    guidance_scale: float = Field(5.0, ge=1.0)
    branches: int = Field(5, ge=1, description="K: branches per trunk after the split point.")
    trunks_per_stage: int = Field(256, ge=1, description="Trunks (prompt samples) per stage.")
    micro_batch: int = Field(32, ge=1, description="Most latents in one UNet call.")


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


PROMPT_SETS = ("animals_activities", "colour_fruit", "object_relation")


def prompt_set_files(name: str) -> dict[str, str]:
    """The train and test files of a named prompt set (ALGORITHM.md's three templates)."""
    return {split: f"configs/prompts/{name}_{split}.txt" for split in ("train", "test")}


class PromptsConfig(Section):
    """`set` names one of the paper's prompt templates and stands for its two files;
    otherwise `train` / `test` are prompt files (one prompt a line)."""

    set: Literal["animals_activities", "colour_fruit", "object_relation"] | None = None
    train: str = "toyworld/prompts/all_train.txt"
    test: str = "toyworld/prompts/all_test.txt"

    @model_validator(mode="before")
    @classmethod
    def _files_of_the_set(cls, data: object) -> object:
        # a set fills in its files; the resolved config a run saves names both, so equal
        # files beside a set are accepted and other ones refused (`_one_source`)
        if isinstance(data, dict) and data.get("set") in PROMPT_SETS:
            return {**prompt_set_files(data["set"]), **data}
        return data

    @field_validator("train", "test")
    @classmethod
    def _one_source(cls, path: str, info: ValidationInfo) -> str:
        name = info.data.get("set")
        if name is not None and path != prompt_set_files(name)[info.field_name]:
            raise ValueError(
                f"prompts.set={name} names the prompt files itself: give a set or files, not both"
            )
        return path


class RewardTerm(Section):
    """One reward term: a registered reward (`rewards.registry`: the built-ins, `remote`, or
    a package's entry point in `b2_diffurl.rewards`) and its settings."""

    name: str = Field(description="A registered reward name (rewards.registry.known_names).")
    label: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9_.-]+$",
        description="Key of this term's metric (reward_<label>); default the name, then "
        "name_2, name_3 for repeats.",
    )
    weight: float = 1.0
    model: str | None = Field(
        None,
        description="clip_score / aesthetic: open_clip architecture; bert_score: BERT model "
        "dir; pickscore: CLIPModel hub id or folder; custom: package.module:name.",
    )
    checkpoint: str | None = Field(None, description="open_clip pretrained tag or local path.")
    num_layers: int = Field(6, ge=1, description="bert_score: BERT layer whose embeddings count.")
    captioner: str | None = Field(
        None,
        description="bert_score: 'toy' (the toy world's describer, default) or a transformers "
        "image-to-text model, hub id or folder (BLIP, LLaVA-style; rewards.captioner).",
    )
    options: dict[str, str | int | float | bool | list[str | int | float | bool] | None] = Field(
        default_factory=dict, description="A plug-in reward's own settings, read in its setup."
    )
    url: str | None = Field(
        None,
        pattern=r"^https?://[^\s/]+(/\S*)?$",
        description="remote: the scoring server's base URL (python -m rewards.serve).",
    )
    timeout_s: float = Field(60.0, gt=0.0, description="remote: seconds to wait per request.")
    retries: int = Field(2, ge=0, description="remote: further tries of a failed request.")
    batch_size: int = Field(
        0, ge=0, description="remote: images per request (0: the whole batch in one)."
    )

    @field_validator("name")
    @classmethod
    def _registered_name(cls, name: str) -> str:
        from rewards.registry import known_names

        known = known_names()
        if name not in known:
            raise ValueError(f"unknown reward; known: {', '.join(known)}")
        return name

    @model_validator(mode="after")
    def _url_with_remote(self) -> RewardTerm:
        if self.name == "remote" and not self.url:
            raise ValueError("a remote reward needs url (e.g. http://127.0.0.1:8700)")
        if self.name != "remote" and self.url:
            raise ValueError(f"url is for remote rewards, not {self.name!r}")
        return self


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
