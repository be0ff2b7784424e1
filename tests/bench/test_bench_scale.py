import json

import pytest
import ray
import yaml

from bench.scale import SECTION, main, report


@pytest.mark.slow
def test_bench_scale_times_one_and_two_learner_workers(tiny_pipeline_dir, tmp_path, capsys):
    if ray.is_initialized():
        ray.shutdown()
    cfg = {
        "seed": 1,
        "stages": 2,
        "model": {"pretrained": tiny_pipeline_dir, "device": "cpu"},
        "sampling": {"num_steps": 4, "branches": 3, "trunks_per_stage": 8, "micro_batch": 8},
        "schedule": {"kind": "constant", "start": 3, "end": 3},
        "selection": {"tau_pos": 0.1, "tau_neg": -0.1},
        "train": {"epochs": 1, "batch_size": 4},
        "rewards": [{"name": "jpeg_compressibility"}],
        "logging": {"mlflow": False},
    }
    path = tmp_path / "scale.yaml"
    path.write_text(yaml.safe_dump(cfg))
    doc = tmp_path / "PERF.md"
    args = ["--config", str(path), "--repeats", "1", "--json", str(tmp_path / "s.json")]
    assert main([*args, "--doc", str(doc)]) == 0
    out = json.loads((tmp_path / "s.json").read_text())
    one, two = out["workers"]["1"], out["workers"]["2"]
    assert one["best_seconds"] > 0 and two["best_seconds"] > 0
    assert two["optimizer_steps"] == one["optimizer_steps"] >= 1
    assert two["grad_bytes_per_step"] == [out["lora_gradient_bytes"]] * 2
    assert two["max_lora_difference"] <= 1e-5
    assert SECTION in doc.read_text() and "bench.scale" in doc.read_text()


def test_report_lists_each_worker_count():
    r = {
        "stage": 9,
        "split_step": 10,
        "selected_trajectories": 64,
        "trajectory_steps": 640,
        "lora_gradient_bytes": 245760,
        "workers": {
            "1": {
                "seconds": [12.0, 12.5],
                "best_seconds": 12.0,
                "ratio_to_base": 1.0,
                "cpu_seconds_per_rank": [[12.1], [12.3]],
                "cpu_ratio_to_base": 1.0,
                "optimizer_steps": 8,
                "grad_bytes_per_step": [0.0],
                "max_lora_difference": 0.0,
            },
            "2": {
                "seconds": [6.5, 6.6],
                "best_seconds": 6.5,
                "ratio_to_base": 6.5 / 12.0,
                "cpu_seconds_per_rank": [[6.2, 6.1], [6.0, 6.3]],
                "cpu_ratio_to_base": 6.2 / 12.1,
                "optimizer_steps": 8,
                "grad_bytes_per_step": [245760.0, 245760.0],
                "max_lora_difference": 1e-6,
            },
        },
    }
    text = report(r, 1)
    assert "split 10" in text and "0.54" in text and "245760, 245760" in text
    assert "6.20" in text and "0.51" in text  # the busiest rank's CPU seconds, best repeat
