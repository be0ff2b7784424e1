import json

import ray
import yaml

from bench.stage import main


def test_bench_stage_reports_every_number(tiny_pipeline_dir, tmp_path, capsys):
    if ray.is_initialized():
        ray.shutdown()
    cfg = {
        "seed": 1,
        "stages": 2,
        "output_dir": str(tmp_path / "runs"),
        "model": {"pretrained": tiny_pipeline_dir, "device": "cpu"},
        "sampling": {"num_steps": 4, "branches": 2, "trunks_per_stage": 4, "micro_batch": 8},
        "schedule": {"kind": "constant", "start": 2, "end": 2},
        "selection": {"tau_pos": 0.1, "tau_neg": -0.1},
        "train": {"epochs": 1, "batch_size": 4},
        "rewards": [{"name": "jpeg_compressibility"}],
        "logging": {"mlflow": False},
    }
    path = tmp_path / "bench.yaml"
    path.write_text(yaml.safe_dump(cfg))
    doc = tmp_path / "PERF.md"
    assert (
        main(
            [
                "--config",
                str(path),
                "--stages",
                "2",
                "--json",
                str(tmp_path / "b.json"),
                "--doc",
                str(doc),
            ]
        )
        == 0
    )
    out = json.loads((tmp_path / "b.json").read_text())
    assert out["unet_evaluations"] == out["unet_evaluations_formula"] == 4 * (2 + 2 * 2) * 2
    assert set(out["phases_seconds"]) >= {"rollout", "reward", "update", "weight_sync", "other"}
    assert abs(sum(out["phases_share"].values()) - 1) < 0.05
    assert out["ray_over_inprocess"] > 0 and out["branch_batching"]["speedup"] > 0
    assert out["rollout_images_per_second"]["1_actor"] > 0
    assert "bench.stage" in doc.read_text()
