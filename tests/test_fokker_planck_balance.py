"""Fokker–Planck grid solver: well-balanced operators (exact discrete equilibrium), the time-integrator
choice (dense / rational / Krylov, steady-state detection) and 3-D grids."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import ndtr

import sdeflow as sf
from sdeflow.fokker_planck import (
    Grid1D,
    Grid2D,
    Grid3D,
    expm_rational,
    fokker_planck_operator,
    solve_fokker_planck,
    stationary_density,
)

F64 = torch.float64


class Potential(sf.SDE):
    """dX = −∇U dt + σ dW with U = a4 Σx⁴ + a2 Σx² + Σ c_k x_k + b Σ sin(ω x_k + φ) (+ e x_0 x_1 in 2-D+)."""

    noise_type, sde_type, additive = "diagonal", "ito", True

    def __init__(self, a4, a2, c, b, omega, phase, sigma, e=0.0):
        super().__init__()
        self.a4, self.a2, self.c, self.b, self.omega, self.phase, self.sigma, self.e = (
            a4, a2, c, b, omega, phase, sigma, e)

    def potential(self, x):
        c = torch.as_tensor(self.c, dtype=x.dtype)[: x.shape[-1]]
        u = (self.a4 * x**4 + self.a2 * x**2 + c * x + self.b * torch.sin(self.omega * x + self.phase)).sum(-1)
        if x.shape[-1] > 1:
            u = u + self.e * x[..., 0] * x[..., 1]
        return u

    def drift(self, t, x):
        c = torch.as_tensor(self.c, dtype=x.dtype)[: x.shape[-1]]
        g = 4 * self.a4 * x**3 + 2 * self.a2 * x + c + self.b * self.omega * torch.cos(self.omega * x + self.phase)
        if x.shape[-1] > 1:
            g = g + self.e * torch.nn.functional.pad(x[..., [1, 0]], (0, x.shape[-1] - 2))
        return -g

    def diffusion(self, t, x):
        return torch.full_like(x, self.sigma)


def _exact_cells(sde, grid):
    """Exact cell averages of exp(−2U/σ²)/Z from the potential itself (12-point Gauss–Legendre per axis
    and cell: (h/width)^24-accurate, round-off here), independent of the solver's path integrals of f."""
    q = grid.cell_average(lambda x: torch.exp(-2 * sde.potential(x) / sde.sigma**2), nodes=12 if grid.ndim < 3 else 8)
    return q / grid.mass(q)


potentials = st.builds(
    Potential,
    a4=st.floats(0.1, 0.5), a2=st.floats(-1.0, 0.5), c=st.lists(st.floats(-0.5, 0.5), min_size=3, max_size=3),
    b=st.floats(0.0, 0.3), omega=st.floats(1.0, 5.0), phase=st.floats(0.0, 6.283), sigma=st.floats(0.7, 1.5),
    e=st.floats(-0.3, 0.3),
)


# -- exact discrete equilibrium ---------------------------------------------------------------------
@settings(max_examples=15)
@given(sde=potentials, n=st.sampled_from([100, 200, 400, 800]))
def test_balanced_stationary_density_is_exact_1d(sde, n):
    # The balanced operator's null vector is the exact cell average of exp(−2U/σ²)/Z: to round-off at any
    # resolution (the unbalanced fourth-order scheme is off by ~1e-4 at 100 cells, ~1e-8 at 800).
    grid = Grid1D(-3.0, 3.0, n)
    exact = _exact_cells(sde, grid)
    op = fokker_planck_operator(sde, grid, balanced=True)
    assert op.balanced
    pi = torch.as_tensor(op.equilibrium(grid))
    assert float(grid.l1(pi, exact)) < 1e-12
    # It really is the operator's null vector (relative to the operator's scale) ...
    resid = np.abs(op.matrix @ pi.numpy()).sum() * grid.cell_volume / abs(op.matrix).sum(0).max()
    assert resid < 1e-13
    # ... and stationary_density (default balanced=None) returns it.
    assert float(grid.l1(stationary_density(sde, grid), exact)) < 1e-12


