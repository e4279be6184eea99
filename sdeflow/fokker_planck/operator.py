"""Finite-volume discretisations of the Fokker–Planck operator on a uniform grid.

The density is stored as cell averages ``p̄``; every scheme is conservative: it writes
``dp̄/dt = −Σ_k (F_k(face+) − F_k(face−)) / h_k`` with the face-averaged probability flux

    F_k = f_k p − ½ Σ_l ∂_l (D_kl p),        D = G Gᵀ,

so the operator's columns sum to zero (mass is conserved exactly, up to round-off) except for what
leaves through an absorbing boundary. Schemes:

``"fv4"``
    Fourth order. Face values from cell averages with the stencils ``(−1, 7, 7, −1)/12`` (value)
    and ``(1, −15, 15, −1)/(12h)`` (derivative); products of a coefficient and the density are
    averaged with their second-order covariance corrections (``⟨a p⟩ = ⟨a⟩⟨p⟩ + (h²/12) ∂a ∂p``),
    cross-diffusion terms use fourth-order corner values. Within two cells of a non-periodic
    boundary it falls back to ``"sg"``. Not an M-matrix, so positivity is not guaranteed by
    construction (see :func:`sdeflow.fokker_planck.solve_fokker_planck`, ``positivity=``).
``"sg"``
    Scharfetter–Gummel (exponentially fitted) two-point fluxes
    ``F = (d/h) [B(−P) p_L − B(P) p_R]`` with ``B(z) = z/(e^z − 1)``, ``d = D_kk/2``, cell Péclet
    number ``P = a h / d`` and effective drift ``a = f_k − ½ ∂_k D_kk``. Second order, upwind as
    ``d → 0``; the operator is an M-matrix (non-negative off-diagonals) whenever ``D`` is diagonal,
    so ``exp(t L) p ≥ 0`` for every Péclet number.
``"auto"`` (the default)
    Face by face: ``"fv4"`` where the cell Péclet number ``|a| h / d`` is at most 2, ``"sg"`` where
    it is larger (e.g. far out in the tails of a confining drift, or everywhere for a
    drift-dominated problem). Fluxes are per face, so the mixture is still conservative.
``"central"``
    The plain second-order central flux ``F = f (p_L + p_R)/2 − ½ (D_R p_R − D_L p_L)/h``; the
    baseline the other two are measured against.

Boundaries: ``"reflecting"`` (zero flux through the box faces), ``"absorbing"`` (``p = 0`` outside;
mass leaves), ``"periodic"`` (coefficients should be periodic too).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch

from ..sde.base import SDE, as_sde
from ..sde.stratonovich import to_ito
from .balance import grid_equilibrium
from .grid import Grid

__all__ = ["FPOperator", "fokker_planck_operator", "SCHEMES", "BOUNDARIES", "evaluate_coefficients",
           "coefficients_change"]

SCHEMES = ("auto", "fv4", "sg", "central")
BOUNDARIES = ("reflecting", "absorbing", "periodic")
#: ``scheme="auto"`` uses the fourth-order flux on faces whose cell Péclet number is at most this and the
#: Scharfetter–Gummel flux on the others (centred fluxes oscillate above 2; SG stays positive).
AUTO_PECLET = 2.0


@dataclass
class FPOperator:
    """The assembled generator ``L`` of ``dp̄/dt = L p̄`` on a grid (scipy CSR, float64, size × size).

    Attributes:
        matrix: the sparse operator.
        scheme: the scheme used: ``"fv4"``, ``"sg"``, ``"central"``, or ``"fv4+sg"`` when ``"auto"``
            mixed them face by face.
        boundary: the boundary condition.
        peclet: the largest cell Péclet number ``|a| h / (D_kk/2)`` over interior faces.
        metzler: True when every off-diagonal entry is ≥ 0 (then ``exp(tL)`` preserves positivity).
        balanced: True when the operator was made well balanced (see ``balanced=`` of
            :func:`fokker_planck_operator`): ``L π̄ = 0`` for the exact equilibrium cell averages ``π̄``.
        log_equilibrium: ``log π̄`` (grid shape, up to a constant) when balanced, else None.
    """

    matrix: sp.csr_matrix
    scheme: str
    boundary: str
    peclet: float
    metzler: bool
    balanced: bool = False
    log_equilibrium: np.ndarray | None = None

    def equilibrium(self, grid: Grid) -> np.ndarray | None:
        """The exact discrete stationary density (unit mass, grid shape) of a balanced operator, else None."""
        if self.log_equilibrium is None:
            return None
        q = np.exp(self.log_equilibrium - self.log_equilibrium.max())
        return q / (q.sum() * grid.cell_volume)


# -- coefficients ------------------------------------------------------------------------------------
def _device_of(sde: SDE) -> torch.device:
    for t in list(sde.parameters()) + list(sde.buffers()):
        return t.device
    return torch.device("cpu")


def evaluate_coefficients(sde: object, t: float, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Itô drift ``f`` (M, d) and diffusion matrix ``D = G Gᵀ`` (M, d, d) at ``points`` (M, d), time ``t``.

    A Stratonovich SDE is converted to its Itô form first. Raises ValueError if the SDE does not
    accept states of shape (M, d) or returns non-finite values.
    """
    sde = as_sde(sde)
    if sde.sde_type == "stratonovich" and not sde.is_additive:
        sde = to_ito(sde)
    dev = _device_of(sde)
    x = torch.as_tensor(points, dtype=torch.float64, device=dev)
    m, d = x.shape
    tt = torch.as_tensor(float(t), dtype=torch.float64, device=dev)
    try:
        with torch.no_grad():
            f = sde.drift(tt, x)
        g = sde.diffusion(tt, x)
    except (RuntimeError, ValueError, IndexError) as err:
        raise ValueError(
            f"the SDE could not be evaluated on states of shape ({m}, {d}); a {d}-D grid needs an SDE whose "
            f"state is a vector of {d} coordinates ({err})."
        ) from err
    f = f.detach().to(torch.float64).expand(m, d)
    g = g.detach().to(torch.float64)
    nt = sde.noise_type
    if nt in ("diagonal", "scalar"):
        g = g.expand(m, d)
        D = torch.diag_embed(g * g) if nt == "diagonal" else g.unsqueeze(-1) * g.unsqueeze(-2)
    else:
        if g.dim() == 2:
            g = g.expand(m, *g.shape)
        if g.dim() != 3 or g.shape[1] != d:
            raise ValueError(f"diffusion returned shape {tuple(g.shape)} for states ({m}, {d}); "
                             f"noise_type={nt!r} needs ({m}, {d}, m).")
        D = g @ g.transpose(-1, -2)
    f_np, d_np = f.cpu().numpy(), D.cpu().numpy()
    if not (np.isfinite(f_np).all() and np.isfinite(d_np).all()):
        raise ValueError(f"drift or diffusion is NaN or infinite somewhere on the grid at t={t:g}; "
                         f"shrink the grid to where the SDE is defined.")
    return f_np, d_np


