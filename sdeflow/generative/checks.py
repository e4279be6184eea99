"""Probability-flow ODE and sampler checks for ``sdeflow verify`` (registered on import).

Groups:

* ``pf_ode/...`` — the theorem, numerically: the exact Gaussian-mixture marginals ``p_t`` of a VP
  and an EDM SDE give zero continuity-equation residual under the PF-ODE *and* zero Fokker–Planck
  residual under the SDE (relative, float64); PF-ODE and reverse-SDE samples from the prior with
  the exact score reproduce the mixture (ΔNLL within 3 SE + 0.02, mode weights within 4 SE); the
  exact-trace PF-ODE log-likelihood is within 0.01 nats of the exact log-density; Hutchinson's
  estimate is unbiased within 4 standard errors.
* ``samplers/order/...`` — the measured convergence order of each ODE sampler (pathwise error to
  a tight reference on a log-SNR grid) against its declared order.

:func:`pf_ode_checks` lists the check functions by name (usable without the suite).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

import torch
from torch import Tensor

from ..conversion.continuity import continuity_residual
from ..conversion.likelihood import log_likelihood
from ..conversion.probability_flow import probability_flow
from ..conversion.reverse import reverse_sde
from ..plots import pyplot, save_figure
from ..sde.edm import EDMSDE
from ..sde.vp import VPSDE
from ..solve.ode import solve_ode
from ..solve.simulate import simulate
from ..verify.suite import CheckOutcome, SuiteContext, register_check
from .metrics import mixture_sample_quality, pathwise_rms
from .mixture import GaussianMixture
from .samplers import SAMPLER_SPECS, SAMPLERS, sample_adaptive
from .schedules import karras_sigmas, log_snr_sigmas
from .toy_data import eight_gaussians

__all__ = ["pf_ode_checks", "RESIDUAL_TOL", "SAMPLER_ORDERS"]

RESIDUAL_TOL = 1e-10
#: Declared ODE orders of sdeflow's deterministic samplers, read from their ``@sampler`` declarations
#: (UniPC-2's corrected result is third order); a built-in sampler declaring one is checked automatically.
SAMPLER_ORDERS = {name: spec.order for name, spec in SAMPLER_SPECS.items()
                  if (spec.fn.__module__ or "").startswith("sdeflow.") and spec.order_kind == "ode"
                  and spec.order is not None and not spec.stochastic}
_F64 = torch.float64


def _sdes() -> dict[str, object]:
    return {"vp": VPSDE(), "edm": EDMSDE()}


def _residual_points(sde: object, ctx: SuiteContext, n: int = 256) -> tuple[GaussianMixture, Tensor, Tensor]:
    gm = eight_gaussians().to(ctx.device)
    g = torch.Generator(device=ctx.device).manual_seed(ctx.seed + 101)
    t = sde.eps + (0.6 * sde.T - sde.eps) * torch.rand(n, generator=g, dtype=_F64, device=ctx.device)
    x0 = gm.sample(n, generator=ctx.seed + 102, dtype=_F64, device=ctx.device)
    return gm, t, sde.sample_marginal(x0, t, generator=ctx.seed + 103)


def _continuity(which: str) -> Callable[[SuiteContext], CheckOutcome]:
    def run(ctx: SuiteContext) -> CheckOutcome:
        sde = _sdes()[which]
        gm, t, x = _residual_points(sde, ctx)
        r = continuity_residual(probability_flow(sde, gm.score_fn(sde)), gm.log_prob_fn(sde), t, x)
        wrong = continuity_residual(probability_flow(sde, gm.score_fn(VPSDE(beta_max=5.0))),
                                    gm.log_prob_fn(sde), t, x).max_relative()
        return CheckOutcome(measured=r.max_relative(), expected=0.0, tolerance=RESIDUAL_TOL, comparison="le",
                            detail=f"max |∂t log p + ∇·v + v·∇log p| / scale over 256 points; another SDE's score "
                                   f"gives {wrong:.2g}", data={"wrong_score": wrong})

    return run


def _fokker_planck(which: str) -> Callable[[SuiteContext], CheckOutcome]:
    def run(ctx: SuiteContext) -> CheckOutcome:
        from ..fokker_planck import fokker_planck_residual

        sde = _sdes()[which]
        gm, t, x = _residual_points(sde, ctx)
        fp = fokker_planck_residual(sde, gm.log_prob_fn(sde), t, x)
        return CheckOutcome(measured=fp.max_relative(), expected=0.0, tolerance=RESIDUAL_TOL, comparison="le",
                            detail="the same p_t as the continuity check, under the SDE's Fokker–Planck equation")

    return run


def _save(fig: object, path: Path) -> Path:
    return save_figure(fig, path, dpi=100)


def _samples_plot(name: str, gm: GaussianMixture, x: Tensor, title: str, seed: int) -> Callable[[Path], list[Path]]:
    """A figure writer: the check's samples beside exact mixture samples (the first 4,000 of each)."""
    pts = x[:4000].detach().to("cpu", _F64)
    ref = gm.to("cpu").sample(pts.shape[0], generator=seed, dtype=_F64)

    def plot(folder: Path) -> list[Path]:
        plt = pyplot()
        fig, axes = plt.subplots(1, 2, figsize=(8, 4), sharex=True, sharey=True)
        for ax, data, label in ((axes[0], ref, "exact mixture samples"), (axes[1], pts, title)):
            ax.scatter(data[:, 0], data[:, 1], s=0.8, alpha=0.4, linewidths=0)
            ax.set_title(label, fontsize=9)
            ax.set_xlabel("x₁")
            ax.set_ylabel("x₂")
            ax.set_aspect("equal")
        fig.tight_layout()
        return [_save(fig, folder / f"{name}.png")]

    return plot


