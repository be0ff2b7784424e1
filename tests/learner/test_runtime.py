"""The Ray runtime end to end on a local cluster with the tiny random pipeline."""

from __future__ import annotations

import json

import numpy as np
import pytest
import ray
import torch
from PIL import Image
from safetensors.torch import load_file

from configs.schema import Config
from learner.run import execute, prepare


@pytest.fixture(scope="module")
def ray_local():
    ray.init(
        address="local",
        num_cpus=4,
        include_dashboard=False,
        _node_ip_address="127.0.0.1",
        logging_level="warning",
    )
    yield
    ray.shutdown()


def _cfg(tiny_pipeline_dir, tmp_path, **changes) -> Config:
    data = {
        "seed": 5,
        "stages": 3,
        "output_dir": str(tmp_path / "runs"),
        "run_name": changes.pop("run_name", "run"),
        "model": {"pretrained": tiny_pipeline_dir, "device": "cpu"},
        "sampling": {
            "num_steps": 5,
            "branches": 3,
            "trunks_per_stage": 4,
            "micro_batch": 8,
            "guidance_scale": 3.0,
        },
        "schedule": {"kind": "linear", "start": 2, "end": 4},
        "selection": {"tau_pos": 0.2, "tau_neg": -0.2},
        "train": {"lr": 3e-3, "epochs": 1, "batch_size": 4, "lora": {"rank": 2}},
        "rewards": [{"name": "jpeg_compressibility"}],
        "runtime": {"rollout_actors": 2, "reward_actors": 1, "learner_cpus": 1},
        "logging": {"experiment": "tests", "grid_every": 2, "mlflow": True},
    }
    for key, value in changes.items():
        section, _, field = key.partition("__")
        if field:
            data[section][field] = value
        else:
            data[section] = value
    return Config.model_validate(data)


def _lora(run_dir) -> dict[str, torch.Tensor]:
    return load_file(str(run_dir / "lora" / "pytorch_lora_weights.safetensors"))


def _max_diff(a, b) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k] - b[k]).abs().max()) for k in a)


@pytest.fixture(scope="module")
def reference_run(ray_local, tiny_pipeline_dir, tmp_path_factory, monkeypatch_module):
    tmp = tmp_path_factory.mktemp("ref")
    monkeypatch_module.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp}/mlflow.db")
    cfg, run_dir, resuming = prepare(_cfg(tiny_pipeline_dir, tmp), None, [], False)
    summary = execute(cfg, run_dir, resuming)
    return cfg, run_dir, summary


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


def test_run_writes_checkpoints_metrics_and_mlflow(reference_run):
    import mlflow

    cfg, run_dir, summary = reference_run
    assert summary["stages_completed"] == 3
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["step"] for x in lines] == [0, 1, 2]
    assert sorted(p.name for p in (run_dir / "stages").iterdir()) == [
        "stage_0000",
        "stage_0001",
        "stage_0002",
    ]
    assert (run_dir / "config.yaml").is_file() and (run_dir / "grids" / "stage_0000.png").is_file()
    saved = json.loads((run_dir / "summary.json").read_text())
    assert saved["mlflow_run_id"] == summary["mlflow_run_id"]
    m = json.loads(lines[0])
    assert m["images"] == 12 and m["positives"] + m["negatives"] > 0 and m["optimizer_steps"] >= 1
    # UNet work equals the formula per trunk: (T - s) + K * s, x2 with CFG
    assert m["unet_evaluations"] == 4 * ((5 - 2) + 3 * 2) * 2
    runs = mlflow.search_runs(experiment_names=["tests"], output_format="list")
    run = next(r for r in runs if r.info.run_id == summary["mlflow_run_id"])
    assert saved["mlflow_experiment_id"] == run.info.experiment_id  # for the run page URL
    assert run.data.params["sampling.branches"] == "3"
    assert run.data.tags["algorithm"] == "b2"
    history = mlflow.tracking.MlflowClient().get_metric_history(run.info.run_id, "reward_mean")
    assert [h.step for h in history] == [0, 1, 2]
    assert _lora(run_dir)  # exported in diffusers format


