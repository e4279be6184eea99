"""Fixed-step time grids that hit every requested output time exactly."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["StepGrid", "build_grid"]

# A final step shorter than this fraction of dt is merged into the previous one.
_SNAP = 1e-6


@dataclass(frozen=True)
class StepGrid:
    """Solver time points (increasing) and the grid index of each output time.

    Attributes:
        times: float64 array of shape (n_steps + 1,).
        save_index: for each output time, its index in ``times``.
    """

    times: np.ndarray
    save_index: np.ndarray

    @property
    def n_steps(self) -> int:
        return len(self.times) - 1

    @property
    def dts(self) -> np.ndarray:
        return np.diff(self.times)


def build_grid(ts: np.ndarray, dt: float) -> StepGrid:
    """Steps of size ``dt`` from ``ts[0]``, restarting at every output time, ending exactly on each.

    ``ts`` must be strictly increasing. Within each interval the points are ``t_k + i dt``; a
    remainder shorter than ``1e-6 dt`` is absorbed into the last step.
    """
    pieces = [np.asarray(ts[:1], dtype=np.float64)]
    save = [0]
    count = 0
    for a, b in zip(ts[:-1], ts[1:], strict=True):
        n = max(1, math.ceil((b - a) / dt - _SNAP))
        inner = a + dt * np.arange(1, n, dtype=np.float64)
        pieces.append(inner)
        pieces.append(np.asarray([b], dtype=np.float64))
        count += n
        save.append(count)
    return StepGrid(np.concatenate(pieces), np.asarray(save, dtype=np.int64))
