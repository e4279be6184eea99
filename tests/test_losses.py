"""Training losses (sdeflow.generative.losses) against closed forms for Gaussian data.

For data N(m, s² I) in d dimensions and x_t = α x0 + σ ε, the posterior of x0 given x_t is Gaussian
with per-coordinate variance v = s²σ²/(α²s² + σ²). Every prediction target (x0, ε, v, score) is
affine in x0 at fixed x_t, so the optimal model is its posterior mean and, at a fixed t, the optimal
per-example loss is w(t)·Var(target | x_t)·χ²_d: mean f(t) = d·w·Var, second moment (1 + 2/d)·f².
Integrating over t (composite Gauss–Legendre on log-spaced panels, float64) gives the minimal
expected loss and the *exact* Monte Carlo standard error, so the checks use "4 standard errors"
of a known variance (Chebyshev: a correct loss fails at most 1/16 of seeds even for heavy-tailed
values; for the near-normal means here, ~6e-5). The optimal models are built from a one-component
GaussianMixture (exact posterior mean) and sdeflow.convert_prediction, independently of the loss.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from sdeflow.conversion.parameterization import PREDICTIONS, convert_prediction
from sdeflow.generative.losses import (
    DSM_WEIGHTINGS,
    DenoisingScoreMatching,
    EDMLoss,
    LogNormalSigma,
    PseudoHuber,
    SquaredL2,
    drop_labels,
)
from sdeflow.generative.mixture import GaussianMixture
from sdeflow.generative.precond import estimate_sigma_data
from sdeflow.sde.edm import EDMSDE
from sdeflow.sde.subvp import SubVPSDE
from sdeflow.sde.ve import VESDE
from sdeflow.sde.vp import VPSDE

F64 = torch.float64
D = 3
M = torch.tensor([0.5, -1.0, 2.0], dtype=F64)
S = 0.7
SDES = {"vp": VPSDE(), "subvp": SubVPSDE(), "ve": VESDE(), "edm": EDMSDE()}
GAUSS = GaussianMixture([1.0], M[None], S**2)


def optimal_model(sde, prediction):
    """The exact minimiser: the posterior mean of the target, via the exact denoiser and convert_prediction."""
    def model(x, t):
        return convert_prediction(GAUSS.denoiser(x, t, sde), x, t, sde, source="x0", target=prediction)
    return model


def data(n, seed):
    g = torch.Generator().manual_seed(seed)
    return M + S * torch.randn(n, D, generator=g, dtype=F64)


# -- closed forms (written from the formulas, not from the loss code) ----------------------------------
def coefficients(sde, t):
    t = torch.as_tensor(t, dtype=F64)
    a, s = sde.marginal_scale(t).to(F64), sde.marginal_std(t).to(F64)
    g2 = sde.diffusion(t, torch.zeros(t.shape[0], 1, dtype=F64)).reshape(-1) ** 2
    return a, s, g2


def optimal_per_t(sde, prediction, weighting, t):
    """f(t) = E[loss | t] at the optimum, and w(t), Var(target | x_t) per coordinate."""
    a, s, g2 = coefficients(sde, t)
    post = S**2 * s**2 / (a**2 * S**2 + s**2)
    var = {"x0": post, "eps": a**2 * post / s**2, "score": a**2 * post / s**4,
           "v": (a**2 + s**2) ** 2 * post / s**2}[prediction]
    c = {"score": 1 / s**0, "eps": 1 / s**2, "x0": a**2 / s**4, "v": a**2 / (s**2 * (a**2 + s**2) ** 2)}[prediction]
    lam = {"simple": 1 / c, "sigma2": s**2, "likelihood": g2}[weighting]
    w = lam * c
    return D * w * var, w, var


def gl_nodes(t_min, t_max, panels=40, order=12):
    """Composite Gauss–Legendre on log-spaced panels; weights normalised to the uniform density on [t_min, t_max]."""
    x, wq = np.polynomial.legendre.leggauss(order)
    edges = np.geomspace(t_min, t_max, panels + 1)
    lo, hi = edges[:-1, None], edges[1:, None]
    nodes = (0.5 * (hi - lo) * x + 0.5 * (hi + lo)).ravel()
    weights = (0.5 * (hi - lo) * wq).ravel() / (t_max - t_min)
    return torch.tensor(nodes, dtype=F64), torch.tensor(weights, dtype=F64)


def expected(sde, prediction, weighting, panels=40, order=12, importance=False):
    """(E[loss], exact SE of one sample's value) under t ~ U[eps, T] (or the importance proposal)."""
    t, w = gl_nodes(sde.eps, sde.T, panels, order)
    f, _, _ = optimal_per_t(sde, prediction, weighting, t)
    r = torch.ones_like(t)
    if importance:  # p/q with q ∝ g²/σ², normalised by log σ̃² (the loss's claim, checked separately)
        a, s, g2 = coefficients(sde, t)
        lo, hi = (2 * torch.log(sde.noise_level(torch.tensor(v, dtype=F64))) for v in (sde.eps, sde.T))
        r = (hi - lo) / (sde.T - sde.eps) * s**2 / g2
    mean = float((w * f).sum())
    second = float((w * r * (1 + 2 / D) * f**2).sum())
    return mean, math.sqrt(second - mean**2)


CASES = [(k, p, w) for k in SDES for p in PREDICTIONS for w in DSM_WEIGHTINGS]


@pytest.mark.parametrize("kind", list(SDES))
def test_quadrature_is_converged_and_importance_density_normalised(kind):
    # The closed-form integrals are numerically exact: a 3x finer rule agrees to 1e-9 (relative).
    sde = SDES[kind]
    for p in PREDICTIONS:
        for wt in DSM_WEIGHTINGS:
            coarse, fine = expected(sde, p, wt)[0], expected(sde, p, wt, panels=120, order=24)[0]
            assert abs(coarse - fine) <= 1e-9 * abs(fine), (p, wt)
    # ∫ g²/σ² dt = log σ̃²(T) − log σ̃²(eps): the importance proposal of the likelihood weighting is normalised.
    t, w = gl_nodes(sde.eps, sde.T, 120, 24)
    _, s, g2 = coefficients(sde, t)
    integral = float((w * g2 / s**2).sum()) * (sde.T - sde.eps)
    ends = [2 * math.log(float(sde.noise_level(torch.tensor(v, dtype=F64)))) for v in (sde.eps, sde.T)]
    assert integral == pytest.approx(ends[1] - ends[0], rel=1e-9)


@pytest.mark.parametrize("kind,prediction,weighting", CASES)
def test_dsm_minimum_at_fixed_times(kind, prediction, weighting):
    # t on the quadrature nodes (R draws of (x0, ε) each): the stratified estimate has expectation
    # Σ_j W_j f(t_j) — the closed form — exactly, and a light-tailed (χ²_d) error of known variance.
    sde = SDES[kind]
    nodes, weights = gl_nodes(sde.eps, sde.T)
    reps = 32
    t = nodes.repeat_interleave(reps)
    x0 = data(t.shape[0], seed=1)
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(2), dtype=F64)
    loss = DenoisingScoreMatching(sde, prediction, weighting)
    values = loss(optimal_model(sde, prediction), x0, t=t, noise=noise)
    assert values.shape == (t.shape[0],) and values.dtype == F64
    estimate = float((weights * values.reshape(-1, reps).mean(1)).sum())
    f, _, _ = optimal_per_t(sde, prediction, weighting, nodes)
    closed = float((weights * f).sum())
    se = float(torch.sqrt((weights**2 * (2 / D) * f**2 / reps).sum()))
    assert abs(estimate - closed) <= 4 * se, (estimate, closed, se)
    if weighting != "simple":  # one score-space objective: the same minimum for every prediction type
        a, s, g2 = coefficients(sde, nodes)
        lam = s**2 if weighting == "sigma2" else g2
        score_space = D * lam * a**2 * S**2 / (s**2 * (a**2 * S**2 + s**2))
        assert torch.allclose(f, score_space, rtol=1e-10)


