"""Model families behind one interface: what differs between SD-1.x, SDXL and SD3 stays here.

A family knows its pipeline class, the components RL needs, its scheduler, how prompts
become one conditioning tensor, how the denoiser is called (with classifier-free
guidance), its policy step with log-probability and per-step loss weights, its attention
projections for LoRA and the diffusers LoRA format. The sampler and the learner call
these through `DiffusionModel` and never branch on the family.

Conditioning is always ONE tensor [N, L, D] so that the callers can index, stack, expand
and repeat it without knowing the family:
  sd   the text encoder's last hidden state [N, L, D]
  sd3  [N, L + 1, max(J, P)]: the L joint-attention tokens (two CLIP encoders' penultimate
       states side by side, zero-padded to J, then the T5 tokens, zeros without T5) and, as
       the last row, the pooled embedding of the two CLIP encoders (width P), zero-padded.
  sdxl [N, L + 1, max(D, P)]: the two CLIP encoders' penultimate states side by side (D, the
       UNet's cross-attention width) and, as the last row, the second encoder's projected
       pooled embedding (width P), zero-padded. With the pipeline's
       force_zeros_for_empty_prompt the empty prompt (the unconditional one) is all zeros,
       as StableDiffusionXLPipeline's default negative conditioning is.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler, FlowMatchEulerDiscreteScheduler

from diffusion import ddim, flow
from diffusion.ddim import ddim_step_with_logprob
from diffusion.flow import euler_step, flow_step_with_logprob, model_timesteps

# the T5 length of SD3's pipeline (`max_sequence_length`); zeros when there is no T5
SD3_T5_LENGTH = 256


class UnsupportedFamily(ValueError):
    """A pipeline of a class no family handles; str() is a one-line message."""


def _tokens(tokenizer, prompts: list[str], max_length: int, device) -> torch.Tensor:
    return tokenizer(
        list(prompts),
        padding="max_length",
        max_length=max_length,
        truncation=True,
        return_tensors="pt",
    ).input_ids.to(device)


def _cfg_call(call, latents, timesteps, cond, uncond, guidance_scale):
    """Classifier-free guidance around `call(latents, timesteps, cond)`; uncond first."""
    if guidance_scale == 1.0:
        return call(latents, timesteps, cond)
    out = call(
        torch.cat([latents, latents]),
        torch.cat([timesteps, timesteps]),
        torch.cat([uncond, cond]),
    )
    out_uncond, out_cond = out.chunk(2)
    return out_uncond + guidance_scale * (out_cond - out_uncond)


class SDFamily:
    """Stable Diffusion 1.x / 2.x: UNet, one CLIP text encoder, DDIM with eta."""

    name = "sd"
    pipeline_classes = ("StableDiffusionPipeline",)
    denoiser = "unet"
    components = ("unet", "vae", "text_encoder", "tokenizer")
    optional = ()  # components a folder may leave out
    lora_targets = ("to_q", "to_k", "to_v", "to_out.0")

    def scheduler(self, config) -> DDIMScheduler:
        return DDIMScheduler.from_config(config)

    def encode(self, model, prompts: list[str]) -> torch.Tensor:
        ids = _tokens(model.tokenizer, prompts, model.tokenizer.model_max_length, model.device)
        return model.text_encoder(ids)[0].to(model.dtype)

    def predict(self, model, latents, timesteps, cond, uncond, guidance_scale) -> torch.Tensor:
        def call(x, t, c):
            return model.unet(x, t, encoder_hidden_states=c).sample

        return _cfg_call(call, latents, timesteps, cond, uncond, guidance_scale)

    def step(
        self, model, output, timestep, sample, eta, noise=None, prev_sample=None, recorded=True
    ):
        # every DDIM step is stochastic (eta), recorded or not
        return ddim_step_with_logprob(
            model.scheduler,
            output,
            timestep,
            sample,
            eta=eta,
            noise=noise,
            prev_sample=prev_sample,
        )

    def noise_step_weights(self, scheduler, eta: float) -> torch.Tensor:
        return ddim.noise_step_weights(scheduler, eta)

    def save_lora(self, layers: dict[str, torch.Tensor], metadata: dict, out_dir, name) -> None:
        from diffusers import StableDiffusionPipeline
        from diffusers.utils import convert_state_dict_to_diffusers

        StableDiffusionPipeline.save_lora_weights(
            save_directory=str(out_dir),
            unet_lora_layers=convert_state_dict_to_diffusers(layers),
            safe_serialization=True,
            weight_name=name,
            unet_lora_adapter_metadata=metadata,
        )

    def owns_lora_key(self, key: str) -> bool:
        return key.startswith(("down_blocks.", "mid_block.", "up_blocks."))


class SD3Family:
    """Stable Diffusion 3 / 3.5: MM-DiT transformer, two CLIP encoders (+ T5, optional),
    flow matching. The trunk follows the ODE; recorded steps take the SDE (noise level =
    sampling.eta); unrecorded branch steps after the interval finish by the ODE."""

    name = "sd3"
    pipeline_classes = ("StableDiffusion3Pipeline",)
    denoiser = "transformer"
    components = (
        "transformer",
        "vae",
        "text_encoder",
        "tokenizer",
        "text_encoder_2",
        "tokenizer_2",
    )
    optional = ("text_encoder_3", "tokenizer_3")  # T5
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

    def scheduler(self, config) -> FlowMatchEulerDiscreteScheduler:
        sched = FlowMatchEulerDiscreteScheduler.from_config(config)
        for flag in ("use_dynamic_shifting", "stochastic_sampling", "invert_sigmas"):
            if sched.config.get(flag, False):
                raise UnsupportedFamily(f"scheduler config {flag}=true is not supported for sd3")
        return sched

    def encode(self, model, prompts: list[str]) -> torch.Tensor:
        n, dev = len(prompts), model.device
        length = model.tokenizer.model_max_length  # SD3 pads both CLIPs to the first's length
        states, pooled = [], []
        for tok, enc in (
            (model.tokenizer, model.text_encoder),
            (model.tokenizer_2, model.text_encoder_2),
        ):
            out = enc(_tokens(tok, prompts, length, dev), output_hidden_states=True)
            states.append(out.hidden_states[-2])
            pooled.append(out[0])
        clip = torch.cat(states, dim=-1)
        cfg = model.unet.config
        if model.text_encoder_3 is not None:
            t5_ids = _tokens(model.tokenizer_3, prompts, SD3_T5_LENGTH, dev)
            t5 = model.text_encoder_3(t5_ids)[0]
        else:
            t5 = torch.zeros(n, SD3_T5_LENGTH, cfg.joint_attention_dim, device=dev)
        joint = torch.cat([F.pad(clip, (0, t5.shape[-1] - clip.shape[-1])), t5.to(clip)], dim=1)
        pool = torch.cat(pooled, dim=-1)
        width = max(joint.shape[-1], pool.shape[-1])
        packed = torch.cat(
            [
                F.pad(joint, (0, width - joint.shape[-1])),
                F.pad(pool, (0, width - pool.shape[-1]))[:, None],
            ],
            dim=1,
        )
        return packed.to(model.dtype)

    @staticmethod
    def unpack(model, cond: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(prompt embeddings [N, L, J], pooled [N, P]) from the packed conditioning."""
        cfg = model.unet.config
        return cond[:, :-1, : cfg.joint_attention_dim], cond[:, -1, : cfg.pooled_projection_dim]

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

        return _cfg_call(call, latents, t, cond, uncond, guidance_scale)

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
        from diffusers import StableDiffusion3Pipeline

        StableDiffusion3Pipeline.save_lora_weights(
            save_directory=str(out_dir),
            transformer_lora_layers=layers,
            safe_serialization=True,
            weight_name=name,
            transformer_lora_adapter_metadata=metadata,
        )

    def owns_lora_key(self, key: str) -> bool:
        return key.startswith("transformer_blocks.")


