"""The flux family on a tiny random FLUX.1 pipeline: the schedule, sampling against the
stock FluxPipeline, the SDE step's density, LoRA export, B² stages."""

import json
import math

import numpy as np
import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline
from diffusers.pipelines.flux.pipeline_flux import calculate_shift as stock_shift

from configs.load import PRESET_DIR, load_config
from configs.schema import ModelConfig
from diffusion.families import denoiser_passes
from diffusion.families.flux import FluxScheduler, calculate_shift, pack_latents, unpack_latents
from diffusion.lora import attach_lora, export_lora, load_lora_state, lora_state
from diffusion.pipeline import PipelineLoadError, from_pipeline, load_model
from diffusion.sampler import SamplerSettings, UNetCounter, expected_evaluations, sample_branches
from learner.stage import sampler_settings
from learner.update import PolicyTrainer

CPU = torch.device("cpu")
PROMPT = "a red circle"
# the whole trajectory recorded, at noise level 0: every step the SDE's mean, the Euler step
PLAIN = SamplerSettings(
    num_steps=3, split_step=3, branches=1, guidance_scale=3.5, eta=0.0, micro_batch=4
)


def _stock(path: str) -> FluxPipeline:
    return FluxPipeline.from_pretrained(path, local_files_only=True)


def _stock_latents(stock: FluxPipeline, **call) -> torch.Tensor:
    """FluxPipeline's final latents for PROMPT at 32 px, unpacked to [N, 16, 16, 16]."""
    args = dict(num_inference_steps=3, guidance_scale=3.5, height=32, width=32)
    packed = stock(PROMPT, output_type="latent", **args, **call).images
    return unpack_latents(packed, 16, 16)


def test_packing_and_the_shift_are_fluxpipelines():
    x = torch.randn(2, 16, 8, 12)
    packed = pack_latents(x)
    assert torch.equal(packed, FluxPipeline._pack_latents(x, 2, 16, 8, 12))
    assert torch.equal(unpack_latents(packed, 8, 12), x)
    cfg = FluxScheduler().config
    for n in (64, 256, 1024, 4096):
        assert calculate_shift(cfg, n) == pytest.approx(stock_shift(n), abs=1e-12)


def test_the_schedule_follows_the_latent_size(tiny_flux):
    stock = FlowMatchEulerDiscreteScheduler.from_config(tiny_flux.scheduler.config)
    for size, tokens in ((None, 64), ((32, 32), 256), ((64, 48), 768)):
        tiny_flux.latent_size = size
        tiny_flux.scheduler.set_timesteps(6, device="cpu")
        # what FluxPipeline passes for an image of that many packed tokens
        stock.set_timesteps(sigmas=np.linspace(1.0, 1 / 6, 6), mu=stock_shift(tokens))
        assert torch.equal(tiny_flux.scheduler.sigmas, stock.sigmas)
        assert torch.equal(tiny_flux.scheduler.timesteps, stock.timesteps)


def test_project_sampling_equals_the_stock_pipeline(tiny_flux, tiny_flux_dir):
    m = tiny_flux
    assert m.family.name == "flux" and m.latent_shape == (16, 16, 16)
    assert m.scheduler.model is m  # a deep copy's schedule follows the copy
    assert m.passes(3.5) == 1  # guidance-distilled: no unconditional pass
    assert denoiser_passes(tiny_flux_dir, 3.5) == 1
    stock = _stock(tiny_flux_dir)
    theirs = _stock_latents(stock, generator=torch.Generator().manual_seed(0))

    # the family's steps by hand (the ODE), from the noise FluxPipeline draws
    m.scheduler.set_timesteps(3, device="cpu")
    assert torch.equal(m.scheduler.sigmas, stock.scheduler.sigmas)  # shifted by mu for 64 tokens
    x = torch.randn(1, *m.latent_shape, generator=torch.Generator().manual_seed(0))
    cond, uncond = m.encode_prompts([PROMPT]), m.encode_prompts([""])
    for t in m.scheduler.timesteps.long():
        v = m.predict(x, t.expand(1), cond, uncond, 3.5)
        x, lp = m.step(v, t, x, 0.9, noise=torch.zeros_like(x), recorded=False)
        assert lp is None
    assert (x - theirs).abs().max() <= 1e-5

    # the sampler at noise level 0, every step recorded, against FluxPipeline from its x_T
    batch = sample_branches(m, [PROMPT], [0], PLAIN, seed=5, stage=0)
    theirs = _stock_latents(stock, latents=pack_latents(batch.chain[:, 0]))
    assert (batch.chain[:, -1] - theirs).abs().max() <= 1e-5
    vae = stock.vae.config
    with torch.no_grad():
        images = stock.vae.decode(theirs / vae.scaling_factor + vae.shift_factor).sample
    stock_images = ((images / 2 + 0.5).clamp(0, 1) * 255).round()
    assert (batch.images.float() - stock_images).abs().max() <= 1


def test_without_guidance_embedding_guidance_is_cfg_against_the_empty_prompt(tmp_path):
    from diffusion.tiny_flux import tiny_flux_pipeline

    path = str(tmp_path / "schnell")
    tiny_flux_pipeline(seed=1, guidance_embeds=False).save_pretrained(path)
    m = load_model(ModelConfig(pretrained=path), CPU)
    assert (m.passes(1.0), m.passes(3.5)) == (1, 2)
    # read from the folder without loading it, as learner.budget counts
    assert (denoiser_passes(path, 3.5), denoiser_passes(path, 1.0)) == (2, 1)
    counter = UNetCounter()
    ours = sample_branches(m, [PROMPT], [0], PLAIN, seed=5, stage=0, counter=counter)
    assert counter.evaluations == expected_evaluations(PLAIN, 1) == 6
    # FluxPipeline's true CFG with the empty negative prompt (its guidance_scale unused)
    cfg = dict(negative_prompt="", true_cfg_scale=3.5)
    theirs = _stock_latents(_stock(path), latents=pack_latents(ours.chain[:, 0]), **cfg)
    assert (ours.chain[:, -1] - theirs).abs().max() <= 1e-5


