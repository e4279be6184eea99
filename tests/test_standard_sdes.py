"""Every standard SDE against its closed form: Monte Carlo moments, exact sampling, pathwise GBM."""

import math

import pytest
import torch
import torchsde

import sdeflow as sf

from helpers import mean_and_se, var_and_se

N = 20_000
# Each case: SDE, x0 value, times to check, dt (small enough that the O(dt) bias of the scheme is
# far below one standard error of the N-path Monte Carlo estimate), method.
CASES = {
    "bm": (lambda: sf.BrownianMotion(mu=0.7, sigma=1.3), 0.5, [0.25, 1.0, 2.0], 1 / 64, "euler"),
    "ou": (lambda: sf.OrnsteinUhlenbeck(theta=1.5, mean=0.4, sigma=0.8), 2.0, [0.1, 0.5, 2.0], 1 / 1024, "sra1"),
    "gbm": (lambda: sf.GeometricBrownianMotion(mu=0.3, sigma=0.4), 1.0, [0.25, 0.5, 1.0], 1 / 1024, "milstein"),
    "vp": (lambda: sf.VPSDE(), 1.5, [0.1, 0.3, 1.0], 1 / 2048, "sra1"),
    "subvp": (lambda: sf.SubVPSDE(), 1.5, [0.1, 0.3, 1.0], 1 / 2048, "sra1"),
    "ve": (lambda: sf.VESDE(), 1.5, [0.1, 0.5, 1.0], 1 / 2048, "sra1"),
    "edm": (lambda: sf.EDMSDE(), 1.5, [0.5, 2.0, 10.0], 1 / 256, "sra1"),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_monte_carlo_moments_match_closed_form(name):
    make, x0v, times, dt, method = CASES[name]
    sde = make()
    x0 = torch.full((N, 1), x0v, dtype=torch.float64)
    sol = sf.simulate(sde, x0, [0.0] + times, dt=dt, method=method, generator=1234)
    for k, t in enumerate(times, start=1):
        xt = sol.xs[k]
        m, m_se = mean_and_se(xt)
        v, v_se = var_and_se(xt)
        m_true = float(sde.marginal_mean(t, x0[:1]).squeeze())
        if name == "gbm":
            s_true = float(sde.marginal_std(t, x0[:1]).squeeze())
        else:
            s_true = float(sde.marginal_std(torch.tensor(t, dtype=torch.float64)))
        # 4 standard errors: a false alarm has probability ~6e-5 per check.
        assert abs(m - m_true) < 4 * m_se, (name, t, m, m_true, m_se)
        assert abs(v - s_true**2) < 4 * v_se, (name, t, v, s_true**2, v_se)


@pytest.mark.parametrize("name", sorted(CASES))
def test_exact_sampler_and_log_prob(name):
    make, x0v, times, _, _ = CASES[name]
    sde = make()
    t = times[1]
    x0 = torch.full((N, 1), x0v, dtype=torch.float64)
    xt = sde.sample_marginal(x0, t, generator=7)
    m, m_se = mean_and_se(xt)
    assert abs(m - float(sde.marginal_mean(t, x0[:1]).squeeze())) < 4 * m_se
    # The log-density integrates to one: check it on a grid for the first path.
    lo, hi = float(xt.min()), float(xt.max())
    grid = torch.linspace(lo - 1.0 * (hi - lo), hi + 1.0 * (hi - lo), 20001, dtype=torch.float64)[:, None]
    lp = sde.marginal_log_prob(grid, t, x0[:1].expand_as(grid))
    mass = torch.trapezoid(lp.exp(), grid[:, 0])
    assert abs(float(mass) - 1.0) < 1e-3
    # Quantiles: the median of the samples lies within 4 standard errors of the closed-form median.
    med = float(sde.marginal_quantile(0.5, t, x0[:1]).squeeze())
    frac_below = float((xt < med).double().mean())
    assert abs(frac_below - 0.5) < 4 * math.sqrt(0.25 / N)


def test_gbm_closed_form_is_the_fine_step_solution_pathwise():
    sde = sf.GeometricBrownianMotion(mu=0.5, sigma=0.6)
    b = 256
    x0 = torch.full((b, 1), 1.0, dtype=torch.float64)
    bm = torchsde.BrownianInterval(0.0, 1.0, size=(b, 1), dtype=torch.float64, entropy=3)
    exact = sde.exact_solution(x0, 1.0, bm(0.0, 1.0))
    errors = []
    for dt in (2.0**-8, 2.0**-11):
        sol = sf.simulate(sde, x0, [0.0, 1.0], dt=dt, method="milstein", bm=bm)
        errors.append(float((sol.final - exact).abs().mean()))
    # Milstein is strong order 1: the mean pathwise error shrinks ~8x from dt 2^-8 to 2^-11 and is
    # already small. (Bounds leave a factor ~2 for Monte Carlo scatter of the error constant.)
    assert errors[1] < 2e-3
    assert errors[0] / errors[1] > 4.0


def test_diffusion_sde_prior_and_scale():
    for sde in (sf.VPSDE(), sf.SubVPSDE(), sf.VESDE(), sf.EDMSDE()):
        x = sde.prior_sample((50_000, 2), generator=0, dtype=torch.float64)
        s, s_se = var_and_se(x)
        assert abs(s - sde.prior_std**2) < 4 * s_se
        lp = sde.prior_log_prob(torch.zeros(1, 2, dtype=torch.float64))
        assert torch.allclose(lp, torch.tensor([-2 * math.log(sde.prior_std) - math.log(2 * math.pi)],
                                               dtype=torch.float64))
    vp = sf.VPSDE()
    t = torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64)
    # VP keeps variance 1 when the data have variance 1: scale^2 + std^2 = 1.
    assert torch.allclose(vp.marginal_scale(t) ** 2 + vp.marginal_std(t) ** 2, torch.ones(3, dtype=torch.float64))
    # sub-VP's std is below VP's.
    assert bool((sf.SubVPSDE().marginal_std(t[1:]) < vp.marginal_std(t[1:])).all())


def test_parameters_can_be_learned():
    theta = torch.nn.Parameter(torch.tensor(1.0, dtype=torch.float64))
    ou = sf.OrnsteinUhlenbeck(theta=theta, mean=1.0, sigma=0.1)
    assert any(p is theta for p in ou.parameters())
    x0 = torch.zeros(8, 1, dtype=torch.float64)
    ou.marginal_mean(1.0, x0).sum().backward()
    # d/dθ [m(1 − e^{−θ})] = m e^{−θ} per path.
    assert torch.allclose(theta.grad, torch.tensor(8 * math.exp(-1.0), dtype=torch.float64))


@pytest.mark.parametrize("bad", [dict(sigma=0.0), dict(sigma=float("nan")), dict(theta=-1.0)])
def test_bad_parameters_raise(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        sf.OrnsteinUhlenbeck(**bad)
