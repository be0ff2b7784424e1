"""The order of one stage's update, known before it runs: the training units, each epoch's
shuffled optimizer batches, each rank's share of every batch, and from these the selected
rows each learner rank needs (`held_rows`), so that a rank fetches only those.

Every input is on the learner group's side before the trajectories move (the config, the
stage, the selection, the number of ranks), and the batches never depend on the number of
ranks: N ranks train the update of one, each on its share of every batch.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from configs.schema import Config
from diffusion.sampler import derive_seed
from learner.distributed import shard
from learner.selection import Selection


def training_units(cfg: Config, selection: Selection) -> np.ndarray:
    """[U, 1] selected rows (PPO) or [U, 2] (best, worst) pairs of one trunk (pairwise),
    in the selection's numbering."""
    if cfg.loss.name == "pairwise":
        return np.asarray(selection.pairs, dtype=np.int64).reshape(-1, 2)
    return np.asarray(selection.index, dtype=np.int64).reshape(-1, 1)


def _epoch_rng(cfg: Config, stage: int, epoch: int) -> np.random.Generator:
    return np.random.default_rng(derive_seed(cfg.seed, stage, epoch, 0x5EED))


def epoch_order(cfg: Config, n_units: int, stage: int, epoch: int) -> np.ndarray:
    """The epoch's units in shuffled order (the first draw of the epoch's generator)."""
    return _epoch_rng(cfg, stage, epoch).permutation(n_units)


def epoch_plan(
    cfg: Config, n_units: int, interval: int, stage: int, epoch: int
) -> tuple[np.ndarray, np.ndarray]:
    """(the units in shuffled order, each unit's order of its `interval` steps)."""
    rng = _epoch_rng(cfg, stage, epoch)
    order = rng.permutation(n_units)
    if not cfg.train.shuffle_timesteps:
        return order, np.tile(np.arange(interval), (n_units, 1))
    if not n_units:
        return order, np.zeros((0, interval), int)
    return order, np.stack([rng.permutation(interval) for _ in range(n_units)])


def optimizer_batches(cfg: Config, order: np.ndarray) -> list[np.ndarray]:
    """An epoch's shuffled units cut into optimizer batches of `train.batch_size`."""
    bs = cfg.train.batch_size
    return [order[i : i + bs] for i in range(0, len(order), bs)]


def epoch_batches(
    cfg: Config, n_units: int, interval: int, stage: int, epoch: int
) -> Iterator[tuple[np.ndarray, np.ndarray, bool]]:
    """The epoch's optimizer batches: (units in shuffled order, every unit's shuffled
    order of interval steps, whether an optimizer step follows: every `grad_accum`
    batches and after the last)."""
    order, step_plan = epoch_plan(cfg, n_units, interval, stage, epoch)
    batches = optimizer_batches(cfg, order)
    accum = cfg.train.grad_accum
    for b, unit_idx in enumerate(batches):
        yield unit_idx, step_plan, (b + 1) % accum == 0 or b == len(batches) - 1


def unit_costs(units: np.ndarray, interval: int) -> np.ndarray:
    """The trajectory-steps of each unit (what sharding balances)."""
    return np.full(len(units), interval * units.shape[1])


def rank_share(unit_idx: np.ndarray, unit_cost: np.ndarray, rank: int, ranks: int) -> np.ndarray:
    """The units of one batch that `rank` of `ranks` trains (near-equal trajectory-steps)."""
    return unit_idx[shard(unit_cost[unit_idx], ranks)[rank]]


def held_rows(cfg: Config, selection: Selection, stage: int, ranks: int) -> list[np.ndarray]:
    """For each rank, the rows (in the selection's numbering, ascending) it trains in any
    epoch of the stage: what that rank must hold. One rank holds every selected row; N
    ranks about 1 - (1 - 1/N)^epochs of them each (a row may be in two ranks' shares, in
    different epochs)."""
    if ranks == 1:
        return [np.sort(np.asarray(selection.index, dtype=np.int64))]
    units = training_units(cfg, selection)
    cost = unit_costs(units, 1)  # every unit of a stage spans the same interval
    mine: list[set[int]] = [set() for _ in range(ranks)]
    for epoch in range(cfg.train.epochs):
        for unit_idx in optimizer_batches(cfg, epoch_order(cfg, len(units), stage, epoch)):
            for r in range(ranks):
                mine[r].update(units[rank_share(unit_idx, cost, r, ranks)].ravel().tolist())
    return [np.array(sorted(m), dtype=np.int64) for m in mine]
