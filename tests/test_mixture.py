"""GaussianMixture: exact diffused marginals, scores, denoisers; toy data; sample-quality metrics."""

import math

import pytest
import torch

import sdeflow as sf
from sdeflow.generative.metrics import mixture_sample_quality, pathwise_rms

from helpers import mean_and_se


def _full_cov_mixture():
    return sf.GaussianMixture(
        [0.2, 0.5, 0.3],
        [[0.0, 1.0], [2.0, -1.0], [-1.5, 0.5]],
        [[[0.3, 0.1], [0.1, 0.2]], [[0.05, -0.02], [-0.02, 0.1]], [[0.4, 0.0], [0.0, 0.4]]],
    )


def _brute_log_prob(gm, x, a, s):
    """log Σ_k w_k N(x; a μ_k, a² Σ_k + s² I) with torch.distributions (independent reference)."""
    covs = a * a * gm.covs + s * s * torch.eye(gm.dim, dtype=torch.float64)
    comp = torch.distributions.MultivariateNormal(a * gm.means, covariance_matrix=covs)
    lp = comp.log_prob(x[:, None, :]) + torch.log(gm.weights)
    return torch.logsumexp(lp, -1)


@pytest.mark.parametrize("cls", [sf.VPSDE, sf.SubVPSDE, sf.VESDE, sf.EDMSDE])
def test_log_prob_score_denoiser_against_independent_references(cls):
    sde = cls()
    gm = _full_cov_mixture()
    x = 2.0 * torch.randn(50, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    t = torch.linspace(sde.eps, sde.T, 50, dtype=torch.float64)
    a, s = sde.marginal_scale(t)[:, None], sde.marginal_std(t)[:, None]
    want = torch.stack([_brute_log_prob(gm, x[i:i + 1], a[i], s[i])[0] for i in range(50)])
    torch.testing.assert_close(gm.log_prob(x, t, sde), want, rtol=1e-10, atol=1e-10)
    # score = autograd gradient of log p_t
    xr = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(gm.log_prob(xr, t, sde).sum(), xr)
    torch.testing.assert_close(gm.score(x, t, sde), g, rtol=1e-9, atol=1e-10)
    # denoiser = Tweedie's formula (x + σ² ∇log p_t) / α
    torch.testing.assert_close(gm.denoiser(x, t, sde), (x + s * s * g) / a, rtol=1e-8, atol=1e-8)
    # one time for all paths equals the batched form
    torch.testing.assert_close(gm.score(x, t[7], sde), gm.score(x, t[7].expand(50), sde))


def test_data_density_and_gaussian_marginal_sdes():
    gm = _full_cov_mixture()
    x = torch.randn(20, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    torch.testing.assert_close(gm.log_prob(x), _brute_log_prob(gm, x, 1.0, 0.0))
    # OU: x_t = m + (x0 − m)e^{−θt} + noise: an affine map with one scale, handled exactly
    ou = sf.OrnsteinUhlenbeck(theta=1.5, mean=0.5, sigma=0.7)
    t = 0.4
    a, s = math.exp(-1.5 * t), float(ou.marginal_std(torch.tensor(t, dtype=torch.float64)))
    shifted = sf.GaussianMixture(gm.weights, gm.means * a + 0.5 * (1 - a), a * a * gm.covs + s * s * torch.eye(2, dtype=torch.float64))
    torch.testing.assert_close(gm.log_prob(x, t, ou), shifted.log_prob(x), rtol=1e-10, atol=1e-10)
    with pytest.raises(TypeError, match="DiffusionSDE or a Gaussian-marginal SDE"):
        gm.log_prob(x, t, sf.GeometricBrownianMotion())


def test_marginal_matches_diffused_samples():
    """Monte Carlo: data pushed through the SDE's exact transition has log p_t's expected value."""
    vp = sf.VPSDE()
    gm = sf.eight_gaussians()
    t = 0.3
    x0 = gm.sample(20000, generator=0, dtype=torch.float64)
    xt = vp.sample_marginal(x0, t, generator=1)
    r = gm.responsibilities(xt, t, vp)
    m, se = mean_and_se(r[:, 0])
    assert abs(m - 1 / 8) < 4 * se  # 4 SE: E[r_k] = w_k exactly under p_t
    torch.testing.assert_close(r.sum(-1), torch.ones(20000, dtype=torch.float64))


def test_sampling_moments_and_reproducibility():
    gm = _full_cov_mixture()
    x, comp = gm.sample(40000, generator=3, dtype=torch.float64, return_components=True)
    assert x.shape == (40000, 2) and comp.shape == (40000,)
    torch.testing.assert_close(gm.sample(10, generator=3), gm.sample(10, generator=3))
    mean = (gm.weights[:, None] * gm.means).sum(0)
    for j in range(2):
        m, se = mean_and_se(x[:, j])
        assert abs(m - float(mean[j])) < 4 * se
    c = x[comp == 1] - gm.means[1]
    cov = c.T @ c / c.shape[0]
    # 4 SE of a sample covariance entry: SE ≈ sqrt((Σ_ii Σ_jj + Σ_ij²)/n)
    se = torch.sqrt((torch.diagonal(gm.covs[1])[:, None] * torch.diagonal(gm.covs[1])[None, :]
                     + gm.covs[1] ** 2) / c.shape[0])
    assert bool(((cov - gm.covs[1]).abs() < 4 * se).all())


def test_autograd_through_time_and_dtype():
    vp = sf.VPSDE()
    gm = sf.eight_gaussians()
    x = torch.randn(8, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    t = torch.full((8,), 0.3, dtype=torch.float64, requires_grad=True)
    (dt,) = torch.autograd.grad(gm.log_prob(x, t, vp).sum(), t)
    h = 1e-6
    fd = (gm.log_prob(x, 0.3 + h, vp) - gm.log_prob(x, 0.3 - h, vp)) / (2 * h)
    torch.testing.assert_close(dt, fd, rtol=1e-6, atol=1e-6)
    x32 = x.float()
    assert gm.score(x32, 0.3, vp).dtype == torch.float32
    torch.testing.assert_close(gm.score(x32, 0.3, vp).double(), gm.score(x, 0.3, vp), rtol=1e-4, atol=1e-4)


def test_constructor_shapes_and_errors():
    iso = sf.GaussianMixture([1, 1], [[0.0], [1.0]], [0.5, 0.25])
    diag = sf.GaussianMixture([1, 1], [[0.0], [1.0]], [[0.5], [0.25]])
    full = sf.GaussianMixture([1, 1], [[0.0], [1.0]], [[[0.5]], [[0.25]]])
    x = torch.linspace(-1, 2, 7, dtype=torch.float64)[:, None]
    torch.testing.assert_close(iso.log_prob(x), full.log_prob(x))
    torch.testing.assert_close(diag.log_prob(x), full.log_prob(x))
    torch.testing.assert_close(iso.weights, torch.tensor([0.5, 0.5], dtype=torch.float64))
    with pytest.raises(ValueError, match="weights must be > 0"):
        sf.GaussianMixture([1, 0], [[0.0], [1.0]], 1.0)
    with pytest.raises(ValueError, match="positive definite"):
        sf.GaussianMixture([1], [[0.0, 0.0]], [[[1.0, 2.0], [2.0, 1.0]]])
    with pytest.raises(ValueError, match="covs must have shape"):
        sf.GaussianMixture([1], [[0.0, 0.0]], [[1.0, 2.0, 3.0]])
    with pytest.raises(ValueError, match="x must have shape"):
        iso.log_prob(torch.zeros(3, 2))
    with pytest.raises(ValueError, match="sde was given without t"):
        iso.log_prob(x, None, sf.VPSDE())


def test_toy_data():
    for name, fn in sf.TOY_DATA.items():
        a = fn(500, generator=0)
        assert a.shape == (500, 2) and a.dtype == torch.float32 and bool(torch.isfinite(a).all()), name
        torch.testing.assert_close(a, sf.sample_toy(name, 500, generator=0))
        assert not torch.equal(a, fn(500, generator=1))
    eg = sf.eight_gaussians()
    assert eg.n_components == 8 and torch.allclose(eg.means.norm(dim=1), torch.full((8,), 4.0, dtype=torch.float64))
    ring = sf.ring_of_gaussians(12, radius=2.0, std=0.1)
    assert ring.n_components == 12 and torch.allclose(ring.covs[0], 0.01 * torch.eye(2, dtype=torch.float64))
    cb = sf.checkerboard(4000, generator=0, dtype=torch.float64)
    cell = torch.floor((cb + 2.0) / 1.0).long()
    assert bool(((cell[:, 0] + cell[:, 1]) % 2 == 0).all())  # only the black squares
    roll = sf.swiss_roll(1000, noise=0.0, generator=0, dtype=torch.float64)
    r = roll.norm(dim=1)
    assert float(r.min()) > 1.5 * math.pi / 3 - 1e-9 and float(r.max()) < 4.5 * math.pi / 3 + 1e-9
    with pytest.raises(ValueError, match="unknown toy data"):
        sf.sample_toy("spiral", 10)
    with pytest.raises(ValueError, match="n must be a positive int"):
        sf.two_moons(0)


def test_sample_quality_metrics_detect_wrong_samples():
    gm = sf.eight_gaussians()
    good = gm.sample(20000, generator=5, dtype=torch.float64)
    q = mixture_sample_quality(gm, good)
    assert q.delta_nll_ok() and q.modes_ok()
    # 10 % too wide within every mode: ΔNLL ≈ d(1.1² − 1)/2 = 0.21 nats
    comp = gm.responsibilities(good).argmax(1)
    wide = gm.means[comp] + 1.1 * (good - gm.means[comp])
    qw = mixture_sample_quality(gm, wide)
    assert not qw.delta_nll_ok() and abs(qw.delta_nll - 0.21) < 0.05
    # one mode dropped: mode weights fail
    keep = comp != 0
    qd = mixture_sample_quality(gm, good[keep])
    assert not qd.modes_ok()
    assert pathwise_rms(good, good) == 0.0 and abs(pathwise_rms(good, good + 0.1) - 0.1 * math.sqrt(2)) < 1e-12
