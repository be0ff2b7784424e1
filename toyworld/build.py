"""Build the toy world's models and measure them: the assets `python -m learner.main` uses.

    python -m toyworld.build [--out DIR] [--seed N] [--micro] [--threads N] [--baselines-only]
    python -m toyworld.build --family sd3 [--out DIR] [--seed N] [--micro]   (toyworld.build_flow)

1. the toy CLIP, on renders of every caption -> DIR/clip/toy-clip.json + toy_clip.safetensors;
2. renders of the pretraining captions (toyworld.prompts.pretraining_captions), the VAE,
   then the UNet on its latents with the CLIP's text tower as the frozen text encoder
   (as Stable Diffusion's is a CLIP text tower), then, where `BuildSettings.exposure` has
   steps (450 in the shipped build), a late exposure: the UNet trained on further on
   the same renders plus renders of the default preset's train prompts, so that it draws
   those sometimes -> DIR/pipeline (diffusers);
4. baselines (checker accuracy of the pipeline under the default preset's sampler on the
   packaged "all" prompt sets and on the default preset's own prompts, CLIP retrieval and
   agreement with the checker) -> DIR/baselines.json and DIR/BUILD.md (`--baselines-only`
   measures an existing DIR again).
A picture of the samples is `python -m tools.world_samples` (it draws the images the
baselines measure).
Same seed, same machine and thread count: the same assets. `--micro` builds tiny models
with a few steps each (for the tests).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shlex
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch

from toyworld.build_models import build_clip, build_pipeline, seconds_since
from toyworld.build_record import asset_bytes, measure, remeasure, write_record
from toyworld.build_settings import FULL, LATENT8, MICRO, BuildSettings
from toyworld.clip import ASSETS_DIR


def build(out: Path, seed: int, settings: BuildSettings, progress: bool, command: str) -> dict:
    start = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    clip = build_clip(out, settings, seed, progress)
    pipe = build_pipeline(out, settings, seed, progress)
    measured = measure(out, settings, seed, progress)
    times = {**pipe["times"], **clip["times"], **measured.pop("times")}
    times["total"] = seconds_since(start)
    record = {
        "command": command,
        "seed": seed,
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "torch_threads": torch.get_num_threads(),
        **measured,
        "training": {
            "pipeline": pipe["stats"],
            "clip": clip["stats"],
            "settings": asdict(settings),
        },
        "times_s": times,
    }
    (out / "baselines.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    record["asset_bytes"] = asset_bytes(out)
    write_record(out, record)
    return record


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Build the toy world's pipeline and CLIP.")
    parser.add_argument(
        "--family",
        choices=("sd", "sd3"),
        default="sd",
        help="sd: the UNet world (DIR default toyworld/assets); sd3: the flow world on the "
        "UNet world's VAE and CLIP (toyworld.build_flow; DIR default toyworld/assets/sd3)",
    )
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--micro", action="store_true", help="tiny models, a few steps each")
    parser.add_argument(
        "--latent-size",
        type=int,
        choices=(16, 8),
        default=16,
        help="latent side: 16 (the shipped world) or 8 (a smaller latent, not shipped)",
    )
    parser.add_argument(
        "--exposure-steps",
        type=int,
        default=None,
        help="steps of the late exposure instead of the settings' (0: none, the world without it)",
    )
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument(
        "--baselines-only",
        action="store_true",
        help="measure the baselines of the build in --out again; train nothing",
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    command = "python -m toyworld.build " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    if args.family == "sd3":
        from toyworld import build_flow

        if args.latent_size != 16 or args.exposure_steps is not None or args.baselines_only:
            raise SystemExit("--family sd3 takes --out, --seed, --micro, --threads and --quiet")
        build_flow.run(args.out, args.seed, args.micro, not args.quiet, command.strip())
        return
    out = (args.out or ASSETS_DIR).resolve()
    if args.micro and args.latent_size != 16:
        raise SystemExit("--micro builds the 16 x 16 world only")
    settings = MICRO if args.micro else (LATENT8 if args.latent_size == 8 else FULL)
    if args.exposure_steps is not None:
        if args.exposure_steps < 0:
            raise SystemExit(f"--exposure-steps {args.exposure_steps}: must be >= 0")
        settings = replace(settings, exposure=replace(settings.exposure, steps=args.exposure_steps))
    if args.baselines_only:
        record = remeasure(out, args.seed, settings, not args.quiet, command.strip())
        d = record["default_prompts"]
        print(
            f"measured {out} again in {record['remeasured']['seconds']:.0f} s; default prompts:"
            f" train {d['train']['correct']:.3f}, test {d['test']['correct']:.3f}"
        )
        return
    record = build(out, args.seed, settings, not args.quiet, command.strip())
    p = record["pipeline"]
    print(
        f"built {out} in {record['times_s']['total']:.0f} s, {record['asset_bytes'] / 1e6:.1f} MB;"
        f" checker accuracy train {p['train']['correct']:.3f}, test {p['test']['correct']:.3f};"
        f" CLIP retrieval {record['clip']['top1']:.3f}"
    )


if __name__ == "__main__":
    main()