@settings(max_examples=6)
@given(sde=potentials)
def test_balanced_stationary_density_is_exact_2d(sde):
    grid = Grid2D((-2.5, 2.5, 28), (-2.5, 2.5, 24))
    exact = _exact_cells(sde, grid)
    op = fokker_planck_operator(sde, grid)  # balanced=None: detected
    assert op.balanced
    assert float(grid.l1(torch.as_tensor(op.equilibrium(grid)), exact)) < 1e-12
    # The direct null-space solve of the balanced operator gives the same density.
    from sdeflow.fokker_planck.solver import _null_vector

    op.log_equilibrium = None  # force the sparse solve
    assert float(grid.l1(torch.as_tensor(_null_vector(op, grid)), exact)) < 1e-11


def test_balanced_stationary_density_3d():
    # Fewer quadrature nodes in 3-D (cost nodes^3 per cell): exact to quadrature accuracy, here 6.5e-11 on
    # coarse cells (h = 0.42, the exponent varies by up to ~10 across a tail cell); the unbalanced scheme: ~1e-3.
    sde = Potential(0.25, -0.3, [0.2, -0.1, 0.1], 0.1, 3.0, 0.4, 1.0, e=0.2)
    grid = Grid3D((-2.5, 2.5, 12))
    assert float(grid.l1(stationary_density(sde, grid), _exact_cells(sde, grid))) < 3e-10


def test_non_gradient_drift_is_not_balanced():
    # A rotating drift has a non-zero discrete curl: not balanced automatically, and balanced=True refuses.
    A = -torch.tensor([[1.0, -1.0], [1.0, 1.0]], dtype=F64)
    rot = sf.LinearSDE(A, G=0.7 * torch.ones(2, dtype=F64))
    grid = Grid2D((-3.0, 3.0, 24))
    assert not fokker_planck_operator(rot, grid, balanced=None).balanced
    with pytest.raises(ValueError, match="gradient"):
        fokker_planck_operator(rot, grid, balanced=True)
    # A tilted periodic potential has no zero-flux equilibrium on the circle (its steady state carries a
    # current): not balanced; the untilted one is.
    grid1 = Grid1D(0.0, 2 * math.pi, 64)
    tilted = Potential(0.0, 0.0, [0.3, 0, 0], 1.0, 1.0, 0.0, 1.0)
    flat = Potential(0.0, 0.0, [0.0, 0, 0], 1.0, 1.0, 0.0, 1.0)
    assert not fokker_planck_operator(tilted, grid1, boundary="periodic").balanced
    op = fokker_planck_operator(flat, grid1, boundary="periodic")
    assert op.balanced
    assert float(grid1.l1(torch.as_tensor(op.equilibrium(grid1)), _exact_cells(flat, grid1))) < 1e-12


def test_balanced_keeps_fourth_order_and_sg_balanced_is_an_m_matrix():
    ou = sf.OrnsteinUhlenbeck(1.0, 0.0, 0.5)
    e = math.exp(-1.0)

    def err(n, **kw):
        grid = Grid1D(-3.0, 3.0, n)
        sol = solve_fokker_planck(ou, grid.gaussian(1.0, 0.05**2), grid, [0.0, 1.0], **kw)
        return sol.l1(grid.gaussian(e, 0.05**2 * e * e + 0.125 * (1 - e * e))), sol

    e300, sol = err(300, balanced=None)
    e600, _ = err(600, balanced=None)
    assert sol.balanced
    assert 12 < e300 / e600 < 20  # fourth order (2^4 = 16)
    # The well-balanced exponentially fitted flux: positive off-diagonals for any Péclet number.
    dw = Potential(0.25, -0.5, [0.3, 0, 0], 0.2, 4.0, 0.0, 0.4)
    op = fokker_planck_operator(dw, Grid1D(-3.0, 3.0, 60), scheme="sg", balanced=True)
    assert op.balanced and op.metzler and op.peclet > 2


