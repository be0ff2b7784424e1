"""Per-stage checkpoints: safetensors + JSON, written atomically, verified on load.

A stage directory holds `lora.safetensors`, `optimizer.safetensors` (AdamW moments and the
torch RNG state) and `state.json` (stage index, schedule position, weights version,
per-prompt reward history, optimizer hyper-parameters, checksums of the two tensor files).
With `train.ema` on it also holds `ema.safetensors`, the moving average of the LoRA (its
checksum in state.json too; a run without EMA has no such file).
It is written under a temporary name and renamed into place, so a crash mid-write leaves
the previous checkpoint as the last complete one. Nothing here unpickles anything.
With several learner ranks (`runtime.learner_workers`) it holds rank 0's state: the ranks
all-reduce their gradients, so their LoRA and AdamW moments are the same (the learner group
compares them before every save), and a resume loads it into every rank.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

STAGE_PREFIX = "stage_"
FILES = ("lora.safetensors", "optimizer.safetensors")
EMA_FILE = "ema.safetensors"


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used; str() is one line naming the file."""


@dataclass
class LearnerState:
    stage: int  # the last completed stage
    split_step: int
    version: int
    lora: dict[str, torch.Tensor]
    optimizer: dict[str, Any]  # torch optimizer state_dict
    advantages: dict[str, Any]
    rng: torch.Tensor
    ema: dict[str, torch.Tensor] | None = None  # train.ema's average of the LoRA; None: off

    @property
    def evaluated(self) -> dict[str, torch.Tensor]:
        """The LoRA to evaluate and export: the average with train.ema, else the trained."""
        return self.lora if self.ema is None else self.ema


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _optimizer_tensors(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], list, dict]:
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for idx, slots in state["state"].items():
        for name, value in slots.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state.{idx}.{name}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(idx), {})[name] = value
    return tensors, state["param_groups"], scalars


def _optimizer_from(tensors: dict[str, torch.Tensor], groups: list, scalars: dict) -> dict:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if not key.startswith("state."):
            continue
        _, idx, name = key.split(".", 2)
        state.setdefault(int(idx), {})[name] = value
    for idx, slots in scalars.items():
        state.setdefault(int(idx), {}).update(slots)
    return {"state": state, "param_groups": groups}


def stage_dir(run_dir: Path, stage: int) -> Path:
    return run_dir / "stages" / f"{STAGE_PREFIX}{stage:04d}"


def save(run_dir: Path, state: LearnerState) -> Path:
    final = stage_dir(run_dir, state.stage)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    tmp.chmod(0o755)
    try:
        save_file({k: v.contiguous() for k, v in state.lora.items()}, tmp / FILES[0])
        opt_tensors, groups, scalars = _optimizer_tensors(state.optimizer)
        opt_tensors["rng.torch"] = state.rng
        save_file(opt_tensors, tmp / FILES[1])
        names = FILES
        if state.ema is not None:
            save_file({k: v.contiguous() for k, v in state.ema.items()}, tmp / EMA_FILE)
            names = (*FILES, EMA_FILE)
        meta = {
            "stage": state.stage,
            "split_step": state.split_step,
            "version": state.version,
            "advantages": state.advantages,
            "optimizer": {"param_groups": groups, "scalars": scalars},
            "checksums": {name: sha256(tmp / name) for name in names},
        }
        (tmp / "state.json").write_text(json.dumps(meta), encoding="utf-8")
        for name in (*names, "state.json"):
            with open(tmp / name, "rb") as f:
                os.fsync(f.fileno())
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def load(path: Path) -> LearnerState:
    why = problem(path)
    if why is not None:
        raise CheckpointError(f"{why}; not a complete checkpoint")
    meta = json.loads((path / "state.json").read_text(encoding="utf-8"))
    with_ema = EMA_FILE in meta["checksums"]
    for name in (*FILES, EMA_FILE) if with_ema else FILES:
        file = path / name
        if not file.is_file():
            raise CheckpointError(f"{file}: missing; not a complete checkpoint")
        if sha256(file) != meta["checksums"].get(name):
            raise CheckpointError(f"{file}: checksum does not match state.json; refusing it")
    lora = load_file(path / FILES[0])
    opt = load_file(path / FILES[1])
    rng = opt.pop("rng.torch")
    optimizer = _optimizer_from(
        opt, meta["optimizer"]["param_groups"], meta["optimizer"]["scalars"]
    )
    return LearnerState(
        stage=meta["stage"],
        split_step=meta["split_step"],
        version=meta["version"],
        lora=lora,
        optimizer=optimizer,
        advantages=meta["advantages"],
        rng=rng,
        ema=load_file(path / EMA_FILE) if with_ema else None,
    )


META_KEYS = ("stage", "split_step", "version", "advantages", "optimizer", "checksums")


def problem(path: Path) -> str | None:
    """Why stage directory `path` is not a complete checkpoint (one line), None if it is:
    a state.json that parses, holds every field for this stage, and the two tensor files.
    Checksums are verified by `load`."""
    meta_path = path / "state.json"
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return f"{meta_path}: missing"
    except (OSError, ValueError) as exc:  # JSONDecodeError and UnicodeDecodeError included
        return f"{meta_path}: unreadable ({str(exc).splitlines()[0][:120]})"
    if (
        not isinstance(meta, dict)
        or any(k not in meta for k in META_KEYS)
        or not isinstance(meta["checksums"], dict)
        or not isinstance(meta["optimizer"], dict)
        or any(k not in meta["optimizer"] for k in ("param_groups", "scalars"))
    ):
        return f"{meta_path}: malformed (needs the fields {', '.join(META_KEYS)})"
    number = path.name[len(STAGE_PREFIX) :]
    if path.name.startswith(STAGE_PREFIX) and number.isdigit() and meta["stage"] != int(number):
        return f"{meta_path}: holds stage {meta['stage']!r}, not {int(number)}"
    missing = [name for name in FILES if not (path / name).is_file()]
    return f"{path / missing[0]}: missing" if missing else None


def latest(run_dir: Path, on_skip: Callable[[str], None] | None = None) -> Path | None:
    """The last complete stage checkpoint of a run. Temporary leftovers are ignored; a stage
    directory that is not complete (a malformed state.json, say) falls back to the stage
    before it, with `on_skip` told why in one line."""
    root = run_dir / "stages"
    if not root.is_dir():
        return None
    stages = sorted(
        p
        for p in root.iterdir()
        if p.is_dir() and p.name.startswith(STAGE_PREFIX) and p.name[len(STAGE_PREFIX) :].isdigit()
    )
    for path in reversed(stages):
        why = problem(path)
        if why is None:
            return path
        if on_skip is not None:
            on_skip(f"{why}; not a complete checkpoint, falling back to the stage before")
    return None


class TrainingDiverged(RuntimeError):
    """A stage ended in a non-finite loss or LoRA; str() is one line."""


def non_finite(loss: float, lora: dict[str, torch.Tensor], loss_scaled: bool) -> str | None:
    """What is not finite after a stage (None: all is). With fp16 loss scaling
    (`loss_scaled`) an overflowing step is skipped by the scaler, so there only the LoRA
    counts; elsewhere a non-finite loss has already reached the weights' gradients."""
    bad = [name for name, t in lora.items() if not bool(torch.isfinite(t).all())]
    if bad:
        return (
            f"the LoRA holds non-finite values ({len(bad)} of {len(lora)} tensors, e.g. {bad[0]})"
        )
    if not loss_scaled and not math.isfinite(loss):
        return f"the loss is {loss}"
    return None
