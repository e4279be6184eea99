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
from .expm import KrylovStats, expm_krylov, expm_rational
from .grid import Grid
from .operator import BOUNDARIES, SCHEMES, FPOperator, coefficients_change, fokker_planck_operator

__all__ = ["FPSolution", "FPStats", "solve_fokker_planck", "stationary_density", "METHODS"]


@dataclass
class FPStats:
    """Work and time of a grid solve, and the time integrator that was chosen.

    Attributes:
        matvecs: sparse products (and, for ``"rational"``, sparse solves).
        substeps: accepted exponential sub-steps; ``rejected``: rejected tries.
        operators: operators assembled; ``assemble_time``, ``wall_time``: seconds.
        method: ``"dense"``, ``"rational"``, ``"krylov"`` (autonomous) or ``"magnus"`` (time-dependent
            coefficients, Krylov exponentials of Magnus steps); see :func:`solve_fokker_planck`.
        steady_state: the first output time from which the density was the exact stationary state
            (detected: within ``tol`` of it in L1), or None.
        reason: why ``method`` was chosen (size, stiffness ``t‖L‖₁``).
    """

    matvecs: int = 0
    substeps: int = 0
    rejected: int = 0
    operators: int = 0
    assemble_time: float = 0.0
    wall_time: float = 0.0
    method: str = ""
    steady_state: float | None = None
    reason: str = ""


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
        balanced: whether the operator was well balanced (exact discrete equilibrium).
        stats: :class:`FPStats` (including the time integrator chosen, ``stats.method``).
    """

    ts: Tensor
    p: Tensor
    grid: Grid
    scheme: str
    boundary: str
    peclet: float
    autonomous: bool
    stats: FPStats = field(default_factory=FPStats)
    balanced: bool = False

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
    callable_p0 = callable(p0) and not isinstance(p0, (Tensor, np.ndarray))
    if callable_p0:
        p0 = grid.cell_average(p0, device=device)  # then checked like cell averages
    if isinstance(p0, np.ndarray):
        p0 = torch.as_tensor(p0)
    if not isinstance(p0, Tensor):
        raise TypeError(f"p0 must be a tensor of cell averages with shape {grid.shape} or a density callable "
                        f"p0(x) -> (M,); got {type(p0).__name__}.")
    if tuple(p0.shape) != grid.shape:
        raise ValueError(f"p0 must have the grid's shape {grid.shape}; got {tuple(p0.shape)}. Build it with "
                         f"grid.gaussian(mean, cov) or grid.cell_average(density).")
    p0 = p0.detach().to(device=device, dtype=torch.float64)
    what = "p0(x) (averaged over the cells)" if callable_p0 else "p0"
    if not bool(torch.isfinite(p0).all()):
        raise ValueError(f"{what} contains NaN or inf; pass a finite density.")
    if bool((p0 < 0).any()):
        raise ValueError(f"{what} must be non-negative (a density); its minimum is {float(p0.min()):.3g}.")
    if float(p0.sum()) == 0:
        raise ValueError(f"{what} is zero everywhere on the grid; it must carry some probability there (is the "
                         f"density's mass outside the grid?).")
    return p0


METHODS = ("auto", "dense", "rational", "krylov")
#: ``method="auto"``: a dense matrix exponential up to this many cells.
DENSE_MAX = 256
#: ``method="auto"``: shift-and-invert Krylov when ``Δt ‖L‖₁`` exceeds this (a stiff horizon) and the sparse LU
#: is affordable (see :data:`RATIONAL_MAX`); polynomial Krylov below (its cost grows with ``Δt ‖L‖₁``).
RATIONAL_STIFFNESS = 1e4
#: Largest grid (cells) by dimension for which ``method="auto"`` factorises ``I − γL`` (sparse LU fill-in grows
#: like ``N^1.5`` in 2-D and ``N^2`` in 3-D).
RATIONAL_MAX = {1: 10**7, 2: 2**17, 3: 30**3}


def _choose(method: str, grid: Grid, device: torch.device, stiffness: float) -> tuple[str, str]:
    n = grid.size
    why = f"{n} cells, stiffness max Δt·‖L‖₁ = {stiffness:.3g}"
    if method != "auto":
        if method == "rational" and device.type != "cpu":
            raise ValueError("method='rational' needs a sparse LU (scipy, CPU); use device='cpu' or "
                             "method='krylov'/'dense'.")
        return method, why + " (requested)"
    if n <= DENSE_MAX:
        return "dense", why + f" <= {DENSE_MAX} cells: dense exponential"
    if stiffness > RATIONAL_STIFFNESS and device.type == "cpu" and n <= RATIONAL_MAX.get(grid.ndim, 0):
        return "rational", why + f" > {RATIONAL_STIFFNESS:g}: shift-and-invert Krylov"
    return "krylov", why + ": polynomial Krylov"


def _null_vector(op: FPOperator, grid: Grid) -> np.ndarray:
    """The normalised stationary vector of ``op``: exact for a balanced operator, else a sparse direct solve."""
    eq = op.equilibrium(grid)
    if eq is not None:
        return eq
    from scipy.sparse.linalg import spsolve

    L = op.matrix.tolil()
    i = int(np.argmax(np.abs(op.matrix.diagonal())))
    L[i, :] = grid.cell_volume
    rhs = np.zeros(grid.size)
    rhs[i] = 1.0
    p = spsolve(L.tocsc(), rhs)
    if not np.all(np.isfinite(p)):
        raise ValueError("the stationary problem is singular: the SDE may not be ergodic on this grid.")
    return p.reshape(grid.shape)


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
    balanced: bool | None = False,
    method: str = "auto",
) -> FPSolution:
    """Solve ``∂p/∂t = −Σ_i ∂_i(f_i p) + ½ Σ_ij ∂_i∂_j((G Gᵀ)_ij p)`` on ``grid`` from ``p0`` at ``ts[0]``.

    Args:
        sde: an SDE whose state is a vector of ``grid.ndim`` coordinates (any noise type; a
            Stratonovich SDE is converted to Itô form).
        p0: initial cell averages of shape ``grid.shape`` (e.g. ``grid.gaussian(mean, cov)``), or a
            density callable ``p0(x)`` on points (M, ndim), averaged over cells by quadrature.
            Not renormalised: the mass you pass is the mass that is conserved.
        grid: :class:`~sdeflow.fokker_planck.Grid1D`, :class:`~sdeflow.fokker_planck.Grid2D` or
            :class:`~sdeflow.fokker_planck.Grid3D`.
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
        tol: relative error target of the exponential per output interval.
        device: where the densities live and the exponential runs (``"cuda"`` uses torch sparse
            matrices); default CPU (scipy sparse matrix–vector products).
        balanced: well-balanced operator (exact discrete equilibrium for a gradient-type drift; see
            :func:`~sdeflow.fokker_planck.fokker_planck_operator`). Default ``False``: a transient keeps the
            plain fourth-order scheme, whose error constant is smaller away from equilibrium (1-D OU,
            1000 cells: 8.6e-9 against 2.3e-8 balanced); ``None`` balances when the drift is a gradient
            (long-time runs that should end exactly at equilibrium); ``True`` requires it. Autonomous only.
        method: time integrator for time-independent coefficients: ``"dense"`` (matrix exponential of
            the dense operator, one per distinct output interval), ``"rational"`` (shift-and-invert
            Krylov with a sparse LU of ``I − γL``, ``γ = Δt/10``: cost independent of the stiffness
            ``Δt‖L‖₁``), ``"krylov"`` (polynomial Krylov with adaptive sub-steps; no factorisation), or
            ``"auto"`` (default: dense up to :data:`DENSE_MAX` cells, rational when the stiffness exceeds
            :data:`RATIONAL_STIFFNESS` and the grid is at most :data:`RATIONAL_MAX` cells, else Krylov).
            Whatever the method, once the density is within ``tol`` (L1, relative to its mass) of the
            operator's stationary vector it is set to it for the remaining outputs (steady-state
            detection; ``stats.steady_state``). The choice and its reason are in ``stats``.

    Returns:
        :class:`FPSolution` with ``p`` of shape (T, *grid.shape) (float64 cell averages).
    """
    tick = time.perf_counter()
    sde = as_sde(sde)
    if not isinstance(grid, Grid):
        raise TypeError(f"grid must be a sdeflow.fokker_planck.Grid1D, Grid2D or Grid3D; got {type(grid).__name__}.")
    if scheme not in SCHEMES:
        raise ValueError(f"scheme must be one of {SCHEMES}; got {scheme!r}.")
    if boundary not in BOUNDARIES:
        raise ValueError(f"boundary must be one of {BOUNDARIES}; got {boundary!r}.")
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}; got {method!r}.")
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
    t_start, t_end = float(ts_np[0]), float(ts_np[-1])
    if autonomous is None:
        # Compare drift and diffusion on the grid at the start, at an irrational fraction of the span and at the end.
        t_mid = t_start + 0.5 * (math.sqrt(5) - 1) * (t_end - t_start)
        autonomous = not coefficients_change(sde, grid, t_start, [t_mid, t_end], boundary)
    if balanced and not autonomous:
        raise ValueError("balanced=True needs time-independent coefficients (an equilibrium); use balanced=False.")

    def assemble(t: float, sch: str) -> FPOperator:
        t0 = time.perf_counter()
        op = fokker_planck_operator(sde, grid, t, scheme=sch, boundary=boundary,
                                    balanced=balanced if autonomous else False)
        stats.assemble_time += time.perf_counter() - t0
        stats.operators += 1
        return op

    op0 = assemble(t_start, scheme)
    used = op0.scheme  # what "auto" chose at the start (face by face it may change with t)
    peclet = op0.peclet
    out = [p]
    kstats = KrylovStats()
    if autonomous:
        spans = np.diff(ts_np)
        norm = float(abs(op0.matrix).sum(axis=0).max()) if op0.matrix.nnz else 0.0
        choice, stats.reason = _choose(method, grid, device, norm * float(spans.max(initial=0.0)))
        stats.method = choice
        step = _integrator(choice, op0.matrix, device, tol, boundary != "absorbing", kstats)
        target = None
        if boundary != "absorbing" and (op0.balanced or choice in ("dense", "rational")):
            target = torch.as_tensor(_null_vector(op0, grid), dtype=torch.float64, device=device)
        steady = False
        for a, b in zip(ts_np[:-1], ts_np[1:], strict=True):
            if not steady and target is not None:
                mass = grid.mass(p)
                if float(grid.l1(p, mass * target)) <= tol * max(float(mass), 1e-300):
                    steady, stats.steady_state = True, float(a)
                    p = mass * target
            if not steady:
                p = step(p.reshape(-1), float(b - a)).reshape(grid.shape)
            out.append(p)
    else:
        stats.method = "magnus"
        stats.reason = "time-dependent coefficients: fourth-order Magnus steps, Krylov exponentials"
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
                      scheme=used, boundary=boundary, peclet=peclet, autonomous=bool(autonomous), stats=stats,
                      balanced=op0.balanced)


def _integrator(choice: str, matrix: sp.csr_matrix, device: torch.device, tol: float, conservative: bool,
                kstats: KrylovStats) -> Callable[[Tensor, float], Tensor]:
    """``(p, Δt) ↦ exp(Δt L) p`` by the chosen method; factorisations are cached per distinct ``Δt``."""
    apply = _Apply(matrix, device)
    cache: dict[float, object] = {}
    if choice == "dense":
        dense = torch.as_tensor(matrix.toarray(), dtype=torch.float64, device=device)

        def step(p: Tensor, span: float) -> Tensor:
            if span not in cache:
                cache[span] = torch.linalg.matrix_exp(dense * span)
                kstats.substeps += 1
            E = cache[span]
            kstats.matvecs += 1
            q = E @ p
            total = q.sum()
            if conservative and float(total) != 0.0:
                q = q * (p.sum() / total)  # column sums are 1 only up to the exponential's round-off
            return q

        return step
    if choice == "rational":
        from scipy.sparse.linalg import splu

        eye = sp.identity(matrix.shape[0], format="csc")

        def step(p: Tensor, span: float) -> Tensor:
            gamma = span / 10
            if span not in cache:
                cache[span] = splu((eye - gamma * matrix).tocsc())
            lu = cache[span]
            q, ks = expm_rational(apply, lambda v: torch.from_numpy(lu.solve(v.numpy())), gamma, p, span, tol=tol,
                                  conservative=conservative)
            kstats.add(ks)
            return q

        return step

    def step(p: Tensor, span: float) -> Tensor:
        q, ks = expm_krylov(apply, p, span, tol=tol)
        kstats.add(ks)
        return q

    return step


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
    sde: object, grid: Grid, *, t: float = 0.0, scheme: str = "auto", boundary: str = "reflecting",
    balanced: bool | None = None,
) -> Tensor:
    """The normalised null vector of the grid operator: the discrete stationary density (cell averages).

    With a well-balanced operator (``balanced=None``, the default, when the drift is of gradient type:
    diagonal ``D`` with ``2 f_k / D_kk − ∂_k log D_kk = ∂_k φ``, e.g. ``f = −∇U`` with constant ``σ``) the
    null vector is known in closed form: the exact cell averages of ``exp(φ)`` (``exp(−2U/σ²)/Z``), exact
    to round-off at any resolution. Otherwise ``L p̄ = 0`` with ``Σ p̄ · cell volume = 1`` (one row replaced
    by the normalisation) is solved by a sparse direct solve, and carries the scheme's error. Needs a
    reflecting or periodic box and an operator with a one-dimensional kernel (an ergodic SDE).

    Returns:
        float64 tensor of ``grid.shape``, unit mass.
    """
    if boundary == "absorbing":
        raise ValueError("an absorbing boundary has no stationary density (mass leaves); use 'reflecting'.")
    op = fokker_planck_operator(sde, grid, t, scheme=scheme, boundary=boundary, balanced=balanced)
    return torch.as_tensor(_null_vector(op, grid), dtype=torch.float64)
