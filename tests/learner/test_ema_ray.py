"""train.ema through Ray: the exported LoRA is the average, the training grid is drawn from
it, and the rollouts of the stage after a grid sample with the trained weights again."""

from __future__ import annotations

import json

import pytest
import ray
from safetensors.torch import load_file

from configs.schema import Config
from diffusion.lora import LORA_WEIGHTS_NAME, export_lora
from learner.run import execute, prepare


@pytest.fixture()
def ray_local():
    ray.init(
        address="local",
        num_cpus=3,
        include_dashboard=False,
        _node_ip_address="127.0.0.1",
        logging_level="warning",
    )
    yield
    ray.shutdown()


@pytest.mark.slow  # about 25 s: a local Ray and two stages
def test_ema_run_exports_the_average_and_rollouts_stay_on_policy(
    ray_local, tiny_pipeline_dir, tmp_path
):
    cfg = Config.model_validate(
        {
            "seed": 5,
            "stages": 2,
            "output_dir": str(tmp_path / "runs"),
            "run_name": "ema",
            "model": {"pretrained": tiny_pipeline_dir, "device": "cpu"},
            "sampling": {"num_steps": 4, "branches": 3, "trunks_per_stage": 2, "micro_batch": 8},
            "schedule": {"kind": "linear", "start": 2, "end": 3},
            "selection": {"tau_pos": 0.2, "tau_neg": -0.2},
            "train": {"lr": 3e-3, "epochs": 1, "batch_size": 2, "ema": 0.5, "lora": {"rank": 2}},
            "rewards": [{"name": "jpeg_compressibility"}],
            "runtime": {"rollout_actors": 1, "reward_actors": 1, "learner_cpus": 1},
            "logging": {"grid_every": 1, "mlflow": False},
        }
    )
    cfg, run_dir, resuming = prepare(cfg, None, [], False)
    execute(cfg, run_dir, resuming)
    assert [p.name for p in sorted((run_dir / "grids").iterdir())] == [
        "stage_0000.png",
        "stage_0001.png",
    ]
    last = run_dir / "stages" / "stage_0001"
    ema, trained = load_file(last / "ema.safetensors"), load_file(last / "lora.safetensors")
    assert max(float((ema[k] - trained[k]).abs().max()) for k in ema) > 1e-4
    exported = load_file(str(run_dir / "lora" / LORA_WEIGHTS_NAME))
    expected = load_file(str(export_lora(ema, cfg.train.lora, tmp_path / "expected")))
    assert exported.keys() == expected.keys()
    assert all(float((exported[k] - expected[k]).abs().max()) == 0.0 for k in exported)
    # stage 1 follows stage 0's grid (drawn from the average): its trajectories must still
    # come from the trained weights, so its recomputed log-probs match the sampled ones
    stages = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert stages[1]["optimizer_steps"] >= 1 and stages[1]["onpolicy_transitions"] > 0
    assert stages[1]["onpolicy_exceeded"] == 0 and stages[1]["onpolicy_ratio_dev_max"] < 1e-4