# -- 1-D stencils ------------------------------------------------------------------------------------
def _csr(rows: list, cols: list, vals: list, shape: tuple[int, int]) -> sp.csr_matrix:
    if rows:
        r, c, v = np.concatenate(rows), np.concatenate(cols), np.concatenate(vals)
    else:
        r = c = np.zeros(0, dtype=np.int64)
        v = np.zeros(0)
    return sp.csr_matrix((v, (r, c)), shape=shape)


def _n_faces(n: int, bc: str) -> int:
    return n if bc == "periodic" else n + 1


def _face_stencil(n: int, bc: str, w4: tuple, w2: tuple, order: int) -> tuple[sp.csr_matrix, np.ndarray]:
    """Faces ← cells with the 4-point stencil ``w4`` on cells (f−2, f−1, f, f+1) or the 2-point ``w2``.

    Returns the matrix (interior and periodic faces only; non-periodic boundary rows are empty) and
    a boolean mask over faces: True where the requested order was used.
    """
    nf = _n_faces(n, bc)
    f = np.arange(nf)
    rows, cols, vals = [], [], []
    if bc == "periodic":
        full = np.ones(nf, bool) if order == 4 else np.zeros(nf, bool)
    else:
        full = (f >= 2) & (f <= n - 2) if order == 4 else np.zeros(nf, bool)
    interior = np.ones(nf, bool) if bc == "periodic" else (f >= 1) & (f <= n - 1)
    lo = interior & ~full
    for off, w in zip((-2, -1, 0, 1), w4, strict=True):
        idx = f[full]
        rows.append(idx)
        cols.append((idx + off) % n)
        vals.append(np.full(idx.shape, w))
    for off, w in zip((-1, 0), w2, strict=True):
        idx = f[lo]
        rows.append(idx)
        cols.append((idx + off) % n)
        vals.append(np.full(idx.shape, w))
    return _csr(rows, cols, vals, (nf, n)), full


