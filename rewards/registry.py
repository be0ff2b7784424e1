"""The reward plug-in interface and the registry of reward names.

A reward is a `Reward` subclass: `setup(term, device)` runs once on the reward worker (load
models there, onto `device`; `term` is the reward's own config section, `RewardTerm`, with
plug-in settings under `term.options`), then `score(images, prompts)` is called per batch:

    images   uint8 [N, 3, H, W] torch tensor (RGB, on the CPU)
    prompts  list of N strings
    returns  N scores (anything numpy turns into float64 [N])

Names come from three places, looked up in this order:
  1. the built-ins below (`BUILTINS`);
  2. `register(name, cls)` in this process (tests, notebooks: Ray workers do not see these);
  3. Python entry points in the group `b2_diffurl.rewards` of installed packages, e.g. in a
     package's pyproject.toml:
         [project.entry-points."b2_diffurl.rewards"]
         pickscore = "my_package.rewards:PickScore"
     The target is a `Reward` subclass or a plain function (images, prompts) -> scores.

This module imports no torch, so the config schema can check names against it cheaply.
"""

from __future__ import annotations

import functools
import importlib
import warnings
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

    from configs.schema import RewardTerm

ENTRY_POINT_GROUP = "b2_diffurl.rewards"

BUILTINS: dict[str, str] = {
    "clip_score": "rewards.scorers:ClipScore",
    "bert_score": "rewards.scorers:BertScore",
    "oracle": "rewards.scorers:Oracle",
    "oracle_partial": "rewards.scorers:Oracle",
    "jpeg_compressibility": "rewards.scorers:JpegCompressibility",
    "custom": "rewards.scorers:Custom",
    "remote": "rewards.remote:RemoteReward",
    "pickscore": "rewards.preference:PickScore",
    "aesthetic": "rewards.preference:Aesthetic",
}

_registered: dict[str, type[Reward] | Callable] = {}


class RewardSetupError(RuntimeError):
    """A reward that cannot be built; str() is one line naming the config field."""


class Reward:
    """Base of every reward. Subclasses override `setup` and `score`, not `__init__`.

    `where` is the term's place in the config ("rewards.0"); `field("model")` names one of
    its keys for error messages ("rewards.0.model").
    """

    where: str = "rewards"

    def __init__(self, term: RewardTerm, device: torch.device, index: int = 0):
        self.index = index
        self.where = f"rewards.{index}"
        self.name = term.name
        self.setup(term, device)

    def field(self, key: str) -> str:
        return f"{self.where}.{key}"

    def setup(self, term: RewardTerm, device: torch.device) -> None:
        """Load what scoring needs (models onto `device`); raise RewardSetupError on bad
        settings."""

    def score(self, images: torch.Tensor, prompts: list[str]) -> np.ndarray:
        raise NotImplementedError

    def __call__(self, images: torch.Tensor, prompts: list[str]) -> np.ndarray:
        return np.asarray(self.score(images, list(prompts)), dtype=np.float64).reshape(-1)


class FunctionReward(Reward):
    """A plain function (images, prompts) -> scores as a reward."""

    fn: Callable

    def score(self, images: torch.Tensor, prompts: list[str]) -> np.ndarray:
        return np.asarray(self.fn(images, prompts), dtype=np.float64)


def as_reward_class(target: Any, origin: str) -> type[Reward]:
    """A Reward subclass as is, a function wrapped in one; anything else is refused."""
    if isinstance(target, type) and issubclass(target, Reward):
        return target
    if callable(target) and not isinstance(target, type):
        return type(f"FunctionReward[{origin}]", (FunctionReward,), {"fn": staticmethod(target)})
    raise TypeError(f"{origin} is neither a rewards.registry.Reward subclass nor a function")


def register(name: str, reward: type[Reward] | Callable) -> None:
    """Add a reward under `name` in this process (Ray workers need an entry point)."""
    if name in BUILTINS:
        raise ValueError(f"reward name {name!r} is built in and cannot be replaced")
    as_reward_class(reward, f"reward {name!r}")
    _registered[name] = reward


def unregister(name: str) -> None:
    _registered.pop(name, None)


@functools.lru_cache(maxsize=1)
def _entry_points() -> dict[str, Any]:
    found: dict[str, Any] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in BUILTINS:
            warnings.warn(
                f"entry point {ep.name!r} ({ep.value}) in {ENTRY_POINT_GROUP} is ignored: "
                "the name is built in",
                stacklevel=2,
            )
            continue
        found.setdefault(ep.name, ep)
    return found


def refresh_entry_points() -> None:
    """Read the installed packages' entry points again (after installing one in-process)."""
    _entry_points.cache_clear()


def known_names() -> list[str]:
    return sorted({*BUILTINS, *_registered, *_entry_points()})


def reward_class(name: str) -> type[Reward]:
    """The Reward class registered under `name`; ValueError listing known names if none."""
    if name in BUILTINS:
        module, _, attr = BUILTINS[name].partition(":")
        return getattr(importlib.import_module(module), attr)
    if name in _registered:
        return as_reward_class(_registered[name], f"reward {name!r}")
    ep = _entry_points().get(name)
    if ep is None:
        raise ValueError(f"unknown reward {name!r}; known: {', '.join(known_names())}")
    try:
        target = ep.load()
    except Exception as exc:  # an installed plug-in that fails to import
        raise RewardSetupError(
            f"reward {name!r}: entry point {ep.value!r} in {ENTRY_POINT_GROUP} does not load: "
            f"{type(exc).__name__}: {exc}"
        ) from None
    try:
        return as_reward_class(target, f"entry point {ep.value!r}")
    except TypeError as exc:
        raise RewardSetupError(f"reward {name!r}: {exc}") from None


def build(term: RewardTerm, device: torch.device, index: int = 0) -> Reward:
    """The reward of one config term, set up on `device`."""
    return reward_class(term.name)(term, device, index)
