"""`python -m learner.main` on a tiny random SDXL pipeline: two B² stages through Ray (one
rollout actor, one reward actor, one learner rank on the CPU) and a LoRA that the stock
StableDiffusionXLPipeline loads."""

from __future__ import annotations

import json

import pytest
import torch
from diffusers import StableDiffusionXLPipeline

from learner.main import main


@pytest.mark.slow  # Ray start-up: about 25 s on an idle 2-core machine, more under load
def test_learner_main_runs_two_b2_stages_on_sdxl(tiny_sdxl_dir, tmp_path, capsys):
    runs = tmp_path / "runs"
    settings = {
        "model.pretrained": tiny_sdxl_dir,
        "model.device": "cpu",
        "stages": 2,
        "sampling.num_steps": 4,
        "sampling.trunks_per_stage": 2,
        "sampling.branches": 3,
        "schedule.start": 2,
        "schedule.end": 3,
        "train.batch_size": 3,
        "rewards": "[{name: jpeg_compressibility}]",
        "runtime.rollout_actors": 1,
        "runtime.rollout_threads": 1,
        "runtime.reward_threads": 1,
        "runtime.learner_threads": 1,
        "output_dir": runs,
        "run_name": "sdxl",
        "logging.mlflow": "false",
    }
    argv = [a for k, v in settings.items() for a in ("--set", f"{k}={v}")]
    code = main(argv)
    out = capsys.readouterr()
    assert code == 0, out.err[-3000:]
    summary = json.loads((runs / "sdxl" / "summary.json").read_text())
    assert summary["stages_completed"] == 2
    lines = (runs / "sdxl" / "metrics.jsonl").read_text().splitlines()
    metrics = [json.loads(line) for line in lines]
    assert [m["split_step"] for m in metrics] == [2.0, 3.0]
    assert sum(m["optimizer_steps"] for m in metrics) > 0

    stock = StableDiffusionXLPipeline.from_pretrained(tiny_sdxl_dir, local_files_only=True)
    g = torch.Generator().manual_seed(0)
    x, ctx = torch.randn(1, 4, 16, 16, generator=g), torch.randn(1, 16, 80, generator=g)
    added = {"text_embeds": torch.randn(1, 40, generator=g), "time_ids": torch.randn(1, 6)}
    call = dict(encoder_hidden_states=ctx, added_cond_kwargs=added)
    with torch.no_grad():
        before = stock.unet(x, torch.tensor([900]), **call).sample
        stock.load_lora_weights(str(runs / "sdxl" / "lora"))
        after = stock.unet(x, torch.tensor([900]), **call).sample
    assert not torch.equal(before, after)
