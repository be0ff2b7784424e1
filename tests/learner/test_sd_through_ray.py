"""The paper's SD preset end to end through Ray, on a random SD-1.5-shaped pipeline: two
rollout actors and two learner workers (one gloo process group) on the CPU."""

from __future__ import annotations

import json

import torch
from diffusers import StableDiffusionPipeline

from diffusion.architectures import main as write_pipeline
from learner.main import main

CPU_RUNTIME = [
    "model.dtype=float32",
    "model.device=cpu",
    "runtime.rollout_actors=2",
    "runtime.reward_actors=1",
    "runtime.rollout_gpus=0",
    "runtime.reward_gpus=0",
    "runtime.learner_gpus=0",
    "runtime.rollout_cpus=1",
    "runtime.reward_cpus=1",
    "runtime.learner_cpus=1",
    "runtime.learner_workers=2",
    "runtime.learner_threads=1",
]


def test_sd14_preset_runs_two_stages_of_the_reduced_sd15_pipeline(tmp_path, capsys):
    pipe_dir = tmp_path / "sd15-reduced"
    assert write_pipeline(["--arch", "sd15-reduced", "--out", str(pipe_dir)]) == 0
    runs = tmp_path / "runs"
    code = main(
        [
            "--config",
            "configs/sd14_b2.yaml",
            "--set",
            f"model.pretrained={pipe_dir}",
            *CPU_RUNTIME,
            "stages=2",
            "sampling.num_steps=6",
            "schedule.start=4",
            "schedule.end=6",
            "sampling.trunks_per_stage=4",
            "sampling.branches=3",
            "train.batch_size=4",
            "train.grad_accum=1",
            "rewards=[{name: jpeg_compressibility}]",
            f"output_dir={runs}",
            "run_name=sd",
            "logging.mlflow=false",
        ]
    )
    out = capsys.readouterr()
    assert code == 0, out.err[-3000:]
    summary = json.loads((runs / "sd" / "summary.json").read_text())
    assert summary["stages_completed"] == 2
    metrics = [
        json.loads(line) for line in (runs / "sd" / "metrics.jsonl").read_text().splitlines()
    ]
    assert [m["split_step"] for m in metrics] == [4.0, 5.0]
    assert all(m["images"] == 12 for m in metrics)
    assert sum(m["optimizer_steps"] for m in metrics) > 0

    # the stock diffusers pipeline loads the trained LoRA, and it changes the UNet's output
    stock = StableDiffusionPipeline.from_pretrained(str(pipe_dir), local_files_only=True)
    x = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    t, ctx = torch.tensor([900]), torch.randn(1, 77, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        before = stock.unet(x, t, encoder_hidden_states=ctx).sample
        stock.load_lora_weights(
            str(runs / "sd" / "lora"), weight_name="pytorch_lora_weights.safetensors"
        )
        after = stock.unet(x, t, encoder_hidden_states=ctx).sample
    assert not torch.equal(before, after)
