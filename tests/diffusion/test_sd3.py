"""The sd3 family on a tiny random SD3 pipeline: loading, sampling, LoRA export, B² stages."""

import torch
from diffusers import StableDiffusion3Pipeline

from configs.schema import ModelConfig
from diffusion.lora import attach_lora, export_lora, load_lora_state, lora_state
from diffusion.pipeline import from_pipeline, load_model
from diffusion.sampler import UNetCounter, expected_evaluations, sample_branches
from learner.stage import sampler_settings
from learner.update import PolicyTrainer

CPU = torch.device("cpu")


def _stock(path: str) -> StableDiffusion3Pipeline:
    # diffusers loads an SD3 folder without T5 when the T5 parts are passed as None
    return StableDiffusion3Pipeline.from_pretrained(
        path, local_files_only=True, text_encoder_3=None, tokenizer_3=None
    )


def test_project_ode_equals_the_stock_pipeline(tiny_sd3, tiny_sd3_dir):
    m = tiny_sd3
    assert m.family.name == "sd3" and m.latent_shape == (16, 16, 16)
    assert m.text_encoder_3 is None
    x_T = torch.randn(1, *m.latent_shape, generator=torch.Generator().manual_seed(0))
    stock = _stock(tiny_sd3_dir)
    call = dict(num_inference_steps=3, guidance_scale=3.0, height=32, width=32)
    theirs = stock("a red circle", latents=x_T.clone(), output_type="latent", **call).images
    vae = stock.vae.config
    with torch.no_grad():
        images = stock.vae.decode(theirs / vae.scaling_factor + vae.shift_factor).sample

    m.scheduler.set_timesteps(3, device="cpu")
    cond, uncond = m.encode_prompts(["a red circle"]), m.encode_prompts([""])
    x = x_T
    for t in m.scheduler.timesteps.long():
        v = m.predict(x, t.expand(1), cond, uncond, 3.0)
        x, lp = m.step(v, t, x, 0.7, noise=torch.zeros_like(x), recorded=False)
        assert lp is None  # the ODE step has no density
    assert torch.allclose(x, theirs, atol=1e-5)
    ours = m.decode(x).float()
    assert (ours - ((images / 2 + 0.5).clamp(0, 1) * 255).round()).abs().max() <= 1


def test_t5_conditioning_equals_the_stock_encoder(tmp_path):
    from diffusion.tiny import tiny_sd3_pipeline

    tiny_sd3_pipeline(seed=1, t5=True).save_pretrained(str(tmp_path / "p"))
    m = load_model(ModelConfig(pretrained=str(tmp_path / "p")), CPU)
    assert m.text_encoder_3 is not None
    stock = StableDiffusion3Pipeline.from_pretrained(str(tmp_path / "p"), local_files_only=True)
    embeds, _, pooled, _ = stock.encode_prompt(
        "two red circles", None, None, do_classifier_free_guidance=False, device="cpu"
    )
    ours = m.encode_prompts(["two red circles"])
    assert torch.equal(ours[:, :16], embeds[:, :16]) and torch.equal(ours[:, -1], pooled)
    # the T5 part: the same weights loaded twice agree to float rounding (7e-6), not bitwise
    assert torch.allclose(ours[:, 16:-1], embeds[:, 16:], atol=1e-5)
    assert embeds[:, 16:].abs().sum() > 0  # the T5 part is the encoder's, not zeros


def test_lora_export_loads_in_the_stock_sd3_pipeline(tiny_sd3, tiny_sd3_dir, sd3_cfg, tmp_path):
    # every attention projection of the MM-DiT, image and text stream; scale alpha/rank = 2
    lora = sd3_cfg.train.lora.model_copy(
        update={"targets": list(tiny_sd3.family.lora_targets), "alpha": 8.0}
    )
    attach_lora(tiny_sd3.unet, lora, seed=0)
    g = torch.Generator().manual_seed(0)
    state = {
        k: torch.randn(v.shape, generator=g) * 0.3 for k, v in lora_state(tiny_sd3.unet).items()
    }
    assert any(".add_q_proj." in k for k in state) and any(".to_add_out." in k for k in state)
    load_lora_state(tiny_sd3.unet, state)
    path = export_lora(state, lora, tmp_path / "lora")  # the family read off the names

    stock = _stock(tiny_sd3_dir)
    stock.load_lora_weights(str(tmp_path / "lora"), weight_name=path.name)
    fresh = from_pipeline(stock, CPU, torch.float32)
    st = sampler_settings(sd3_cfg, 0)
    ours = sample_branches(tiny_sd3, ["a red circle"], [0], st, seed=5, stage=0)
    theirs = sample_branches(fresh, ["a red circle"], [0], st, seed=5, stage=0)
    assert torch.allclose(ours.chain, theirs.chain, atol=1e-5)
    assert (ours.images.int() - theirs.images.int()).abs().max() <= 1
    base = from_pipeline(_stock(tiny_sd3_dir), CPU, torch.float32)
    plain = sample_branches(base, ["a red circle"], [0], st, seed=5, stage=0)
    assert not torch.allclose(plain.chain, ours.chain, atol=1e-3)  # the LoRA does something


def test_branches_share_an_ode_trunk_and_recompute_to_ratio_one(tiny_sd3, sd3_cfg):
    trainer = PolicyTrainer(tiny_sd3, sd3_cfg)
    st = sampler_settings(sd3_cfg, 0)
    assert st.split_step >= 1 and st.interval[0] >= 1  # a trunk, then branches
    prompts = ["a red circle", "a blue square"]
    counter = UNetCounter()
    batch = sample_branches(tiny_sd3, prompts, [0, 1], st, seed=3, stage=0, counter=counter)
    assert counter.evaluations == expected_evaluations(st, 2)
    K, s = sd3_cfg.sampling.branches, st.split_step
    assert batch.chain.shape == (2 * K, s + 1, 16, 16, 16) and batch.log_probs.shape == (2 * K, s)
    assert batch.images.shape == (2 * K, 3, 32, 32)
    for tid in (0, 1):
        rows = (batch.trunk_ids == tid).nonzero().flatten()
        first = batch.chain[rows, 0]
        assert torch.equal(first, first[:1].expand_as(first))
        assert not torch.allclose(batch.chain[rows[0], 1], batch.chain[rows[1], 1])
    # the trunk is the ODE: its noise draws do not matter, x_T's do
    other = sample_branches(tiny_sd3, prompts, [0, 1], st, seed=4, stage=0)
    assert not torch.allclose(other.chain[:, 0], batch.chain[:, 0])

    ratio = torch.exp(trainer.log_probs(batch) - batch.log_probs)
    assert (ratio - 1).abs().max() <= 1e-5


def test_two_b2_stages_train_the_sd3_lora_in_process(tiny_sd3, sd3_cfg, two_b2_stages):
    # the toy presets' per-step loss weights, by the flow step's sensitivity
    loss = sd3_cfg.loss.model_copy(update={"step_weight": "noise"})
    two_b2_stages(tiny_sd3, sd3_cfg.model_copy(update={"loss": loss}))
