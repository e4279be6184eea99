"""Fokker–Planck: the residual of exact densities, the generator, the grid solver against exact solutions."""

import math

import numpy as np
import pytest
import torch
from scipy.special import ndtr

import sdeflow as sf
from sdeflow.fokker_planck import (
    EXACT_MAX_DIM,
    Grid1D,
    Grid2D,
    apply_adjoint,
    apply_generator,
    expm_krylov,
    fokker_planck_operator,
    fokker_planck_residual,
    solve_fokker_planck,
    stationary_density,
)
from sdeflow.verify.problems import DoubleWell, example_gibbs
from sdeflow.verify.stats import compare_to_density

F64 = torch.float64
GEN = torch.Generator().manual_seed(0)

# Exact densities give a relative residual at round-off (~1e-16); a density whose time is off by 5%
# gives ~1e-2. The bounds (1e-6 and 1e-3) sit many orders of magnitude from both.
EXACT_TOL = 1e-6
PERTURBED_MIN = 1e-3


def _gaussian_case(name):
    sde, t, d = {
        "bm": (sf.BrownianMotion(0.3, 0.7), 0.6, 3),
        "ou": (sf.OrnsteinUhlenbeck(1.5, 0.2, 0.6), 0.6, 3),
        "vp": (sf.VPSDE(), 0.4, 3),
        "subvp": (sf.SubVPSDE(), 0.4, 3),
        "ve": (sf.VESDE(), 0.4, 3),
        "edm": (sf.EDMSDE(), 2.0, 3),
        "gbm": (sf.GeometricBrownianMotion(0.2, 0.5), 0.7, 2),
        "linear": (sf.LinearSDE(torch.tensor([[-1.0, 2.0, 0.0], [-0.5, -1.0, 0.3], [0.0, 0.2, -0.4]]),
                                b=[0.1, 0.0, -0.2], G=torch.tensor([[1.0, 0.2], [0.3, 0.5], [0.0, 0.7]])), 0.8, 3),
    }[name]
    g = torch.Generator().manual_seed(1)
    x0 = torch.randn(64, d, generator=g, dtype=F64)
    if name == "gbm":
        x0 = x0.abs() + 0.5
    x = sde.sample_marginal(x0, t, generator=2)
    return sde, x0, t, x


@pytest.mark.parametrize("name", ["bm", "ou", "gbm", "vp", "subvp", "ve", "edm", "linear"])
def test_residual_of_closed_form_marginals_vanishes(name):
    sde, x0, t, x = _gaussian_case(name)
    res = fokker_planck_residual(sde, lambda tt, xx: sde.marginal_log_prob(xx, tt, x0), t, x)
    assert res.method == "exact"
    assert res.max_relative() < EXACT_TOL
    assert bool((res.scale > 0).all())
    bad = fokker_planck_residual(sde, lambda tt, xx: sde.marginal_log_prob(xx, 1.05 * tt, x0), t, x)
    assert bad.max_relative() > PERTURBED_MIN
    assert bad.max_relative() > 1e6 * res.max_relative()


@pytest.mark.parametrize("noise_type", ["general", "scalar"])
def test_residual_with_state_dependent_nondiagonal_noise(noise_type):
    # dx = (-½ D∇U + ½ ∇·D) dt + G(x) dW has stationary density exp(-U): this exercises the
    # c·s and ½ Σ ∂i∂j D_ij terms with an x-dependent, non-diagonal D = G Gᵀ.
    sde = example_gibbs(noise_type)
    x = torch.randn(64, 2, generator=GEN, dtype=F64)
    res = fokker_planck_residual(sde, lambda t, xx: -sde.potential(xx), 0.0, x)
    assert res.max_relative() < EXACT_TOL
    assert res.terms["half_div_c"].abs().max() > 1e-3  # the D-derivative terms really are non-zero here
    assert res.terms["c_dot_s"].abs().max() > 1e-3
    bad = fokker_planck_residual(sde, lambda t, xx: -1.05 * sde.potential(xx), 0.0, x)
    assert bad.max_relative() > PERTURBED_MIN