@pytest.mark.parametrize("kind,prediction,weighting", CASES)
def test_dsm_minimum_with_its_own_time_sampling(kind, prediction, weighting):
    # The loss draws t ~ U[eps, T] and ε itself; its mean at the optimum matches the integral within
    # 4 exact standard errors (the variance is the closed form's, not estimated from the sample).
    sde = SDES[kind]
    n = 1 << 15
    loss = DenoisingScoreMatching(sde, prediction, weighting)
    values = loss(optimal_model(sde, prediction), data(n, seed=3), generator=4)
    closed, sd = expected(sde, prediction, weighting)
    assert abs(float(values.mean()) - closed) <= 4 * sd / math.sqrt(n), (float(values.mean()), closed, sd)


@pytest.mark.parametrize("kind", list(SDES))
@pytest.mark.parametrize("prediction", PREDICTIONS)
def test_dsm_likelihood_importance_sampling(kind, prediction):
    # Importance sampling keeps the objective (same closed-form mean) and, for eps, bounds the
    # variance: the exact SD under q is below the uniform-t SD.
    sde = SDES[kind]
    n = 1 << 15
    loss = DenoisingScoreMatching(sde, prediction, "likelihood", importance="likelihood")
    values = loss(optimal_model(sde, prediction), data(n, seed=5), generator=6)
    closed, sd = expected(sde, prediction, "likelihood", importance=True)
    assert closed == pytest.approx(expected(sde, prediction, "likelihood")[0], rel=1e-12)
    assert abs(float(values.mean()) - closed) <= 4 * sd / math.sqrt(n)
    if prediction == "eps":
        assert sd < expected(sde, prediction, "likelihood")[1]