# -- time integrators ---------------------------------------------------------------------------------
RIPPLED = Potential(0.25, -0.5, [0.3, 0, 0], 0.2, 4.0, 0.0, 1.0)  # U = x⁴/4 − x²/2 + 0.3x + 0.2 sin 4x


def test_methods_agree_and_are_reported():
    grid = Grid1D(-3.0, 3.0, 200)
    p0 = grid.gaussian(0.5, 0.3**2)
    ts = [0.0, 0.5, 3.0, 10.0]
    sols = {m: solve_fokker_planck(RIPPLED, p0, grid, ts, method=m) for m in ("dense", "rational", "krylov")}
    for m, sol in sols.items():
        assert sol.stats.method == m and "requested" in sol.stats.reason
        assert float((sol.mass - sol.mass[0]).abs().max()) < 1e-12
    # Exact exponentials of the same operator: they agree far below the scheme's error (~1e-6 here).
    for m in ("rational", "krylov"):
        assert float(grid.l1(sols[m].p, sols["dense"].p).max()) < 1e-10
    # "auto": dense for a small grid, rational for a stiff horizon, polynomial Krylov for a short one.
    assert solve_fokker_planck(RIPPLED, p0, grid, [0.0, 1.0]).stats.method == "dense"
    big = Grid1D(-3.0, 3.0, 800)
    assert solve_fokker_planck(RIPPLED, big.gaussian(0.5, 0.09), big, [0.0, 60.0]).stats.method == "rational"
    assert solve_fokker_planck(RIPPLED, big.gaussian(0.5, 0.09), big, [0.0, 1e-4]).stats.method == "krylov"
    with pytest.raises(ValueError, match="method"):
        solve_fokker_planck(RIPPLED, p0, grid, ts, method="expm")


def test_long_time_solve_matches_stationary_solve():
    # Double well to t = 60 (the problem): the balanced long-time solution converges to the exact
    # equilibrium; at t = 400 the slow barrier mode (rate ~0.3) is below round-off and the steady state is
    # detected, the remaining outputs being the stationary vector itself.
    grid = Grid1D(-3.0, 3.0, 400)
    exact = _exact_cells(RIPPLED, grid)
    sol = solve_fokker_planck(RIPPLED, grid.gaussian(0.5, 0.3**2), grid, [0.0, 60.0, 400.0, 800.0], balanced=None)
    assert sol.balanced and sol.stats.method == "rational"
    assert sol.l1(exact, 1) < 1e-9
    assert sol.l1(exact, 3) < 1e-12
    assert sol.stats.steady_state == 400.0
    assert float((sol.mass - sol.mass[0]).abs().max()) < 1e-12
    assert float(sol.negative_mass.max()) < 1e-14
    # The unbalanced fourth-order scheme ends at its own (slightly wrong) null vector: the same vector that
    # the direct solve of its operator gives.
    plain = solve_fokker_planck(RIPPLED, grid.gaussian(0.5, 0.3**2), grid, [0.0, 400.0])
    direct = stationary_density(RIPPLED, grid, balanced=False)
    assert float(grid.l1(plain.final, direct)) < 1e-11
    assert 1e-8 < float(grid.l1(direct, exact)) < 1e-5


