"""The exact equilibrium of a potential drift on a grid, for well-balanced Fokker–Planck operators.

For diagonal diffusion ``D = diag(D_kk(x))`` the zero-flux condition ``f_k p − ½ ∂_k(D_kk p) = 0``
reads ``∂_k log p = w_k`` with

    w_k = 2 f_k / D_kk − ∂_k log D_kk .

When ``w`` is a gradient, ``w = ∇φ`` (a potential drift ``f = −∇U`` with constant ``σ`` gives
``φ = −2U/σ²``), the stationary density is ``p ∝ exp(φ)``. This module computes, from the drift
and diffusion alone (no potential needs to be supplied):

1. the *line exponents* ``A_k(c) = φ(x_{c+e_k}) − φ(x_c)`` between neighbouring cell centres, by
   Gauss–Legendre quadrature of ``2 f_k / D_kk`` along the segment (the ``log D_kk`` part is exact);
2. the *discrete curl*: around every grid plaquette the line exponents must sum to zero (and, on a
   periodic axis, along every closed grid line), to a relative tolerance :data:`CURL_TOL`; a drift
   that fails is not a gradient and no equilibrium is returned;
3. ``log π̄_c`` — the logarithm of the exact **cell average** of ``exp(φ)`` (up to one global
   constant): ``φ`` at the cell centres by summing line exponents, plus
   ``λ_c = log ⟨exp(φ − φ(x_c))⟩_c`` by tensor Gauss–Legendre quadrature over the cell, with
   ``φ − φ(x_c)`` at each node from axis-parallel line integrals (path-independent for a gradient).

Everything is in log space, so equilibria spanning hundreds of orders of magnitude (drift-dominated
problems) are represented without underflow. See docs/verify.md (Fokker–Planck on a grid) for how
the operator uses ``log π̄`` to make its discrete stationary state exact.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .grid import Grid

__all__ = ["Equilibrium", "grid_equilibrium", "CURL_TOL"]

#: A drift counts as a gradient on the grid when every plaquette sum of line exponents is at most this
#: fraction of the sum of their magnitudes (quadrature error of a smooth gradient field: ~1e-15).
CURL_TOL = 1e-9
# Gauss–Legendre nodes: (per line segment, per cell axis) by dimension. Line integrals of a smooth drift
# over one cell are exact to round-off with 8 nodes while the cell is narrower than the drift's scale;
# 3-D grids use fewer nodes (cost: nodes^3 per cell) and are exact to quadrature accuracy.
_NODES = {1: (10, 10), 2: (8, 8), 3: (8, 6)}
_CHUNK = 1 << 19


@dataclass
class Equilibrium:
    """The discrete equilibrium of a gradient-type drift on a grid.

    Attributes:
        log_pi: ``log π̄_c`` (grid shape), the log cell averages of ``exp(φ)`` up to a global constant.
        exponents: per axis k, ``A_k`` (grid shape): ``φ(x_{c+e_k}) − φ(x_c)`` (the last entry along a
            non-periodic axis is unused).
        curl: the largest relative plaquette sum found (0 in 1-D without periodic wrap).
    """

    log_pi: np.ndarray
    exponents: list[np.ndarray]
    curl: float

    def density(self, cell_volume: float) -> np.ndarray:
        """``π̄`` normalised to unit mass, float64 array of the grid shape."""
        q = np.exp(self.log_pi - self.log_pi.max())
        return q / (q.sum() * cell_volume)


Coefficients = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


def _evaluate(coef: Coefficients, pts: np.ndarray, d: int) -> tuple[np.ndarray, np.ndarray]:
    """Drift (M, d) and the diagonal of D (M, d), in chunks; raises if D has off-diagonal entries."""
    fs, ds = [], []
    for i in range(0, pts.shape[0], _CHUNK):
        f, D = coef(pts[i:i + _CHUNK])
        diag = np.diagonal(D, axis1=-2, axis2=-1)
        if d > 1 and np.any(D - diag[..., None] * np.eye(d)):
            raise _NotBalanced("the diffusion matrix has off-diagonal entries")
        fs.append(f)
        ds.append(diag)
    return np.concatenate(fs), np.concatenate(ds)


class _NotBalanced(Exception):
    """Internal: the drift/diffusion pair has no gradient-type equilibrium on this grid."""


def _line_integrals(coef: Coefficients, starts: np.ndarray, lengths: np.ndarray, axis: int, d: int,
                    m: int) -> np.ndarray:
    """``∫ w_axis`` from each start (M, d) along ``axis`` over ``lengths`` (M,) (signed)."""
    xg, wg = np.polynomial.legendre.leggauss(m)
    t = 0.5 * (xg + 1.0)
    # Nodes, then the start and end points (for the exact log D part).
    offs = np.concatenate([t, [0.0, 1.0]])
    pts = np.repeat(starts[:, None, :], offs.size, axis=1)
    pts[:, :, axis] += lengths[:, None] * offs[None, :]
    f, dd = _evaluate(coef, pts.reshape(-1, d), d)
    fk = f[:, axis].reshape(-1, offs.size)
    dk = dd[:, axis].reshape(-1, offs.size)
    if not np.all(dk > 0):
        raise _NotBalanced("the diffusion vanishes somewhere on the grid")
    ratio = 2.0 * fk[:, :m] / dk[:, :m]
    return 0.5 * lengths * (ratio @ wg) - np.log(dk[:, m + 1] / dk[:, m])


def _shift(a: np.ndarray, axis: int) -> np.ndarray:
    """``a[c + e_axis]`` (wrapping; the caller masks the wrapped entries of non-periodic axes)."""
    return np.roll(a, -1, axis=axis)


def grid_equilibrium(coef: Coefficients, grid: Grid, periodic: bool) -> Equilibrium | None:
    """The equilibrium ``log π̄`` of the drift/diffusion ``coef(points) -> (f, D)`` on ``grid``, or None.

    None when the diffusion is not diagonal, vanishes somewhere, or the field ``w`` is not a gradient
    (discrete curl above :data:`CURL_TOL`, or a non-zero total exponent around a periodic axis).
    """
    try:
        return _equilibrium(coef, grid, periodic)
    except _NotBalanced:
        return None


def _equilibrium(coef: Coefficients, grid: Grid, periodic: bool) -> Equilibrium | None:
    d, shape, hs = grid.ndim, grid.shape, grid.spacing
    m_line, m_cell = _NODES.get(d, _NODES[3])
    mesh = np.meshgrid(*[grid.centers(k) for k in range(d)], indexing="ij")
    centres = np.stack([c.reshape(-1) for c in mesh], -1)
    # 1. Line exponents between neighbouring centres.
    expo = []
    for k in range(d):
        a = _line_integrals(coef, centres, np.full(centres.shape[0], hs[k]), k, d, m_line).reshape(shape)
        if not np.all(np.isfinite(a)):
            raise _NotBalanced("non-finite line exponent")
        expo.append(a)
    valid = []
    for k in range(d):
        v = np.ones(shape, bool)
        if not periodic:
            idx = [slice(None)] * d
            idx[k] = -1
            v[tuple(idx)] = False
        valid.append(v)
    # 2. Discrete curl: A_j(c) + A_k(c + e_j) − A_j(c + e_k) − A_k(c) = 0 around every plaquette.
    curl = 0.0
    for j in range(d):
        for k in range(j + 1, d):
            s = expo[j] + _shift(expo[k], j) - _shift(expo[j], k) - expo[k]
            mag = np.abs(expo[j]) + np.abs(_shift(expo[k], j)) + np.abs(_shift(expo[j], k)) + np.abs(expo[k])
            ok = valid[j] & valid[k]
            if ok.any():
                rel = np.abs(s[ok]) / np.maximum(mag[ok], 1e-300)
                curl = max(curl, float(rel.max()))
    if periodic:
        for k in range(d):
            tot = expo[k].sum(axis=k)
            mag = np.abs(expo[k]).sum(axis=k)
            curl = max(curl, float((np.abs(tot) / np.maximum(mag, 1e-300)).max()))
    if curl > CURL_TOL:
        return None
    # 3a. φ at the centres: sum exponents along axis 0 on the first line, then axis 1 from there, ...
    phi = np.zeros(shape)
    for k in range(d):
        idx = [0] * d
        for j in range(k):
            idx[j] = slice(None)
        idx[k] = slice(0, shape[k] - 1)
        steps = expo[k][tuple(idx)]
        line = np.concatenate([np.zeros(steps.shape[:k] + (1,)), np.cumsum(steps, axis=k)], axis=k)
        base = [slice(None)] * k + [slice(0, 1)] + [0] * (d - k - 1)
        lead = phi[tuple(base)]  # φ on the sub-grid with axes > k at index 0, axis k at 0
        sel = [slice(None)] * (k + 1) + [0] * (d - k - 1)
        phi[tuple(sel)] = lead + line
    # 3b. λ_c = log ⟨exp(φ − φ(x_c))⟩ over the cell, nodes^d Gauss–Legendre points, axis-parallel paths.
    per_cell = m_cell ** d * (m_line + 2) * d
    step = max(1, (4 * _CHUNK) // per_cell)
    lam = np.concatenate([_cell_log_mean(coef, centres[i:i + step], hs, m_line, m_cell)
                          for i in range(0, centres.shape[0], step)])
    log_pi = phi + lam.reshape(shape)
    if not np.all(np.isfinite(log_pi)):
        raise _NotBalanced("non-finite equilibrium")
    return Equilibrium(log_pi=log_pi, exponents=expo, curl=curl)


def _cell_log_mean(coef: Coefficients, centres: np.ndarray, hs: tuple[float, ...], m_line: int,
                   m_cell: int) -> np.ndarray:
    """``log ⟨exp(φ − φ(x_c))⟩_c`` for cells centred at ``centres`` (M, d)."""
    n, d = centres.shape
    xg, wg = np.polynomial.legendre.leggauss(m_cell)
    rel = np.zeros((n, 1))
    starts = centres[:, None, :].copy()  # (cells, nodes so far, d)
    for k in range(d):
        offs = np.tile(0.5 * hs[k] * xg, starts.shape[1])  # node q*m_cell + i: offset of the i-th node
        st = np.repeat(starts, m_cell, axis=1)  # (cells, q * m_cell, d)
        ln = np.broadcast_to(offs, (n, offs.size)).reshape(-1)
        seg = _line_integrals(coef, st.reshape(-1, d), ln, k, d, m_line).reshape(n, -1)
        rel = np.repeat(rel, m_cell, axis=1) + seg
        st[:, :, k] += offs[None, :]
        starts = st
    w = np.ones(1)
    for _ in range(d):
        w = np.multiply.outer(w, 0.5 * wg).reshape(-1)
    top = rel.max(axis=1, keepdims=True)
    return top[:, 0] + np.log(np.exp(rel - top) @ w)