@pytest.mark.parametrize("kind", ["vp", "ve", "edm"])
def test_importance_times_are_log_uniform_in_noise_level(kind):
    sde = SDES[kind]
    loss = DenoisingScoreMatching(sde, "eps", "likelihood", importance="likelihood")
    t = loss.sample_time(20000, generator=7, dtype=F64)
    assert float(t.min()) >= sde.eps and float(t.max()) <= sde.T
    u = 2 * torch.log(sde.noise_level(t))
    lo, hi = (2 * math.log(float(sde.noise_level(torch.tensor(v, dtype=F64)))) for v in (sde.eps, sde.T))
    # KS test of log σ̃² against U[lo, hi]; fixed seed, a correct sampler fails with probability 1e-3.
    assert stats.kstest(((u - lo) / (hi - lo)).numpy(), "uniform").pvalue > 1e-3
    t_uniform = DenoisingScoreMatching(sde).sample_time(20000, generator=7, dtype=F64)
    assert float(t_uniform.min()) >= sde.eps and float(t_uniform.max()) <= sde.T
    assert stats.kstest(((t_uniform - sde.eps) / (sde.T - sde.eps)).numpy(), "uniform").pvalue > 1e-3


# -- the common form and its pieces -----------------------------------------------------------------------
@pytest.mark.parametrize("kind", list(SDES))
def test_dsm_is_score_space_loss_of_the_converted_prediction(kind):
    # For any (non-optimal) model: loss = λ(t)·‖convert(pred → score) − (−ε/σ)‖² (sigma2, likelihood)
    # and loss = ‖pred − target‖² with the target from convert_prediction of the true x0 (simple).
    sde = SDES[kind]
    b = 64
    gen = torch.Generator().manual_seed(8)
    x0 = data(b, seed=9)
    t = sde.eps + (sde.T - sde.eps) * torch.rand(b, generator=gen, dtype=F64)
    noise = torch.randn(x0.shape, generator=gen, dtype=F64)
    a, s, g2 = coefficients(sde, t)
    xt = a[:, None] * x0 + s[:, None] * noise

    def model(x, tt):
        return torch.sin(x) * (1 + tt[:, None]) + 0.3

    for p in PREDICTIONS:
        pred = model(xt, t)
        score = convert_prediction(pred, xt, t, sde, source=p, target="score")
        sq = ((score + noise / s[:, None]) ** 2).sum(1)
        for wt, lam in (("sigma2", s**2), ("likelihood", g2)):
            got = DenoisingScoreMatching(sde, p, wt)(model, x0, t=t, noise=noise)
            torch.testing.assert_close(got, lam * sq, rtol=1e-9, atol=0)
        target = convert_prediction(x0, xt, t, sde, source="x0", target=p)
        got = DenoisingScoreMatching(sde, p, "simple")(model, x0, t=t, noise=noise)
        torch.testing.assert_close(got, ((pred - target) ** 2).sum(1), rtol=1e-9, atol=1e-12)
        lam = lambda tt: 1 + tt  # noqa: E731  (a callable score-space weighting)
        got = DenoisingScoreMatching(sde, p, lam)(model, x0, t=t, noise=noise)
        torch.testing.assert_close(got, (1 + t) * sq, rtol=1e-9, atol=0)
    eps_simple = DenoisingScoreMatching(sde, "eps", "simple")(model, x0, t=t, noise=noise)
    eps_sigma2 = DenoisingScoreMatching(sde, "eps", "sigma2")(model, x0, t=t, noise=noise)
    assert torch.equal(eps_simple, eps_sigma2)  # Song et al.'s λ = σ² is Ho et al.'s ε-loss exactly


