from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def test_cluster_files_parse_and_run_the_main_job():
    launcher = yaml.safe_load((ROOT / "cluster/cluster.yaml").read_text())
    assert launcher["head_node_type"] in launcher["available_node_types"]
    assert any("--dashboard-host=127.0.0.1" in c for c in launcher["head_start_ray_commands"])
    job = yaml.safe_load((ROOT / "cluster/rayjob.yaml").read_text())
    assert job["kind"] == "RayJob" and "python -m learner.main" in job["spec"]["entrypoint"]
    env = yaml.safe_load((ROOT / "cluster/runtime_env.yaml").read_text())
    assert ".venv" in env["excludes"]