class SDXLFamily(SDFamily):
    """Stable Diffusion XL: UNet with added conditioning (the pooled text embedding and the
    size / crop time ids), two CLIP encoders; DDIM with eta, the step and its log-prob as
    SD's. Its UNet's LoRA names and file are SD's: `family_of_lora` reads them as `sd`, and
    either family's export loads in StableDiffusionXLPipeline."""

    name = "sdxl"
    pipeline_classes = ("StableDiffusionXLPipeline",)
    components = ("unet", "vae", "text_encoder", "tokenizer", "text_encoder_2", "tokenizer_2")

    def encode(self, model, prompts: list[str]) -> torch.Tensor:
        states = []
        for tok, enc in (
            (model.tokenizer, model.text_encoder),
            (model.tokenizer_2, model.text_encoder_2),
        ):
            ids = _tokens(tok, prompts, tok.model_max_length, model.device)
            out = enc(ids, output_hidden_states=True)
            states.append(out.hidden_states[-2])
        # pooled: the last encoder's (CLIPTextModelWithProjection) projected text embedding
        emb, pooled = torch.cat(states, dim=-1), out[0]
        width = max(emb.shape[-1], pooled.shape[-1])
        packed = torch.cat(
            [
                F.pad(emb, (0, width - emb.shape[-1])),
                F.pad(pooled, (0, width - pooled.shape[-1]))[:, None],
            ],
            dim=1,
        )
        if model.zero_empty_prompt:
            empty = torch.tensor([p == "" for p in prompts], device=packed.device)
            packed = packed.masked_fill(empty[:, None, None], 0.0)
        return packed.to(model.dtype)

    @staticmethod
    def unpack(model, cond: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(prompt embeddings [N, L, D], pooled [N, P]) from the packed conditioning."""
        cfg = model.unet.config
        pooled = cfg.projection_class_embeddings_input_dim - 6 * cfg.addition_time_embed_dim
        return cond[:, :-1, : cfg.cross_attention_dim], cond[:, -1, :pooled]

    @staticmethod
    def time_ids(model, latents: torch.Tensor) -> torch.Tensor:
        """[N, 6]: original size, crop top-left (0, 0), target size, in pixels: the image
        size the latents decode to, as the stock pipeline's defaults."""
        scale = 2 ** (len(model.vae.config.block_out_channels) - 1)
        h, w = latents.shape[-2] * scale, latents.shape[-1] * scale
        ids = torch.tensor([h, w, 0, 0, h, w], device=latents.device, dtype=latents.dtype)
        return ids.expand(latents.shape[0], 6)

    def predict(self, model, latents, timesteps, cond, uncond, guidance_scale) -> torch.Tensor:
        def call(x, t, c):
            emb, pooled = self.unpack(model, c)
            extra = {"text_embeds": pooled, "time_ids": self.time_ids(model, x).to(pooled)}
            return model.unet(x, t, encoder_hidden_states=emb, added_cond_kwargs=extra).sample

        return _cfg_call(call, latents, timesteps, cond, uncond, guidance_scale)

    def save_lora(self, layers: dict[str, torch.Tensor], metadata: dict, out_dir, name) -> None:
        from diffusers import StableDiffusionXLPipeline
        from diffusers.utils import convert_state_dict_to_diffusers

        StableDiffusionXLPipeline.save_lora_weights(
            save_directory=str(out_dir),
            unet_lora_layers=convert_state_dict_to_diffusers(layers),
            safe_serialization=True,
            weight_name=name,
            unet_lora_adapter_metadata=metadata,
        )


Family = SDFamily | SD3Family | SDXLFamily
FAMILIES: dict[str, Family] = {f.name: f for f in (SDFamily(), SD3Family(), SDXLFamily())}


def family_for_class(class_name: str, source: str = "") -> Family:
    for family in FAMILIES.values():
        if class_name in family.pipeline_classes:
            return family
    supported = ", ".join(c for f in FAMILIES.values() for c in f.pipeline_classes)
    where = f"{source}: " if source else ""
    raise UnsupportedFamily(
        f"{where}pipeline class {class_name!r} is not supported (supported: {supported})"
    )


def family_of_dir(path: str | Path) -> Family:
    """The family of a local pipeline folder, from model_index.json's `_class_name`."""
    index = Path(path) / "model_index.json"
    try:
        class_name = json.loads(index.read_text(encoding="utf-8")).get("_class_name")
    except (OSError, ValueError, AttributeError) as exc:
        raise UnsupportedFamily(f"{index}: unreadable ({type(exc).__name__})") from None
    return family_for_class(str(class_name), str(index))


def family_of_lora(state: dict[str, torch.Tensor]) -> Family:
    """The family whose denoiser the LoRA tensor names belong to."""
    for family in FAMILIES.values():
        if state and all(family.owns_lora_key(k) for k in state):
            return family
    first = next(iter(state), "<empty>")
    raise UnsupportedFamily(f"LoRA tensor {first}: names no supported family's denoiser")