def test_dsm_draw_order_and_reproducibility():
    sde = VPSDE()
    loss = DenoisingScoreMatching(sde, "eps", "sigma2")
    x0 = data(16, seed=10)
    model = optimal_model(sde, "eps")
    a = loss(model, x0, generator=11)
    assert torch.equal(a, loss(model, x0, generator=torch.Generator().manual_seed(11)))
    gen = torch.Generator().manual_seed(11)
    t = loss.sample_time(16, generator=gen, dtype=F64)
    noise = torch.randn(x0.shape, generator=gen, dtype=F64)
    assert torch.equal(a, loss(model, x0, t=t, noise=noise))
    assert not torch.equal(a, loss(model, x0, generator=12))
    # A Python-float time is taken at x0's precision (float64 here), the same as a (B,) tensor.
    assert torch.equal(loss(model, x0, t=0.3, noise=noise), loss(model, x0, t=torch.full((16,), 0.3, dtype=F64),
                                                                     noise=noise))
    # 16-bit data is promoted: the loss is float32, equal to the loss of the float32 data.
    half = x0.to(torch.bfloat16)
    got = loss(model, half, t=t.float(), noise=noise.float())
    assert got.dtype == torch.float32
    assert torch.equal(got, loss(model, half.float(), t=t.float(), noise=noise.float()))


def test_image_states_bf16_outputs_and_gradients():
    sde = EDMSDE()
    x0 = torch.randn(6, 2, 4, 4, generator=torch.Generator().manual_seed(13))
    net = torch.nn.Conv2d(2, 2, 3, padding=1)

    def model(x, t):
        return net(x).to(torch.bfloat16)  # a low-precision network output

    for loss in (DenoisingScoreMatching(sde, "x0", "likelihood"), EDMLoss()):
        values = loss(model, x0, generator=14)
        assert values.shape == (6,) and values.dtype == torch.float32
        values.mean().backward()
        assert net.weight.grad is not None and bool(torch.isfinite(net.weight.grad).all())
        net.zero_grad()
    # Per-example sum over all event dims: the same as the flattened problem.
    flat = EDMLoss()(lambda x, s: x.reshape(6, 2, 4, 4).flip(1).reshape(6, -1) * 0.5, x0.reshape(6, -1), generator=15)
    img = EDMLoss()(lambda x, s: x.flip(1) * 0.5, x0, generator=15)
    torch.testing.assert_close(flat, img)


# -- EDM loss --------------------------------------------------------------------------------------------
def edm_closed(loss, s, sigma):
    return loss.weight(sigma) * D * s**2 * sigma**2 / (s**2 + sigma**2)


def hermite(loss, order=240):
    z, w = np.polynomial.hermite_e.hermegauss(order)
    sigma = torch.tensor(np.exp(loss.P_mean + loss.P_std * z), dtype=F64)
    return sigma, torch.tensor(w / w.sum(), dtype=F64)


@pytest.mark.parametrize("P_mean,P_std,sigma_data", [(-1.2, 1.2, 0.5), (0.3, 1.6, 2.0), (-1.2, 1.2, S)])
def test_edm_loss_minimum(P_mean, P_std, sigma_data):
    loss = EDMLoss(P_mean, P_std, sigma_data)
    d_star = GAUSS.as_denoiser()
    x = data(5, seed=16)
    sig = torch.tensor([0.01, 0.3, 1.0, 5.0, 80.0], dtype=F64)
    torch.testing.assert_close(d_star(x, sig), M + S**2 / (S**2 + sig[:, None] ** 2) * (x - M))
    nodes, w = hermite(loss)
    f = edm_closed(loss, S, nodes)
    closed = float((w * f).sum())
    finer = hermite(loss, 320)  # the Gauss–Hermite rule is converged: 240 and 320 nodes agree to 1e-10
    assert closed == pytest.approx(float((finer[1] * edm_closed(loss, S, finer[0])).sum()), rel=1e-10)
    if sigma_data == S:  # EDM's λ gives every noise level the same minimal loss, d
        torch.testing.assert_close(f, torch.full_like(f, float(D)), rtol=1e-12, atol=0)
    # (1) σ fixed on the Gauss–Hermite nodes: stratified estimate, exact SE.
    reps = 32
    sigma = nodes.repeat_interleave(reps)
    values = loss(d_star, data(sigma.shape[0], seed=17), sigma=sigma, generator=18)
    est = float((w * values.reshape(-1, reps).mean(1)).sum())
    se = float(torch.sqrt((w**2 * (2 / D) * f**2 / reps).sum()))
    assert abs(est - closed) <= 4 * se
    # (2) the loss's own lognormal σ draws.
    n = 1 << 15
    values = loss(d_star, data(n, seed=19), generator=20)
    sd = math.sqrt(float((w * (1 + 2 / D) * f**2).sum()) - closed**2)
    assert abs(float(values.mean()) - closed) <= 4 * sd / math.sqrt(n)