def test_grids_show_each_checkpoint_from_the_same_noise(reference_run, tmp_path):
    """grids/stage_N.png is the model of stages/stage_N sampled from the grid's fixed noise
    (resampled here from the checkpoint), framed by the toy checker's verdict."""
    from diffusion.lora import attach_lora, load_lora_state
    from diffusion.pipeline import load_model
    from diffusion.sampler import sample_images
    from learner import checkpoint
    from learner.grid import BAD, GOOD
    from learner.prompts import load_prompts
    from learner.stage import sampler_settings
    from learner.training_grid import GRID_SEED, GRID_STREAM, grid_rows, save_training_grid

    cfg, run_dir, _ = reference_run
    assert sorted(p.name for p in (run_dir / "grids").iterdir()) == [
        "stage_0000.png",
        "stage_0002.png",
    ]
    rows = grid_rows(load_prompts(cfg.prompts.train))
    model = load_model(cfg.model, torch.device("cpu"))
    attach_lora(model.unet, cfg.train.lora, seed=cfg.seed)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the rollout actor, so the pixels match
    try:
        saved = {}
        for stage in (0, 2):
            state = checkpoint.load(run_dir / "stages" / f"stage_{stage:04d}")
            load_lora_state(model.unet, state.lora, f"stage {stage}")
            images = sample_images(
                model, rows, sampler_settings(cfg, stage), GRID_SEED, GRID_STREAM
            )
            want = Image.open(save_training_grid(images, rows, tmp_path / f"{stage}.png"))
            saved[stage] = np.asarray(Image.open(run_dir / "grids" / f"stage_{stage:04d}.png"))
            assert np.abs(np.asarray(want, dtype=int) - saved[stage]).max() <= 1
    finally:
        torch.set_num_threads(threads)
    assert saved[0].shape == saved[2].shape and not np.array_equal(saved[0], saved[2])
    assert tuple(saved[0][0, 0]) in (GOOD, BAD)  # the toy world's prompts: framed


def test_resume_equals_uninterrupted(reference_run, tiny_pipeline_dir, tmp_path):
    ref_cfg, ref_dir, _ = reference_run
    cfg, run_dir, resuming = prepare(
        _cfg(tiny_pipeline_dir, tmp_path, run_name="cut"), None, [], False
    )
    execute(cfg, run_dir, resuming, stop_after=0)
    assert not (run_dir / "stages" / "stage_0001").exists()
    cfg2, run_dir2, resuming2 = prepare(None, run_dir, [], False)
    assert resuming2 and run_dir2 == run_dir
    execute(cfg2, run_dir2, resuming2)
    assert _max_diff(_lora(ref_dir), _lora(run_dir)) <= 1e-6


def test_one_rollout_actor_gives_the_same_run(reference_run, tiny_pipeline_dir, tmp_path):
    _, ref_dir, _ = reference_run
    cfg = _cfg(
        tiny_pipeline_dir,
        tmp_path,
        run_name="one",
        runtime={"rollout_actors": 1, "reward_actors": 1, "learner_cpus": 1},
    )
    cfg, run_dir, resuming = prepare(cfg, None, [], False)
    execute(cfg, run_dir, resuming)
    ref = [json.loads(x) for x in (ref_dir / "metrics.jsonl").read_text().splitlines()]
    got = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["reward_mean"] for r in ref] == [g["reward_mean"] for g in got]
    assert [r["reward_within_trunk"] for r in ref] == [g["reward_within_trunk"] for g in got]
    assert all(0.0 <= r["reward_within_trunk"] <= 1.0 for r in ref)
    assert _max_diff(_lora(ref_dir), _lora(run_dir)) <= 1e-6


