"""Fixed-step time grids that hit every requested output time exactly."""

from __future__ import annotations

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


def build_grid(ts: np.ndarray, dt: float, *, time_tol: float = 0.0) -> StepGrid:
    """Steps of size ``dt`` from ``ts[0]``, restarting at every output time, ending exactly on each.

    ``ts`` must be strictly increasing. Within each interval the points are ``t_k + i dt``; a
    remainder shorter than ``1e-6 dt`` (or than ``time_tol``, the rounding of the times as the
    caller gave them, e.g. a few float32 ulps) is absorbed into the last step.
    """
    ts = np.asarray(ts, dtype=np.float64)
    a, b = ts[:-1], ts[1:]
    snap = max(_SNAP, time_tol / dt)
    counts = np.maximum(1, np.ceil((b - a) / dt - snap)).astype(np.int64)
    ends = np.cumsum(counts)
    total = int(ends[-1])
    # Point j of interval k (1 <= j < counts[k]) is a_k + j dt, as ``a + dt * arange(1, n)`` computes it;
    # the interval's last point is b_k itself.
    starts = ends - counts
    local = np.arange(total, dtype=np.int64) - np.repeat(starts, counts)
    inner = np.repeat(a, counts) + dt * local.astype(np.float64)
    times = np.empty(total + 1, dtype=np.float64)
    times[:total] = inner  # inner[starts[k]] = a_k: overwritten by the exact ts values next
    times[0] = ts[0]
    times[ends] = b
    save = np.concatenate([np.zeros(1, dtype=np.int64), ends])
    return StepGrid(times, save)