def test_edm_loss_is_dsm_on_the_edm_sde_with_its_weight():
    # On the EDM SDE (α = 1, σ = t) an x0 model is a denoiser, and DSM with the score-space weight
    # λ(t) = t⁴·λ_EDM(t) (so that w = λ α²/σ⁴ = λ_EDM) is the EDM loss at σ = t: one family of losses.
    edm = EDMLoss(sigma_data=1.3)
    dsm = DenoisingScoreMatching(EDMSDE(), "x0", lambda t: t**4 * edm.weight(t))
    x0 = data(32, seed=30)
    sigma = torch.exp(torch.randn(32, generator=torch.Generator().manual_seed(31), dtype=F64))
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(32), dtype=F64)
    den = GAUSS.as_denoiser()

    def wrong(x, s):
        return 0.9 * den(x, s) + 0.1

    for model in (den, wrong):
        torch.testing.assert_close(dsm(model, x0, t=sigma, noise=noise), edm(model, x0, sigma=sigma, noise=noise),
                                   rtol=1e-10, atol=0)


def test_edm_draw_order_and_for_data():
    loss = EDMLoss()
    x0 = data(16, seed=21)
    d_star = GAUSS.as_denoiser()
    gen = torch.Generator().manual_seed(22)
    sigma = loss.sigma_sampler.sample(16, generator=gen, dtype=F64)
    noise = torch.randn(x0.shape, generator=gen, dtype=F64)
    assert torch.equal(loss(d_star, x0, generator=22), loss(d_star, x0, sigma=sigma, noise=noise))
    # for_data: pooled std 2 exactly -> σ_d = 2 and P_mean shifted by ln(2/0.5).
    x = torch.tensor([[2.0, -2.0], [-2.0, 2.0], [2.0, 2.0], [-2.0, -2.0]])
    scaled = EDMLoss.for_data(x, P_std=1.6)
    assert scaled.sigma_data == pytest.approx(2.0, rel=1e-12) and estimate_sigma_data(x) == pytest.approx(2.0)
    assert scaled.P_mean == pytest.approx(-1.2 + math.log(4.0), rel=1e-12) and scaled.P_std == 1.6
    # ... which is the distribution of (σ_d / 0.5)·σ: the same draws, scaled.
    base = LogNormalSigma(-1.2, 1.6).sample(1000, generator=23, dtype=F64)
    torch.testing.assert_close(scaled.sigma_sampler.sample(1000, generator=23, dtype=F64), 4.0 * base,
                               rtol=1e-12, atol=0)


# -- perturbing the optimum raises the expected loss ---------------------------------------------------
PERTURBATIONS = {
    "constant": lambda x, t: torch.tensor([1.0, -0.5, 0.25], dtype=F64).expand_as(x),
    "tanh": lambda x, t: torch.tanh(x - 0.3),
    "sin": lambda x, t: torch.sin(2 * x + t[:, None]),
    "linear": lambda x, t: (x - 1.0) / (1 + t[:, None]),
}


@settings(max_examples=20)
@given(
    kind=st.sampled_from(list(SDES) + ["edm_loss"]),
    prediction=st.sampled_from(PREDICTIONS),
    weighting=st.sampled_from(DSM_WEIGHTINGS),
    h_name=st.sampled_from(list(PERTURBATIONS)),
    delta=st.floats(0.05, 1.0) | st.floats(-1.0, -0.05),
    seed=st.integers(0, 2**16),
)
def test_perturbing_the_optimum_raises_the_loss(kind, prediction, weighting, h_name, delta, seed):
    # With common random numbers (same x0, t, ε) the loss is an exact quadratic in δ:
    #   L(P* + δh) − L(P*) = 2δ·C + δ²·Q,  C = w h·(P* − target),  Q = w‖h‖² ≥ 0.
    # E[C] = 0 because P* = E[target | x_t] (checked within 4 stratified standard errors); hence
    # E[L(P* + δh)] − E[L(P*)] = δ² E[Q] > 0. For a constant h it is also compared with its closed form.
    h = PERTURBATIONS[h_name]
    reps = 16
    if kind == "edm_loss":
        loss = EDMLoss(0.0, 1.2, 1.0)
        nodes, w = hermite(loss, 40)
        base = GAUSS.as_denoiser()
        call = {"sigma": nodes.repeat_interleave(reps)}
        scale = torch.ones_like(nodes)
        weight = loss.weight(nodes)
        var = S**2 * nodes**2 / (S**2 + nodes**2)
    else:
        sde = SDES[kind]
        loss = DenoisingScoreMatching(sde, prediction, weighting)
        nodes, w = gl_nodes(sde.eps, sde.T, 20, 8)
        base = optimal_model(sde, prediction)
        call = {"t": nodes.repeat_interleave(reps)}
        _, weight, var = optimal_per_t(sde, prediction, weighting, nodes)
        # Perturb on the prediction's own scale (the score grows like 1/σ): h · sqrt(Var(target | x_t)).
        scale = var.sqrt()
    s_rep = scale.repeat_interleave(reps)[:, None]
    x0 = data(nodes.shape[0] * reps, seed=seed)
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed + 1), dtype=F64)

    def run(dd):
        return loss(lambda x, tt: base(x, tt) + dd * s_rep * h(x, tt), x0, noise=noise, **call).reshape(-1, reps)

    l0, lp, lm = run(0.0), run(delta), run(-delta)
    cross = (lp - lm) / (4 * delta)
    curv = (lp + lm - 2 * l0) / (2 * delta**2)
    torch.testing.assert_close(lp - l0, 2 * delta * cross + delta**2 * curv, rtol=1e-8, atol=1e-9 * float(l0.abs().max()))
    assert bool((curv >= -1e-9 * curv.abs().max()).all()) and float((w * curv.mean(1)).sum()) > 0
    c_hat = float((w * cross.mean(1)).sum())
    c_se = float(torch.sqrt((w**2 * cross.var(1) / reps).sum()))
    assert abs(c_hat) <= 4 * c_se
    if h_name == "constant":  # E[L(P* + δ u)] = E[L(P*)] + δ² E[w·scale²]‖u‖², exact per node
        u2 = 1.0 + 0.25 + 0.0625
        mean_j = weight * (D * var + delta**2 * scale**2 * u2)
        var_j = weight**2 * (2 * D * var**2 + 4 * var * delta**2 * scale**2 * u2)
        est = float((w * lp.mean(1)).sum())
        assert abs(est - float((w * mean_j).sum())) <= 4 * float(torch.sqrt((w**2 * var_j / reps).sum()))
        assert float((w * mean_j).sum()) > float((w * weight * D * var).sum())