def test_the_in_process_groups_run_the_same_stages(reference_run, tiny_pipeline_dir, tmp_path):
    """One stage function: the in-process groups (one model, no Ray) reproduce the Ray run's
    rewards and LoRA from the same config."""
    from diffusion.lora import export_lora
    from diffusion.pipeline import load_model
    from learner.advantages import Advantages
    from learner.prompts import load_prompts
    from learner.stage import run_in_process
    from learner.update import PolicyTrainer
    from rewards.composite import RewardModel

    cfg, ref_dir, _ = reference_run
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each actor runs
    try:
        trainer = PolicyTrainer(load_model(cfg.model, torch.device("cpu")), cfg)
        advantages, reward = Advantages(cfg.advantage), RewardModel(cfg.rewards)
        prompts = load_prompts(cfg.prompts.train)
        records = [
            run_in_process(trainer, advantages, reward, prompts, cfg, stage)
            for stage in range(cfg.stages)
        ]
    finally:
        torch.set_num_threads(threads)
    ref = [json.loads(x) for x in (ref_dir / "metrics.jsonl").read_text().splitlines()]
    for r, got in zip(ref, records, strict=True):
        m = got.metrics()
        assert m["images"] == r["images"] and m["positives"] == r["positives"]
        assert m["reward_mean"] == pytest.approx(r["reward_mean"], abs=1e-9)
        assert m["unet_evaluations"] == r["unet_evaluations"]
    export_lora(trainer.weights(), cfg.train.lora, tmp_path / "lora")
    assert _max_diff(_lora(ref_dir), _lora(tmp_path)) <= 1e-6


TWO_RANKS = {
    "rollout_actors": 2,
    "reward_actors": 1,
    "learner_workers": 2,
    "learner_cpus": 0.5,
    "learner_threads": 1,
}


def _two_rank_run(tiny_pipeline_dir, tmp_path, name, on_submit=None, **runtime):
    cfg = _cfg(tiny_pipeline_dir, tmp_path, run_name=name, runtime={**TWO_RANKS, **runtime})
    cfg = cfg.model_copy(update={"logging": cfg.logging.model_copy(update={"mlflow": False})})
    cfg, run_dir, resuming = prepare(cfg, None, [], False)
    assert execute(cfg, run_dir, resuming, on_submit=on_submit)["stages_completed"] == 3
    return run_dir


@pytest.fixture(scope="module")
def two_rank_run(ray_local, tiny_pipeline_dir, tmp_path_factory):
    """An undisturbed run with two learner ranks, each on a bundle of its own."""
    return _two_rank_run(tiny_pipeline_dir, tmp_path_factory.mktemp("two"), "separate")


def test_colocated_and_separate_placements_give_the_same_run(
    two_rank_run, tiny_pipeline_dir, tmp_path
):
    """Two learner ranks, each on its own bundle or sharing rollout actor i's."""
    run_dir = _two_rank_run(tiny_pipeline_dir, tmp_path, "colocated", placement="colocated")
    assert _max_diff(_lora(two_rank_run), _lora(run_dir)) <= 1e-6


def test_two_ranks_fetch_between_them_what_one_rank_fetches(reference_run, two_rank_run):
    """With one epoch the ranks' rows partition the selection: each rank is handed only the
    trajectories it trains (the first stage, where both runs hold the same weights)."""
    _, ref_dir, _ = reference_run
    ref, got = (
        [json.loads(x) for x in (d / "metrics.jsonl").read_text().splitlines()]
        for d in (ref_dir, two_rank_run)
    )
    assert ref[0]["positives"] + ref[0]["negatives"] > 0
    assert got[0]["bytes_to_learner"] == ref[0]["bytes_to_learner"] > 0


