"""Config sections of the model and of sampling from it: which pipeline, in what precision,
and how many trunks and branches a stage draws."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from configs.schema_section import Section


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
