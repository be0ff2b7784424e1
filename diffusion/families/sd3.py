"""Stable Diffusion 3 / 3.5: MM-DiT transformer, two CLIP encoders (+ T5, optional), flow
matching.

Conditioning [N, L + 1, max(J, P)]: the L joint-attention tokens (two CLIP encoders'
penultimate states side by side, zero-padded to J, then the T5 tokens, zeros without T5)
and, as the last row, the pooled embedding of the two CLIP encoders (width P), zero-padded.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from diffusion.families.base import cfg_call, t5_length, tokens, with_pooled_row
from diffusion.families.flowmatch import FlowFamily
from diffusion.flow import model_timesteps

# the T5 length of SD3's pipeline (`max_sequence_length`); zeros when there is no T5
SD3_T5_LENGTH = 256


class SD3Family(FlowFamily):
    """Stable Diffusion 3 / 3.5: MM-DiT transformer, two CLIP encoders (+ T5, optional),
    flow matching. The trunk follows the ODE; recorded steps take the SDE (noise level =
    sampling.eta); unrecorded branch steps after the interval finish by the ODE."""

    name = "sd3"
    pipeline_classes = ("StableDiffusion3Pipeline",)
    components = (
        "transformer",
        "vae",
        "text_encoder",
        "tokenizer",
        "text_encoder_2",
        "tokenizer_2",
    )
    optional = ("text_encoder_3", "tokenizer_3")  # T5
    # SD3's pipeline calls set_timesteps without `mu`
    refused = (*FlowFamily.refused, "use_dynamic_shifting")

    def encode(self, model, prompts: list[str]) -> torch.Tensor:
        n, dev = len(prompts), model.device
        length = model.tokenizer.model_max_length  # SD3 pads both CLIPs to the first's length
        states, pooled = [], []
        for tok, enc in (
            (model.tokenizer, model.text_encoder),
            (model.tokenizer_2, model.text_encoder_2),
        ):
            out = enc(tokens(tok, prompts, length, dev), output_hidden_states=True)
            states.append(out.hidden_states[-2])
            pooled.append(out[0])
        clip = torch.cat(states, dim=-1)
        cfg = model.unet.config
        length = t5_length(model, SD3_T5_LENGTH)
        if model.text_encoder_3 is not None:
            t5 = model.text_encoder_3(tokens(model.tokenizer_3, prompts, length, dev))[0]
        else:
            t5 = torch.zeros(n, length, cfg.joint_attention_dim, device=dev)
        joint = torch.cat([F.pad(clip, (0, t5.shape[-1] - clip.shape[-1])), t5.to(clip)], dim=1)
        return with_pooled_row(joint, torch.cat(pooled, dim=-1)).to(model.dtype)

    def predict(self, model, latents, timesteps, cond, uncond, guidance_scale) -> torch.Tensor:
        t = model_timesteps(model.scheduler, timesteps.cpu(), latents.shape[0])
        t = t.to(latents.device)

        def call(x, ts, c):
            emb, pooled = self.unpack(model, c)
            return model.unet(
                hidden_states=x,
                timestep=ts,
                encoder_hidden_states=emb,
                pooled_projections=pooled,
                return_dict=False,
            )[0]

        return cfg_call(call, latents, t, cond, uncond, guidance_scale)

    def owns_lora_key(self, key: str) -> bool:
        return key.startswith("transformer_blocks.")