def test_residual_of_stratonovich_sde_uses_ito_drift():
    gbm = sf.GeometricBrownianMotion(0.3, 0.6)
    strat = sf.to_stratonovich(gbm)
    x0 = torch.full((32, 1), 1.5, dtype=F64)
    x = gbm.sample_marginal(x0, 0.5, generator=3)
    res = fokker_planck_residual(strat, lambda t, xx: gbm.marginal_log_prob(xx, t, x0), 0.5, x)
    assert res.max_relative() < EXACT_TOL


def test_double_well_stationary_density_residual():
    dw = DoubleWell(0.7)
    x = 1.5 * torch.randn(64, 1, generator=GEN, dtype=F64)
    res = fokker_planck_residual(dw, lambda t, xx: dw.stationary_log_prob(xx), 3.0, x)
    assert res.max_relative() < EXACT_TOL
    assert res.terms["dt_log_p"].abs().max() == 0


def test_residual_per_point_times():
    sde, x0, _, _ = _gaussian_case("linear")
    t = 0.1 + torch.rand(64, generator=GEN, dtype=F64)
    x = sde.sample_marginal(x0, t, generator=4)
    res = fokker_planck_residual(sde, lambda tt, xx: sde.marginal_log_prob(xx, tt, x0), t, x)
    assert res.max_relative() < EXACT_TOL


def test_hutchinson_is_unbiased():
    # Hutchinson estimates of the traces are unbiased: the mean of 40 independent estimates (16 probes each)
    # lies within 4 standard errors of the exact residual's terms.
    sde = example_gibbs("general")
    x = torch.randn(8, 2, generator=GEN, dtype=F64)

    def lp(t, xx):
        return -sde.potential(xx)

    exact = fokker_planck_residual(sde, lp, 0.0, x, method="exact")
    runs = [fokker_planck_residual(sde, lp, 0.0, x, method="hutchinson", n_samples=16, generator=s) for s in range(40)]
    assert runs[0].method == "hutchinson"
    for key in ("div_f", "half_tr_DH", "c_dot_s", "half_div_c"):
        est = torch.stack([r.terms[key] for r in runs])
        mean, se = est.mean(0), est.std(0) / math.sqrt(len(runs))
        assert bool(((mean - exact.terms[key]).abs() <= 4 * se + 1e-12).all()), key
    # Same seed, same estimate.
    again = fokker_planck_residual(sde, lp, 0.0, x, method="hutchinson", n_samples=16, generator=3)
    assert torch.equal(again.residual, runs[3].residual)


def test_auto_switches_to_hutchinson_above_the_threshold():
    ou = sf.OrnsteinUhlenbeck(1.0, 0.0, 0.5)
    for d, method in ((EXACT_MAX_DIM, "exact"), (EXACT_MAX_DIM + 1, "hutchinson")):
        x0 = torch.zeros(4, d, dtype=F64)
        x = ou.sample_marginal(x0, 0.5, generator=0)
        res = fokker_planck_residual(ou, lambda t, xx, z=x0: ou.marginal_log_prob(xx, t, z), 0.5, x, generator=0)
        assert res.method == method
        # OU's density is isotropic and D diagonal: the Rademacher probes are exact here.
        assert res.max_relative() < EXACT_TOL


def test_generator_and_adjoint():
    ou = sf.OrnsteinUhlenbeck(2.0, 0.5, 0.3)
    x = torch.randn(16, 1, generator=GEN, dtype=F64)
    lx2 = apply_generator(ou, lambda xx: (xx**2).sum(-1), 0.0, x)
    torch.testing.assert_close(lx2, (2 * x * 2.0 * (0.5 - x) + 0.09).squeeze(-1))
    gbm = sf.GeometricBrownianMotion(0.4, 0.2)
    xp = x.abs() + 0.1
    torch.testing.assert_close(apply_generator(gbm, lambda xx: xx.sum(-1), 0.0, xp), (0.4 * xp).squeeze(-1))
    # L* of the stationary OU density is zero.
    std = float(ou.stationary_std())
    adj = apply_adjoint(ou, lambda t, xx: (-0.5 * ((xx - 0.5) / std) ** 2).sum(-1), 0.0, x)
    assert float(adj.abs().max()) < 1e-12


