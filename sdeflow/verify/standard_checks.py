"""The standard checks of ``sdeflow verify`` (registered on import; see :mod:`sdeflow.verify.suite`).

Groups:

* ``order/...`` — measured strong / weak order of every native method and the main torchsde
  methods against the order the method declares, ``±0.1``.
* ``fp_residual/...`` — the Fokker–Planck residual of every standard SDE's closed-form marginal
  (relative, float64, ``≤ 1e-6``), stationary densities of x-dependent general and scalar noise,
  and a check that a perturbed density is flagged.
* ``fp_grid/...`` — grid solutions against exact densities (L1 of cell averages), mass
  conservation, positivity, time-dependent coefficients.
* ``mc_vs_grid/...`` and ``stats/...`` — histograms of simulated paths against grid densities
  (chi-square) and closed forms (KS, moments, energy distance), and the tests' power.

Sizes: ``ctx.quick`` selects the small version of each check (fewer paths, coarser grids).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

import torch
from torch import Tensor

from .. import sde as sdes
from ..fokker_planck import Grid1D, Grid2D, fokker_planck_residual, solve_fokker_planck, stationary_density
from ..plots import pyplot, save_figure
from ..solve.simulate import simulate
from .orders import OrderResult, strong_order, weak_order
from .problems import DoubleWell, example_gibbs, get_problem
from .stats import compare_to_density, compare_to_marginal
from .suite import CheckOutcome, SuiteContext, register_check

_F64 = torch.float64


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def _save(fig: object, path: Path) -> Path:
    return save_figure(fig, path, dpi=100)


# -- convergence orders -------------------------------------------------------------------------------
# (kind, problem, method, backend, in the quick suite)
ORDER_CASES: tuple[tuple[str, str, str, str, bool], ...] = (
    ("strong", "gbm", "euler", "native", True),
    ("strong", "gbm", "milstein", "native", True),
    ("strong", "gbm_stratonovich", "heun", "native", True),
    ("strong", "sine_additive", "sra1", "native", True),
    ("strong", "sine_additive", "euler", "native", False),
    ("weak", "gbm_weak", "euler", "native", True),
    ("strong", "gbm", "euler", "torchsde", True),
    ("strong", "gbm", "milstein", "torchsde", False),
    ("strong", "gbm_stratonovich", "heun", "torchsde", False),
    ("strong", "gbm_stratonovich", "midpoint", "torchsde", False),
    ("strong", "sine_additive", "srk", "torchsde", False),
    ("weak", "gbm_weak", "euler", "torchsde", False),
)


def _order_sizes(kind: str, exact: bool, quick: bool) -> tuple[int, list[float]]:
    """(paths, step sizes) — see docs/verify.md for why these resolve the order to about ±0.03."""
    if kind == "weak":
        return (10_000, [2.0**-k for k in range(3, 8)]) if quick else (20_000, [2.0**-k for k in range(4, 10)])
    if exact:
        return (1000, [2.0**-k for k in range(3, 8)]) if quick else (4000, [2.0**-k for k in range(4, 10)])
    # Fine-step reference at the smallest step / 16 on the same path: fewer paths, coarser steps.
    return (500, [2.0**-k for k in range(3, 8)]) if quick else (2000, [2.0**-k for k in range(3, 9)])


def _order_check(kind: str, problem: str, method: str, backend: str) -> Callable[[SuiteContext], CheckOutcome]:
    def run(ctx: SuiteContext) -> CheckOutcome:
        prob = get_problem(problem)
        sde = prob.make_sde().to(ctx.device)
        n, dts = _order_sizes(kind, prob.exact is not None, ctx.quick)
        x0 = prob.initial(n, dtype=_F64, device=ctx.device)
        fn = strong_order if kind == "strong" else weak_order
        res: OrderResult = fn(sde, x0, prob.t1, method=method, backend=backend, dts=dts, exact=prob.exact,
                              generator=ctx.seed, problem=problem)
        label = f"order/{kind}/{method}/{backend}/{problem}"

        def plot(folder: Path) -> list[Path]:
            return [res.plot(folder / f"{_safe(label)}.png")]

        # A check fails only when the order is too low; a higher one is reported, not failed (SRA1
        # measures 2.0 on a nearly linear additive problem, as diffrax's does).
        above = res.order > res.declared + res.tolerance
        return CheckOutcome(
            measured=res.order, expected=res.declared, tolerance=res.declared - res.tolerance, comparison="ge",
            detail=f"95% CI [{res.ci[0]:.3f}, {res.ci[1]:.3f}], {res.n_paths} paths, reference {res.reference}, "
                   f"min error/SE {res.min_snr:.0f}" + ("; above the declared order on this problem" if above else ""),
            data={"ci": list(res.ci), "dts": res.dts.tolist(), "errors": res.errors.tolist(),
                  "errors_se": res.errors_se.tolist(), "n_paths": res.n_paths, "reference": res.reference},
            plot=plot,
        )

    return run


for _kind, _problem, _method, _backend, _quick in ORDER_CASES:
    register_check(f"order/{_kind}/{_method}/{_backend}/{_problem}", _order_check(_kind, _problem, _method, _backend),
                   group="order", quick=_quick,
                   description=f"{_kind} order of {_method} ({_backend}) on {_problem}: at least its declared order "
                               f"− 0.1")


# -- Fokker–Planck residuals of closed forms -------------------------------------------------------------
RESIDUAL_TOL = 1e-6


def _marginal_case(sde: torch.nn.Module, x0: Tensor, t: float) -> tuple[Callable, Tensor, float]:
    x = sde.sample_marginal(x0, t, generator=1)
    return (lambda tt, xx: sde.marginal_log_prob(xx, tt, x0)), x, t


def _residual_cases(device: torch.device) -> dict[str, tuple[object, Callable, Tensor, float, Callable]]:
    """name -> (sde, log_prob(t, x), points, t, perturbed log_prob)."""
    gen = torch.Generator().manual_seed(7)
    b = 128
    cases = {}
    gaussian = {
        "bm": (sdes.BrownianMotion(0.3, 0.7), 0.6, 3),
        "ou": (sdes.OrnsteinUhlenbeck(1.5, 0.2, 0.6), 0.6, 3),
        "vp": (sdes.VPSDE(), 0.4, 3),
        "subvp": (sdes.SubVPSDE(), 0.4, 3),
        "ve": (sdes.VESDE(), 0.4, 3),
        "edm": (sdes.EDMSDE(), 2.0, 3),
    }
    for name, (sde, t, d) in gaussian.items():
        sde = sde.to(device)
        x0 = torch.randn(b, d, generator=gen, dtype=_F64).to(device)
        lp, x, t = _marginal_case(sde, x0, t)
        cases[name] = (sde, lp, x, t, (lambda s, z0: lambda tt, xx: s.marginal_log_prob(xx, 1.05 * tt, z0))(sde, x0))
    gbm = sdes.GeometricBrownianMotion(0.2, 0.5).to(device)
    x0 = (0.5 + torch.rand(b, 2, generator=gen, dtype=_F64)).to(device)
    lp, x, t = _marginal_case(gbm, x0, 0.7)
    cases["gbm"] = (gbm, lp, x, t, lambda tt, xx, z0=x0: gbm.marginal_log_prob(xx, 1.05 * tt, z0))
    A = torch.tensor([[-1.0, 2.0, 0.0], [-0.5, -1.0, 0.3], [0.0, 0.2, -0.4]], dtype=_F64)
    G = torch.tensor([[1.0, 0.2], [0.3, 0.5], [0.0, 0.7]], dtype=_F64)
    lin = sdes.LinearSDE(A, b=[0.1, 0.0, -0.2], G=G).to(device)
    x0 = torch.randn(b, 3, generator=gen, dtype=_F64).to(device)
    lp, x, t = _marginal_case(lin, x0, 0.8)
    cases["linear_general"] = (lin, lp, x, t, lambda tt, xx, z0=x0: lin.marginal_log_prob(xx, 1.05 * tt, z0))
    for kind in ("general", "scalar"):
        g = example_gibbs(kind).to(device)
        pts = torch.randn(b, 2, generator=gen, dtype=_F64).to(device) * torch.tensor([1.0, 0.7], dtype=_F64,
                                                                                      device=device)
        cases[f"gibbs_{kind}_stationary"] = (
            g, (lambda s: lambda tt, xx: s.stationary_log_prob_unnormalised(xx))(g), pts, 0.0,
            (lambda s: lambda tt, xx: 1.05 * s.stationary_log_prob_unnormalised(xx))(g))
    dw = DoubleWell(0.7)
    pts = (1.5 * torch.randn(b, 1, generator=gen, dtype=_F64)).to(device)
    cases["double_well_stationary"] = (dw, lambda tt, xx: dw.stationary_log_prob(xx), pts, 0.0,
                                       lambda tt, xx: 1.05 * dw.stationary_log_prob(xx))
    return cases


@lru_cache(maxsize=4)
def _residuals(device: str) -> dict[str, tuple[float, float]]:
    out = {}
    for name, (sde, lp, x, t, bad) in _residual_cases(torch.device(device)).items():
        good = fokker_planck_residual(sde, lp, t, x).max_relative()
        wrong = fokker_planck_residual(sde, bad, t, x).max_relative()
        out[name] = (good, wrong)
    return out


_RESIDUAL_NAMES = ("bm", "ou", "gbm", "vp", "subvp", "ve", "edm", "linear_general", "gibbs_general_stationary",
                   "gibbs_scalar_stationary", "double_well_stationary")


def _residual_check(name: str) -> Callable[[SuiteContext], CheckOutcome]:
    def run(ctx: SuiteContext) -> CheckOutcome:
        good, wrong = _residuals(str(ctx.device))[name]
        return CheckOutcome(measured=good, expected=0.0, tolerance=RESIDUAL_TOL, comparison="le",
                            detail=f"max |r|/scale over 128 points; a 5%-perturbed density gives {wrong:.2g}",
                            data={"perturbed": wrong})

    return run


for _name in _RESIDUAL_NAMES:
    register_check(f"fp_residual/{_name}", _residual_check(_name), group="fp_residual", quick=True,
                   description=f"Fokker–Planck residual of the exact density ({_name}), relative, ≤ 1e-6")


@register_check("fp_residual/detects_perturbation", group="fp_residual", quick=True,
                description="a density 5% off (time or potential scaled) has relative residual ≥ 1e-3")
def _residual_perturbed(ctx: SuiteContext) -> CheckOutcome:
    res = _residuals(str(ctx.device))
    worst = min(w for _, w in res.values())
    which = min(res, key=lambda k: res[k][1])
    return CheckOutcome(measured=worst, expected=0.0, tolerance=1e-3, comparison="ge",
                        detail=f"smallest over {len(res)} SDEs ({which}); exact densities stay below {RESIDUAL_TOL:g}")


# -- grid solutions ---------------------------------------------------------------------------------------
OU1D = dict(theta=1.0, sigma=0.5, m0=1.0, s0=0.05, lo=-3.0, hi=3.0, t=1.0)


@lru_cache(maxsize=4)
def _ou_1d(n: int, device: str) -> dict:
    c = OU1D
    ou = sdes.OrnsteinUhlenbeck(c["theta"], 0.0, c["sigma"])
    grid = Grid1D(c["lo"], c["hi"], n)
    p0 = grid.gaussian(c["m0"], c["s0"] ** 2)
    sol = solve_fokker_planck(ou, p0, grid, [0.0, c["t"]], device=device)
    e = math.exp(-c["theta"] * c["t"])
    var = c["s0"] ** 2 * e * e + c["sigma"] ** 2 / (2 * c["theta"]) * (1 - e * e)
    exact = grid.gaussian(c["m0"] * e, var)
    return {"sol": sol, "exact": exact, "grid": grid, "l1": sol.l1(exact),
            "mass": float((sol.mass[-1] - sol.mass[0]).abs()), "neg": float(sol.negative_mass.max())}


def _plot_1d(grid: Grid1D, curves: dict[str, Tensor], title: str, path: Path) -> list[Path]:
    """Densities on top; below, each curve minus the last one (the reference), since the curves overlap."""
    plt = pyplot()
    fig, (ax, err) = plt.subplots(2, 1, figsize=(6, 5.5), sharex=True, gridspec_kw={"height_ratios": [2, 1]})
    x = grid.centers(0)
    ys = {label: torch.as_tensor(y).cpu().numpy() for label, y in curves.items()}
    ref_label, ref = list(ys.items())[-1]
    for label, y in ys.items():
        ax.plot(x, y, label=label)
    for label, y in list(ys.items())[:-1]:
        err.plot(x, y - ref, label=f"{label} − {ref_label}")
    err.axhline(0.0, color="k", lw=0.5)
    ax.set_title(title, fontsize=9)
    ax.set_ylabel("density")
    ax.legend(fontsize=8)
    err.set_xlabel("x")
    err.set_ylabel("difference")
    err.ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))
    err.legend(fontsize=8)
    fig.tight_layout()
    return [_save(fig, path)]


@register_check("fp_grid/ou_1d_l1", group="fp_grid", quick=True,
                description="1-D OU from N(1, 0.05²) to t = 1 on [-3, 3]: L1 of cell averages ≤ 1e-5")
def _ou_1d_l1(ctx: SuiteContext) -> CheckOutcome:
    n = 400 if ctx.quick else 1000
    r = _ou_1d(n, str(ctx.device))
    sol = r["sol"]
    return CheckOutcome(
        measured=r["l1"], expected=0.0, tolerance=1e-5, comparison="le",
        detail=f"{n} cells, scheme {sol.scheme}, {sol.stats.wall_time:.2f} s, {sol.stats.matvecs} matvecs",
        data={"cells": n, "scheme": sol.scheme, "seconds": sol.stats.wall_time},
        plot=lambda folder: _plot_1d(r["grid"], {"grid solution": sol.final, "exact": r["exact"]},
                                     f"OU 1-D, t = 1, {n} cells: L1 = {r['l1']:.2e}", folder / "fp_grid_ou_1d.png"),
    )


@register_check("fp_grid/ou_1d_mass", group="fp_grid", quick=True,
                description="1-D OU: total probability conserved to 1e-10 (reflecting box)")
def _ou_1d_mass(ctx: SuiteContext) -> CheckOutcome:
    r = _ou_1d(400 if ctx.quick else 1000, str(ctx.device))
    return CheckOutcome(measured=r["mass"], expected=0.0, tolerance=1e-10, comparison="le",
                        detail=f"negative mass {r['neg']:.1e}")


ROT2D = dict(sigma=0.7, m0=(1.0, 0.0), s0=0.1, lo=-3.5, hi=3.5, t=1.0)


@lru_cache(maxsize=4)
def _rot_2d(n: int, device: str) -> dict:
    c = ROT2D
    A = -torch.tensor([[1.0, -1.0], [1.0, 1.0]], dtype=_F64)  # dx = -[[1,-1],[1,1]] x dt: eigenvalues -1 ± i
    sde = sdes.LinearSDE(A, G=c["sigma"] * torch.ones(2, dtype=_F64))
    grid = Grid2D((c["lo"], c["hi"], n))
    p0 = grid.gaussian(list(c["m0"]), c["s0"] ** 2)
    sol = solve_fokker_planck(sde, p0, grid, [0.0, c["t"]], device=device)
    mean, cov = sde.propagate_gaussian(list(c["m0"]), c["s0"] ** 2 * torch.eye(2, dtype=_F64), c["t"])
    exact = grid.gaussian(mean, cov)
    return {"sol": sol, "exact": exact, "grid": grid, "l1": sol.l1(exact),
            "mass": float((sol.mass[-1] - sol.mass[0]).abs()), "neg": float(sol.negative_mass.max())}


def _plot_2d(r: dict, path: Path) -> list[Path]:
    plt = pyplot()
    grid, sol = r["grid"], r["sol"]
    fig, axes = plt.subplots(1, 2, figsize=(9, 4))
    ext = [grid.bounds[0][0], grid.bounds[0][1], grid.bounds[1][0], grid.bounds[1][1]]
    im = axes[0].imshow(sol.final.cpu().numpy().T, origin="lower", extent=ext)
    fig.colorbar(im, ax=axes[0], label="density")
    axes[0].set_title("grid density, t = 1", fontsize=9)
    err = (sol.final.cpu() - r["exact"].cpu()).numpy().T
    vmax = float(abs(err).max()) or 1.0
    im = axes[1].imshow(err, origin="lower", extent=ext, cmap="RdBu", vmin=-vmax, vmax=vmax)
    fig.colorbar(im, ax=axes[1], label="grid − exact")
    axes[1].set_title(f"grid − exact (L1 {r['l1']:.1e})", fontsize=9)
    for a in axes:
        a.set_xlabel("$x_1$")
        a.set_ylabel("$x_2$")
    fig.tight_layout()
    return [_save(fig, path)]


@register_check("fp_grid/rotating_ou_2d_l1", group="fp_grid", quick=True,
                description="2-D OU dx = -[[1,-1],[1,1]]x dt + 0.7 dW from N((1,0), 0.1² I) to t = 1: L1 ≤ 1e-4")
def _rot_2d_l1(ctx: SuiteContext) -> CheckOutcome:
    n = 128 if ctx.quick else 256
    r = _rot_2d(n, str(ctx.device))
    sol = r["sol"]
    return CheckOutcome(
        measured=r["l1"], expected=0.0, tolerance=1e-4, comparison="le",
        detail=f"{n}x{n} cells, scheme {sol.scheme}, {sol.stats.wall_time:.2f} s",
        data={"cells": n, "scheme": sol.scheme, "seconds": sol.stats.wall_time},
        plot=lambda folder: _plot_2d(r, folder / "fp_grid_rotating_ou_2d.png"),
    )


@register_check("fp_grid/rotating_ou_2d_mass_positivity", group="fp_grid", quick=True,
                description="2-D OU: mass conserved to 1e-10 and negative mass ≤ 1e-12")
def _rot_2d_mass(ctx: SuiteContext) -> CheckOutcome:
    r = _rot_2d(128 if ctx.quick else 256, str(ctx.device))
    worst = max(r["mass"] / 1e-10, r["neg"] / 1e-12)
    return CheckOutcome(measured=worst, expected=0.0, tolerance=1.0, comparison="le",
                        detail=f"|Δmass| {r['mass']:.1e} (bound 1e-10), negative mass {r['neg']:.1e} (bound 1e-12); "
                               "measured = the larger ratio to its bound")


def _double_well_stationary_cells(grid: Grid1D, sigma: float) -> Tensor:
    dw = DoubleWell(sigma)
    p = grid.cell_average(lambda x: torch.exp(dw.stationary_log_prob(x)))
    return p


@register_check("fp_grid/double_well_long_time", group="fp_grid", quick=True,
                description="double well σ = 0.7: grid solution at t = 20 vs exp(-2U/σ²)/Z, L1 ≤ 1e-5")
def _double_well_long(ctx: SuiteContext) -> CheckOutcome:
    sigma, n = 0.7, (200 if ctx.quick else 400)
    grid = Grid1D(-3.0, 3.0, n)
    # A symmetric start: the antisymmetric mode (the slow barrier crossing, rate ~0.1) is not
    # excited, so t = 20 is long enough for the symmetric modes (rate >= 2) to decay below 1e-10.
    p0 = grid.gaussian(0.0, 0.5**2)
    sol = solve_fokker_planck(DoubleWell(sigma), p0, grid, [0.0, 20.0], device=ctx.device)
    exact = _double_well_stationary_cells(grid, sigma)
    l1 = sol.l1(exact)
    return CheckOutcome(
        measured=l1, expected=0.0, tolerance=1e-5, comparison="le",
        detail=f"{n} cells, scheme {sol.scheme}, {sol.stats.wall_time:.2f} s; the direct null-space solve gives "
               f"{float(grid.l1(stationary_density(DoubleWell(sigma), grid), exact)):.1e}",
        plot=lambda folder: _plot_1d(grid, {"grid, t = 20": sol.final, "exp(-2U/σ²)/Z": exact},
                                     f"double well, L1 = {l1:.1e}", folder / "fp_grid_double_well.png"),
    )


class _Advection(sdes.SDE):
    """A drift-dominated SDE (cell Péclet ≫ 2): dX = (2 sin 3X − X) dt + 0.05 dW."""

    noise_type, sde_type, additive = "diagonal", "ito", True

    def drift(self, t: Tensor, x: Tensor) -> Tensor:
        return 2 * torch.sin(3 * x) - x

    def diffusion(self, t: Tensor, x: Tensor) -> Tensor:
        return torch.full_like(x, 0.05)


@register_check("fp_grid/high_peclet_positivity", group="fp_grid", quick=True,
                description="drift-dominated SDE (Péclet ~ 90): the default scheme keeps negative mass ≤ 1e-12")
def _high_peclet(ctx: SuiteContext) -> CheckOutcome:
    grid = Grid1D(-3.0, 3.0, 200)
    p0 = grid.gaussian(0.3, 0.5**2)
    sol = solve_fokker_planck(_Advection(), p0, grid, [0.0, 0.5, 2.0], device=ctx.device)
    central = solve_fokker_planck(_Advection(), p0, grid, [0.0, 0.5, 2.0], scheme="central", device=ctx.device)
    neg = float(sol.negative_mass.max())
    return CheckOutcome(measured=neg, expected=0.0, tolerance=1e-12, comparison="le",
                        detail=f"scheme {sol.scheme} at Péclet {sol.peclet:.0f}; the central flux has negative mass "
                               f"{float(central.negative_mass.max()):.2f}",
                        data={"central_negative_mass": float(central.negative_mass.max())})


@register_check("fp_grid/vp_time_dependent", group="fp_grid", quick=True,
                description="1-D VP SDE (time-dependent β) from N(0.8, 0.1²) to t = 1, Magnus steps: L1 ≤ 1e-5")
def _vp_grid(ctx: SuiteContext) -> CheckOutcome:
    n = 200 if ctx.quick else 400
    vp = sdes.VPSDE()
    grid = Grid1D(-6.0, 6.0, n)
    sol = solve_fokker_planck(vp, grid.gaussian(0.8, 0.01), grid, [0.0, 1.0], dt=1 / 16, device=ctx.device)
    sc, sd = float(vp.marginal_scale(torch.tensor(1.0))), float(vp.marginal_std(torch.tensor(1.0)))
    exact = grid.gaussian(0.8 * sc, 0.01 * sc * sc + sd * sd)
    return CheckOutcome(measured=sol.l1(exact), expected=0.0, tolerance=1e-5, comparison="le",
                        detail=f"{n} cells, autonomous={sol.autonomous}, {sol.stats.operators} operators assembled")


@register_check("fp_grid/gibbs_2d_stationary", group="fp_grid", quick=True,
                description="2-D SDE with x-dependent general noise: stationary grid density vs exp(-U)/Z, L1 ≤ 1e-4")
def _gibbs_grid(ctx: SuiteContext) -> CheckOutcome:
    n = 64 if ctx.quick else 128
    g = example_gibbs("general")
    grid = Grid2D((-4.0, 4.0, n), (-3.0, 3.0, n))
    exact = grid.cell_average(lambda x: torch.exp(-g.potential(x)))
    exact = exact / grid.mass(exact)
    p = stationary_density(g, grid)
    return CheckOutcome(measured=float(grid.l1(p, exact)), expected=0.0, tolerance=1e-4, comparison="le",
                        detail=f"{n}x{n} cells; cross-diffusion D_12 ≠ 0 depends on x")


# -- Monte Carlo against the grid and the closed forms ----------------------------------------------------
CHI2_LEVEL = 1e-3


@lru_cache(maxsize=2)
def _mc_double_well(n_paths: int, t: float, device: torch.device, seed: int) -> Tensor:
    gen = torch.Generator(device=device).manual_seed(seed)
    x0 = 0.5 + 0.3 * torch.randn(n_paths, 1, generator=gen, dtype=_F64, device=device)
    sol = simulate(DoubleWell(0.7), x0, [0.0, t], method="sra1", dt=0.01, generator=gen, save="final")
    return sol.final


@lru_cache(maxsize=4)
def _double_well_grid(device: str) -> tuple[Grid1D, object]:
    grid = Grid1D(-3.0, 3.0, 300)
    sol = solve_fokker_planck(DoubleWell(0.7), grid.gaussian(0.5, 0.3**2), grid, [0.0, 1.0, 2.0], device=device)
    return grid, sol


@register_check("mc_vs_grid/double_well", group="mc_vs_grid", quick=True,
                description="histogram of simulated double-well paths at t = 2 vs the grid density: chi-square "
                            "p ≥ 1e-3")
def _mc_grid_dw(ctx: SuiteContext) -> CheckOutcome:
    n = 20_000 if ctx.quick else 50_000
    grid, sol = _double_well_grid(str(ctx.device))
    x = _mc_double_well(n, 2.0, ctx.device, ctx.seed + 11)
    res = compare_to_density(x.cpu(), grid, sol.final.cpu(), cells_per_bin=6, level=CHI2_LEVEL)

    def plot(folder: Path) -> list[Path]:
        plt = pyplot()
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.hist(x.cpu().numpy().ravel(), bins=100, range=(-3, 3), density=True, alpha=0.5, label=f"{n} paths (SRA1)")
        ax.plot(grid.centers(0), sol.final.cpu().numpy(), label="grid Fokker–Planck")
        ax.set_title(f"double well at t = 2: chi-square p = {res.p_value:.3f}", fontsize=9)
        ax.set_xlabel("x")
        ax.set_ylabel("density")
        ax.legend(fontsize=8)
        fig.tight_layout()
        return [_save(fig, folder / "mc_vs_grid_double_well.png")]

    return CheckOutcome(measured=res.p_value, expected=0.0, tolerance=CHI2_LEVEL, comparison="ge",
                        detail=f"{res.name}, statistic {res.statistic:.1f}, {n} paths, SRA1 dt = 0.01",
                        data=res.as_dict(), plot=plot)


@register_check("mc_vs_grid/chi_square_power", group="mc_vs_grid", quick=True,
                description="the same paths against the grid density at t = 1 (the wrong time) are rejected: p ≤ 1e-3")
def _mc_grid_power(ctx: SuiteContext) -> CheckOutcome:
    n = 20_000 if ctx.quick else 50_000
    grid, sol = _double_well_grid(str(ctx.device))
    x = _mc_double_well(n, 2.0, ctx.device, ctx.seed + 11)
    res = compare_to_density(x.cpu(), grid, sol.p[1].cpu(), cells_per_bin=6, level=CHI2_LEVEL)
    return CheckOutcome(measured=res.p_value, expected=0.0, tolerance=CHI2_LEVEL, comparison="le",
                        detail=f"{res.name}, statistic {res.statistic:.1f}")


@register_check("mc_vs_grid/ou_1d", group="mc_vs_grid", quick=False,
                description="simulated OU paths from N(1, 0.05²) at t = 1 vs the grid density: chi-square p ≥ 1e-3")
def _mc_grid_ou(ctx: SuiteContext) -> CheckOutcome:
    c = OU1D
    r = _ou_1d(1000, str(ctx.device))
    gen = torch.Generator(device=ctx.device).manual_seed(ctx.seed + 5)
    n = 50_000
    x0 = c["m0"] + c["s0"] * torch.randn(n, 1, generator=gen, dtype=_F64, device=ctx.device)
    ou = sdes.OrnsteinUhlenbeck(c["theta"], 0.0, c["sigma"]).to(ctx.device)
    x = simulate(ou, x0, [0.0, c["t"]], method="sra1", dt=0.01, generator=gen, save="final").final
    res = compare_to_density(x.cpu(), r["grid"], r["sol"].final.cpu(), cells_per_bin=20, level=CHI2_LEVEL)
    return CheckOutcome(measured=res.p_value, expected=0.0, tolerance=CHI2_LEVEL, comparison="ge",
                        detail=f"{res.name}, {n} paths")


@register_check("stats/ou_simulated_vs_closed_form", group="stats", quick=True,
                description="Euler–Maruyama OU samples (dt = 1e-3) vs the closed-form marginal: p ≥ 1e-3")
def _stats_ou(ctx: SuiteContext) -> CheckOutcome:
    n = 5000 if ctx.quick else 20_000
    ou = sdes.OrnsteinUhlenbeck(1.0, 0.5, 0.3).to(ctx.device)
    x0 = torch.zeros(n, 1, dtype=_F64, device=ctx.device)
    x = simulate(ou, x0, [0.0, 1.0], dt=1e-3, generator=ctx.seed + 3, save="final").final
    res = compare_to_marginal(x, ou, 1.0, x0, level=CHI2_LEVEL)
    return CheckOutcome(measured=res.p_value, expected=0.0, tolerance=CHI2_LEVEL, comparison="ge",
                        detail=str(res), data=res.as_dict())


@register_check("stats/linear_2d_simulated_vs_closed_form", group="stats", quick=False,
                description="SRA1 samples of the rotating 2-D OU vs its closed form (KS, moments, energy): p ≥ 1e-3")
def _stats_lin(ctx: SuiteContext) -> CheckOutcome:
    n = 20_000
    A = -torch.tensor([[1.0, -1.0], [1.0, 1.0]], dtype=_F64)
    sde = sdes.LinearSDE(A, G=0.7 * torch.ones(2, dtype=_F64)).to(ctx.device)
    x0 = torch.tensor([[1.0, 0.0]], dtype=_F64, device=ctx.device).expand(n, 2)
    x = simulate(sde, x0, [0.0, 1.0], method="sra1", dt=0.01, generator=ctx.seed + 4, save="final").final
    res = compare_to_marginal(x, sde, 1.0, x0, level=CHI2_LEVEL, generator=ctx.seed)
    return CheckOutcome(measured=res.p_value, expected=0.0, tolerance=CHI2_LEVEL, comparison="ge",
                        detail=str(res), data=res.as_dict())


@register_check("stats/power_wrong_variance", group="stats", quick=True,
                description="exact OU samples with the spread scaled by 1.1 are rejected: p ≤ 1e-3")
def _stats_power(ctx: SuiteContext) -> CheckOutcome:
    n = 5000
    ou = sdes.OrnsteinUhlenbeck(1.0, 0.5, 0.3)
    x0 = torch.zeros(n, 1, dtype=_F64)
    x = ou.sample_marginal(x0, 1.0, generator=ctx.seed + 8)
    m = ou.marginal_mean(1.0, x0)
    res = compare_to_marginal(m + 1.1 * (x - m), ou, 1.0, x0, level=CHI2_LEVEL)
    return CheckOutcome(measured=res.p_value, expected=0.0, tolerance=CHI2_LEVEL, comparison="le", detail=str(res))
