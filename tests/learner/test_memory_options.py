"""Memory and speed options of the update: gradient checkpointing, micro-batches smaller
than the batch, and half-precision autocast with float32 LoRA weights. The first two change
how the gradient is computed, not what it is."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from configs.schema import Config, ModelConfig
from diffusion.pipeline import set_autocast
from diffusion.sampler import sample_branches
from learner.selection import Selection
from learner.stage import sampler_settings
from learner.update import PolicyTrainer

ADV = np.array([1.2, 0.3, -0.9, 0.8, -1.1, 0.1, 0.6, -0.4, -0.7])


def _cfg(tiny_cfg: Config, loss=None, **train) -> Config:
    return tiny_cfg.model_copy(
        update={
            "loss": tiny_cfg.loss.model_copy(update=loss or {}),
            "train": tiny_cfg.train.model_copy(update={"epochs": 1, **train}),
        }
    )


@pytest.fixture()
def batch(tiny_model, tiny_cfg):
    prompts = ["a red circle", "a blue square", "two green triangles"]
    return sample_branches(tiny_model, prompts, [0, 1, 2], sampler_settings(tiny_cfg, 2), 3, 2)


def _train(model, cfg: Config, batch, pairwise=False):
    """One update on every row of `batch` (or its three best/worst pairs); the gradients
    each optimizer step applied, the weights after it, and the stats."""
    trainer = PolicyTrainer(copy.deepcopy(model), cfg)
    grads: list[list[torch.Tensor]] = []
    trainer.optimizer.register_step_pre_hook(
        lambda *_: grads.append([p.grad.detach().clone() for p in trainer.params])
    )
    pairs = np.array([[0, 2], [3, 4], [6, 8]]) if pairwise else np.zeros((0, 2), int)
    sel = Selection(np.arange(len(batch)), 4, 5, pairs)
    stats = trainer.update(batch, ADV, sel, stage=2)
    return trainer, grads, stats


def _max_diff(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    return max(float((x - y).abs().max()) for x, y in zip(a, b, strict=True))


def _scale(grads: list[torch.Tensor]) -> float:
    return max(float(g.abs().max()) for g in grads)


def test_gradient_checkpointing_gives_the_same_gradients(tiny_model, tiny_cfg, batch, monkeypatch):
    plain_cfg = _cfg(tiny_cfg, batch_size=9, lr=1e-4)
    plain, want, _ = _train(tiny_model, plain_cfg, batch)
    calls = []
    inner = torch.utils.checkpoint.checkpoint
    monkeypatch.setattr(
        torch.utils.checkpoint, "checkpoint", lambda *a, **k: calls.append(1) or inner(*a, **k)
    )
    ckpt_cfg = _cfg(tiny_cfg, batch_size=9, lr=1e-4, gradient_checkpointing=True)
    ckpt, got, stats = _train(tiny_model, ckpt_cfg, batch)
    assert ckpt.model.unet.is_gradient_checkpointing
    assert not plain.model.unet.is_gradient_checkpointing
    assert calls  # the UNet's blocks did go through torch's checkpoint
    assert len(got) == len(want) == stats.optimizer_steps == 1
    assert _scale(want[0]) > 0
    assert _max_diff(got[0], want[0]) <= 1e-5 * _scale(want[0])
    # the option follows the trainer's config from one update to the next
    ckpt.cfg = plain_cfg
    ckpt.update(batch, ADV, Selection(np.arange(3), 1, 1, np.zeros((0, 2), int)), stage=2)
    assert not ckpt.model.unet.is_gradient_checkpointing


@pytest.mark.parametrize(
    "loss, micro_batch",
    [({}, 1), ({}, 4), ({"kl_coef": 0.5, "step_weight": "noise"}, 2), ({"name": "pairwise"}, 1)],
)
def test_micro_batches_make_the_update_of_the_whole_batch(
    tiny_model, tiny_cfg, batch, loss, micro_batch
):
    """The batch is 9 trajectories (or 3 pairs) in one optimizer step; cut into micro-batches
    it gives the same gradient, and weights within 1e-5, in float32."""
    pairwise = loss.get("name") == "pairwise"
    whole_cfg = _cfg(tiny_cfg, loss, batch_size=9, lr=1e-4)
    whole, want, want_stats = _train(tiny_model, whole_cfg, batch, pairwise)
    cut_cfg = _cfg(tiny_cfg, loss, batch_size=9, lr=1e-4, micro_batch=micro_batch)
    cut, got, stats = _train(tiny_model, cut_cfg, batch, pairwise)
    assert len(got) == len(want) == 1 == stats.optimizer_steps
    # rows batched differently round differently (measured: up to 1.2e-5 of the largest
    # gradient component with pairwise's beta of 100; weights apart by at most 8e-7)
    assert _max_diff(got[0], want[0]) <= 1e-4 * _scale(want[0])
    wa, wb = cut.weights(), whole.weights()
    assert max(float((wa[k] - wb[k]).abs().max()) for k in wa) <= 1e-5
    for key in ("loss", "approx_kl", "ratio_mean", "kl_base", "onpolicy_ratio_dev_mean"):
        assert getattr(stats, key) == pytest.approx(getattr(want_stats, key), rel=1e-4, abs=1e-7)
    assert stats.onpolicy_transitions == want_stats.onpolicy_transitions > 0


def test_a_micro_batch_above_the_batch_is_the_whole_batch(tiny_model, tiny_cfg, batch):
    """So a preset's micro-batch never stands in the way of a smaller batch_size."""
    _, want, _ = _train(tiny_model, _cfg(tiny_cfg, batch_size=4), batch)
    _, got, _ = _train(tiny_model, _cfg(tiny_cfg, batch_size=4, micro_batch=16), batch)
    assert len(got) == len(want) == 3
    assert all(_max_diff(g, w) == 0.0 for g, w in zip(got, want, strict=True))