def test_residual_input_errors():
    ou = sf.OrnsteinUhlenbeck()
    x = torch.zeros(4, 1, dtype=F64)
    with pytest.raises(ValueError, match="log_prob"):
        fokker_planck_residual(ou, lambda t, xx: xx, 0.5, x)
    with pytest.raises(ValueError, match="method"):
        fokker_planck_residual(ou, lambda t, xx: xx.sum(-1), 0.5, x, method="fast")
    with pytest.raises(ValueError, match="n_samples"):
        fokker_planck_residual(ou, lambda t, xx: xx.sum(-1), 0.5, x, method="hutchinson", n_samples=0)
    with pytest.raises(ValueError, match="t must"):
        fokker_planck_residual(ou, lambda t, xx: xx.sum(-1), torch.zeros(3), x)
    with pytest.raises(TypeError, match="x must"):
        fokker_planck_residual(ou, lambda t, xx: xx.sum(-1), 0.5, [1.0])


# -- the grid solver -------------------------------------------------------------------------------
def _ou_1d(n, scheme="auto"):
    ou = sf.OrnsteinUhlenbeck(1.0, 0.0, 0.5)
    grid = Grid1D(-3.0, 3.0, n)
    p0 = grid.gaussian(1.0, 0.05**2)
    sol = solve_fokker_planck(ou, p0, grid, [0.0, 0.5, 1.0], scheme=scheme)
    e = math.exp(-1.0)
    exact = grid.gaussian(e, 0.05**2 * e * e + 0.125 * (1 - e * e))
    return sol, exact


def test_ou_1d_accuracy_mass_positivity():
    sol, exact = _ou_1d(1000)
    assert sol.scheme == "fv4" and sol.autonomous
    assert sol.l1(exact) < 1e-5  # the goal with <= 1000 cells (measured ~1e-8)
    assert float((sol.mass - sol.mass[0]).abs().max()) < 1e-10
    assert float(sol.negative_mass.max()) <= 1e-14
    assert sol.p.shape == (3, 1000) and sol.ts.tolist() == [0.0, 0.5, 1.0]


def test_fourth_order_beats_central_flux():
    fv4, exact = _ou_1d(300, "fv4")
    central, _ = _ou_1d(300, "central")
    sg, _ = _ou_1d(300, "sg")
    assert central.l1(exact) > 100 * fv4.l1(exact)
    assert sg.l1(exact) < 1.2 * central.l1(exact)
    # Convergence: doubling the cells divides the fv4 error by ~16 and the central error by ~4.
    fv4_2, exact2 = _ou_1d(600, "fv4")
    assert fv4.l1(exact) / fv4_2.l1(exact2) > 10
    central_2, _ = _ou_1d(600, "central")
    assert 3.0 < central.l1(exact) / central_2.l1(exact2) < 5.0


def test_rotating_ou_2d_on_256_squared():
    # dx = -A x dt + 0.7 dW with A = [[1, -1], [1, 1]] (eigenvalues of -A: -1 ± i, so stable), from N((1, 0), 0.1² I),
    # to t = 1 on [-3.5, 3.5]²; the exact law comes from LinearSDE's closed form.
    A = -torch.tensor([[1.0, -1.0], [1.0, 1.0]], dtype=F64)
    sde = sf.LinearSDE(A, G=0.7 * torch.ones(2, dtype=F64))
    grid = Grid2D((-3.5, 3.5, 256))
    sol = solve_fokker_planck(sde, grid.gaussian([1.0, 0.0], 0.01), grid, [0.0, 1.0])
    mean, cov = sde.propagate_gaussian([1.0, 0.0], 0.01 * torch.eye(2, dtype=F64), 1.0)
    exact = grid.gaussian(mean, cov)
    assert sol.l1(exact) < 1e-4  # measured ~1e-6
    assert abs(float(sol.mass[-1] - sol.mass[0])) < 1e-10
    assert float(sol.negative_mass.max()) < 1e-12


