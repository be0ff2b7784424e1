import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_bench_stage_reports_every_number_and_exits_cleanly(tiny_pipeline_dir, tmp_path):
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
    # a process of its own, as users run it: its exit status covers the interpreter's
    # shutdown after the report (Ray's and torch's threads), not only main()'s return value
    done = subprocess.run(
        [sys.executable, "-m", "bench.stage", "--config", str(path), "--stages", "2"]
        + ["--json", str(tmp_path / "b.json"), "--doc", str(doc)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Fatal Python error" not in done.stderr
    assert "bytes to the learner per stage" in done.stdout
    out = json.loads((tmp_path / "b.json").read_text())
    assert out["unet_evaluations"] == out["unet_evaluations_formula"] == 4 * (2 + 2 * 2) * 2
    assert set(out["phases_seconds"]) >= {"rollout", "reward", "update", "weight_sync", "other"}
    assert abs(sum(out["phases_share"].values()) - 1) < 0.05
    assert out["ray_over_inprocess"] > 0 and out["branch_batching"]["speedup"] > 0
    assert out["rollout_images_per_second"]["1_actor"] > 0
    assert "bench.stage" in doc.read_text()


def test_results_go_into_the_stage_profile_section(tmp_path):
    from bench.stage import SECTION, insert_into_section

    doc = tmp_path / "P.md"
    doc.write_text(f"# P\n\n{SECTION}\n\nintro\n\n## GPU\n\ngpu text\n")
    insert_into_section(doc, SECTION, "\n### run 1\n")
    insert_into_section(doc, SECTION, "\n### run 2\n")
    text = doc.read_text()
    assert text.index("intro") < text.index("### run 1") < text.index("### run 2")
    assert text.index("### run 2") < text.index("## GPU") and text.endswith("gpu text\n")
    other = tmp_path / "O.md"
    insert_into_section(other, SECTION, "### run\n")  # no such section: appended
    assert other.read_text() == "### run\n"