def _face_value(n: int, bc: str, order: int, *, boundary_value: bool) -> tuple[sp.csr_matrix, np.ndarray]:
    """Point value of p at faces from cell averages (order 4 or 2).

    With ``boundary_value`` the non-periodic boundary faces get an extrapolated value (the adjacent
    cell's average for a reflecting wall, zero for an absorbing one), used for corner values.
    """
    mat, full = _face_stencil(n, bc, (-1 / 12, 7 / 12, 7 / 12, -1 / 12), (0.5, 0.5), order)
    if boundary_value and bc == "reflecting":
        mat = mat.tolil()
        mat[0, 0] = 1.0
        mat[n, n - 1] = 1.0
        mat = mat.tocsr()
    return mat, full


def _face_grad(n: int, h: float, bc: str, order: int) -> sp.csr_matrix:
    """∂p/∂x at faces from cell averages (order 4 or 2); absorbing walls use ``p = 0`` at the wall."""
    mat, _ = _face_stencil(n, bc, (1 / (12 * h), -15 / (12 * h), 15 / (12 * h), -1 / (12 * h)),
                           (-1 / h, 1 / h), order)
    if bc == "absorbing":
        mat = mat.tolil()
        mat[0, 0] = 2.0 / h
        mat[n, n - 1] = -2.0 / h
        mat = mat.tocsr()
    return mat


def _div(n: int, h: float, bc: str) -> sp.csr_matrix:
    """Cells ← faces: ``(F_{i+1} − F_i)/h`` (face i is the left face of cell i)."""
    nf = _n_faces(n, bc)
    i = np.arange(n)
    return _csr([i, i], [(i + 1) % nf, i], [np.full(n, 1 / h), np.full(n, -1 / h)], (n, nf))


def _cell_grad(n: int, h: float, bc: str) -> sp.csr_matrix:
    """Central ∂/∂x of cell (or transverse-face) values; one-sided at non-periodic ends."""
    i = np.arange(n)
    if bc == "periodic":
        return _csr([i, i], [(i + 1) % n, (i - 1) % n], [np.full(n, 0.5 / h), np.full(n, -0.5 / h)], (n, n))
    mid = i[1:-1]
    rows = [mid, mid, np.array([0, 0]), np.array([n - 1, n - 1])]
    cols = [mid + 1, mid - 1, np.array([1, 0]), np.array([n - 1, n - 2])]
    vals = [np.full(mid.shape, 0.5 / h), np.full(mid.shape, -0.5 / h), np.array([1 / h, -1 / h]),
            np.array([1 / h, -1 / h])]
    return _csr(rows, cols, vals, (n, n))


def _kron_axis(op: sp.spmatrix, axis: int, shape: tuple[int, ...]) -> sp.csr_matrix:
    """``op`` applied along ``axis`` of a C-ordered array of ``shape`` (identity on the others)."""
    out = None
    for k, s in enumerate(shape):
        m = op if k == axis else sp.identity(s, format="csr")
        out = m if out is None else sp.kron(out, m, format="csr")
    return sp.csr_matrix(out)


def _replace(shape: tuple[int, ...], axis: int, value: int) -> tuple[int, ...]:
    return tuple(value if k == axis else s for k, s in enumerate(shape))


# -- coefficient arrays ---------------------------------------------------------------------------------
def _diff(a: np.ndarray, axis: int, h: float, periodic: bool) -> np.ndarray:
    if a.shape[axis] < 3:
        return np.zeros_like(a)
    if periodic:
        return (np.roll(a, -1, axis) - np.roll(a, 1, axis)) / (2 * h)
    return np.gradient(a, h, axis=axis, edge_order=2)


def _diff2(a: np.ndarray, axis: int, h: float, periodic: bool) -> np.ndarray:
    if a.shape[axis] < 3:
        return np.zeros_like(a)
    if periodic:
        return (np.roll(a, -1, axis) - 2 * a + np.roll(a, 1, axis)) / (h * h)
    out = np.empty_like(a)
    sl = [slice(None)] * a.ndim

    def at(s: slice | int) -> np.ndarray:
        sl[axis] = s
        return a[tuple(sl)]

    inner = (at(slice(2, None)) - 2 * at(slice(1, -1)) + at(slice(None, -2))) / (h * h)
    sl[axis] = slice(1, -1)
    out[tuple(sl)] = inner
    sl[axis] = slice(0, 1)
    out[tuple(sl)] = np.take(inner, [0], axis=axis)
    sl[axis] = slice(-1, None)
    out[tuple(sl)] = np.take(inner, [-1], axis=axis)
    return out