def test_expm_rational_against_dense():
    import scipy.linalg as sl

    grid = Grid1D(-3.0, 3.0, 120)
    L = fokker_planck_operator(RIPPLED, grid).matrix
    from scipy.sparse import identity
    from scipy.sparse.linalg import splu

    v = grid.gaussian(-0.5, 0.04).reshape(-1)
    for t in (0.01, 1.0, 50.0):
        solve = splu((identity(120) - (t / 10) * L).tocsc()).solve
        out, st = expm_rational(lambda x: torch.from_numpy(L @ x.numpy()),
                                lambda x, s=solve: torch.from_numpy(s(x.numpy())), t / 10, v, t, conservative=True)
        ref = sl.expm(t * L.toarray()) @ v.numpy()
        assert np.abs(out.numpy() - ref).max() < 1e-10 * np.abs(ref).max()
        assert abs(float(out.sum() - v.sum())) < 1e-12 * float(v.sum())
        assert st.matvecs < 60


# -- 3-D ----------------------------------------------------------------------------------------------
def _ou_3d(n, s0=0.45, box=3.0, scheme="auto"):
    # Anisotropic noise, rotating drift (the symmetric part of B is negative definite, so it is stable).
    B = torch.tensor([[-1.0, 1.0, 0.0], [-1.0, -1.0, 0.5], [0.0, -0.5, -1.5]], dtype=F64)
    sde = sf.LinearSDE(B, G=torch.tensor([0.6, 0.8, 0.5], dtype=F64))
    grid = Grid3D((-box, box, n))
    m0 = [0.6, 0.0, -0.4]
    sol = solve_fokker_planck(sde, grid.gaussian(m0, s0**2), grid, [0.0, 0.5], scheme=scheme)
    mean, cov = sde.propagate_gaussian(m0, s0**2 * torch.eye(3, dtype=F64), 0.5)
    return sol, grid.gaussian(mean, cov, nodes=4)


def test_ou_3d_order_mass_positivity():
    # Fourth order in 3-D (fv4 everywhere; "auto" uses SG on faces with cell Péclet > 2, which on these coarse
    # grids include bulk faces along the weakly diffusing z axis, so its rate is lower until h is smaller).
    sol16, ex16 = _ou_3d(16, scheme="fv4")
    sol32, ex32 = _ou_3d(32, scheme="fv4")
    e16, e32 = sol16.l1(ex16), sol32.l1(ex32)
    assert e32 < 1e-2  # measured 5.7e-3
    assert e16 / e32 > 10  # fourth order: 16 (measured 14.4)
    auto, ex = _ou_3d(32)
    assert auto.p.shape == (2, 32, 32, 32) and not auto.balanced and auto.scheme == "fv4+sg"
    assert auto.stats.method == "krylov"
    assert auto.l1(ex) < 5e-2
    for sol in (sol16, sol32, auto):
        assert float((sol.mass - sol.mass[0]).abs().max()) < 1e-12
    # Positivity: fv4 is not an M-matrix, so undershoot is only small, and shrinks fast with h: the default
    # measured 1.3e-9 on 24^3, 1.3e-12 on 32^3, 1e-26 on 64^3 (benchmark); fv4 alone on 16^3 undershoots
    # visibly, which shows the check can fail.
    assert float(auto.negative_mass.max()) < 1e-11
    assert float(sol16.negative_mass.max()) > 1e-6


def test_grid3d():
    g = Grid3D((-1.0, 1.0, 8), (0.0, 2.0, 6), (-2.0, 2.0, 4))
    assert g.shape == (8, 6, 4) and g.size == 192 and g.ndim == 3 and g.points().shape == (192, 3)
    assert Grid3D((0.0, 1.0, 5)).shape == (5, 5, 5)
    q = g.gaussian([0.0, 1.0, 0.0], [0.3, 0.2, 0.5])
    inside = math.prod(ndtr(b / math.sqrt(v)) - ndtr(-b / math.sqrt(v)) for b, v in ((1.0, 0.3), (1.0, 0.2), (2.0, 0.5)))
    assert abs(float(g.mass(q)) - inside) < 1e-14
    with pytest.raises(TypeError, match="triple"):
        Grid3D((0.0, 1.0))
    with pytest.raises(ValueError, match="at least 4"):
        Grid3D((0.0, 1.0, 3))