def test_a_learner_rank_killed_mid_update_costs_a_rebuild_not_the_run(
    two_rank_run, tiny_pipeline_dir, tmp_path
):
    """Rank 1 dies while stage 2's update runs: the group is rebuilt from stage 1's
    checkpoint, the stage runs again, and the run ends as the undisturbed one."""
    import threading

    killed, timers = [], []

    def kill_rank_one(kind, stage, chunk, ranks):
        if kind == "learner" and stage == 1 and not killed:
            killed.append(stage)
            timer = threading.Timer(0.05, ray.kill, args=(ranks[1],))
            timers.append(timer)
            timer.start()

    run_dir = _two_rank_run(tiny_pipeline_dir, tmp_path, "killed", on_submit=kill_rank_one)
    for timer in timers:
        timer.join()
    got = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert killed and [g["learner_rebuilds"] for g in got] == [0.0, 1.0, 0.0]
    ref = [json.loads(x) for x in (two_rank_run / "metrics.jsonl").read_text().splitlines()]
    assert [r["reward_mean"] for r in ref] == [g["reward_mean"] for g in got]
    assert _max_diff(_lora(two_rank_run), _lora(run_dir)) <= 1e-6


@pytest.mark.parametrize(
    "seed", [0, pytest.param(1, marks=pytest.mark.slow), pytest.param(2, marks=pytest.mark.slow)]
)
def test_killed_rollout_actor_mid_stage(reference_run, tiny_pipeline_dir, tmp_path, seed):
    """Kill at a random point: the seed picks the stage, the rollout submission and a delay
    (0-300 ms after the task is sent, so the actor may be mid-sampling or already done)."""
    import random
    import threading

    _, ref_dir, _ = reference_run
    rng = random.Random(seed)
    stage_to_hit, nth, delay = rng.randrange(3), rng.randrange(2), rng.uniform(0.0, 0.3)
    seen, killed, timers = [], [], []

    def kill_at_a_random_point(kind, stage, chunk, actor):
        if kind != "rollout" or stage != stage_to_hit or killed:
            return
        seen.append(chunk)
        if len(seen) == nth + 1:
            killed.append(chunk)
            timer = threading.Timer(delay, ray.kill, args=(actor,), kwargs={"no_restart": False})
            timers.append(timer)
            timer.start()

    cfg, run_dir, resuming = prepare(
        _cfg(tiny_pipeline_dir, tmp_path, run_name=f"kill{seed}"), None, [], False
    )
    execute(cfg, run_dir, resuming, on_submit=kill_at_a_random_point)
    for timer in timers:
        timer.join()
    ref = [json.loads(x) for x in (ref_dir / "metrics.jsonl").read_text().splitlines()]
    got = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert killed
    assert all(g["images"] == 12 for g in got)  # every trajectory, despite the kill
    assert [r["reward_mean"] for r in ref] == [g["reward_mean"] for g in got]
    assert _max_diff(_lora(ref_dir), _lora(run_dir)) <= 1e-6


@pytest.mark.parametrize(
    "kind",
    [
        # a reward actor dies mid-batch: the batch is scored again on the next one
        "reward",
        # the rollout actor keeping a chunk dies (and restarts empty) just before its
        # selected rows are taken: the chunk is sampled again
        "take",
    ],
)
def test_an_actor_killed_once_leaves_the_run_as_undisturbed(
    reference_run, tiny_pipeline_dir, tmp_path, kind
):
    _, ref_dir, _ = reference_run
    killed = []

    def kill_once(at, stage, chunk, actor):
        if at == kind and stage == 1 and not killed:
            killed.append(chunk)
            ray.kill(actor, no_restart=False)

    cfg, run_dir, resuming = prepare(
        _cfg(tiny_pipeline_dir, tmp_path, run_name=f"{kind}-kill"), None, [], False
    )
    execute(cfg, run_dir, resuming, on_submit=kill_once)
    ref = [json.loads(x) for x in (ref_dir / "metrics.jsonl").read_text().splitlines()]
    got = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert killed
    assert [r["reward_mean"] for r in ref] == [g["reward_mean"] for g in got]
    assert _max_diff(_lora(ref_dir), _lora(run_dir)) <= 1e-6