class _Coefficients:
    """Drift and diffusion sampled at cell centres, face centres and cell corners (2-D)."""

    def __init__(self, sde: SDE, grid: Grid, t: float, bc: str) -> None:
        self.grid, self.bc = grid, bc
        d = grid.ndim
        self.d = d
        centers = [grid.centers(k) for k in range(d)]
        pts, shapes, slices = [], {}, {}
        start = 0

        def add(key: str, coords: list[np.ndarray]) -> None:
            nonlocal start
            mesh = np.meshgrid(*coords, indexing="ij")
            block = np.stack([m.reshape(-1) for m in mesh], -1)
            pts.append(block)
            shapes[key] = mesh[0].shape
            slices[key] = slice(start, start + block.shape[0])
            start += block.shape[0]

        add("cell", centers)
        for k in range(d):
            add(f"face{k}", [self._faces(j) if j == k else centers[j] for j in range(d)])
        if d >= 2:
            for k in range(d):
                for j in range(k + 1, d):
                    add(f"corner{k}{j}", [self._faces(i) if i in (k, j) else centers[i] for i in range(d)])
        f, D = evaluate_coefficients(sde, t, np.concatenate(pts, 0))
        self.f = {key: f[s].reshape(shapes[key] + (d,)) for key, s in slices.items()}
        self.D = {key: D[s].reshape(shapes[key] + (d, d)) for key, s in slices.items()}

    def _faces(self, k: int) -> np.ndarray:
        e = self.grid.edges(k)
        return e[:-1] if self.bc == "periodic" else e


# -- assembly ----------------------------------------------------------------------------------------------
def _bernoulli(z: np.ndarray) -> np.ndarray:
    """``B(z) = z / (e^z − 1)`` with ``B(0) = 1``, accurate for small |z| and finite for large."""
    out = np.empty_like(z)
    small = np.abs(z) < 1e-6
    zs = z[small]
    out[small] = 1 - zs / 2 + zs * zs / 12
    zl = z[~small]
    with np.errstate(over="ignore"):
        out[~small] = zl / np.expm1(zl)
    return out


def _sg_coefficients(a: np.ndarray, dh: np.ndarray, h: float) -> tuple[np.ndarray, np.ndarray]:
    """Scharfetter–Gummel weights: flux ``cL p_L + cR p_R`` for drift ``a`` and diffusivity ``dh``."""
    cl = np.where(a > 0, a, 0.0)
    cr = np.where(a < 0, a, 0.0)
    pos = dh > 0
    if pos.any():
        P = a[pos] * h / dh[pos]
        cl_pos = dh[pos] / h * _bernoulli(-P)
        cr_pos = -dh[pos] / h * _bernoulli(P)
        cl[pos], cr[pos] = cl_pos, cr_pos
    return cl, cr


def _two_point(cl: np.ndarray, cr: np.ndarray, k: int, shape: tuple[int, ...], bc: str) -> sp.csr_matrix:
    """Faces(k) ← cells: ``cl[f] p[left cell] + cr[f] p[right cell]`` (interior/periodic faces)."""
    n = shape[k]
    fshape = _replace(shape, k, _n_faces(n, bc))
    idx = np.indices(fshape).reshape(len(shape), -1)
    fk = idx[k]
    valid = np.ones(fk.shape, bool) if bc == "periodic" else (fk >= 1) & (fk <= n - 1)
    rows = np.ravel_multi_index(tuple(idx), fshape)[valid]
    left, right = idx.copy(), idx.copy()
    left[k] = (fk - 1) % n
    right[k] = fk % n
    cl_flat, cr_flat = cl.reshape(-1)[valid], cr.reshape(-1)[valid]
    lc = np.ravel_multi_index(tuple(left[:, valid]), shape)
    rc = np.ravel_multi_index(tuple(right[:, valid]), shape)
    return _csr([rows, rows], [lc, rc], [cl_flat, cr_flat], (int(np.prod(fshape)), int(np.prod(shape))))