def test_double_well_long_time_and_stationary():
    sigma = 0.7
    dw = DoubleWell(sigma)
    grid = Grid1D(-3.0, 3.0, 300)
    exact = grid.cell_average(lambda x: torch.exp(dw.stationary_log_prob(x)))
    # Start asymmetric: the slow barrier-crossing mode (rate ~0.16) needs t ~ 150 to fall below 1e-10.
    sol = solve_fokker_planck(dw, grid.gaussian(0.5, 0.3**2), grid, [0.0, 150.0])
    assert sol.l1(exact) < 1e-5
    assert float(grid.l1(stationary_density(dw, grid), exact)) < 1e-5


def test_double_well_paths_match_grid_density():
    # 20,000 SRA1 paths (weak order 2, dt = 0.01: bias ~1e-4) against the fv4 grid density (error ~1e-6):
    # both are far below the Monte Carlo resolution (~1/sqrt(count) per bin), so under the null hypothesis
    # the chi-square p-value is uniform; a 1e-3 threshold (fixed seed) leaves a 0.1% false-alarm rate.
    # The same paths against the density at another time are rejected (power).
    dw = DoubleWell(0.7)
    grid = Grid1D(-3.0, 3.0, 300)
    sol = solve_fokker_planck(dw, grid.gaussian(0.5, 0.3**2), grid, [0.0, 1.0, 2.0])
    gen = torch.Generator().manual_seed(5)
    x0 = 0.5 + 0.3 * torch.randn(20_000, 1, generator=gen, dtype=F64)
    x = sf.simulate(dw, x0, [0.0, 2.0], method="sra1", dt=0.01, generator=gen, save="final").final
    good = compare_to_density(x, grid, sol.p[2], cells_per_bin=6, level=1e-3)
    assert good.passed, good
    bad = compare_to_density(x, grid, sol.p[1], cells_per_bin=6, level=1e-3)
    assert not bad.passed and bad.p_value < 1e-10


def test_absorbing_boundary_method_of_images():
    bm = sf.BrownianMotion(0.0, 1.0)
    L, x0, t0, t = 2.0, 0.7, 1e-3, 0.3
    grid = Grid1D(0.0, L, 400)
    e = grid.edges(0)
    cdf = sum(ndtr((e - x0 + 2 * k * L) / math.sqrt(t0 + t)) - ndtr((e + x0 + 2 * k * L) / math.sqrt(t0 + t))
              for k in range(-10, 11))
    exact = torch.as_tensor(np.diff(cdf) / np.diff(e))
    sol = solve_fokker_planck(bm, grid.gaussian(x0, t0), grid, [t0, t0 + t], boundary="absorbing")
    assert sol.l1(exact) < 1e-6
    assert float(sol.mass[-1]) < 0.79  # mass leaves through the walls: survival probability 0.7802
    assert abs(float(sol.mass[-1]) - float(grid.mass(exact))) < 1e-6


def test_periodic_boundary_wrapped_gaussian_fourth_order():
    bm = sf.BrownianMotion(0.5, 0.3)

    def run(n):
        grid = Grid1D(0.0, 1.0, n)
        e = grid.edges(0)

        def wrapped(mean, sd):
            return torch.as_tensor(np.diff(sum(ndtr((e - mean + k) / sd) for k in range(-10, 11))) / np.diff(e))

        sol = solve_fokker_planck(bm, wrapped(0.2, 0.05), grid, [0.0, 1.0], boundary="periodic")
        exact = wrapped(0.7, math.sqrt(0.05**2 + 0.09))
        assert abs(float(sol.mass[-1] - sol.mass[0])) < 1e-12
        return sol.l1(exact)

    e50, e100 = run(50), run(100)
    assert e100 < 1e-6
    assert 12 < e50 / e100 < 20  # fourth order: 2^4 = 16


