"""Per-stage checkpoints: safetensors + JSON, written atomically, verified on load.

A stage directory holds `lora.safetensors`, `optimizer.safetensors` (AdamW moments and the
torch RNG state) and `state.json` (stage index, schedule position, weights version,
per-prompt reward history, optimizer hyper-parameters, checksums of the two tensor files).
It is written under a temporary name and renamed into place, so a crash mid-write leaves
the previous checkpoint as the last complete one. Nothing here unpickles anything.
With several learner ranks (`runtime.learner_workers`) it holds rank 0's state: the ranks
all-reduce their gradients, so their LoRA and AdamW moments are the same (the learner group
compares them before every save), and a resume loads it into every rank.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

STAGE_PREFIX = "stage_"
FILES = ("lora.safetensors", "optimizer.safetensors")


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
        meta = {
            "stage": state.stage,
            "split_step": state.split_step,
            "version": state.version,
            "advantages": state.advantages,
            "optimizer": {"param_groups": groups, "scalars": scalars},
            "checksums": {name: sha256(tmp / name) for name in FILES},
        }
        (tmp / "state.json").write_text(json.dumps(meta), encoding="utf-8")
        for name in (*FILES, "state.json"):
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
    meta_path = path / "state.json"
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{meta_path}: missing; not a complete checkpoint") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{meta_path}: unreadable ({exc})") from None
    for name in FILES:
        file = path / name
        if not file.is_file():
            raise CheckpointError(f"{file}: missing from the checkpoint")
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
    )


def latest(run_dir: Path) -> Path | None:
    """The last complete stage checkpoint of a run (temporary leftovers are ignored)."""
    root = run_dir / "stages"
    if not root.is_dir():
        return None
    done = sorted(
        p
        for p in root.iterdir()
        if p.is_dir() and p.name.startswith(STAGE_PREFIX) and (p / "state.json").is_file()
    )
    return done[-1] if done else None