@pytest.mark.parametrize("autocast", ["bf16", "fp16"])
def test_autocast_computes_in_half_and_keeps_the_lora_in_float32(
    tiny_model, tiny_cfg, autocast, tiny_pipeline_dir
):
    """model.autocast runs the UNet under torch.autocast wherever the policy runs, so the
    sampler and the learner agree; the LoRA, its gradients and AdamW's state stay float32,
    and fp16 scales the loss (torch's GradScaler)."""
    half = {"bf16": torch.bfloat16, "fp16": torch.float16}[autocast]
    model = copy.deepcopy(tiny_model)
    set_autocast(model.unet, model.device, half)
    model.autocast = half
    cfg = tiny_cfg.model_copy(
        update={
            "model": ModelConfig(pretrained=tiny_pipeline_dir, autocast=autocast),
            "train": tiny_cfg.train.model_copy(update={"epochs": 2, "batch_size": 3}),
        }
    )
    prompts = ["a red circle", "a blue square", "two green triangles"]
    batch = sample_branches(model, prompts, [0, 1, 2], sampler_settings(cfg, 2), 3, 2)
    trainer, grads, stats = _train(model, cfg, batch)
    # the deep copy inside _train still runs its own UNet under autocast
    unet = trainer.model.unet
    assert unet.forward.__self__ is unet
    x = torch.zeros(1, *model.latent_shape)
    ctx = model.encode_prompts(["a red circle"])
    assert unet(x, torch.tensor([500]), encoder_hidden_states=ctx).sample.dtype == half
    assert stats.optimizer_steps >= 1 and np.isfinite(stats.loss)
    assert all(p.dtype == torch.float32 for p in trainer.params)
    assert all(g.dtype == torch.float32 for step in grads for g in step)
    state = trainer.optimizer.state_dict()["state"]
    assert state and all(
        v.dtype == torch.float32
        for slots in state.values()
        for k, v in slots.items()
        if k != "step"
    )
    assert (trainer.scaler is not None) == (autocast == "fp16")
    if trainer.scaler is not None:
        assert trainer.scaler.get_scale() > 0
    # sampled and recomputed under the same autocast: ratio 1 within half precision
    assert stats.onpolicy_transitions > 0 and stats.onpolicy_ratio_dev_max <= 1e-6


def test_autocast_needs_float32_or_the_same_half_weights():
    assert ModelConfig(dtype="bfloat16", autocast="bf16").autocast == "bf16"
    assert ModelConfig(dtype="float32", autocast="fp16").autocast == "fp16"
    with pytest.raises(ValueError, match="model.autocast=bf16 with model.dtype=float16"):
        ModelConfig(dtype="float16", autocast="bf16")


def test_load_model_applies_model_autocast(tiny_pipeline_dir):
    from diffusion.pipeline import load_model

    model = load_model(
        ModelConfig(pretrained=tiny_pipeline_dir, autocast="bf16"), torch.device("cpu")
    )
    assert model.autocast == model.compute_dtype == torch.bfloat16 and model.dtype == torch.float32
    x = torch.zeros(2, *model.latent_shape)
    ctx = model.encode_prompts(["a red circle", ""])
    assert model.unet(x, torch.tensor([500, 500]), encoder_hidden_states=ctx).sample.dtype == (
        torch.bfloat16
    )
    plain = load_model(ModelConfig(pretrained=tiny_pipeline_dir), torch.device("cpu"))
    assert plain.autocast is None and "forward" not in plain.unet.__dict__
