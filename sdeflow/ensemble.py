"""Monte Carlo ensembles with running statistics: moments and histograms without storing paths.

An ensemble of ``n_paths`` paths is simulated in batches. Batch ``b`` draws its Brownian motion
from its own generator, seeded from ``(seed, b)`` by NumPy's ``SeedSequence``, so the result does
not depend on which process simulates which batch: :func:`sdeflow.distributed.ensemble_statistics`
shards the batches over ranks and, combining the per-batch statistics in batch order, returns
exactly (bit for bit) what a single process returns. Memory is O(batch_size · T · d) whatever
``n_paths`` is.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from ._checks import check_times
from .solve.simulate import simulate

__all__ = [
    "EnsembleStats", "ensemble_statistics", "ensemble_partials", "batch_generator", "batch_partial", "combine_partials",
]


@dataclass
class EnsembleStats:
    """Statistics over paths at each saved time.

    Attributes:
        ts: times, shape (T,).
        count: number of paths.
        mean: per-coordinate mean, shape (T, *event_shape), float64.
        m2: sum of squared deviations from the mean, shape (T, *event_shape), float64.
        hist: counts per bin, shape (T, D, bins) with D = prod(event_shape), int64, or None.
        edges: bin edges, shape (bins + 1,), or None.
        outside: values that fell outside the histogram range, shape (T, D), or None.
    """

    ts: Tensor
    count: int
    mean: Tensor
    m2: Tensor
    hist: Tensor | None = None
    edges: Tensor | None = None
    outside: Tensor | None = None

    @property
    def var(self) -> Tensor:
        """Unbiased variance (divides by count − 1), shape (T, *event_shape)."""
        return self.m2 / max(self.count - 1, 1)

    @property
    def std(self) -> Tensor:
        return self.var.sqrt()

    @property
    def sem(self) -> Tensor:
        """Standard error of the mean."""
        return self.std / math.sqrt(self.count)

    def density(self) -> Tensor:
        """Histogram normalised to a density (counts / (count · bin width)), shape (T, D, bins)."""
        if self.hist is None or self.edges is None:
            raise ValueError("no histogram was collected; pass histogram=(low, high, bins).")
        width = (self.edges[1:] - self.edges[:-1]).to(torch.float64)
        return self.hist.to(torch.float64) / (self.count * width)

    def merge(self, other: EnsembleStats) -> EnsembleStats:
        """Combine with the statistics of disjoint paths (Chan et al.'s pairwise update)."""
        if self.mean.shape != other.mean.shape:
            raise ValueError(
                f"cannot merge statistics of shapes {tuple(self.mean.shape)} and {tuple(other.mean.shape)}."
            )
        n = self.count + other.count
        delta = other.mean - self.mean
        mean = self.mean + delta * (other.count / n)
        m2 = self.m2 + other.m2 + delta * delta * (self.count * other.count / n)
        hist = outside = None
        if self.hist is not None and other.hist is not None:
            hist = self.hist + other.hist
            outside = self.outside + other.outside
        return EnsembleStats(self.ts, n, mean, m2, hist, self.edges, outside)


def seeded_generator(words: Sequence[int], device: torch.device | str = "cpu") -> torch.Generator:
    """A generator seeded from the integers ``words`` by NumPy's SeedSequence (independent streams)."""
    state = np.random.SeedSequence([int(w) for w in words]).generate_state(1, dtype=np.uint64)[0]
    gen = torch.Generator(device=device)
    gen.manual_seed(int(state) & ((1 << 63) - 1))
    return gen


def batch_generator(seed: int, batch: int, device: torch.device | str = "cpu") -> torch.Generator:
    """The generator of batch ``batch`` of an ensemble with ``seed`` (independent streams per batch)."""
    return seeded_generator((seed, batch), device)


def _histogram(xs: Tensor, edges: Tensor) -> tuple[Tensor, Tensor]:
    t, b = xs.shape[0], xs.shape[1]
    flat = xs.reshape(t, b, -1).transpose(1, 2).to(torch.float64)  # (T, D, b)
    bins = edges.numel() - 1
    idx = torch.searchsorted(edges, flat.contiguous(), right=True) - 1
    inside = (idx >= 0) & (idx < bins) | (flat == edges[-1])
    idx = idx.clamp(0, bins - 1)
    counts = torch.zeros(flat.shape[:2] + (bins,), dtype=torch.int64, device=xs.device)
    counts.scatter_add_(2, idx, inside.to(torch.int64))
    outside = (~inside).sum(-1)
    return counts, outside


def batch_partial(xs: Tensor, ts: Tensor, edges: Tensor | None) -> EnsembleStats:
    """Statistics of one batch of saved states ``xs`` of shape (T, b, *event)."""
    x = xs.to(torch.float64)
    mean = x.mean(dim=1)
    m2 = ((x - mean.unsqueeze(1)) ** 2).sum(dim=1)
    hist = outside = None
    if edges is not None:
        hist, outside = _histogram(xs, edges.to(xs.device))
    return EnsembleStats(ts, xs.shape[1], mean, m2, hist, edges, outside)


def combine_partials(partials: Sequence[EnsembleStats]) -> EnsembleStats:
    """Merge per-batch statistics in the given order (batch order gives reproducible results)."""
    if not partials:
        raise ValueError("no batches to combine.")
    out = partials[0]
    for p in partials[1:]:
        out = out.merge(p)
    return out


def _x0_batch(x0: Tensor | Callable[[int, torch.Generator], Tensor], n: int, gen: torch.Generator) -> Tensor:
    if callable(x0) and not isinstance(x0, Tensor):
        out = x0(n, gen)
        if not isinstance(out, Tensor) or out.shape[0] != n:
            raise ValueError(f"x0(n, generator) must return a tensor with n = {n} rows; got "
                             f"{tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__}.")
        return out
    if not isinstance(x0, Tensor):
        raise TypeError("x0 must be a tensor of shape event_shape (one start for every path) or a callable "
                        "x0(n, generator) -> (n, *event_shape).")
    return x0.unsqueeze(0).expand((n,) + tuple(x0.shape)).contiguous()


def ensemble_partials(
    sde: object,
    x0: Tensor | Callable[[int, torch.Generator], Tensor],
    ts: Tensor | np.ndarray | list[float],
    *,
    n_paths: int,
    dt: float,
    batch_size: int = 65_536,
    method: str | None = None,
    seed: int = 0,
    histogram: tuple[float, float, int] | None = None,
    compile: bool = False,
    device: torch.device | str | None = None,
    batches: Iterable[int] | None = None,
) -> list[EnsembleStats]:
    """Per-batch statistics of the batches ``batches`` (default all) of an ensemble, in that order.

    The arguments are those of :func:`ensemble_statistics`; :func:`combine_partials` merges the result.
    """
    if isinstance(n_paths, bool) or not isinstance(n_paths, int) or n_paths < 2:
        raise ValueError(f"n_paths must be an int >= 2; got {n_paths!r}.")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int; got {batch_size!r}.")
    ts_np = check_times(ts)
    edges = None
    if histogram is not None:
        lo, hi, bins = histogram
        if not (math.isfinite(lo) and math.isfinite(hi) and hi > lo) or int(bins) < 1:
            raise ValueError(
                f"histogram must be (low, high, bins) with low < high and bins >= 1; got {histogram!r}."
            )
        edges = torch.linspace(float(lo), float(hi), int(bins) + 1, dtype=torch.float64)
    if device is None:
        device = x0.device if isinstance(x0, Tensor) else torch.device("cpu")
    device = torch.device(device)
    n_batches = math.ceil(n_paths / batch_size)
    todo = range(n_batches) if batches is None else list(batches)
    ts_t = torch.as_tensor(ts_np, dtype=torch.float64)
    partials = []
    for b in todo:
        if not 0 <= b < n_batches:
            raise ValueError(f"batch index {b} out of range for {n_batches} batches.")
        nb = min(batch_size, n_paths - b * batch_size)
        gen = batch_generator(seed, b, device)
        xb = _x0_batch(x0.to(device) if isinstance(x0, Tensor) else x0, nb, gen)
        sol = simulate(sde, xb, ts_np, dt=dt, method=method, generator=gen, compile=compile)
        partials.append(batch_partial(sol.xs, ts_t, edges))
    return partials


def ensemble_statistics(
    sde: object,
    x0: Tensor | Callable[[int, torch.Generator], Tensor],
    ts: Tensor | np.ndarray | list[float],
    *,
    n_paths: int,
    dt: float,
    batch_size: int = 65_536,
    method: str | None = None,
    seed: int = 0,
    histogram: tuple[float, float, int] | None = None,
    compile: bool = False,
    device: torch.device | str | None = None,
) -> EnsembleStats:
    """Moments (and optionally histograms) of ``n_paths`` paths at the times ``ts``, in batches.

    Args:
        sde: any SDE accepted by :func:`sdeflow.simulate`.
        x0: the start of every path, shape ``event_shape``; or ``x0(n, generator) -> (n, *event_shape)``
            to draw random starts (from the batch's generator, so they are reproducible too).
        ts: output times (T,), strictly monotone.
        n_paths: total number of paths.
        dt: step size of the native engine.
        batch_size: paths per batch (memory is O(batch_size · T · d)).
        method: integration method (default as in ``simulate``).
        seed: the ensemble's seed; batch b uses :func:`batch_generator` (seed, b).
        histogram: ``(low, high, bins)`` for per-coordinate histograms at every time.
        compile: use the fused (compiled) engine.
        device: where to simulate (default: x0's device, or CPU for a callable x0).

    Returns:
        :class:`EnsembleStats` with ``mean``/``var`` of shape (T, *event_shape).
    """
    return combine_partials(ensemble_partials(sde, x0, ts, n_paths=n_paths, dt=dt, batch_size=batch_size,
                                              method=method, seed=seed, histogram=histogram, compile=compile,
                                              device=device))
