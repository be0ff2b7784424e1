"""`python -m learner.main` on the tiny random pipeline of each family beyond SD-1.x: two B²
stages through Ray (one rollout actor, one reward actor, one learner rank on the CPU) and a
LoRA that the family's stock diffusers pipeline loads and that changes its denoiser."""

from __future__ import annotations

import json

import pytest
import torch
from diffusers import FluxPipeline, StableDiffusion3Pipeline, StableDiffusionXLPipeline

from learner.main import main


def _sd3_denoiser(path: str):
    stock = StableDiffusion3Pipeline.from_pretrained(
        path, local_files_only=True, text_encoder_3=None, tokenizer_3=None
    )
    g = torch.Generator().manual_seed(0)
    call = dict(
        hidden_states=torch.randn(1, 16, 16, 16, generator=g),
        timestep=torch.tensor([900.0]),
        encoder_hidden_states=torch.randn(1, 20, 64),
        pooled_projections=torch.randn(1, 64),
    )
    return stock, lambda: stock.transformer(**call).sample


def _sdxl_denoiser(path: str):
    stock = StableDiffusionXLPipeline.from_pretrained(path, local_files_only=True)
    g = torch.Generator().manual_seed(0)
    x, ctx = torch.randn(1, 4, 16, 16, generator=g), torch.randn(1, 16, 80, generator=g)
    added = {"text_embeds": torch.randn(1, 40, generator=g), "time_ids": torch.randn(1, 6)}
    call = dict(encoder_hidden_states=ctx, added_cond_kwargs=added)
    return stock, lambda: stock.unet(x, torch.tensor([900]), **call).sample


def _flux_denoiser(path: str):
    from diffusion.families.flux import image_ids

    stock = FluxPipeline.from_pretrained(path, local_files_only=True)
    g = torch.Generator().manual_seed(0)
    call = dict(
        hidden_states=torch.randn(1, 64, 64, generator=g),  # 8 x 8 packed tokens
        encoder_hidden_states=torch.randn(1, 20, 32, generator=g),
        pooled_projections=torch.randn(1, 32, generator=g),
        timestep=torch.tensor([0.9]),
        img_ids=image_ids(16, 16, "cpu", torch.float32),
        txt_ids=torch.zeros(20, 3),
        guidance=torch.tensor([3.5]),
    )
    return stock, lambda: stock.transformer(**call).sample


FAMILIES = {
    # family: (its tiny pipeline's fixture, the stock pipeline and its denoiser, settings)
    "sd3": ("tiny_sd3_dir", _sd3_denoiser, {"sampling.eta": 0.7}),
    "sdxl": ("tiny_sdxl_dir", _sdxl_denoiser, {}),
    "flux": ("tiny_flux_dir", _flux_denoiser, {"sampling.eta": 0.9}),
}


@pytest.mark.slow  # Ray start-up: about 25 s each on an idle 2-core machine, more under load
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_learner_main_runs_two_b2_stages(family, request, tmp_path, capsys):
    fixture, denoiser, extra = FAMILIES[family]
    pipeline = request.getfixturevalue(fixture)
    runs = tmp_path / "runs"
    settings = {
        "model.pretrained": pipeline,
        "model.device": "cpu",
        "stages": 2,
        "sampling.num_steps": 4,
        "sampling.trunks_per_stage": 2,
        "sampling.branches": 3,
        **extra,
        "schedule.start": 2,
        "schedule.end": 3,
        "train.batch_size": 3,
        "rewards": "[{name: jpeg_compressibility}]",
        "runtime.rollout_actors": 1,
        "runtime.rollout_threads": 1,
        "runtime.reward_threads": 1,
        "runtime.learner_threads": 1,
        "output_dir": runs,
        "run_name": family,
        "logging.mlflow": "false",
    }
    argv = [a for k, v in settings.items() for a in ("--set", f"{k}={v}")]
    code = main(argv)
    out = capsys.readouterr()
    assert code == 0, out.err[-3000:]
    summary = json.loads((runs / family / "summary.json").read_text())
    assert summary["stages_completed"] == 2
    lines = (runs / family / "metrics.jsonl").read_text().splitlines()
    metrics = [json.loads(line) for line in lines]
    assert [m["split_step"] for m in metrics] == [2.0, 3.0]
    assert sum(m["optimizer_steps"] for m in metrics) > 0

    stock, denoise = denoiser(pipeline)
    with torch.no_grad():
        before = denoise()
        stock.load_lora_weights(str(runs / family / "lora"))
        after = denoise()
    assert not torch.equal(before, after)
