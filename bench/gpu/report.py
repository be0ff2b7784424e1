"""bench.gpu's printed summary: a pure function of the JSON it wrote."""

from __future__ import annotations

TITLE = "bench.gpu results"


def _fmt(v: float | None, spec: str = ".4g") -> str:
    return "-" if v is None else format(v, spec)


def _gib(v: int | None) -> str:
    return "-" if v is None else f"{v / 2**30:.1f}"


def table(result: dict) -> str:
    """The short summary printed last (a pure function of the JSON)."""
    meta = result["meta"]
    arch = meta["arch"]
    dtypes = list(result["sampling"]) or list(result["matmul"])
    samp = result["sampling"]

    def row(label: str, values: list[str]) -> str:
        return f"{label:<42}" + "".join(f"{v:>12}" for v in values)

    def per_raw(key: str) -> list:
        return [(samp.get(d) or {}).get(key) for d in dtypes]

    def per(key: str, spec: str = ".4g") -> list[str]:
        return [_fmt(v, spec) for v in per_raw(key)]

    sampling_fraction = result.get("sampling_fraction_of_matmul_peak") or {}
    den = "UNet" if arch.get("family", "sd") == "sd" else "transformer"
    rows = next((v for v in per_raw("unet_batch") if v), 2 * arch["micro_batch"])
    per_latent = rows // arch["micro_batch"]  # 2 under CFG, 1 for a guidance-distilled model
    lines = [
        f"== {TITLE}: {arch['name']} on {meta['device']}, {result['seconds_total']:.0f} s "
        f"(budget {meta['budget_s']:.0f} s) ==",
        row("", dtypes),
        row("matmul peak TFLOP/s", [_fmt(result["matmul_peak_tflops"].get(d)) for d in dtypes]),
        row(
            f"{den} GFLOP per row (counted)",
            [_fmt((v / 1e9) if v else None) for v in per_raw("unet_flops_per_latent")],
        ),
        row(f"{den} forward TFLOP/s (batch {rows})", per("unet_tflops")),
        row(
            f"{den} / matmul peak",
            [_fmt(result["unet_fraction_of_matmul_peak"].get(d), ".2f") for d in dtypes],
        ),
        row(
            f"images/s ({arch['trunks']}x{arch['branches']}, {arch['num_steps']} steps, "
            f"{arch['image_size']} px)",
            per("images_per_second"),
        ),
        row(f"sampling {den} TFLOP/s (effective)", per("sampling_unet_tflops")),
        row(
            "sampling / matmul peak",
            [_fmt(sampling_fraction.get(d), ".2f") for d in dtypes],
        ),
        row(
            f"branch-batched / per-branch loop (K={arch['branches']})",
            per("branch_batching_speedup", ".3g"),
        ),
        row(
            "sampling peak memory GiB",
            [_gib((samp.get(d) or {}).get("peak_memory_bytes")) for d in dtypes],
        ),
    ]
    up = result.get("update")
    if up and "seconds" in up:
        lines.append(
            f"update ({dtypes[-1]}, LoRA r{up['lora_rank']}, micro-batch "
            f"{up.get('train_micro_batch', up['train_batch'])}): {up['seconds']:.2f} s for "
            f"{up['trajectory_steps']} trajectory-steps "
            f"({up['trajectory_steps_per_second']:.4g}/s), "
            f"{up['update_unet_tflops']:.4g} TFLOP/s "
            f"({_fmt(result.get('update_fraction_of_matmul_peak'), '.2f')} of the matmul peak), "
            f"peak {_gib(up['peak_memory_bytes'])} GiB"
        )
    else:
        lines.append("update: -")
    var = (result.get("update_variants") or {}).get("variants") or {}
    if var:
        uv = result["update_variants"]
        lines.append(
            f"update from the sampling weights, {uv['trajectories']} trajectories x "
            f"{uv['interval']} steps in one optimizer step:"
        )
    for name, v in var.items():
        if "error" in v:
            lines.append(f"  {name}: micro-batch {v['micro_batch']}, {v['error']}")
            continue
        label = f"micro-batch {v['micro_batch']}" + (
            ", checkpointing" if v["gradient_checkpointing"] else ""
        )
        st = v["stats"]
        frac = v.get("fraction_of_matmul_peak")
        lines.append(
            f"  {label:<34}{v['trajectory_steps_per_second']:8.4g} trajectory-steps/s "
            f"({_fmt(frac, '.2f')} of the matmul peak), "
            f"peak {_gib(v['peak_memory_bytes'])} GiB, loss {st['loss']:+.3e}, "
            f"on-policy max |ratio - 1| {st['onpolicy_ratio_dev_max']:.2e}"
        )
    mmb = result.get("max_micro_batch")
    if mmb:
        search = result["max_micro_batch_search"]

        def show(k: str) -> str:
            s = search.get(k) or {}
            v = mmb.get(k)
            return "-" if v is None else (f">={v}" if s.get("capped") else str(v))

        lines.append(
            f"largest micro-batch: train {show('train')} ({den} batch x{per_latent}), "
            f"sampling {show('sampling')} ({den} x{per_latent} + VAE decode), "
            f"train with gradient checkpointing {show('train_checkpointing')}"
        )
    else:
        lines.append("largest micro-batch: - (no CUDA memory limit)")
    lines += [f"skipped: {note}" for note in result.get("skipped") or []]
    lines += [f"error: {note}" for note in result.get("errors") or []]
    return "\n".join(lines)