def _boundary_rows(k: int, shape: tuple[int, ...], bc: str) -> np.ndarray:
    """Flat indices of the non-periodic boundary faces of axis k (faces 0 and n_k)."""
    fshape = _replace(shape, k, _n_faces(shape[k], bc))
    fk = np.indices(fshape)[k].reshape(-1)
    return np.flatnonzero((fk == 0) | (fk == shape[k]))


def _absorbing_faces(coef: _Coefficients, k: int, shape: tuple[int, ...]) -> sp.csr_matrix:
    """SG flux through absorbing walls with ``p = 0`` half a cell outside the boundary cell."""
    h = coef.grid.spacing[k]
    n = shape[k]
    fshape = _replace(shape, k, n + 1)
    a = coef.f[f"face{k}"][..., k]
    dh = 0.5 * coef.D[f"face{k}"][..., k, k]
    cl, cr = _sg_coefficients(a, dh, 0.5 * h)
    idx = np.indices(fshape).reshape(len(shape), -1)
    fk = idx[k]
    rows, cols, vals = [], [], []
    for wall, cell, c in ((0, 0, cr), (n, n - 1, cl)):
        sel = fk == wall
        cidx = idx[:, sel].copy()
        cidx[k] = cell
        rows.append(np.ravel_multi_index(tuple(idx[:, sel]), fshape))
        cols.append(np.ravel_multi_index(tuple(cidx), shape))
        vals.append(c.reshape(-1)[sel])
    return _csr(rows, cols, vals, (int(np.prod(fshape)), int(np.prod(shape))))


def _cross_terms(coef: _Coefficients, k: int, order: int) -> sp.csr_matrix | None:
    """Face(k) average of ``½ Σ_{j≠k} ∂_j (D_kj p)`` from corner values (None when D_kj ≡ 0)."""
    grid, bc = coef.grid, coef.bc
    shape = grid.shape
    fshape = _replace(shape, k, _n_faces(shape[k], bc))
    total = None
    for j in range(grid.ndim):
        if j == k:
            continue
        key = f"corner{min(k, j)}{max(k, j)}"
        dkj = coef.D[key][..., k, j]
        if not np.any(dkj):
            continue
        vk, _ = _face_value(shape[k], bc, order, boundary_value=True)
        vj, _ = _face_value(shape[j], bc, order, boundary_value=True)
        to_faces = _kron_axis(vk, k, shape)
        to_corner = _kron_axis(vj, j, fshape) @ to_faces
        q = sp.diags(dkj.reshape(-1)) @ to_corner
        div_j = _kron_axis(_div(shape[j], grid.spacing[j], bc), j, _replace(fshape, j, _n_faces(shape[j], bc)))
        term = 0.5 * (div_j @ q)
        total = term if total is None else total + term
    return total


def _flux_sg(coef: _Coefficients, k: int, *, central: bool = False,
             exponent: np.ndarray | None = None) -> tuple[sp.csr_matrix, np.ndarray]:
    """Two-point (SG or central) face fluxes of axis k, and the cell Péclet number of every face.

    With ``exponent`` (face array ``log π̄_R − log π̄_L`` of an exact equilibrium), the SG flux uses it as
    its Péclet number: ``F = (d/h)[B(−P) p_L − B(P) p_R]`` vanishes exactly on ``π̄`` (well balanced).
    """
    grid, bc = coef.grid, coef.bc
    shape, h = grid.shape, grid.spacing[k]
    n = shape[k]
    a_face = coef.f[f"face{k}"][..., k]
    dkk_cell = coef.D["cell"][..., k, k]
    dh = 0.5 * coef.D[f"face{k}"][..., k, k]
    # D_kk in the cells left and right of every face (clamped at non-periodic walls).
    if bc == "periodic":
        left, right = np.roll(dkk_cell, 1, axis=k), dkk_cell
    else:
        left = np.concatenate([np.take(dkk_cell, [0], axis=k), dkk_cell], axis=k)
        right = np.concatenate([dkk_cell, np.take(dkk_cell, [n - 1], axis=k)], axis=k)
    interior = np.ones(a_face.shape, bool)
    if bc != "periodic":
        fk = np.indices(a_face.shape)[k]
        interior = (fk >= 1) & (fk <= n - 1)
    if central:
        cl = 0.5 * a_face + 0.5 * left / h
        cr = 0.5 * a_face - 0.5 * right / h
        peclet_a = a_face
    else:
        a_eff = a_face - 0.5 * (right - left) / h
        if exponent is None:
            cl, cr = _sg_coefficients(a_eff, dh, h)
        else:
            cl, cr = dh / h * _bernoulli(-exponent), -dh / h * _bernoulli(exponent)
        peclet_a = a_eff
    with np.errstate(divide="ignore", invalid="ignore"):
        pe = np.where(dh > 0, np.abs(peclet_a) * h / np.where(dh > 0, dh, 1.0),
                      np.where(peclet_a != 0, np.inf, 0.0))
    pe = np.where(interior, pe, 0.0)
    flux = _two_point(cl, cr, k, shape, bc)
    cross = _cross_terms(coef, k, 2)
    if cross is not None:
        flux = flux - cross
    if bc == "absorbing":
        flux = flux + _absorbing_faces(coef, k, shape)
    return flux, pe


