import json
import time

import pytest
import torch

from bench.gpu import (
    RESULT_FILE,
    Budget,
    count_flops,
    largest_fitting,
    main,
    table,
)
from diffusion.architectures import SD15, build_networks

# seconds of the tiny run alone on one thread (a loaded 2-core machine takes longer)
TINY_SECONDS = 60


def _tiny_run(tmp_path, arch: str) -> dict:
    threads = torch.get_num_threads()
    t0 = time.perf_counter()
    assert main(["--out", str(tmp_path), "--arch", arch, "--tiny", "--device", "cpu"]) == 0
    assert time.perf_counter() - t0 < TINY_SECONDS
    assert torch.get_num_threads() == threads  # restored after the one-thread CPU run
    return json.loads((tmp_path / RESULT_FILE).read_text())


@pytest.mark.parametrize(
    "arch, family, rows_per_latent",
    [("sd15", "sd", 2), ("sd35m", "sd3", 2), ("flux", "flux", 1)],  # flux: guidance embedded
)
def test_tiny_cpu_run_reports_every_number_and_prints_the_table_last(
    tmp_path, capsys, arch, family, rows_per_latent
):
    out = _tiny_run(tmp_path, arch)
    assert out["complete"] is True  # the partial writes after each part were replaced
    assert not list(tmp_path.glob("*.tmp"))
    assert out["meta"]["arch"]["name"] == f"{arch}-tiny"
    assert out["meta"]["arch"]["family"] == family
    for key in (
        "images_per_second",
        "unet_tflops",
        "matmul_peak_tflops",
        "unet_fraction_of_matmul_peak",
        "sampling_fraction_of_matmul_peak",
        "update_fraction_of_matmul_peak",
        "update_trajectory_steps_per_second",
        "peak_memory_bytes",
        "max_micro_batch",
    ):
        assert key in out, key
    assert out["images_per_second"]["float32"] > 0
    assert out["unet_tflops"]["float32"] > 0
    assert out["matmul_peak_tflops"]["float32"] > 0
    assert out["peak_memory_bytes"] is None and out["max_micro_batch"] is None
    assert out["errors"] == [] and out["skipped"] == []

    samp = out["sampling"]["float32"]
    assert samp["unet_batch"] == rows_per_latent * samp["micro_batch"]
    assert samp["unet_evaluations"] == samp["unet_evaluations_formula"] > 0
    assert samp["images"] == samp["trunks"] * samp["branches"]
    assert samp["unet_flops_per_forward"] > 0 and samp["finite_latents"]
    assert samp["per_branch_loop_seconds"] > 0 and samp["branch_batching_speedup"] > 0
    update = out["update"]
    assert update["seconds"] > 0 and update["stats"]["optimizer_steps"] >= 1
    assert update["selected_trajectories"] == 2 * samp["trunks"]  # best + worst per trunk
    # as the presets train: sd14_b2 without gradient checkpointing, sd35m_b2 and flux_b2 with
    assert update["gradient_checkpointing"] == (arch != "sd15")
    assert out["update_trajectory_steps_per_second"] == update["trajectory_steps_per_second"]
    # the update again from the sampling weights: micro-batches and gradient checkpointing
    uv = out["update_variants"]
    assert uv["trajectories"] == samp["images"]  # no memory limit on the CPU: all of them
    var = uv["variants"]
    assert list(var) == ["preset", "largest", "largest_checkpointing"]
    assert var["preset"]["micro_batch"] < var["largest"]["micro_batch"] == uv["trajectories"]
    assert var["largest_checkpointing"]["gradient_checkpointing"]
    assert var["preset"]["gradient_checkpointing"] == update["gradient_checkpointing"]
    for v in var.values():
        assert v["seconds"] > 0 and v["stats"]["optimizer_steps"] == 1
        assert v["stats"]["onpolicy_transitions"] == uv["trajectories"] * uv["interval"]
        assert v["stats"]["onpolicy_ratio_dev_max"] <= 1e-6  # sampled at these weights
        assert v["stats"]["loss"] == pytest.approx(var["preset"]["stats"]["loss"], abs=1e-6)
        assert v["fraction_of_matmul_peak"] > 0

    printed = capsys.readouterr().out.rstrip()
    text = table(out).rstrip()
    assert printed.endswith(text)
    assert text.splitlines()[0].startswith(f"== bench.gpu results: {arch}-tiny")
    assert "images/s" in text and "matmul peak TFLOP/s" in text
    assert "branch-batched / per-branch loop" in text
    assert "micro-batch 4, checkpointing" in text
    assert "of the matmul peak" in text


