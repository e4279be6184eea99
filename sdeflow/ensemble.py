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
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from ._checks import check_int, check_memory, check_times
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
        dropped: paths left out of every statistic because a saved value was NaN or infinite (the
            statistics are those of the ``count`` finite paths).
        dropped_paths: the ensemble-wide indices of the dropped paths (batch ``b``'s path ``i`` is
            ``b · batch_size + i``), int64, shape (dropped,).
    """

    ts: Tensor
    count: int
    mean: Tensor
    m2: Tensor
    hist: Tensor | None = None
    edges: Tensor | None = None
    outside: Tensor | None = None
    dropped: int = 0
    dropped_paths: Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.int64))

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
        dropped = self.dropped + other.dropped
        dropped_paths = torch.cat([self.dropped_paths.cpu(), other.dropped_paths.cpu()])
        if other.count == 0 or self.count == 0:
            keep, new = (self, other) if other.count == 0 else (other, self)
            hist = outside = None
            if self.hist is not None and other.hist is not None:
                hist, outside = self.hist + other.hist, self.outside + other.outside
            return EnsembleStats(self.ts, keep.count, keep.mean, keep.m2, hist, self.edges, outside, dropped,
                                 dropped_paths)
        n = self.count + other.count
        delta = other.mean - self.mean
        mean = self.mean + delta * (other.count / n)
        m2 = self.m2 + other.m2 + delta * delta * (self.count * other.count / n)
        hist = outside = None
        if self.hist is not None and other.hist is not None:
            hist = self.hist + other.hist
            outside = self.outside + other.outside
        return EnsembleStats(self.ts, n, mean, m2, hist, self.edges, outside, dropped, dropped_paths)


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


def batch_partial(xs: Tensor, ts: Tensor, edges: Tensor | None, offset: int = 0) -> EnsembleStats:
    """Statistics of one batch of saved states ``xs`` of shape (T, b, *event).

    Paths with a NaN or infinite saved value are left out of every statistic (means, variances,
    histograms) and counted in ``dropped`` (their indices, plus ``offset``, in ``dropped_paths``)."""
    finite = torch.isfinite(xs.reshape(xs.shape[0], xs.shape[1], -1)).all(-1).all(0)
    bad = torch.nonzero(~finite).flatten()
    if bad.numel():
        xs = xs[:, finite]
    x = xs.to(torch.float64)
    count = xs.shape[1]
    if count:
        mean = x.mean(dim=1)
        m2 = ((x - mean.unsqueeze(1)) ** 2).sum(dim=1)
    else:
        mean = torch.zeros((x.shape[0],) + tuple(x.shape[2:]), dtype=torch.float64, device=x.device)
        m2 = torch.zeros_like(mean)
    hist = outside = None
    if edges is not None:
        hist, outside = _histogram(xs, edges.to(xs.device))
    return EnsembleStats(ts, count, mean, m2, hist, edges, outside, int(bad.numel()), (bad.cpu() + offset).long())


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
    generator: torch.Generator | int | None = None,
) -> list[EnsembleStats]:
    """Per-batch statistics of the batches ``batches`` (default all) of an ensemble, in that order.

    The arguments are those of :func:`ensemble_statistics`; :func:`combine_partials` merges the result.
    """
    if isinstance(n_paths, bool) or not isinstance(n_paths, int) or n_paths < 2:
        raise ValueError(f"n_paths must be an int >= 2; got {n_paths!r}.")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int; got {batch_size!r}.")
    seed = ensemble_seed(seed, generator)
    ts_np = check_times(ts)
    edges = None
    if histogram is not None:
        if not isinstance(histogram, (tuple, list)) or len(histogram) != 3:
            raise ValueError(f"histogram must be (low, high, bins); got {histogram!r}.")
        lo, hi, bins = histogram
        try:
            lo, hi = float(lo), float(hi)
        except (TypeError, ValueError) as err:
            raise TypeError(f"histogram bounds must be numbers; got {histogram!r}.") from err
        if not (math.isfinite(lo) and math.isfinite(hi) and hi > lo):
            raise ValueError(f"histogram must be (low, high, bins) with finite low < high; got {histogram!r}.")
        bins = check_int(bins, "histogram bins", minimum=1)
        n_t = len(ts_np)
        d = math.prod(x0.shape) if isinstance(x0, Tensor) else 1
        # The counts (T, D, bins) int64, per batch and merged, plus the edges.
        check_memory(3.0 * n_t * d * bins * 8 + bins * 8, f"histogram=(..., {bins}) over {n_t} times x {d} coordinates",
                     "use fewer bins", "cpu")
        edges = torch.linspace(lo, hi, bins + 1, dtype=torch.float64)
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
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # counted and reported by ensemble_statistics
            sol = simulate(sde, xb, ts_np, dt=dt, method=method, generator=gen, compile=compile)
        partials.append(batch_partial(sol.xs, ts_t, edges, offset=b * batch_size))
    return partials


def ensemble_seed(seed: object, generator: object) -> int:
    """The ensemble's seed from ``seed=`` or ``generator=`` (an int seed, or a ``torch.Generator`` from
    which one 62-bit seed is drawn); passing both (``seed`` other than 0) is refused."""
    if generator is None:
        if isinstance(seed, (bool, float)) or not isinstance(seed, (int, np.integer)):
            raise TypeError(f"seed must be an int; got {type(seed).__name__} {seed!r}.")
        return int(seed)
    if seed not in (0, None):
        raise ValueError("pass the ensemble's seed once: generator= or seed= (its alias), not both.")
    if isinstance(generator, torch.Generator):
        return int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device))
    if isinstance(generator, (bool, float)) or not isinstance(generator, (int, np.integer)):
        raise TypeError(f"generator must be an int seed or a torch.Generator; got {type(generator).__name__}.")
    return int(generator)


def report_dropped(stats: EnsembleStats, n_paths: int, stacklevel: int = 3) -> EnsembleStats:
    """Warn when paths were dropped as non-finite (the statistics are those of the finite ones)."""
    if stats.count == 0:
        raise ValueError(f"ensemble_statistics: every one of the {n_paths} paths became NaN or infinite, so there "
                         f"are no statistics to report; try a smaller dt or a more stable method.")
    if stats.dropped:
        few = stats.dropped_paths[:8].tolist()
        warnings.warn(
            f"ensemble_statistics: {stats.dropped} of {n_paths} paths became NaN or infinite (paths {few}"
            f"{', ...' if stats.dropped > 8 else ''}; see EnsembleStats.dropped and .dropped_paths) and were left "
            f"out: mean, var and hist are those of the {stats.count} finite paths. Try a smaller dt or a more "
            f"stable method.", RuntimeWarning, stacklevel=stacklevel)
    return stats


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
    generator: torch.Generator | int | None = None,
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
        generator: the same as ``seed`` (the name the other random routines use): an int seed, or a
            ``torch.Generator`` from which the ensemble's seed is drawn. Pass one of the two.
        histogram: ``(low, high, bins)`` for per-coordinate histograms at every time.
        compile: use the fused (compiled) engine.
        device: where to simulate (default: x0's device, or CPU for a callable x0).

    Returns:
        :class:`EnsembleStats` with ``mean``/``var`` of shape (T, *event_shape). Paths that become NaN or
        infinite are left out (the statistics are those of the finite paths), counted in
        ``EnsembleStats.dropped`` with their indices in ``dropped_paths``, and reported by a RuntimeWarning.
    """
    stats = combine_partials(ensemble_partials(sde, x0, ts, n_paths=n_paths, dt=dt, batch_size=batch_size,
                                               method=method, seed=seed, histogram=histogram, compile=compile,
                                               device=device, generator=generator))
    return report_dropped(stats, n_paths)