def _flux_fv4(coef: _Coefficients, k: int) -> sp.csr_matrix:
    grid, bc = coef.grid, coef.bc
    shape, hs = grid.shape, grid.spacing
    d = grid.ndim
    periodic = bc == "periodic"
    fshape = _replace(shape, k, _n_faces(shape[k], bc))
    # Drift: ⟨f_k p⟩_face = ⟨f_k⟩⟨p⟩ + Σ_j (h_j²/12) ∂_j f_k ∂_j p over the transverse axes j, with
    # ⟨f_k⟩ = f_k(face centre) + Σ_j (h_j²/24) ∂_j² f_k.
    fk_face = coef.f[f"face{k}"][..., k]
    v4, _ = _face_value(shape[k], bc, 4, boundary_value=False)
    v2, _ = _face_value(shape[k], bc, 2, boundary_value=False)
    mean_f = fk_face.copy()
    corrections = []
    for j in range(d):
        if j == k:
            continue
        mean_f = mean_f + hs[j] ** 2 / 24 * _diff2(fk_face, j, hs[j], periodic)
        dfj = _diff(fk_face, j, hs[j], periodic)
        if np.any(dfj):
            grad_j = _kron_axis(_cell_grad(shape[j], hs[j], bc), j, fshape) @ _kron_axis(v2, k, shape)
            corrections.append(sp.diags((hs[j] ** 2 / 12 * dfj).reshape(-1)) @ grad_j)
    flux = sp.diags(mean_f.reshape(-1)) @ _kron_axis(v4, k, shape)
    for c in corrections:
        flux = flux + c
    # Diagonal diffusion: −½ ∂_k ⟨D_kk p⟩ with ⟨D p⟩ = ⟨D⟩ p̄ + Σ_l (h_l²/12) ∂_l D ∂_l p̄.
    dkk = coef.D["cell"][..., k, k]
    if np.ptp(dkk) == 0:
        mq = sp.identity(grid.size, format="csr") * float(dkk.reshape(-1)[0])
    else:
        mean_d = dkk.copy()
        for l in range(d):
            mean_d = mean_d + hs[l] ** 2 / 24 * _diff2(dkk, l, hs[l], periodic)
        mq = sp.diags(mean_d.reshape(-1))
        for l in range(d):
            dl = _diff(dkk, l, hs[l], periodic)
            if np.any(dl):
                mq = mq + sp.diags((hs[l] ** 2 / 12 * dl).reshape(-1)) @ _kron_axis(
                    _cell_grad(shape[l], hs[l], bc), l, shape)
    g4 = _kron_axis(_face_grad(shape[k], hs[k], bc, 4), k, shape)
    flux = flux - 0.5 * (g4 @ mq)
    cross = _cross_terms(coef, k, 4)
    if cross is not None:
        flux = flux - cross
    return sp.csr_matrix(flux)


def coefficients_change(sde: object, grid: Grid, t0: float, times: list[float], boundary: str) -> bool:
    """True when the drift or diffusion on the grid's cells and faces differs between ``t0`` and any of ``times``."""
    base = _Coefficients(as_sde(sde), grid, float(t0), boundary)
    for t in times:
        other = _Coefficients(as_sde(sde), grid, float(t), boundary)
        for key in base.f:
            if not (np.array_equal(base.f[key], other.f[key]) and np.array_equal(base.D[key], other.D[key])):
                return True
    return False


def _face_exponent(log_pi: np.ndarray, k: int, bc: str) -> np.ndarray:
    """``log π̄_R − log π̄_L`` on the faces of axis k (boundary faces of a non-periodic axis: 0)."""
    if bc == "periodic":
        return log_pi - np.roll(log_pi, 1, axis=k)
    pad = np.zeros(_replace(log_pi.shape, k, 1))
    return np.concatenate([pad, np.diff(log_pi, axis=k), pad], axis=k)


