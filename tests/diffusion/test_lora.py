import pytest
import torch
from diffusers import StableDiffusionPipeline

from diffusion.lora import LoraShapeError, export_lora, load_lora_state, lora_state
from diffusion.pipeline import from_pipeline
from diffusion.sampler import sample_branches
from learner.stage import sampler_settings
from learner.update import PolicyTrainer


def test_export_loads_in_stock_diffusers_and_gives_same_images(tiny_model, tiny_cfg, tmp_path):
    lora = tiny_cfg.train.lora.model_copy(update={"alpha": 8.0})  # scale 2: metadata must carry it
    cfg = tiny_cfg.model_copy(update={"train": tiny_cfg.train.model_copy(update={"lora": lora})})
    trainer = PolicyTrainer(tiny_model, cfg)
    g = torch.Generator().manual_seed(0)
    state = {k: torch.randn(v.shape, generator=g) * 0.3 for k, v in trainer.weights().items()}
    trainer.load_weights(state)
    assert torch.equal(trainer.weights()[next(iter(state))], next(iter(state.values())))
    path = export_lora(trainer.weights(), lora, tmp_path / "lora")
    assert path.name == "pytorch_lora_weights.safetensors"

    pipe = StableDiffusionPipeline.from_pretrained(tiny_cfg.model.pretrained, local_files_only=True)
    pipe.load_lora_weights(str(tmp_path / "lora"), weight_name=path.name)
    fresh = from_pipeline(pipe, torch.device("cpu"), torch.float32)
    st = sampler_settings(tiny_cfg, 0)
    ours = sample_branches(tiny_model, ["a red circle"], [0], st, seed=5, stage=0)
    theirs = sample_branches(fresh, ["a red circle"], [0], st, seed=5, stage=0)
    assert torch.equal(ours.images, theirs.images)
    assert torch.allclose(ours.chain, theirs.chain, atol=1e-5)
    base = from_pipeline(
        StableDiffusionPipeline.from_pretrained(tiny_cfg.model.pretrained, local_files_only=True),
        torch.device("cpu"),
        torch.float32,
    )
    plain = sample_branches(base, ["a red circle"], [0], st, seed=5, stage=0)
    assert not torch.allclose(plain.chain, ours.chain, atol=1e-3)  # the LoRA does something


def test_transport_round_trip_and_shape_errors(tiny_model, tiny_cfg):
    PolicyTrainer(tiny_model, tiny_cfg)
    state = lora_state(tiny_model.unet)
    assert state and all(".lora_" in k for k in state)
    name = next(iter(state))
    bad = dict(state)
    bad[name] = torch.zeros(3, 3)
    with pytest.raises(LoraShapeError, match="has shape"):
        load_lora_state(tiny_model.unet, bad, "x.safetensors")
    with pytest.raises(LoraShapeError, match="missing"):
        load_lora_state(tiny_model.unet, {k: v for k, v in state.items() if k != name})
