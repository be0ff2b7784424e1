"""What the flow-matching families (sd3, flux) share: MM-DiT attention LoRA targets, the
scheduler flags they refuse, and the policy step: the trunk and the unrecorded steps after
the interval follow the ODE (Euler); recorded steps take the SDE of `diffusion.flow` with
noise level = sampling.eta."""

from __future__ import annotations

import torch
from diffusers import FlowMatchEulerDiscreteScheduler

from diffusion import flow
from diffusion.families.base import Family, UnsupportedFamily
from diffusion.flow import euler_step, flow_step_with_logprob


class FlowFamily(Family):
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
    # scheduler flags that change the step or the schedule's direction
    refused = ("stochastic_sampling", "invert_sigmas")

    def check_scheduler(self, sched: FlowMatchEulerDiscreteScheduler):
        for flag in self.refused:
            if sched.config.get(flag, False):
                raise UnsupportedFamily(
                    f"scheduler config {flag}=true is not supported for {self.name}"
                )
        return sched

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