def test_skipped_parts_are_left_out_and_recorded(tmp_path):
    args = ["--out", str(tmp_path), "--arch", "sd35m", "--device", "cpu", "--skip"]
    assert main([*args, "branch_loop", "variants"]) == 0
    out = json.loads((tmp_path / RESULT_FILE).read_text())
    assert out["meta"]["skip"] == ["branch_loop", "variants"]
    assert "per_branch_loop_seconds" not in out["sampling"]["float32"]
    assert out["update_variants"] is None and out["update"]["seconds"] > 0


def _oom_above(limit: int):
    def make(n: int):
        def run() -> None:
            if n > limit:
                raise torch.cuda.OutOfMemoryError("CUDA out of memory (fake)")

        return run

    return make


def test_largest_fitting_doubles_then_bisects_to_the_limit():
    far = time.perf_counter() + 60
    res = largest_fitting(_oom_above(37), cap=256, deadline=far)
    assert res["value"] == 37 and res["smallest_failing"] == 38
    assert res["complete"] and not res["capped"] and res["stopped_by"] == "OutOfMemoryError"

    capped = largest_fitting(_oom_above(10_000), cap=64, deadline=far)
    assert capped["value"] == 64 and capped["capped"]

    assert largest_fitting(_oom_above(0), cap=64, deadline=far)["value"] is None
    late = largest_fitting(_oom_above(37), cap=256, deadline=time.perf_counter() - 1)
    assert late["value"] is None and not late["complete"]


def test_budget_skips_a_part_that_does_not_fit_and_keeps_errors():
    budget = Budget(10, reserve=0)
    assert budget.run("too long", 60, lambda: 1) is None
    assert "too long: skipped" in budget.skipped[0]
    assert budget.run("fails", 0, lambda: 1 / 0) is None
    assert budget.errors[0].startswith("fails: ZeroDivisionError")
    assert budget.run("fits", 0, lambda: 7) == 7


def test_sd15_config_gives_stable_diffusion_1_5_parameter_counts():
    with torch.device("meta"):  # shapes only: no memory, no init cost
        unet, vae, text_encoder = build_networks(SD15)
    assert sum(p.numel() for p in unet.parameters()) == 859_520_964
    assert sum(p.numel() for p in vae.parameters()) == 83_653_863
    assert sum(p.numel() for p in text_encoder.parameters()) == 123_060_480
    assert unet.config.sample_size == 64 and vae.config.scaling_factor == 0.18215
    # FLOPs of one latent through the UNet at 64 x 64 (CFG doubles it per image-step)
    x = torch.zeros(2, 4, 64, 64, device="meta")
    t = torch.full((2,), 501, dtype=torch.long, device="meta")
    ctx = torch.zeros(2, 77, 768, device="meta")
    with torch.no_grad():
        flops = count_flops(lambda: unet(x, t, encoder_hidden_states=ctx))
    assert flops / 2 == pytest.approx(0.803e12, rel=0.01)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_cuda_requested_without_a_gpu_is_a_clear_error(tmp_path):
    with pytest.raises(SystemExit, match="no CUDA GPU"):
        main(["--out", str(tmp_path), "--device", "cuda"])


def test_partial_result_is_written_atomically(tmp_path):
    """After each part the JSON so far is on disk, marked incomplete, so a run that is
    killed (a lost machine, a job limit) still leaves what it measured."""
    from bench.gpu import save

    path = save({"matmul": {"float16": {"tflops": 1.0}}}, tmp_path, complete=False)
    first = json.loads(path.read_text())
    assert first == {"matmul": {"float16": {"tflops": 1.0}}, "complete": False}
    save({**first, "sampling": {}}, tmp_path, complete=True)
    assert json.loads(path.read_text())["complete"] is True
    assert [p.name for p in tmp_path.iterdir()] == [RESULT_FILE]


def test_table_shows_the_gpu_only_numbers(tmp_path):
    """What only a GPU run fills in (the micro-batch searches, an update variant that ran
    out of memory) still prints, from a CPU run's JSON with those parts filled in."""
    out = _tiny_run(tmp_path, "sd15")
    out["max_micro_batch"] = {"train": 37, "sampling": 197, "train_checkpointing": 256}
    out["max_micro_batch_search"] = {
        "train": {"capped": False},
        "sampling": {"capped": False},
        "train_checkpointing": {"capped": True},
    }
    out["update_variants"]["variants"]["largest"] = {"micro_batch": 37, "error": "OOM"}
    text = table(out)
    assert "train 37 (UNet batch x2), sampling 197" in text
    assert "train with gradient checkpointing >=256" in text
    assert "largest: micro-batch 37, OOM" in text


