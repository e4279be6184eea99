"""``solve_fokker_planck``: evolve a density on a 1-D or 2-D grid under an SDE's Fokker–Planck equation.

Method of lines: the finite-volume operator ``L`` of :mod:`sdeflow.fokker_planck.operator` gives
``dp̄/dt = L(t) p̄``; time is integrated by the Krylov exponential of
:mod:`sdeflow.fokker_planck.expm`:

* time-homogeneous coefficients (detected, or ``autonomous=True``): ``p̄(t_{k+1}) = exp((t_{k+1} − t_k) L) p̄(t_k)``,
  exact in time up to the Krylov tolerance;
* time-dependent coefficients: fourth-order Magnus steps
  ``exp(Ω) p̄``, ``Ω = (h/2)(L₁ + L₂) + (√3/12) h² [L₂, L₁]`` with ``L_i = L(t + c_i h)`` at the two
  Gauss points (the exponential midpoint rule ``Ω = h L(t + h/2)`` for ``scheme="sg"``, which keeps
  the operator an M-matrix).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor

from .._checks import check_times
from ..sde.base import as_sde
from .expm import KrylovStats, expm_krylov
from .grid import Grid
from .operator import BOUNDARIES, SCHEMES, FPOperator, coefficients_change, fokker_planck_operator

__all__ = ["FPSolution", "FPStats", "solve_fokker_planck", "stationary_density"]


@dataclass
class FPStats:
    """Work and time of a grid solve."""

    matvecs: int = 0
    substeps: int = 0
    rejected: int = 0
    operators: int = 0
    assemble_time: float = 0.0
    wall_time: float = 0.0


@dataclass
class FPSolution:
    """Densities (cell averages) on a grid at the requested times.

    Attributes:
        ts: times, shape (T,), float64.
        p: cell averages, shape (T, *grid.shape), float64, on the solve's device.
        grid: the grid.
        scheme: the scheme used (``"auto"`` resolved).
        boundary: the boundary condition.
        peclet: the largest cell Péclet number seen.
        autonomous: whether the coefficients were treated as time-independent.
        stats: :class:`FPStats`.
    """

    ts: Tensor
    p: Tensor
    grid: Grid
    scheme: str
    boundary: str
    peclet: float
    autonomous: bool
    stats: FPStats = field(default_factory=FPStats)

    @property
    def final(self) -> Tensor:
        """The density at the last time, shape ``grid.shape``."""
        return self.p[-1]

    @property
    def mass(self) -> Tensor:
        """Total probability at each time, shape (T,)."""
        return self.grid.mass(self.p)

    @property
    def negative_mass(self) -> Tensor:
        """``Σ max(−p̄, 0) · cell volume`` at each time, shape (T,): zero up to round-off for a positive scheme."""
        return self.grid.mass((-self.p).clamp_min(0))

    def l1(self, q: Tensor, index: int = -1) -> float:
        """L1 distance between the density at ``ts[index]`` and cell averages ``q`` (grid shape)."""
        q = torch.as_tensor(q, dtype=self.p.dtype, device=self.p.device)
        return float(self.grid.l1(self.p[index], q))


class _Apply:
    """``v ↦ M v`` for a scipy CSR matrix: scipy on CPU, torch sparse CSR on other devices."""

    def __init__(self, matrix: sp.csr_matrix, device: torch.device) -> None:
        self.device = device
        if device.type == "cpu":
            self.m = matrix
            self.t = None
        else:
            m = matrix.tocsr()
            self.t = torch.sparse_csr_tensor(
                torch.as_tensor(m.indptr, dtype=torch.int64), torch.as_tensor(m.indices, dtype=torch.int64),
                torch.as_tensor(m.data, dtype=torch.float64), size=m.shape,
            ).to(device)

    def __call__(self, v: Tensor) -> Tensor:
        if self.t is None:
            return torch.from_numpy(self.m @ v.numpy())
        return (self.t @ v.unsqueeze(1)).squeeze(1)


def _prepare_p0(p0: object, grid: Grid, device: torch.device) -> Tensor:
    if callable(p0) and not isinstance(p0, (Tensor, np.ndarray)):
        return grid.cell_average(p0, device=device)
    if isinstance(p0, np.ndarray):
        p0 = torch.as_tensor(p0)
    if not isinstance(p0, Tensor):
        raise TypeError(f"p0 must be a tensor of cell averages with shape {grid.shape} or a density callable "
                        f"p0(x) -> (M,); got {type(p0).__name__}.")
    if tuple(p0.shape) != grid.shape:
        raise ValueError(f"p0 must have the grid's shape {grid.shape}; got {tuple(p0.shape)}. Build it with "
                         f"grid.gaussian(mean, cov) or grid.cell_average(density).")
    p0 = p0.detach().to(device=device, dtype=torch.float64)
    if not bool(torch.isfinite(p0).all()):
        raise ValueError("p0 contains NaN or inf; pass finite cell averages.")
    if bool((p0 < 0).any()):
        raise ValueError(f"p0 must be non-negative (a density); its minimum is {float(p0.min()):.3g}.")
    if float(p0.sum()) == 0:
        raise ValueError("p0 is zero everywhere; it must carry some probability on the grid.")
    return p0


def solve_fokker_planck(
    sde: object,
    p0: Tensor | np.ndarray | Callable[[Tensor], Tensor],
    grid: Grid,
    ts: Tensor | np.ndarray | list[float],
    *,
    boundary: str = "reflecting",
    scheme: str = "auto",
    autonomous: bool | None = None,
    dt: float | None = None,
    tol: float = 1e-12,
    device: torch.device | str | None = None,
) -> FPSolution:
    """Solve ``∂p/∂t = −Σ_i ∂_i(f_i p) + ½ Σ_ij ∂_i∂_j((G Gᵀ)_ij p)`` on ``grid`` from ``p0`` at ``ts[0]``.

    Args:
        sde: an SDE whose state is a vector of ``grid.ndim`` coordinates (any noise type; a
            Stratonovich SDE is converted to Itô form).
        p0: initial cell averages of shape ``grid.shape`` (e.g. ``grid.gaussian(mean, cov)``), or a
            density callable ``p0(x)`` on points (M, ndim), averaged over cells by quadrature.
            Not renormalised: the mass you pass is the mass that is conserved.
        grid: :class:`~sdeflow.fokker_planck.Grid1D` or :class:`~sdeflow.fokker_planck.Grid2D`.
        ts: increasing times, shape (T,); ``ts[0]`` is the time of ``p0``.
        boundary: ``"reflecting"`` (no flux through the box; mass conserved), ``"absorbing"``
            (zero density outside; mass leaves) or ``"periodic"``.
        scheme: ``"auto"`` (face by face: ``"fv4"`` where the cell Péclet number is ≤ 2, ``"sg"``
            elsewhere), ``"fv4"`` (fourth order), ``"sg"`` (Scharfetter–Gummel, positivity by
            construction) or ``"central"`` (second-order baseline). See
            :mod:`sdeflow.fokker_planck.operator`.
        autonomous: treat the coefficients as time-independent (one operator, exact exponential).
            ``None`` detects it by comparing drift and diffusion on the grid at three times.
        dt: Magnus step for time-dependent coefficients; default ``(ts[-1] − ts[0]) / 64``.
        tol: relative error target of the Krylov exponential per output interval.
        device: where the densities live and the exponential runs (``"cuda"`` uses torch sparse
            matrices); default CPU (scipy sparse matrix–vector products).

    Returns:
        :class:`FPSolution` with ``p`` of shape (T, *grid.shape) (float64 cell averages).
    """
    tick = time.perf_counter()
    sde = as_sde(sde)
    if not isinstance(grid, Grid):
        raise TypeError(f"grid must be a sdeflow.fokker_planck.Grid1D or Grid2D; got {type(grid).__name__}.")
    if scheme not in SCHEMES:
        raise ValueError(f"scheme must be one of {SCHEMES}; got {scheme!r}.")
    if boundary not in BOUNDARIES:
        raise ValueError(f"boundary must be one of {BOUNDARIES}; got {boundary!r}.")
    if not (isinstance(tol, float) and 0 < tol < 1):
        raise ValueError(f"tol must be a float in (0, 1); got {tol!r}.")
    ts_np = check_times(ts)
    if ts_np[-1] < ts_np[0]:
        raise ValueError("ts must be increasing: the Fokker–Planck equation is solved forward in time.")
    device = torch.device(device) if device is not None else torch.device("cpu")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' requested but CUDA is not available; use device='cpu'.")
    p = _prepare_p0(p0, grid, device)
    stats = FPStats()

    def assemble(t: float, sch: str) -> FPOperator:
        t0 = time.perf_counter()
        op = fokker_planck_operator(sde, grid, t, scheme=sch, boundary=boundary)
        stats.assemble_time += time.perf_counter() - t0
        stats.operators += 1
        return op

    t_start, t_end = float(ts_np[0]), float(ts_np[-1])
    op0 = assemble(t_start, scheme)
    used = op0.scheme  # what "auto" chose at the start (face by face it may change with t)
    peclet = op0.peclet
    if autonomous is None:
        # Compare drift and diffusion on the grid at the start, at an irrational fraction of the span and at the end.
        t_mid = t_start + 0.5 * (math.sqrt(5) - 1) * (t_end - t_start)
        autonomous = not coefficients_change(sde, grid, t_start, [t_mid, t_end], boundary)
    out = [p]
    kstats = KrylovStats()
    if autonomous:
        apply = _Apply(op0.matrix, device)
        for a, b in zip(ts_np[:-1], ts_np[1:], strict=True):
            p, ks = expm_krylov(apply, p.reshape(-1), float(b - a), tol=tol)
            p = p.reshape(grid.shape)
            kstats.add(ks)
            out.append(p)
    else:
        span = t_end - t_start
        step = span / 64 if dt is None else float(dt)
        if not (math.isfinite(step) and step > 0):
            raise ValueError(f"dt must be a positive number; got {dt!r}.")
        for a, b in zip(ts_np[:-1], ts_np[1:], strict=True):
            n = max(1, math.ceil((b - a) / step - 1e-9))
            h = (b - a) / n
            for i in range(n):
                t0 = a + i * h
                apply_fn, pe = _magnus(assemble, scheme, t0, h, device)
                peclet = max(peclet, pe)
                p, ks = expm_krylov(apply_fn, p.reshape(-1), 1.0, tol=tol / n)
                p = p.reshape(grid.shape)
                kstats.add(ks)
            out.append(p)
    stats.matvecs, stats.substeps, stats.rejected = kstats.matvecs, kstats.substeps, kstats.rejected
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    stats.wall_time = time.perf_counter() - tick
    return FPSolution(ts=torch.as_tensor(ts_np, dtype=torch.float64, device=device), p=torch.stack(out), grid=grid,
                      scheme=used, boundary=boundary, peclet=peclet, autonomous=bool(autonomous), stats=stats)


def _magnus(assemble: Callable[[float, str], FPOperator], scheme: str, t0: float, h: float,
            device: torch.device) -> tuple[Callable[[Tensor], Tensor], float]:
    """``v ↦ Ω v`` for one Magnus step of size h from t0 (order 4; the midpoint rule for "sg")."""
    if scheme == "sg":
        op = assemble(t0 + 0.5 * h, scheme)
        apply = _Apply(op.matrix * h, device)
        return apply, op.peclet
    c = math.sqrt(3) / 6
    op1, op2 = assemble(t0 + (0.5 - c) * h, scheme), assemble(t0 + (0.5 + c) * h, scheme)
    a1, a2 = _Apply(op1.matrix, device), _Apply(op2.matrix, device)
    mean = _Apply((op1.matrix + op2.matrix) * (0.5 * h), device)
    k = math.sqrt(3) / 12 * h * h

    def apply(v: Tensor) -> Tensor:
        return mean(v) + k * (a2(a1(v)) - a1(a2(v)))

    return apply, max(op1.peclet, op2.peclet)


def stationary_density(
    sde: object, grid: Grid, *, t: float = 0.0, scheme: str = "auto", boundary: str = "reflecting"
) -> Tensor:
    """The normalised null vector of the grid operator: the discrete stationary density (cell averages).

    Solves ``L p̄ = 0`` with ``Σ p̄ · cell volume = 1`` (one row replaced by the normalisation) by a
    sparse direct solve. Needs a reflecting or periodic box and an operator with a one-dimensional
    kernel (an ergodic SDE). Returns a float64 tensor of ``grid.shape``.
    """
    if boundary == "absorbing":
        raise ValueError("an absorbing boundary has no stationary density (mass leaves); use 'reflecting'.")
    op = fokker_planck_operator(sde, grid, t, scheme=scheme, boundary=boundary)
    from scipy.sparse.linalg import spsolve

    L = op.matrix.tolil()
    i = int(np.argmax(np.abs(op.matrix.diagonal())))
    L[i, :] = grid.cell_volume
    rhs = np.zeros(grid.size)
    rhs[i] = 1.0
    p = spsolve(L.tocsc(), rhs)
    if not np.all(np.isfinite(p)):
        raise ValueError("the stationary problem is singular: the SDE may not be ergodic on this grid.")
    return torch.as_tensor(p.reshape(grid.shape), dtype=torch.float64)
