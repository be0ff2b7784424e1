"""The sdxl family on a tiny random SDXL pipeline: conditioning and sampling equal the stock
StableDiffusionXLPipeline's, LoRA export, recomputed log-probs, two B² stages."""

import torch
from diffusers import StableDiffusionXLPipeline
from safetensors.torch import load_file

from diffusion.lora import attach_lora, export_lora, load_lora_state, lora_state
from diffusion.pipeline import from_pipeline
from diffusion.sampler import UNetCounter, expected_evaluations, sample_branches
from learner.stage import sampler_settings
from learner.update import PolicyTrainer

CPU = torch.device("cpu")


def _stock(path: str) -> StableDiffusionXLPipeline:
    return StableDiffusionXLPipeline.from_pretrained(path, local_files_only=True)


def test_conditioning_equals_the_stock_encoder(tiny_sdxl, tiny_sdxl_dir):
    m = tiny_sdxl
    assert m.family.name == "sdxl" and m.latent_shape == (4, 16, 16)
    stock = _stock(tiny_sdxl_dir)
    embeds, neg, pooled, neg_pooled = stock.encode_prompt(
        "two red circles", device="cpu", do_classifier_free_guidance=True
    )
    ours = m.encode_prompts(["two red circles"])
    assert embeds.shape == (1, 16, 80) and pooled.shape == (1, 40)
    assert torch.equal(ours[:, :-1], embeds) and torch.equal(ours[:, -1, :40], pooled)
    assert torch.equal(ours[:, -1, 40:], torch.zeros(1, 40))  # pooled row zero-padded
    # force_zeros_for_empty_prompt: the stock default negative is zeros, so is ours for ""
    both = m.encode_prompts(["", "two red circles"])
    assert not neg.any() and not neg_pooled.any() and not both[0].any()
    assert torch.allclose(both[1], ours[0], atol=1e-6)  # batched: float rounding only


def test_project_sampling_equals_the_stock_pipeline(tiny_sdxl, tiny_sdxl_dir):
    m = tiny_sdxl
    x_T = torch.randn(1, *m.latent_shape, generator=torch.Generator().manual_seed(0))
    stock = _stock(tiny_sdxl_dir)
    # DDIM with eta = 1: the stock step draws its noise from the generator, in step order
    call = dict(num_inference_steps=3, guidance_scale=3.0, eta=1.0, height=32, width=32)
    gen = torch.Generator().manual_seed(7)
    theirs = stock(
        "a red circle", latents=x_T.clone(), output_type="latent", generator=gen, **call
    ).images
    with torch.no_grad():
        images = stock.vae.decode(theirs / stock.vae.config.scaling_factor).sample

    m.scheduler.set_timesteps(3, device="cpu")
    cond, uncond = m.encode_prompts(["a red circle"]), m.encode_prompts([""])
    gen, x = torch.Generator().manual_seed(7), x_T
    for t in m.scheduler.timesteps:
        eps = m.predict(x, t.expand(1), cond, uncond, 3.0)
        x, lp = m.step(eps, t, x, 1.0, noise=torch.randn(x.shape, generator=gen))
        assert lp.shape == (1,) and torch.isfinite(lp).all()
    assert torch.allclose(x, theirs, atol=1e-5)
    ours = m.decode(x).float()
    assert (ours - ((images / 2 + 0.5).clamp(0, 1) * 255).round()).abs().max() <= 1


def test_lora_export_loads_in_the_stock_sdxl_pipeline(tiny_sdxl, tiny_sdxl_dir, sdxl_cfg, tmp_path):
    # the UNet's attention projections; scale alpha/rank = 2
    lora = sdxl_cfg.train.lora.model_copy(
        update={"targets": list(tiny_sdxl.family.lora_targets), "alpha": 8.0}
    )
    attach_lora(tiny_sdxl.unet, lora, seed=0)
    g = torch.Generator().manual_seed(0)
    state = {
        k: torch.randn(v.shape, generator=g) * 0.3 for k, v in lora_state(tiny_sdxl.unet).items()
    }
    assert any(".attn2.to_k." in k for k in state)  # cross-attention on the text states
    load_lora_state(tiny_sdxl.unet, state)
    path = export_lora(state, lora, tmp_path / "lora", family=tiny_sdxl.family)
    # the learner's export reads the family off the tensor names (as `sd`): the same tensors
    read_off = export_lora(state, lora, tmp_path / "lora_by_names")
    ours_file, names_file = load_file(path), load_file(read_off)
    assert ours_file.keys() == names_file.keys()
    assert all(torch.equal(ours_file[k], names_file[k]) for k in ours_file)

    stock = _stock(tiny_sdxl_dir)
    stock.load_lora_weights(str(tmp_path / "lora"), weight_name=path.name)
    fresh = from_pipeline(stock, CPU, torch.float32)
    st = sampler_settings(sdxl_cfg, 0)
    ours = sample_branches(tiny_sdxl, ["a red circle"], [0], st, seed=5, stage=0)
    theirs = sample_branches(fresh, ["a red circle"], [0], st, seed=5, stage=0)
    assert torch.allclose(ours.chain, theirs.chain, atol=1e-5)
    assert (ours.images.int() - theirs.images.int()).abs().max() <= 1
    base = from_pipeline(_stock(tiny_sdxl_dir), CPU, torch.float32)
    plain = sample_branches(base, ["a red circle"], [0], st, seed=5, stage=0)
    assert not torch.allclose(plain.chain, ours.chain, atol=1e-3)  # the LoRA does something


def test_branches_share_a_trunk_and_recompute_to_ratio_one(tiny_sdxl, sdxl_cfg):
    trainer = PolicyTrainer(tiny_sdxl, sdxl_cfg)
    st = sampler_settings(sdxl_cfg, 0)
    prompts = ["a red circle", "a blue square"]
    counter = UNetCounter()
    batch = sample_branches(tiny_sdxl, prompts, [0, 1], st, seed=3, stage=0, counter=counter)
    assert counter.evaluations == expected_evaluations(st, 2)
    K, s = sdxl_cfg.sampling.branches, st.split_step
    assert batch.chain.shape == (2 * K, s + 1, 4, 16, 16) and batch.log_probs.shape == (2 * K, s)
    assert batch.images.shape == (2 * K, 3, 32, 32)
    for tid in (0, 1):
        rows = (batch.trunk_ids == tid).nonzero().flatten()
        first = batch.chain[rows, 0]
        assert torch.equal(first, first[:1].expand_as(first))
        assert not torch.allclose(batch.chain[rows[0], 1], batch.chain[rows[1], 1])
    ratio = torch.exp(trainer.log_probs(batch) - batch.log_probs)
    assert (ratio - 1).abs().max() <= 1e-5


def test_two_b2_stages_train_the_sdxl_lora_in_process(tiny_sdxl, sdxl_cfg, two_b2_stages):
    # the sdxl_b2 preset's memory options: checkpointed UNet, micro-batches of 2
    train = sdxl_cfg.train.model_copy(update={"gradient_checkpointing": True, "micro_batch": 2})
    two_b2_stages(tiny_sdxl, sdxl_cfg.model_copy(update={"train": train}))
    assert tiny_sdxl.unet.is_gradient_checkpointing