@pytest.mark.slow  # 10-15 s each
@pytest.mark.parametrize(
    "arch, transformer, text_encoders, row_tflop, train_tflop",
    [
        # SD3.5-M: CLIP-L, CLIP-bigG, T5-XXL; 1,024 image + 77 + 256 text tokens at 512 px
        ("sd35m", 2_243_171_520, (123_650_304, 694_659_840, 4_762_310_656), 2.443, 10.62),
        # FLUX.1-dev: CLIP-L, T5-XXL; 1,024 image + 512 text tokens, no CFG
        ("flux", 11_901_408_320, (123_060_480, 4_762_310_656), 21.50, 45.24),
    ],
)
def test_full_size_transformers_go_through_the_family_interface_on_the_meta_device(
    arch, transformer, text_encoders, row_tflop, train_tflop
):
    """The GPU run's model at full size, shapes only: its parameter counts (FLUX.1-dev's
    transformer has 11,901,408,320), the FLOPs of one guided evaluation per denoiser row
    (the docstring's time estimates) and of one LoRA training term, each through the
    family's encode / predict / step as the sampler and the update call them."""
    from pathlib import Path

    from bench.gpu.archs import ARCHS, bench_config
    from bench.gpu.build import build_model, parameters
    from bench.gpu.measure import denoiser_rows
    from bench.gpu.probes import split_timestep
    from learner.update import PolicyTrainer

    spec = ARCHS[arch]
    model = build_model(spec, torch.device("meta"), torch.bfloat16)
    params = parameters(model)
    assert params["unet"] == transformer
    names = ("text_encoder", "text_encoder_2", "text_encoder_3")
    assert tuple(params[k] for k in names if k in params) == text_encoders
    assert model.latent_shape == (16, 64, 64)  # 512 px
    cfg = bench_config(spec, "bfloat16", torch.device("cpu"), Path("unused"))
    t = split_timestep(model, cfg).expand(1)  # on the CPU: meta tensors hold no values
    x = torch.zeros(1, *model.latent_shape, device="meta", dtype=torch.bfloat16)
    cond, uncond = model.encode_prompts([spec.name]), model.encode_prompts([""])
    scale, eta = cfg.sampling.guidance_scale, cfg.sampling.eta

    @torch.no_grad()
    def forward() -> None:
        model.predict(x, t, cond, uncond, scale)

    rows = denoiser_rows(model.unet, forward)
    assert rows == (1 if arch == "flux" else 2)  # FLUX.1-dev: guidance embedded, no CFG
    assert count_flops(forward) / rows / 1e12 == pytest.approx(row_tflop, rel=1e-3)

    trainer = PolicyTrainer(model, cfg)  # the LoRA on the family's projections

    def term() -> None:
        _, lp = model.step(model.predict(x, t, cond, uncond, scale), t, x, eta, prev_sample=x)
        lp.float().mean().backward()

    assert count_flops(term) / 1e12 == pytest.approx(train_tflop, rel=1e-3)
    assert sum(p.numel() for p in trainer.params) > 0


@pytest.mark.parametrize("arch", ["sd35m", "flux"])
def test_transformers_are_built_in_the_run_dtype(arch):
    """On a GPU the transformer archs are made directly in bfloat16 (FLUX would not fit
    in float32 beside T5); the same code on the CPU at tiny size gives bf16 weights and a
    finite guided evaluation."""
    from bench.gpu.archs import TINY
    from bench.gpu.build import MODULES, build_model

    model = build_model(TINY[arch], torch.device("cpu"), torch.bfloat16)
    for name in MODULES:
        module = getattr(model, name)
        if module is not None:
            assert {p.dtype for p in module.parameters()} == {torch.bfloat16}, name
    assert torch.get_default_dtype() == torch.float32  # restored
    model.scheduler.set_timesteps(4, device="cpu")
    assert model.scheduler.sigmas.dtype == torch.float32
    t = model.scheduler.timesteps.long()[:1].expand(2)
    x = torch.randn(2, *model.latent_shape, dtype=torch.bfloat16)
    cond, uncond = model.encode_prompts(["a cat", "a dog"]), model.encode_prompts([""])
    with torch.no_grad():
        out = model.predict(x, t, cond, uncond.expand(2, -1, -1), TINY[arch].guidance_scale)
    assert out.shape == x.shape and out.dtype == torch.bfloat16 and torch.isfinite(out).all()


def test_an_update_out_of_memory_is_noted_and_the_run_goes_on(tmp_path, monkeypatch):
    """An update that does not fit in memory (FLUX.1's on a smaller card) is an error in
    the JSON; the parts after it still run and the table still prints."""
    from learner.update import PolicyTrainer

    def out_of_memory(self, *args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory (fake)")

    monkeypatch.setattr(PolicyTrainer, "update", out_of_memory)
    assert main(["--out", str(tmp_path), "--arch", "flux", "--device", "cpu"]) == 0
    out = json.loads((tmp_path / RESULT_FILE).read_text())
    assert out["complete"] and out["images_per_second"]["float32"] > 0
    assert out["update"]["error"] == "OutOfMemoryError"
    assert out["errors"] == ["update: OutOfMemoryError at micro-batch 2"]
    assert out["update_variants"] is None
    assert "update: -" in table(out)
