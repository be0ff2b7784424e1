"""Weights once per node: a local folder stands in for the hub (nothing is downloaded)."""

import shutil
import threading
import time
from pathlib import Path

import pytest
import torch

import diffusion.fetch as fetch
from configs.schema import ModelConfig
from diffusion.pipeline import PipelineLoadError, load_model


@pytest.fixture()
def stand_in_hub(tiny_pipeline_dir, monkeypatch):
    """`fetch._download` copying from the tiny pipeline folder; records each real download."""
    downloads = []

    def download(repo_id, revision, cache_dir, local_only):
        target = Path(cache_dir) / f"models--{repo_id.replace('/', '--')}" / "snapshot"
        if target.is_dir():
            return str(target)
        if local_only:
            raise OSError("not in the cache")
        downloads.append(repo_id)
        time.sleep(0.3)  # a slow download: the other callers arrive while it runs
        shutil.copytree(tiny_pipeline_dir, target)
        return str(target)

    monkeypatch.setattr(fetch, "_download", download)
    return downloads


def test_concurrent_loaders_on_one_node_download_once(stand_in_hub, tmp_path):
    paths, errors = [], []

    def load():
        try:
            paths.append(fetch.node_snapshot("stand-in/tiny", cache_dir=tmp_path))
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=load) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and stand_in_hub == ["stand-in/tiny"]
    assert len(set(paths)) == 1 and (paths[0] / "model_index.json").is_file()
    # another node: its own cache, its own single download
    fetch.node_snapshot("stand-in/tiny", cache_dir=tmp_path / "node2")
    assert stand_in_hub == ["stand-in/tiny"] * 2


def test_load_model_reads_the_node_copy_of_a_hub_id(stand_in_hub, tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    cfg = ModelConfig(pretrained="stand-in/tiny")
    for _ in range(2):
        model = load_model(cfg, torch.device("cpu"))
    assert model.latent_shape[0] == model.unet.config.in_channels
    assert stand_in_hub == ["stand-in/tiny"]


def test_failed_download_says_what_to_do(monkeypatch, tmp_path):
    import huggingface_hub.constants

    def unreachable(repo_id, revision, cache_dir, local_only):
        raise OSError("no network")

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(fetch, "_download", unreachable)
    with pytest.raises(PipelineLoadError, match="huggingface-cli download stand-in/tiny"):
        load_model(ModelConfig(pretrained="stand-in/tiny"), torch.device("cpu"))
