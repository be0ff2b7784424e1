"""What the flow-matching families (sd3, flux) share: MM-DiT attention LoRA targets, the
scheduler and the flags it refuses, the conditioning's layout, the policy step and the
transformer's LoRA file.

Policy step: the trunk and the unrecorded steps after the interval follow the ODE (Euler);
recorded steps take the SDE of `diffusion.flow` with noise level = sampling.eta.

Conditioning [N, L + 1, max(J, P)]: L token rows of the joint attention width J and, as the
last row, the pooled embedding of width P, zero-padded (which encoder gives which: `sd3`,
`flux`).
"""

from __future__ import annotations

import torch
from diffusers import FlowMatchEulerDiscreteScheduler

from diffusion import flow
from diffusion.families.base import Family, UnsupportedFamily
from diffusion.flow import euler_step, flow_step_with_logprob


class FlowFamily(Family):
    """The part of the interface that sd3 and flux share (an MM-DiT transformer denoiser)."""

    denoiser = "transformer"
    # every attention projection of both MM-DiT streams (image and text)
    lora_targets = (
        "to_q",
        "to_k",
        "to_v",
        "to_out.0",
        "add_q_proj",
        "add_k_proj",
        "add_v_proj",
        "to_add_out",
    )
    scheduler_class = FlowMatchEulerDiscreteScheduler
    # scheduler flags that change the step or the schedule's direction
    refused = ("stochastic_sampling", "invert_sigmas")

    def scheduler(self, config) -> FlowMatchEulerDiscreteScheduler:
        sched = self.scheduler_class.from_config(config)
        for flag in self.refused:
            if sched.config.get(flag, False):
                raise UnsupportedFamily(
                    f"scheduler config {flag}=true is not supported for {self.name}"
                )
        return sched

    @staticmethod
    def unpack(model, cond: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(token states [N, L, J], pooled [N, P]) from the packed conditioning."""
        cfg = model.unet.config
        return cond[:, :-1, : cfg.joint_attention_dim], cond[:, -1, : cfg.pooled_projection_dim]

    def step(
        self, model, output, timestep, sample, eta, noise=None, prev_sample=None, recorded=True
    ):
        if not recorded:  # the deterministic ODE: no density
            return euler_step(model.scheduler, output, timestep, sample), None
        return flow_step_with_logprob(
            model.scheduler, output, timestep, sample, eta, noise=noise, prev_sample=prev_sample
        )

    def noise_step_weights(self, scheduler, eta: float) -> torch.Tensor:
        return flow.noise_step_weights(scheduler, eta)

    def save_lora(self, layers: dict[str, torch.Tensor], metadata: dict, out_dir, name) -> None:
        self.pipeline_class().save_lora_weights(
            save_directory=str(out_dir),
            transformer_lora_layers=layers,
            safe_serialization=True,
            weight_name=name,
            transformer_lora_adapter_metadata=metadata,
        )