def _balance_rows(flux: sp.csr_matrix, rows: np.ndarray, log_pi: np.ndarray, k: int, bc: str) -> sp.csr_matrix:
    """Make the flux rows ``rows`` of axis k vanish on ``π̄``: ``F(p) − F(π̄) · ½(p_L/π̄_L + p_R/π̄_R)``.

    ``F(π̄)`` is the scheme's flux error on the exact equilibrium (order 4 for fv4), so the correction keeps
    the order and the flux form (mass conservation) and makes ``π̄`` an exact null vector. Evaluated with
    the exponents relative to the face's left cell, so no equilibrium value is ever formed on its own.
    """
    shape = log_pi.shape
    n = shape[k]
    fshape = _replace(shape, k, _n_faces(n, bc))
    idx = np.indices(fshape).reshape(len(shape), -1)
    left, right = idx.copy(), idx.copy()
    left[k] = (idx[k] - 1) % n
    right[k] = idx[k] % n
    lp = log_pi.reshape(-1)
    lc = np.ravel_multi_index(tuple(left), shape)
    rc = np.ravel_multi_index(tuple(right), shape)
    coo = flux.tocoo()
    rel = lp[coo.col] - lp[lc[coo.row]]
    ok_entry = rel < 700.0
    bad = np.bincount(coo.row[~ok_entry], minlength=flux.shape[0]) > 0
    r = np.bincount(coo.row[ok_entry], coo.data[ok_entry] * np.exp(rel[ok_entry]), minlength=flux.shape[0])
    sel = np.zeros(flux.shape[0], bool)
    sel[rows] = True
    sel &= ~bad
    f_rows = np.flatnonzero(sel)
    back = np.exp(np.clip(lp[lc[f_rows]] - lp[rc[f_rows]], -700.0, 700.0))
    corr = _csr([f_rows, f_rows], [lc[f_rows], rc[f_rows]], [-0.5 * r[f_rows], -0.5 * r[f_rows] * back], flux.shape)
    return sp.csr_matrix(flux + corr)


