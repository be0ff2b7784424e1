"""The record of `toyworld.build`: the baselines of a built DIR (checker accuracy under the
default preset's sampler, CLIP retrieval and agreement), measured and written with the build's
record to DIR/baselines.json and DIR/BUILD.md, or measured again for an existing build."""

from __future__ import annotations

import datetime as dt
import json
import time
from dataclasses import asdict
from pathlib import Path

from configs.load import DEFAULT_PRESET, PROJECT_ROOT, load_config
from configs.schema import ModelConfig
from diffusion.pipeline import load_model
from toyworld.baselines import clip_agreement, clip_retrieval
from toyworld.build_models import seconds_since
from toyworld.build_settings import BuildSettings
from toyworld.clip import ToyClipScorer
from toyworld.evaluate import sample_with
from toyworld.prompts import load_prompts, prompt_file
from toyworld.report import write_build_md


def measure(out: Path, s: BuildSettings, seed: int, progress: bool) -> dict:
    t = time.perf_counter()
    preset = load_config(DEFAULT_PRESET)
    sp = preset.sampling
    model = load_model(ModelConfig(pretrained=str(out / "pipeline"), device="cpu"))
    scorer = ToyClipScorer(out / "clip")
    result = {
        "sampler": {
            "num_steps": sp.num_steps,
            "guidance_scale": sp.guidance_scale,
            "eta": sp.eta,
            "images_per_split": s.eval_images,
            "seed": seed,
        },
        "pipeline": {},
        "agreement": {},
    }

    def sample(path: Path, desc: str):  # the preset's sampler, the same noise for every set
        return sample_with(
            model, sp, load_prompts(path), s.eval_images, seed, progress=progress, desc=desc
        )

    for split in ("train", "test"):
        samples = sample(prompt_file("all", split), f"baseline {split}")
        result["pipeline"][split] = samples.accuracy().as_dict()
        result["agreement"][split] = clip_agreement(
            scorer, samples.images, samples.prompts, samples.correct
        )
    # the default preset's prompts (what `python -m learner.main` trains and tests on), the
    # same sampler and noise: the numbers a default run starts from
    result["default_prompts"] = {}
    for split in ("train", "test"):
        path = getattr(preset.prompts, split)
        samples = sample(PROJECT_ROOT / path, f"baseline default {split}")
        result["default_prompts"][split] = {"file": path, **samples.accuracy().as_dict()}
    result["clip"] = clip_retrieval(scorer, s.retrieval_renders, seed=seed + 6)
    result["times"] = {"baselines": seconds_since(t)}
    return result


def asset_bytes(out: Path) -> int:
    return sum(p.stat().st_size for p in out.rglob("*") if p.is_file())


def write_record(out: Path, record: dict) -> None:
    tmp = out / "baselines.json.tmp"
    tmp.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    tmp.replace(out / "baselines.json")
    write_build_md(out)


def recorded_match(recorded: dict, current: dict) -> bool:
    """Every setting the record holds equals the current one (fields added since the build
    was recorded are not in it)."""
    current = json.loads(json.dumps(current))
    return all(
        recorded_match(v, current.get(k, {})) if isinstance(v, dict) else current.get(k) == v
        for k, v in recorded.items()
    )


def remeasure(out: Path, seed: int, settings: BuildSettings, progress: bool, command: str) -> dict:
    """Measure the baselines of an existing build again (e.g. after the default preset's
    prompts changed) and update its baselines.json and BUILD.md; the models are untouched."""
    path = out / "baselines.json"
    if not path.is_file():
        raise SystemExit(f"{path} not found: --baselines-only needs a built DIR")
    record = json.loads(path.read_text(encoding="utf-8"))
    if record.get("seed") != seed:
        raise SystemExit(f"{path}: built with seed {record.get('seed')}, not --seed {seed}")
    built = record.get("training", {}).get("settings")
    if not isinstance(built, dict) or not recorded_match(built, asdict(settings)):
        raise SystemExit(
            f"{path}: built with other settings (--micro, --latent-size or --exposure-steps differ)"
        )
    measured = measure(out, settings, seed, progress)
    seconds = measured.pop("times")["baselines"]
    record.update(measured)
    record["remeasured"] = {  # the build's own record (command, date, times_s) stays
        "command": command,
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "seconds": seconds,
    }
    write_record(out, record)
    return record