def test_time_dependent_vp_magnus():
    vp = sf.VPSDE()
    grid = Grid1D(-6.0, 6.0, 200)
    sol = solve_fokker_planck(vp, grid.gaussian(0.8, 0.01), grid, [0.0, 0.5, 1.0], dt=1 / 16)
    assert not sol.autonomous
    for i, t in ((1, 0.5), (2, 1.0)):
        s, sd = float(vp.marginal_scale(torch.tensor(t))), float(vp.marginal_std(torch.tensor(t)))
        assert sol.l1(grid.gaussian(0.8 * s, 0.01 * s * s + sd * sd), i) < 2e-6


class _Advection(sf.SDE):
    noise_type, sde_type, additive = "diagonal", "ito", True

    def drift(self, t, x):
        return 2 * torch.sin(3 * x) - x

    def diffusion(self, t, x):
        return torch.full_like(x, 0.05)


def test_high_peclet_positivity():
    grid = Grid1D(-3.0, 3.0, 200)
    p0 = grid.gaussian(0.3, 0.25)
    ts = [0.0, 0.5, 2.0]
    sg = solve_fokker_planck(_Advection(), p0, grid, ts, scheme="sg")
    auto = solve_fokker_planck(_Advection(), p0, grid, ts)
    central = solve_fokker_planck(_Advection(), p0, grid, ts, scheme="central")
    assert sg.peclet > 50
    assert fokker_planck_operator(_Advection(), grid, scheme="sg").metzler
    assert float(sg.negative_mass.max()) < 1e-14
    assert auto.scheme == "fv4+sg" and float(auto.negative_mass.max()) < 1e-14
    assert float(central.negative_mass.max()) > 0.1  # the central flux oscillates at this Péclet number


def test_cross_diffusion_2d_stationary_converges():
    g = example_gibbs("general")
    errs = []
    for n in (32, 64):
        grid = Grid2D((-4.0, 4.0, n), (-3.0, 3.0, n))
        exact = grid.cell_average(lambda x: torch.exp(-g.potential(x)))
        errs.append(float(grid.l1(stationary_density(g, grid), exact / grid.mass(exact))))
    assert errs[1] < 1e-4
    assert errs[0] / errs[1] > 8


def test_grid_helpers():
    grid = Grid2D((-4.0, 4.0, 40), (-3.0, 5.0, 30))
    assert grid.shape == (40, 30) and grid.size == 1200 and grid.points().shape == (1200, 2)
    diag = grid.gaussian([0.2, 1.0], [0.5, 0.8])
    quad = grid.cell_average(lambda x: torch.exp(-0.5 * (x[:, 0] - 0.2) ** 2 / 0.5 - 0.5 * (x[:, 1] - 1.0) ** 2 / 0.8)
                             / (2 * math.pi * math.sqrt(0.4)), nodes=8)
    torch.testing.assert_close(diag, quad, atol=1e-12, rtol=0)
    cov = torch.tensor([[1.0, 0.5], [0.5, 1.0]], dtype=F64)
    corr = grid.gaussian([0.0, 1.0], cov)  # non-diagonal: 6-point Gauss–Legendre per cell and axis
    prec = torch.linalg.inv(cov)

    def pdf(x):
        z = x - torch.tensor([0.0, 1.0], dtype=F64)
        return torch.exp(-0.5 * ((z @ prec) * z).sum(-1)) / (2 * math.pi * math.sqrt(0.75))

    torch.testing.assert_close(corr, grid.cell_average(pdf, nodes=12), atol=1e-12, rtol=0)
    # Box = mean ± 4 sd in each coordinate: about 4 Φ(-4) = 1.3e-4 of the mass lies outside.
    assert 0 < 1 - float(grid.mass(corr)) < 4 * ndtr(-4.0)
    with pytest.raises(ValueError, match="at least 4 cells"):
        Grid1D(0, 1, 2)
    with pytest.raises(ValueError, match="lo < hi"):
        Grid1D(1, 0, 10)
    with pytest.raises(ValueError, match="positive definite"):
        grid.gaussian([0.0, 0.0], torch.tensor([[1.0, 2.0], [2.0, 1.0]]))


