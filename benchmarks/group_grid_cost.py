"""What founders cost a shared segmenter's mini-batch: the far customers' grid (issue 31).

A batch of 64 points, 4 of them beyond the founders' fence, learned by a worker's segmenter
(``shared``) beside one group segment, with grids of about 150 and 4,500 cells. Each founder
adds to the grid (a ``np.unique`` over its cells); prints the best of 5 repeats of 300 batches.

    .venv/bin/python benchmarks/group_grid_cost.py
"""

from __future__ import annotations

import sys
import timeit
from functools import partial
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from online_models.segments.groups import OutlierCells
from tests.unit.crowds import T0
from tests.unit.test_segment_groups import _share_with_group, _worker

_FAR = np.array([1.0, 0.02, 0.1, 1.2, 0.0, 1.4, 0.2])  # a huge basket: beyond the fence


def main() -> None:
    share, typical, _ = _share_with_group()
    rng = np.random.default_rng(1)
    for cells in (50, 1_500):
        share.cells = OutlierCells.empty()
        share.cells.add(rng.uniform(0, 1.5, (cells * 3, 7)), np.ones(cells * 3))
        worker = _worker(share)
        worker._unsent.cells = share.cells.copy()
        points = np.tile(typical, (64, 1)) + rng.normal(0, 0.03, (64, 7))
        points[:4] = _FAR
        times = np.full(64, T0)
        worker.learn_place_many(points, times)
        batch = partial(worker.learn_place_many, points, times)
        seconds = timeit.repeat(batch, number=300, repeat=5)
        print(
            f"grid of {len(worker._unsent.cells.weights)} cells: "
            f"{min(seconds) / 300 * 1e6:.0f} us a batch of 64 with 4 founders"
        )


if __name__ == "__main__":
    main()