def _quality_outcome(q, what: str) -> CheckOutcome:  # noqa: ANN001
    tol = 3 * q.delta_nll_se + 0.02
    return CheckOutcome(measured=q.delta_nll, expected=0.0, tolerance=tol, comparison="abs",
                        detail=f"{what}; ΔNLL ± {q.delta_nll_se:.3g} (n={q.n_samples}); mode weights max "
                               f"{q.max_mode_z:.2f} SE off (≤ 4 required)",
                        data={"delta_nll_se": q.delta_nll_se, "max_mode_z": q.max_mode_z,
                              "modes_ok": q.modes_ok(4.0)})


def _samples_pf_ode(ctx: SuiteContext) -> CheckOutcome:
    vp = VPSDE()
    gm = eight_gaussians().to(ctx.device)
    n = 5000 if ctx.quick else 20_000
    x_T = vp.prior_sample((n, 2), generator=ctx.seed + 11, dtype=_F64, device=ctx.device)
    sol = solve_ode(probability_flow(vp, gm.score_fn(vp)), x_T, [vp.T, vp.eps], rtol=1e-6, atol=1e-6)
    q = mixture_sample_quality(gm, sol.final, t=vp.eps, sde=vp, generator=ctx.seed + 12)
    out = _quality_outcome(q, f"VP PF-ODE (dopri5, {sol.stats.nfe} NFE) from the prior with the exact score")
    out.plot = _samples_plot("pf_ode_samples", gm, sol.final, f"PF-ODE samples (ΔNLL {q.delta_nll:+.3f})",
                             ctx.seed + 13)
    if not q.modes_ok(4.0):
        out.measured = math.inf
    return out


def _samples_reverse_sde(ctx: SuiteContext) -> CheckOutcome:
    vp = VPSDE()
    gm = eight_gaussians().to(ctx.device)
    n = 5000 if ctx.quick else 20_000
    x_T = vp.prior_sample((n, 2), generator=ctx.seed + 21, dtype=_F64, device=ctx.device)
    sol = simulate(reverse_sde(vp, gm.score_fn(vp)), x_T, [vp.T, vp.eps], dt=2e-3, generator=ctx.seed + 22,
                   save="final")
    q = mixture_sample_quality(gm, sol.final, t=vp.eps, sde=vp, generator=ctx.seed + 23)
    out = _quality_outcome(q, "VP reverse SDE (Euler–Maruyama, 500 steps) with the exact score")
    out.plot = _samples_plot("reverse_sde_samples", gm, sol.final,
                             f"reverse-SDE samples (ΔNLL {q.delta_nll:+.3f})", ctx.seed + 24)
    if not q.modes_ok(4.0):
        out.measured = math.inf
    return out


def _likelihood(ctx: SuiteContext) -> CheckOutcome:
    vp = VPSDE()
    gm = eight_gaussians().to(ctx.device)
    x = gm.sample(50 if ctx.quick else 200, generator=ctx.seed + 31, dtype=_F64, device=ctx.device)
    res = log_likelihood(vp, gm.score_fn(vp), x)
    err = float((res.log_prob - gm.log_prob(x, vp.eps, vp)).abs().max())
    return CheckOutcome(measured=err, expected=0.0, tolerance=0.01, comparison="le",
                        detail=f"max |log p_PF − log p_exact| (nats), exact trace, dopri5 ({res.nfe} NFE), "
                               f"ε → T integration")


def _hutchinson(ctx: SuiteContext) -> CheckOutcome:
    vp = VPSDE()
    gm = eight_gaussians().to(ctx.device)
    x1 = gm.sample(4, generator=ctx.seed + 41, dtype=_F64, device=ctx.device)
    reps = 200
    exact = log_likelihood(vp, gm.score_fn(vp), x1, rtol=1e-7).log_prob
    est = log_likelihood(vp, gm.score_fn(vp), x1.repeat_interleave(reps, 0), trace="hutchinson",
                         generator=ctx.seed + 42, rtol=1e-7).log_prob.reshape(4, reps)
    z = ((est.mean(1) - exact).abs() / (est.std(1) / math.sqrt(reps))).max()
    return CheckOutcome(measured=float(z), expected=0.0, tolerance=4.0, comparison="le",
                        detail="max over 4 points of |mean of 200 Hutchinson estimates − exact| / SE")