def test_expm_krylov_against_scipy():
    from scipy.sparse import csr_matrix
    from scipy.sparse.linalg import expm_multiply

    rng = np.random.default_rng(0)
    a = rng.random((60, 60)) * (rng.random((60, 60)) < 0.1) * 50
    np.fill_diagonal(a, 0)
    a -= np.diag(a.sum(0))  # a generator: non-negative off-diagonals, zero column sums
    m = csr_matrix(a)
    v = rng.random(60)
    ref = expm_multiply(m * 0.7, v)
    out, stats = expm_krylov(lambda x: torch.from_numpy(m @ x.numpy()), torch.as_tensor(v), 0.7, tol=1e-13)
    assert np.abs(out.numpy() - ref).max() < 1e-10 * np.abs(ref).max()
    assert abs(float(out.sum()) - v.sum()) < 1e-12 * v.sum()
    assert stats.matvecs > 0


def test_solver_input_errors():
    ou = sf.OrnsteinUhlenbeck()
    grid = Grid1D(-3, 3, 50)
    p0 = grid.gaussian(0.0, 0.1)
    with pytest.raises(ValueError, match="grid's shape"):
        solve_fokker_planck(ou, torch.ones(49), grid, [0, 1])
    with pytest.raises(ValueError, match="non-negative"):
        solve_fokker_planck(ou, p0 - 1, grid, [0, 1])
    with pytest.raises(ValueError, match="increasing"):
        solve_fokker_planck(ou, p0, grid, [1, 0])
    with pytest.raises(ValueError, match="scheme"):
        solve_fokker_planck(ou, p0, grid, [0, 1], scheme="weno")
    with pytest.raises(ValueError, match="boundary"):
        solve_fokker_planck(ou, p0, grid, [0, 1], boundary="open")
    with pytest.raises(TypeError, match="grid"):
        solve_fokker_planck(ou, p0, (0, 1, 50), [0, 1])
    lin = sf.LinearSDE(-torch.eye(2))
    with pytest.raises(ValueError, match="2 coordinates|shape"):
        solve_fokker_planck(lin, p0, grid, [0, 1])
    with pytest.raises(ValueError, match="absorbing"):
        stationary_density(ou, grid, boundary="absorbing")


def test_callable_initial_density():
    ou = sf.OrnsteinUhlenbeck(1.0, 0.0, 0.5)
    grid = Grid1D(-3, 3, 200)
    sol = solve_fokker_planck(ou, lambda x: torch.exp(-0.5 * (x[:, 0] / 0.3) ** 2) / (0.3 * math.sqrt(2 * math.pi)),
                              grid, [0.0, 0.5])
    torch.testing.assert_close(sol.p[0], grid.gaussian(0.0, 0.09), atol=1e-10, rtol=0)


@pytest.mark.cuda
def test_grid_solver_on_cuda_matches_cpu():
    sol_cpu, exact = _ou_1d(400)
    ou = sf.OrnsteinUhlenbeck(1.0, 0.0, 0.5)
    grid = Grid1D(-3.0, 3.0, 400)
    sol = solve_fokker_planck(ou, grid.gaussian(1.0, 0.05**2), grid, [0.0, 0.5, 1.0], device="cuda")
    assert sol.p.device.type == "cuda"
    torch.testing.assert_close(sol.p.cpu(), sol_cpu.p, atol=1e-9, rtol=0)