# -- distances and label dropout ------------------------------------------------------------------------------
def test_distances():
    a = torch.randn(5, 2, 3, generator=torch.Generator().manual_seed(24), dtype=F64)
    b = torch.zeros_like(a)
    sq = (a**2).reshape(5, -1).sum(1)
    torch.testing.assert_close(SquaredL2()(a, b), sq)
    torch.testing.assert_close(SquaredL2("mean")(a, b), sq / 6)
    torch.testing.assert_close(PseudoHuber(0.1)(a, b), torch.sqrt(sq + 0.01) - 0.1)
    torch.testing.assert_close(PseudoHuber(0.1, elementwise=True)(a, b),
                               (torch.sqrt(a**2 + 0.01) - 0.1).reshape(5, -1).sum(1))
    small = 1e-4 * a  # quadratic regime: ≈ ‖·‖²/(2c)
    torch.testing.assert_close(PseudoHuber(1.0)(small, b), 0.5 * SquaredL2()(small, b), rtol=1e-6, atol=0)
    # A distance plugs into the loss: weight × distance.
    x0 = data(8, seed=25)
    ph = EDMLoss(distance=PseudoHuber(0.05))
    sl = EDMLoss()
    gen_args = {"sigma": torch.full((8,), 0.7, dtype=F64), "generator": 26}
    d_star = GAUSS.as_denoiser()
    lam = sl.weight(torch.tensor(0.7, dtype=F64))
    raw = sl(d_star, x0, **gen_args) / lam
    torch.testing.assert_close(ph(d_star, x0, **gen_args), lam * (torch.sqrt(raw + 0.05**2) - 0.05))


def test_drop_labels():
    labels = torch.arange(100000) % 10
    out = drop_labels(labels, 0.3, 10, generator=27)
    frac = float((out == 10).double().mean())
    assert abs(frac - 0.3) <= 4 * math.sqrt(0.3 * 0.7 / 100000)  # binomial, 4 SE
    kept = out != 10
    assert torch.equal(out[kept], labels[kept]) and torch.equal(labels, torch.arange(100000) % 10)
    assert torch.equal(out, drop_labels(labels, 0.3, 10, generator=27))
    assert torch.equal(drop_labels(labels, 0.0, 10, 1), labels)
    assert bool((drop_labels(labels, 1.0, 10, 1) == 10).all())


