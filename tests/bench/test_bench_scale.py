import json

import pytest
import ray
import yaml

from bench.scale import SECTION, main, report
from bench.scale_model import (
    Links,
    Rates,
    StageWork,
    model_shape,
    reference,
    ring_all_reduce_s,
    shape_phases,
    task_finish_times,
    update_s,
)


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


# -- the stage-time model (bench.scale_model, `python -m bench.scale --model`) ------------

# A stage small enough to follow by hand: one trunk costs (10 - 3 + 2 x 3) x 2 = 26 UNet
# evaluations = 1 s, a selected trajectory 100 x 4 latent bytes + 3 x 4 log-prob bytes
WORK = StageWork(
    num_steps=10, branches=2, trunks=4, split_step=3, selected=8, batch_size=4, epochs=1,
    trunks_per_task=2, latent_bytes=100, image_bytes=1000,
)  # fmt: skip
RATES = Rates(unet_evaluations_per_s=26.0, trajectory_steps_per_s=6.0, reward_images_per_s=10.0)
LINKS = Links(
    lora_bytes=1000, gpus_per_node=2, nvlink_bytes_per_s=1000.0, nvlink_latency_s=0.1,
    internode_bytes_per_s=500.0, internode_latency_s=0.2, object_bytes_per_s=1e4,
    object_latency_s=0.01,
)  # fmt: skip


def approx(x):
    return pytest.approx(x, rel=1e-9, abs=1e-12)


def test_model_reference_loop_by_hand():
    # 4 trunks x 1 s; 8 images / 10 per s; 8 trajectories x 3 steps x 1 epoch / 6 per s
    assert reference(WORK, RATES) == {
        **dict.fromkeys(["weight_sync", "trajectories", "all_reduce"], 0.0),
        "sampling": approx(4.0),
        "reward": approx(0.8),
        "update": approx(4.0),
    }


def test_model_colocated_on_two_gpus_by_hand():
    ph = shape_phases("colocated", 2, WORK, RATES, LINKS)
    assert ph["weight_sync"] == approx(1000 / 1e4 + 0.01)
    assert ph["sampling"] == approx(2.0)  # two tasks of 2 trunks, one per GPU
    # both tasks return at 2 s with 4 images each, 0.1 s of CLIP + 0.1 s of transfer an image
    assert ph["reward"] == approx(1.6)
    assert ph["trajectories"] == approx(8 * 412 / 1e4 + 2 * 0.01)
    # 2 optimizer steps of 4 trajectories: 2 on each rank x 3 steps = 6 trajectory-steps
    assert ph["update"] == approx(2 * 6 / 6.0)
    # ring of 2 in one node: 2 x 1/2 x 1000 B / 1000 B/s + 2 x 0.1 s, once per optimizer step
    assert ph["all_reduce"] == approx(2 * (1.0 + 0.2))


def test_model_ring_crosses_nodes_and_shards():
    # 4 ranks over 2-GPU nodes: the ring runs at the inter-node link
    assert ring_all_reduce_s(1000, 4, LINKS) == approx(2 * 3 / 4 * 1000 / 500 + 2 * 3 * 0.2)
    assert ring_all_reduce_s(1000, 1, LINKS) == 0.0
    # 8 ranks, batches of 4 trajectories: whole trajectories leave 4 ranks idle (1 x 3 steps
    # a batch on the busiest); sharded by steps, 12 steps over 8 ranks is 2 a batch
    assert update_s(WORK, RATES, 8) == approx(2 * 3 / 6.0)
    assert update_s(WORK, RATES, 8, by_steps=True) == approx(2 * 2 / 6.0)


def test_model_tasks_queue_and_reward_overlap():
    uneven = StageWork(**{**WORK.__dict__, "trunks": 5})  # tasks of 2, 2, 1 trunks
    ends = task_finish_times(uneven, RATES, 1, 2)
    assert ends == [(approx(2.0), 2), (approx(4.0), 2), (approx(5.0), 1)]
    # rewards keep up with one actor: only the last task's 2 images (0.4 s) are left
    ph = shape_phases("separate", 2, uneven, RATES, LINKS)
    assert ph["sampling"] == approx(5.0) and ph["reward"] == approx(0.4)
    assert ph["update"] == approx(8 * 3 / 6.0) and ph["all_reduce"] == 0.0


def test_model_separate_group_takes_the_best_split():
    phases, learners = model_shape("separate_group", 4, [WORK], RATES, LINKS)
    # L = 1: 2 + 4 s; L = 2: 2 + 2 + 2.4 s; L = 3: 4 + 2 + 6.9 s (plus the same 2.06 s)
    assert learners == 1
    assert sum(phases.values()) == approx(0.11 + 2.0 + 1.6 + 0.3496 + 4.0)


def test_model_lora_size_and_recorded_rates():
    from bench.scale_model import lora_parameters
    from bench.scale_report import DEFAULT_CONFIG, DEFAULT_GPU_JSON, load_rates
    from configs.load import load_config

    recorded = json.loads(DEFAULT_GPU_JSON.read_text())
    # rank 4 x (14 C + 2 x 768) per transformer block: 5 at 320, 5 at 640, 6 at 1280
    by_hand = 4 * (5 * (14 * 320 + 1536) + 5 * (14 * 640 + 1536) + 6 * (14 * 1280 + 1536))
    assert lora_parameters(4, ["to_q", "to_k", "to_v", "to_out.0"]) == by_hand == 797184
    assert recorded["update"]["lora_parameters"] == by_hand  # counted by peft in bench.gpu
    rates, notes = load_rates(recorded, load_config(DEFAULT_CONFIG, []), None)
    assert rates.unet_evaluations_per_s == approx(992 / recorded["sampling"]["float16"]["seconds"])
    assert rates.trajectory_steps_per_s == approx(recorded["update"]["trajectory_steps_per_second"])
    assert any("reward: not measured" in n for n in notes)


def test_vit_h14_image_flops_recount():
    open_clip = pytest.importorskip("open_clip")
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from bench.scale_model import VIT_H14_IMAGE_FLOPS

    model = open_clip.create_model("ViT-H-14", pretrained=None, device="meta")
    with FlopCounterMode(display=False) as counter:
        model.encode_image(torch.zeros(1, 3, 224, 224, device="meta"))
    assert counter.get_total_flops() == VIT_H14_IMAGE_FLOPS


def test_bench_scale_model_writes_table_and_plot(tmp_path, capsys):
    png, out = tmp_path / "scale.png", tmp_path / "scale.json"
    assert main(["--model", "--gpus", "1", "8", "64", "--plot", str(png), "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "reference" in text and "colocated_fixed" in text and "target >= 75 %" in text
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    result = json.loads(out.read_text())
    rows = {(r["gpus"], r["shape"]): r for r in result["rows"]}
    assert rows[(1, "reference")]["speedup"] == 1.0
    assert rows[(8, "colocated")]["efficiency"] >= 0.75  # issue 29's target, on these rates
    assert {g for g, _ in rows} == {1, 8, 64}