def fokker_planck_operator(
    sde: object,
    grid: Grid,
    t: float = 0.0,
    *,
    scheme: str = "auto",
    boundary: str = "reflecting",
    balanced: bool | None = None,
) -> FPOperator:
    """Assemble ``L`` with ``dp̄/dt = L p̄`` for ``sde`` on ``grid`` at time ``t``.

    Args:
        sde: any SDE whose state is a vector of ``grid.ndim`` coordinates (states (M, ndim)).
        grid: a :class:`~sdeflow.fokker_planck.Grid1D`, :class:`~sdeflow.fokker_planck.Grid2D` or
            :class:`~sdeflow.fokker_planck.Grid3D`.
        t: the time at which drift and diffusion are evaluated.
        scheme: ``"fv4"``, ``"sg"``, ``"central"`` or ``"auto"`` (face by face: ``"fv4"`` where the
            cell Péclet number is ≤ 2, ``"sg"`` elsewhere). See the module docstring.
        boundary: ``"reflecting"``, ``"absorbing"`` or ``"periodic"``.
        balanced: make the discrete stationary state exact for a gradient-type drift (diagonal ``D``,
            ``2f_k/D_kk − ∂_k log D_kk = ∂_k φ``; e.g. ``f = −∇U`` with constant ``σ``): the null vector of
            ``L`` is then the exact cell average of ``exp(φ)`` (``exp(−2U/σ²)``) to round-off, with the
            transient order unchanged. ``None`` (default): on for ``"auto"`` and ``"fv4"`` when the drift
            passes the discrete-curl test of :mod:`sdeflow.fokker_planck.balance` and the box is
            reflecting or periodic; ``True``: required (ValueError if the drift is not of gradient
            type; ``scheme="sg"`` then gives the exponentially fitted M-matrix scheme with exact
            equilibrium); ``False``: off.

    Returns:
        :class:`FPOperator` (a scipy CSR matrix of shape (grid.size, grid.size) and diagnostics).
    """
    if not isinstance(grid, Grid):
        raise TypeError(f"grid must be a sdeflow.fokker_planck.Grid1D, Grid2D or Grid3D; got {type(grid).__name__}.")
    if scheme not in SCHEMES:
        raise ValueError(f"scheme must be one of {SCHEMES}; got {scheme!r}.")
    if boundary not in BOUNDARIES:
        raise ValueError(f"boundary must be one of {BOUNDARIES}; got {boundary!r}.")
    if balanced is not None and not isinstance(balanced, bool):
        raise TypeError(f"balanced must be True, False or None (automatic); got {balanced!r}.")
    sde = as_sde(sde)
    coef = _Coefficients(sde, grid, float(t), boundary)
    eq = None
    # Automatic balancing only for the fourth-order schemes (their correction is of fourth order); "sg" and
    # "central" are the positivity-first and baseline schemes and are balanced only on request.
    want = balanced if balanced is not None else (scheme in ("auto", "fv4") and boundary != "absorbing")
    if want:
        diag_ok = all(not np.any(D - np.einsum("...ii->...i", D)[..., None] * np.eye(grid.ndim))
                      for D in coef.D.values())
        if diag_ok:
            eq = grid_equilibrium(lambda x: evaluate_coefficients(sde, float(t), x), grid,
                                  boundary == "periodic")
        if eq is None and balanced:
            raise ValueError("balanced=True needs a gradient-type drift with diagonal, non-vanishing diffusion "
                             "(2 f_k / D_kk - d_k log D_kk = d_k phi); this SDE fails the discrete-curl test on the "
                             "grid. Use balanced=None or False.")
    log_pi = None if eq is None else eq.log_pi
    shape = grid.shape
    matrix = sp.csr_matrix((grid.size, grid.size))
    peclet, n_fv4, n_faces = 0.0, 0, 0
    for k in range(grid.ndim):
        expo = None if log_pi is None or scheme == "central" else _face_exponent(log_pi, k, boundary)
        flux, pe = _flux_sg(coef, k, central=(scheme == "central"), exponent=expo)
        peclet = max(peclet, float(pe.max()) if pe.size else 0.0)
        fshape = _replace(shape, k, _n_faces(shape[k], boundary))
        keep = np.zeros(int(np.prod(fshape)), bool)
        if scheme in ("fv4", "auto"):
            # Fourth-order faces: all (fv4) or those with cell Péclet <= AUTO_PECLET (auto), and never within
            # two cells of a non-periodic wall, where the stencils do not fit; the rest keep the SG flux.
            eligible = np.ones(fshape, bool)
            if boundary != "periodic":
                fk = np.indices(fshape)[k]
                eligible &= (fk >= 2) & (fk <= shape[k] - 2)
            keep = eligible & (pe <= AUTO_PECLET) if scheme == "auto" else eligible
            keep = keep.reshape(-1)
            n_fv4 += int(keep.sum())
            n_faces += int(eligible.sum())
            if keep.any():
                w = keep.astype(np.float64)
                flux = sp.diags(w) @ _flux_fv4(coef, k) + sp.diags(1.0 - w) @ flux
        if log_pi is not None:
            # SG faces are balanced by their exponent; fv4 (and central) faces get the flux-error correction.
            rows = np.flatnonzero(keep)
            if scheme == "central":
                interior = np.ones(fshape, bool)
                if boundary != "periodic":
                    fk = np.indices(fshape)[k]
                    interior = (fk >= 1) & (fk <= shape[k] - 1)
                rows = np.flatnonzero(interior.reshape(-1))
            if rows.size:
                flux = _balance_rows(flux, rows, log_pi, k, boundary)
        if boundary == "reflecting":
            rows = _boundary_rows(k, shape, boundary)
            mask = np.ones(flux.shape[0])
            mask[rows] = 0.0
            flux = sp.diags(mask) @ flux
        div = _kron_axis(_div(shape[k], grid.spacing[k], boundary), k, fshape)
        matrix = matrix - div @ flux
    used = scheme
    if scheme == "auto":
        used = "sg" if n_fv4 == 0 else ("fv4" if n_fv4 == n_faces else "fv4+sg")
    matrix = sp.csr_matrix(matrix)
    matrix.sum_duplicates()
    matrix.eliminate_zeros()
    off = matrix - sp.diags(matrix.diagonal())
    metzler = bool(off.nnz == 0 or off.data.min() >= -1e-14 * max(1.0, abs(matrix.diagonal()).max()))
    return FPOperator(matrix=matrix, scheme=used, boundary=boundary, peclet=peclet, metzler=metzler,
                      balanced=eq is not None, log_equilibrium=log_pi)