@pytest.mark.parametrize("which", ["dsm", "edm"])
def test_label_dropout_in_the_losses(which):
    seen = {}

    def model(x, t, class_labels, guidance=None):
        seen["labels"], seen["guidance"] = class_labels, guidance
        return torch.zeros_like(x)

    kw = {"label_dropout": 0.25, "null_label": 7}
    loss = DenoisingScoreMatching(VPSDE(), "eps", **kw) if which == "dsm" else EDMLoss(**kw)
    x0 = data(4000, seed=28)
    labels = torch.arange(4000) % 7
    loss(model, x0, generator=29, class_labels=labels, guidance=2.0)
    frac = float((seen["labels"] == 7).double().mean())
    assert abs(frac - 0.25) <= 4 * math.sqrt(0.25 * 0.75 / 4000) and seen["guidance"] == 2.0
    # The same mechanism: the third draw of the stream is drop_labels' torch.rand(B).
    gen = torch.Generator().manual_seed(29)
    if which == "dsm":
        loss.sample_time(4000, generator=gen, dtype=F64)
    else:
        loss.sigma_sampler.sample(4000, generator=gen, dtype=F64)
    torch.randn(x0.shape, generator=gen, dtype=F64)
    assert torch.equal(seen["labels"], drop_labels(labels, 0.25, 7, gen))
    with pytest.raises(ValueError, match="class_labels"):
        loss(model, x0, generator=1)


def test_for_precond_trains_the_raw_model_through_forward():
    from sdeflow.generative.networks import MLPNet
    from sdeflow.generative.precond import SDEPrecond

    pre = SDEPrecond(MLPNet(2, hidden=16, depth=2, emb_dim=8, num_classes=3, seed=0), "vp", prediction="v")
    loss = DenoisingScoreMatching.for_precond(pre, "sigma2", label_dropout=0.1, null_label=3)
    assert loss.sde is pre.sde and loss.prediction == "v"
    x0 = torch.randn(8, 2, generator=torch.Generator().manual_seed(33))
    labels = torch.arange(8) % 3
    calls = []
    hook = pre.register_forward_hook(lambda mod, args, kwargs, out: calls.append(kwargs.get("raw")), with_kwargs=True)
    got = loss(pre, x0, generator=34, class_labels=labels)
    hook.remove()
    assert calls == [True]  # one call, through forward, in the raw (x_t, t) form
    # The same as the loss of the raw model itself with the same draws.
    plain = DenoisingScoreMatching(pre.sde, "v", "sigma2", label_dropout=0.1, null_label=3)
    torch.testing.assert_close(got, plain(pre.raw_model, x0, generator=34, class_labels=labels))
    with pytest.raises(TypeError, match="SDEPrecond"):
        DenoisingScoreMatching.for_precond(torch.nn.Linear(2, 2))
    with pytest.raises(TypeError, match="model_kwargs"):
        EDMLoss(model_kwargs=[("raw", True)])