def test_sde_step_is_the_gaussian_and_recomputes_to_ratio_one(tiny_flux, flux_cfg):
    m, st = tiny_flux, sampler_settings(flux_cfg, 0)
    assert st.split_step >= 1 and st.interval[0] >= 1  # a trunk, then branches
    counter = UNetCounter()
    batch = sample_branches(m, [PROMPT, "a blue square"], [0, 1], st, 3, 0, counter=counter)
    assert counter.evaluations == expected_evaluations(st, 2, passes=1)
    K, s = flux_cfg.sampling.branches, st.split_step
    assert batch.chain.shape == (2 * K, s + 1, 16, 16, 16) and batch.log_probs.shape == (2 * K, s)
    rows = (batch.trunk_ids == 0).nonzero().flatten()
    assert torch.equal(batch.chain[rows, 0], batch.chain[rows[:1], 0].expand(K, -1, -1, -1))

    # each recorded step's log-prob: an independent Gaussian density, mean over elements
    a, start, sig = flux_cfg.sampling.eta, st.interval[0], m.scheduler.sigmas.double()
    cond, uncond = m.encode_prompts(batch.prompts), m.encode_prompts([""])
    for j in range(s):
        x, x_next, t = batch.chain[:, j], batch.chain[:, j + 1], batch.timesteps[j]
        with torch.no_grad():
            v = m.predict(x, t.expand(len(x)), cond, uncond, 3.5).double()
        sigma, sigma_next = sig[start + j], sig[start + j + 1]
        std_sigma = a * math.sqrt(sigma / (1 - (sig[1] if sigma == 1 else sigma)))
        dt = sigma_next - sigma
        x = x.double()
        mean = x + dt * (v + std_sigma**2 / (2 * sigma) * (x + (1 - sigma) * v))
        density = torch.distributions.Normal(mean, std_sigma * math.sqrt(-dt))
        want = density.log_prob(x_next.double()).mean(dim=(1, 2, 3))
        assert torch.allclose(batch.log_probs[:, j].double(), want, atol=1e-4)

    ratio = torch.exp(PolicyTrainer(m, flux_cfg).log_probs(batch) - batch.log_probs)
    assert torch.equal(ratio, torch.ones_like(ratio))


def test_unsupported_pipeline_class_is_refused_in_one_line(tmp_path):
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "KandinskyPipeline"}))
    with pytest.raises(PipelineLoadError) as exc:
        load_model(ModelConfig(pretrained=str(tmp_path)), CPU)
    msg = str(exc.value)
    assert "\n" not in msg and "'KandinskyPipeline'" in msg
    assert "StableDiffusion3Pipeline" in msg and "FluxPipeline" in msg


def test_lora_export_loads_in_the_stock_flux_pipeline(tiny_flux, tiny_flux_dir, flux_cfg, tmp_path):
    # flux_b2's targets: the attention projections of the double- and single-stream blocks
    # and the double-stream feed-forward layers; alpha/rank = 2
    targets = load_config(PRESET_DIR / "flux_b2.yaml").train.lora.targets
    assert set(tiny_flux.family.lora_targets) <= set(targets)
    lora = flux_cfg.train.lora.model_copy(update={"targets": targets, "alpha": 8.0})
    attach_lora(tiny_flux.unet, lora, seed=0)
    g = torch.Generator().manual_seed(0)
    state = {
        k: torch.randn(v.shape, generator=g) * 0.3 for k, v in lora_state(tiny_flux.unet).items()
    }
    assert any(k.startswith("single_transformer_blocks.") for k in state)
    assert any(".ff_context.net.2." in k for k in state)
    load_lora_state(tiny_flux.unet, state)
    path = export_lora(state, lora, tmp_path / "lora")  # the family read off the names

    stock = _stock(tiny_flux_dir)
    stock.load_lora_weights(str(tmp_path / "lora"), weight_name=path.name)
    ours = sample_branches(tiny_flux, [PROMPT], [0], PLAIN, seed=5, stage=0)
    theirs = _stock_latents(stock, latents=pack_latents(ours.chain[:, 0]))
    assert (ours.chain[:, -1] - theirs).abs().max() <= 1e-5
    fresh = from_pipeline(stock, CPU, torch.float32)  # the stock LoRA in the project's sampler
    again = sample_branches(fresh, [PROMPT], [0], PLAIN, seed=5, stage=0)
    assert (again.images.int() - ours.images.int()).abs().max() <= 1
    base = from_pipeline(_stock(tiny_flux_dir), CPU, torch.float32)
    plain = sample_branches(base, [PROMPT], [0], PLAIN, seed=5, stage=0)
    assert not torch.allclose(plain.chain, ours.chain, atol=1e-3)  # the LoRA does something


def test_two_b2_stages_train_the_flux_lora_in_process(tiny_flux, flux_cfg, two_b2_stages):
    # flux_b2's memory options (checkpointed transformer, micro-batches of 2) and per-step
    # loss weights by the flow step's sensitivity
    train = flux_cfg.train.model_copy(update={"gradient_checkpointing": True, "micro_batch": 2})
    loss = flux_cfg.loss.model_copy(update={"step_weight": "noise"})
    two_b2_stages(tiny_flux, flux_cfg.model_copy(update={"train": train, "loss": loss}))
    assert tiny_flux.unet.is_gradient_checkpointing
