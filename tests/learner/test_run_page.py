"""Where the end of a run points: the MLflow page of the run it logged."""

from __future__ import annotations

from configs.schema import Config
from learner.tracking import Tracker, run_page


def test_local_store_gives_the_ui_command_and_the_runs_page(tmp_path, monkeypatch):
    import mlflow

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    tracker = Tracker(Config.model_validate({"logging": {"experiment": "pages"}}), tmp_path, "r")
    tracker.finish()
    run = mlflow.get_run(tracker.run_id)
    assert tracker.experiment_id == run.info.experiment_id
    assert mlflow.get_experiment(tracker.experiment_id).name == "pages"
    assert run_page(uri, tracker.experiment_id, tracker.run_id) == [
        f"mlflow ui --backend-store-uri {uri} --host 127.0.0.1 --workers 1",
        f"then browse http://127.0.0.1:5000/#/experiments/{tracker.experiment_id}"
        f"/runs/{tracker.run_id}",
    ]


def test_tracking_server_gives_its_own_url_without_credentials():
    assert run_page("https://user:secret@mlflow.example.org:8443/team/", "7", "abc") == [
        "https://mlflow.example.org:8443/team/#/experiments/7/runs/abc"
    ]
    assert run_page("http://10.0.0.5:5000", "0", "r1") == [
        "http://10.0.0.5:5000/#/experiments/0/runs/r1"
    ]