# -- errors -------------------------------------------------------------------------------------------------
def test_errors_name_the_argument():
    sde = VPSDE()
    with pytest.raises(ValueError, match="prediction"):
        DenoisingScoreMatching(sde, "noise")
    with pytest.raises(ValueError, match="weighting"):
        DenoisingScoreMatching(sde, "eps", "snr")
    with pytest.raises(ValueError, match="importance"):
        DenoisingScoreMatching(sde, "eps", importance="uniform")
    with pytest.raises(ValueError, match="t_min"):
        DenoisingScoreMatching(sde, t_min=0.0)
    with pytest.raises(ValueError, match="t_min < t_max"):
        DenoisingScoreMatching(sde, t_min=0.5, t_max=0.2)
    with pytest.raises(TypeError, match="sde"):
        DenoisingScoreMatching(object())
    with pytest.raises(ValueError, match="null_label"):
        DenoisingScoreMatching(sde, label_dropout=0.1)
    with pytest.raises(ValueError, match="label_dropout"):
        EDMLoss(label_dropout=1.5, null_label=3)
    with pytest.raises(ValueError, match="P_std"):
        EDMLoss(P_std=0.0)
    with pytest.raises(ValueError, match="P_mean"):
        EDMLoss(P_mean=float("nan"))
    with pytest.raises(ValueError, match="sigma_data"):
        EDMLoss(sigma_data=-1.0)
    with pytest.raises(ValueError, match="c must"):
        PseudoHuber(0.0)
    with pytest.raises(ValueError, match="reduction"):
        SquaredL2("max")
    with pytest.raises(TypeError, match="distance"):
        EDMLoss(distance=3)
    loss, edm = DenoisingScoreMatching(sde), EDMLoss()
    ident = lambda x, t: x  # noqa: E731
    with pytest.raises(ValueError, match="x0"):
        loss(ident, torch.zeros(5))
    with pytest.raises(ValueError, match="x0"):
        edm(ident, torch.zeros(0, 2))
    with pytest.raises(TypeError, match="x0"):
        loss(ident, torch.zeros(5, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="noise"):
        loss(ident, torch.zeros(5, 2), noise=torch.zeros(5, 3))
    with pytest.raises(ValueError, match="t must"):
        loss(ident, torch.zeros(5, 2), t=torch.full((4,), 0.5))
    with pytest.raises(ValueError, match="t must"):
        loss(ident, torch.zeros(5, 2), t=0.0)
    with pytest.raises(ValueError, match="sigma must"):
        edm(ident, torch.zeros(5, 2), sigma=-1.0)
    with pytest.raises(ValueError, match="shape"):
        edm(lambda x, s: x[:, :1], torch.zeros(5, 2))
    with pytest.raises(TypeError, match="generator"):
        edm(ident, torch.zeros(5, 2), generator="seed")
    with pytest.raises(TypeError, match="class_labels"):
        drop_labels(torch.zeros(3), 0.1, 5)
    with pytest.raises(ValueError, match="p "):
        drop_labels(torch.zeros(3, dtype=torch.long), 2.0, 5)
    with pytest.raises(ValueError, match="sigma_data|std"):
        EDMLoss.for_data(torch.ones(10, 2))


# -- the stable target field ------------------------------------------------------------------------------
def test_stable_target_is_x0_at_small_sigma_and_the_posterior_mean_at_large_sigma():
    from sdeflow.generative.losses import stable_target

    g = torch.Generator().manual_seed(0)
    m, s, b, d = 1.5, 0.7, 4096, 2
    x0 = m + s * torch.randn(b, d, generator=g, dtype=torch.float64)
    eps = torch.randn(b, d, generator=g, dtype=torch.float64)
    small = torch.full((b,), 1e-4, dtype=torch.float64)
    torch.testing.assert_close(stable_target(x0 + small[:, None] * eps, small, x0), x0)
    big = torch.full((b,), 5.0, dtype=torch.float64)
    x = x0 + big[:, None] * eps
    exact = m + s**2 / (s**2 + 25.0) * (x - m)  # E[x0 | x] for Gaussian data
    stf_err = (stable_target(x, big, x0) - exact).pow(2).sum(-1).mean()
    plain_err = (x0 - exact).pow(2).sum(-1).mean()  # = d s² σ²/(s² + σ²), the plain target's variance
    assert plain_err == pytest.approx(d * s**2 * 25 / (s**2 + 25), rel=0.1)
    assert stf_err < 0.01 * plain_err  # the batch average removes >99% of the target's variance here


def test_stable_target_respects_class_labels_and_dropped_labels():
    from sdeflow.generative.losses import stable_target

    x0 = torch.tensor([[0.0], [0.2], [10.0], [10.2]], dtype=torch.float64)
    labels = torch.tensor([0, 0, 1, 2])  # 2 = the null label (dropped)
    sig = torch.full((4,), 100.0, dtype=torch.float64)  # huge σ: near-uniform weights
    out = stable_target(x0, sig, x0, labels, null_label=2)
    assert out[0, 0] == pytest.approx(0.1, abs=1e-3) and out[1, 0] == pytest.approx(0.1, abs=1e-3)
    assert out[2, 0] == pytest.approx(10.0)  # its class has only itself
    w = torch.softmax(-((10.2 - x0[:, 0]) ** 2) / (2 * 100.0**2), 0)  # dropped: the whole batch is the reference
    assert out[3, 0] == pytest.approx(float((w * x0[:, 0]).sum()), rel=1e-12)


def test_edm_loss_with_the_stable_target_has_less_variance_at_large_sigma():
    g = torch.Generator().manual_seed(1)
    x0 = 0.5 * torch.randn(2048, 2, generator=g, dtype=torch.float64)
    def exact(x, s):
        return 0.25 / (0.25 + s.reshape(-1, 1) ** 2) * x  # the optimal denoiser of N(0, 0.25 I)
    sigma = torch.full((2048,), 3.0, dtype=torch.float64)
    plain = EDMLoss(sigma_data=0.5)(exact, x0, generator=2, sigma=sigma)
    stf = EDMLoss(sigma_data=0.5, target="stf")(exact, x0, generator=2, sigma=sigma)
    assert stf.mean() < 0.05 * plain.mean()
    with pytest.raises(ValueError, match="target must be"):
        EDMLoss(target="mean")


def test_pseudo_huber_keeps_its_digits_for_large_c():
    from sdeflow.generative.losses import PseudoHuber

    d = torch.full((3, 4), 1e-3, dtype=torch.float64)
    for c in (1e3, 1e6):
        # exact: sqrt(q + c²) − c = q/(2c) − q²/(8c³) + ... with q = 4e-6
        want = 4e-6 / (2 * c) - (4e-6) ** 2 / (8 * c**3)
        got = PseudoHuber(c)(d, torch.zeros_like(d))
        torch.testing.assert_close(got, torch.full((3,), want, dtype=torch.float64), rtol=1e-12, atol=0)
