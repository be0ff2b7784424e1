"""The stage's records: rows keep their chunk and place, so selections map back to them."""

from __future__ import annotations

import numpy as np
import torch

from learner.records import RolloutImages, Rows


def _chunk(chunk: int, trunks: list[int], branches: int) -> Rows:
    n = len(trunks) * branches
    return Rows.of(
        RolloutImages(
            chunk,
            [f"p{t}" for t in trunks for _ in range(branches)],
            torch.tensor([t for t in trunks for _ in range(branches)]),
            torch.arange(n) % branches,
            torch.zeros(n, 3, 2, 2, dtype=torch.uint8),
            0.0,
        )
    )


def test_picks_map_stage_rows_back_to_their_chunks():
    rows = Rows.cat([_chunk(0, [0, 1], 3), _chunk(1, [2], 3), _chunk(2, [3, 4], 3)])
    assert len(rows) == 15 and rows.trunk_ids.tolist() == [t for t in range(5) for _ in range(3)]
    picks = rows.picks(np.array([14, 0, 5, 9, 4]))
    assert picks == {0: [0, 4, 5], 2: [0, 5]}
    # the picked rows joined in chunk order are the selected rows in index order
    joined = [rows.trunk_ids[rows.chunks == c][p].tolist() for c, p in picks.items()]
    assert sum(joined, []) == rows.trunk_ids[[0, 4, 5, 9, 14]].tolist()
    assert rows.picks(np.array([], dtype=int)) == {}