@lru_cache(maxsize=4)
def _order_problem(device: str, seed: int) -> tuple[Callable, Tensor, Tensor]:
    """Two correlated Gaussian components, 256 starting points, and a dopri5 reference at rtol 1e-12."""
    gm = GaussianMixture([0.3, 0.7], [[1.0, 0.0], [-0.5, 0.5]],
                         [[[0.3, 0.1], [0.1, 0.2]], [[0.2, -0.05], [-0.05, 0.25]]]).to(device)
    g = torch.Generator(device=device).manual_seed(seed + 51)
    x_T = 80.0 * torch.randn(256, 2, generator=g, dtype=_F64, device=device)
    den = gm.as_denoiser()
    ref = sample_adaptive(den, x_T, karras_sigmas(2, 0.002, 80.0), rtol=1e-12, atol=1e-12).x
    return den, x_T, ref


def _order(name: str) -> Callable[[SuiteContext], CheckOutcome]:
    def run(ctx: SuiteContext) -> CheckOutcome:
        den, x_T, ref = _order_problem(str(ctx.device), ctx.seed)
        ns = [20, 40, 80]
        errs = [pathwise_rms(SAMPLERS[name](den, x_T, log_snr_sigmas(n, 0.002, 80.0)).x, ref) for n in ns]
        slope = math.log(errs[0] / errs[-1]) / math.log(ns[-1] / ns[0])
        declared = SAMPLER_ORDERS[name]

        def plot(folder: Path) -> list[Path]:
            from matplotlib.ticker import FixedLocator, NullFormatter, NullLocator, ScalarFormatter

            plt = pyplot()
            fig, ax = plt.subplots(figsize=(5, 4))
            ax.loglog(ns, errs, "o-", label=f"measured, slope {slope:.2f}")
            ax.loglog(ns, [errs[-1] * (ns[-1] / n) ** declared for n in ns], "k--",
                      label=f"slope {declared:g} (declared)")
            ax.xaxis.set_major_locator(FixedLocator(ns))  # one decade or less: label the measured steps only
            ax.xaxis.set_major_formatter(ScalarFormatter())
            ax.xaxis.set_minor_locator(NullLocator())
            ax.yaxis.set_minor_formatter(NullFormatter())
            ax.set_xlabel("steps (log-SNR grid, σ 80 → 0.002)")
            ax.set_ylabel("pathwise RMS error to the dopri5 reference")
            ax.set_title(f"{name}: order {slope:.2f}, declared {declared:g}", fontsize=9)
            ax.grid(True, which="major", alpha=0.3)
            ax.legend(fontsize=8)
            fig.tight_layout()
            return [_save(fig, folder / f"samplers_order_{name}.png")]

        return CheckOutcome(measured=slope, expected=declared, tolerance=0.25, comparison="abs",
                            detail="pathwise error vs steps (20, 40, 80) on a log-SNR grid, σ 80 → 0.002 → 0",
                            data={"steps": ns, "errors": errs}, plot=plot)

    return run


def pf_ode_checks() -> dict[str, Callable[[SuiteContext], CheckOutcome]]:
    """Every check of this module by name (each ``fn(ctx) -> CheckOutcome``)."""
    checks: dict[str, Callable[[SuiteContext], CheckOutcome]] = {}
    for which in ("vp", "edm"):
        checks[f"pf_ode/continuity_residual_{which}"] = _continuity(which)
        checks[f"pf_ode/fokker_planck_same_density_{which}"] = _fokker_planck(which)
    checks["pf_ode/samples_delta_nll"] = _samples_pf_ode
    checks["pf_ode/reverse_sde_delta_nll"] = _samples_reverse_sde
    checks["pf_ode/likelihood_exact_trace"] = _likelihood
    checks["pf_ode/hutchinson_unbiased"] = _hutchinson
    for name in SAMPLER_ORDERS:
        checks[f"samplers/order/{name}"] = _order(name)
    return checks


_DESCRIPTIONS = {
    "continuity_residual": "PF-ODE continuity residual of the exact mixture p_t, relative, ≤ 1e-10",
    "fokker_planck_same_density": "Fokker–Planck residual of the same p_t under the SDE, relative, ≤ 1e-10",
    "samples_delta_nll": "PF-ODE samples with the exact score: ΔNLL within 3 SE + 0.02, modes within 4 SE",
    "reverse_sde_delta_nll": "reverse-SDE samples with the exact score: ΔNLL within 3 SE + 0.02, modes within 4 SE",
    "likelihood_exact_trace": "PF-ODE log-likelihood (exact trace) within 0.01 nats of the exact log-density",
    "hutchinson_unbiased": "Hutchinson log-likelihood unbiased within 4 standard errors",
    "order": "sampler convergence order vs NFE, ±0.25",
}
_SLOW = {"pf_ode/hutchinson_unbiased"}

for _name, _fn in pf_ode_checks().items():
    _key = next(k for k in _DESCRIPTIONS if k in _name)
    register_check(_name, _fn, group=_name.split("/")[0], quick=_name not in _SLOW,
                   description=_DESCRIPTIONS[_key])
