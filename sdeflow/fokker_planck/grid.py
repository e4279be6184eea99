"""Uniform cell-centred grids for the finite-volume Fokker–Planck solver.

A grid stores densities as **cell averages** ``p̄_c = (1/|c|) ∫_c p``, not point values: the
finite-volume scheme evolves cell averages exactly up to its flux error, so initial data and exact
solutions must be compared as cell averages too (point values differ from cell averages by
``h² p''/24``, which for a narrow initial density is larger than the scheme's own error).
:meth:`Grid.gaussian` gives exact cell averages of a Gaussian (CDF differences) and
:meth:`Grid.cell_average` integrates any density by Gauss–Legendre quadrature in every cell.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
from scipy.special import ndtr
from torch import Tensor

from .._checks import check_memory

__all__ = ["Grid", "Grid1D", "Grid2D", "Grid3D"]


def _check_axis(lo: object, hi: object, n: object, name: str) -> tuple[float, float, int]:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
        raise TypeError(f"{name}: the number of cells must be an int; got {type(n).__name__}.")
    if n < 4:
        raise ValueError(f"{name}: need at least 4 cells; got {n}.")
    try:
        lo, hi = float(lo), float(hi)
    except (TypeError, ValueError) as err:
        raise TypeError(f"{name}: the bounds must be numbers; got {lo!r}, {hi!r}.") from err
    if not (math.isfinite(lo) and math.isfinite(hi)) or not hi > lo:
        raise ValueError(f"{name}: need finite bounds with lo < hi; got lo={lo}, hi={hi}.")
    return lo, hi, int(n)


class Grid:
    """A box ``[lo_1, hi_1] × ... × [lo_d, hi_d]`` split into ``n_1 × ... × n_d`` equal cells.

    Arrays on the grid have shape :attr:`shape` (``"ij"`` indexing: axis k is coordinate k).
    Flattened arrays are in C order, matching :meth:`points`.

    Args:
        axes: one ``(lo, hi, n)`` triple per dimension.
    """

    #: Bytes per cell a solve holds at least (the sparse operator's (2·ndim + 1) entries per row and a
    #: few float64 densities): a grid whose cells times this exceed the memory available now is refused
    #: when it is built (:func:`sdeflow._checks.check_memory`).
    BYTES_PER_CELL = 160

    def __init__(self, axes: Sequence[tuple[float, float, int]]) -> None:
        if len(axes) == 0:
            raise ValueError("a grid needs at least one axis (lo, hi, n).")
        self.bounds = tuple(_check_axis(*ax, name=f"axis {k}") for k, ax in enumerate(axes))
        cells = float(np.prod([float(n) for _, _, n in self.bounds]))
        check_memory(cells * self.BYTES_PER_CELL, f"a grid of {' x '.join(str(n) for _, _, n in self.bounds)} "
                     f"cells ({cells:.4g})", "use fewer cells per axis (n), or a coarser grid")

    # -- geometry -------------------------------------------------------------------------------
    @property
    def ndim(self) -> int:
        return len(self.bounds)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(n for _, _, n in self.bounds)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    @property
    def spacing(self) -> tuple[float, ...]:
        """Cell widths ``h_k``."""
        return tuple((hi - lo) / n for lo, hi, n in self.bounds)

    @property
    def cell_volume(self) -> float:
        return float(np.prod(self.spacing))

    def edges(self, axis: int) -> np.ndarray:
        """Cell edges along ``axis``, shape (n_axis + 1,)."""
        lo, hi, n = self.bounds[axis]
        return lo + (hi - lo) * np.arange(n + 1, dtype=np.float64) / n

    def centers(self, axis: int) -> np.ndarray:
        """Cell centres along ``axis``, shape (n_axis,)."""
        e = self.edges(axis)
        return 0.5 * (e[1:] + e[:-1])

    def points(self, *, device: torch.device | str | None = None) -> Tensor:
        """All cell centres, float64 tensor of shape (size, ndim) in C order."""
        mesh = np.meshgrid(*[self.centers(k) for k in range(self.ndim)], indexing="ij")
        pts = np.stack([m.reshape(-1) for m in mesh], axis=-1)
        return torch.as_tensor(pts, dtype=torch.float64, device=device)

    # -- densities on the grid ---------------------------------------------------------------------
    def _check_array(self, p: object, name: str) -> Tensor:
        if isinstance(p, np.ndarray):
            p = torch.as_tensor(p)
        if not isinstance(p, Tensor):
            raise TypeError(f"{name} must be a tensor of shape {self.shape} (cell averages); got {type(p).__name__}.")
        if tuple(p.shape[-self.ndim:]) != self.shape:
            raise ValueError(f"{name} must end with the grid shape {self.shape}; got {tuple(p.shape)}.")
        return p

    def mass(self, p: Tensor) -> Tensor:
        """``Σ p̄ · cell volume`` over the grid dimensions (the last ``ndim``); leading dims are kept."""
        p = self._check_array(p, "p")
        return p.sum(dim=tuple(range(-self.ndim, 0))) * self.cell_volume

    def l1(self, p: Tensor, q: Tensor) -> Tensor:
        """``Σ |p̄ − q̄| · cell volume`` (the L1 distance of the piecewise-constant densities)."""
        p = self._check_array(p, "p")
        q = self._check_array(q, "q")
        return (p - q).abs().sum(dim=tuple(range(-self.ndim, 0))) * self.cell_volume

    def cell_average(
        self,
        density: Callable[[Tensor], Tensor],
        *,
        nodes: int = 4,
        chunk: int = 1 << 20,
        device: torch.device | str | None = None,
    ) -> Tensor:
        """Cell averages of ``density`` by ``nodes``-point Gauss–Legendre quadrature per axis and cell.

        ``density(x)`` takes points of shape (M, ndim) (float64) and returns (M,) values. Exact for
        polynomials of degree ``2 nodes − 1`` in each cell; for a smooth density with width ``s`` the
        error is about ``(h/s)^{2 nodes}``. Returns a float64 tensor of :attr:`shape`.
        """
        if not callable(density):
            raise TypeError(f"density must be a callable density(x) -> (M,); got {type(density).__name__}.")
        if isinstance(nodes, bool) or not isinstance(nodes, int) or not 1 <= nodes <= 16:
            raise ValueError(f"nodes must be an int between 1 and 16; got {nodes!r}.")
        xg, wg = np.polynomial.legendre.leggauss(nodes)
        # Per axis: the quadrature abscissae of every cell, shape (n_k, nodes), weights summing to 1.
        pts_axis = []
        for k in range(self.ndim):
            c, h = self.centers(k), self.spacing[k]
            pts_axis.append(c[:, None] + 0.5 * h * xg[None, :])
        w = torch.as_tensor(0.5 * wg, dtype=torch.float64, device=device)
        out = torch.zeros(self.shape, dtype=torch.float64, device=device)
        # Loop over the quadrature node combinations (nodes^ndim evaluations of the whole grid).
        for combo in np.ndindex(*([nodes] * self.ndim)):
            coords = [pts_axis[k][:, combo[k]] for k in range(self.ndim)]
            mesh = np.meshgrid(*coords, indexing="ij")
            pts = torch.as_tensor(np.stack([m.reshape(-1) for m in mesh], -1), dtype=torch.float64, device=device)
            vals = torch.cat([torch.as_tensor(density(pts[i:i + chunk])).reshape(-1).to(out)
                              for i in range(0, pts.shape[0], chunk)])
            if vals.shape[0] != pts.shape[0]:
                raise ValueError(f"density(x) must return one value per point, shape ({pts.shape[0]},); "
                                 f"got {vals.shape[0]} values.")
            weight = 1.0
            for k in range(self.ndim):
                weight = weight * w[combo[k]]
            out += weight * vals.reshape(self.shape)
        return out

    def gaussian(
        self,
        mean: Sequence[float] | Tensor | float,
        cov: Tensor | Sequence | float,
        *,
        nodes: int = 6,
        device: torch.device | str | None = None,
    ) -> Tensor:
        """Cell averages of ``N(mean, cov)``: exact (CDF differences) for a diagonal covariance.

        ``cov`` may be a number (variance, shared), a vector of variances (d,) or a matrix (d, d). A
        non-diagonal matrix is integrated by :meth:`cell_average` with ``nodes`` points per axis.
        Returns a float64 tensor of :attr:`shape`.
        """
        d = self.ndim
        m = torch.as_tensor(mean, dtype=torch.float64).reshape(-1)
        if m.numel() == 1 and d > 1:
            m = m.expand(d)
        if m.shape != (d,):
            raise ValueError(f"mean must have {d} entries for a {d}-D grid; got shape {tuple(m.shape)}.")
        c = torch.as_tensor(cov, dtype=torch.float64)
        if c.dim() == 0:
            c = torch.diag(c.expand(d))
        elif c.dim() == 1:
            if c.shape != (d,):
                raise ValueError(f"cov as a vector of variances must have shape ({d},); got {tuple(c.shape)}.")
            c = torch.diag(c)
        if c.shape != (d, d):
            raise ValueError(f"cov must be a number, a vector ({d},) or a matrix ({d}, {d}); got {tuple(c.shape)}.")
        if not bool(torch.allclose(c, c.T)) or bool((torch.linalg.eigvalsh(c) <= 0).any()):
            raise ValueError("cov must be symmetric positive definite.")
        if bool((c - torch.diag(torch.diagonal(c))).abs().max() == 0):
            out = None
            for k in range(d):
                e = self.edges(k)
                cdf = ndtr((e - float(m[k])) / math.sqrt(float(c[k, k])))
                avg = np.diff(cdf) / np.diff(e)
                out = avg if out is None else np.multiply.outer(out, avg)
            return torch.as_tensor(out, dtype=torch.float64, device=device)
        chol = torch.linalg.cholesky(c)
        logdet = 2 * torch.log(torch.diagonal(chol)).sum()

        def pdf(x: Tensor) -> Tensor:
            z = torch.linalg.solve_triangular(chol, (x - m).T, upper=False)
            return torch.exp(-0.5 * (z * z).sum(0) - 0.5 * logdet - 0.5 * d * math.log(2 * math.pi))

        return self.cell_average(pdf, nodes=nodes, device=device)

    def __repr__(self) -> str:
        ax = ", ".join(f"[{lo:g}, {hi:g}] x {n}" for lo, hi, n in self.bounds)
        return f"{type(self).__name__}({ax})"


class Grid1D(Grid):
    """``[lo, hi]`` split into ``n`` cells."""

    def __init__(self, lo: float, hi: float, n: int) -> None:
        super().__init__([(lo, hi, n)])


class Grid2D(Grid):
    """``[x_lo, x_hi] × [y_lo, y_hi]`` split into ``nx × ny`` cells; arrays have shape (nx, ny).

    Args:
        x: ``(lo, hi, n)`` for the first coordinate.
        y: ``(lo, hi, n)`` for the second; default: the same as ``x``.
    """

    def __init__(self, x: tuple[float, float, int], y: tuple[float, float, int] | None = None) -> None:
        for name, ax in (("x", x), ("y", y)):
            if ax is not None and (not isinstance(ax, (tuple, list)) or len(ax) != 3):
                raise TypeError(f"{name} must be a (lo, hi, n) triple; got {ax!r}.")
        super().__init__([tuple(x), tuple(y if y is not None else x)])


class Grid3D(Grid):
    """``[x_lo, x_hi] × [y_lo, y_hi] × [z_lo, z_hi]`` split into ``nx × ny × nz`` cells; arrays (nx, ny, nz).

    Args:
        x: ``(lo, hi, n)`` for the first coordinate.
        y: ``(lo, hi, n)`` for the second; default: the same as ``x``.
        z: ``(lo, hi, n)`` for the third; default: the same as ``y`` (or ``x``).
    """

    def __init__(self, x: tuple[float, float, int], y: tuple[float, float, int] | None = None,
                 z: tuple[float, float, int] | None = None) -> None:
        for name, ax in (("x", x), ("y", y), ("z", z)):
            if ax is not None and (not isinstance(ax, (tuple, list)) or len(ax) != 3):
                raise TypeError(f"{name} must be a (lo, hi, n) triple; got {ax!r}.")
        y = y if y is not None else x
        z = z if z is not None else y
        super().__init__([tuple(x), tuple(y), tuple(z)])
