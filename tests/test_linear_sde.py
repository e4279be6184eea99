"""LinearSDE: closed forms (Van Loan exponentials, Lyapunov equation) against independent computations."""

import numpy as np
import pytest
import torch
from scipy.integrate import quad_vec
from scipy.linalg import expm

import sdeflow as sf
from sdeflow.verify.stats import compare_to_marginal

F64 = torch.float64


def test_one_dimensional_case_is_ou():
    ou = sf.OrnsteinUhlenbeck(theta=2.0, mean=0.5, sigma=0.3)
    lin = sf.LinearSDE([[-2.0]], b=[1.0], G=[0.3])
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(8, 1, generator=g, dtype=F64)
    x = torch.randn(8, 1, generator=g, dtype=F64)
    t = torch.rand(8, generator=g, dtype=F64) + 0.05
    torch.testing.assert_close(lin.marginal_mean(t, x0), ou.marginal_mean(t, x0))
    torch.testing.assert_close(lin.marginal_log_prob(x, t, x0), ou.marginal_log_prob(x, t, x0))
    torch.testing.assert_close(lin.marginal_std(0.7), ou.marginal_std(0.7).reshape(1))
    torch.testing.assert_close(lin.drift(0.0, x), ou.drift(0.0, x))


def test_covariance_matches_quadrature_for_an_unstable_matrix():
    # Van Loan's block exponential works for any A; compare with ∫_0^t e^{As} Q e^{Aᵀs} ds by quadrature.
    A = np.array([[0.3, 1.0, 0.0], [-0.2, 0.1, 0.5], [0.0, 0.0, -1.0]])
    G = np.array([[1.0, 0.0], [0.5, 0.2], [0.0, 0.8]])
    b = np.array([0.1, -0.3, 0.2])
    lin = sf.LinearSDE(torch.as_tensor(A), b=torch.as_tensor(b), G=torch.as_tensor(G))
    assert lin.noise_type == "additive" and lin.brownian_size == 2 and not lin.is_stable()
    t = 1.3
    Q = G @ G.T
    cov, _ = quad_vec(lambda s: expm(A * s) @ Q @ expm(A.T * s), 0, t, epsabs=1e-13, epsrel=1e-12)
    np.testing.assert_allclose(lin.marginal_cov(t).numpy(), cov, rtol=1e-9, atol=1e-12)
    off, _ = quad_vec(lambda s: expm(A * s) @ b, 0, t, epsabs=1e-13, epsrel=1e-12)
    x0 = torch.tensor([[1.0, -1.0, 0.5]], dtype=F64)
    np.testing.assert_allclose(lin.marginal_mean(t, x0).numpy()[0], expm(A * t) @ x0.numpy()[0] + off, rtol=1e-10)


def test_stationary_covariance_solves_lyapunov():
    A = -torch.tensor([[1.0, -1.0], [1.0, 1.0]], dtype=F64)
    lin = sf.LinearSDE(A, G=torch.tensor([[0.7, 0.1], [0.0, 0.5]], dtype=F64))
    S = lin.stationary_cov()
    torch.testing.assert_close(A @ S + S @ A.T + lin.Q, torch.zeros(2, 2, dtype=F64), atol=1e-13, rtol=0)
    torch.testing.assert_close(lin.marginal_cov(40.0), S, atol=1e-12, rtol=0)
    torch.testing.assert_close(lin.stationary_mean(), torch.zeros(2, dtype=F64))
    with pytest.raises(ValueError, match="not stable"):
        sf.LinearSDE(torch.eye(2)).stationary_cov()


def test_simulated_and_exact_samples_follow_the_closed_form():
    # Fixed seeds; the combined p-value (KS per coordinate, moments, energy distance, Bonferroni) must not fall
    # below 1e-3. SRA1 at dt = 0.01 has weak error ~1e-4, far below the resolution of 15,000 samples (~1%).
    A = -torch.tensor([[1.0, -1.0], [1.0, 1.0]], dtype=F64)
    lin = sf.LinearSDE(A, G=0.7 * torch.ones(2, dtype=F64))
    x0 = torch.tensor([[1.0, 0.0]], dtype=F64).expand(15_000, 2)
    sim = sf.simulate(lin, x0, [0.0, 1.0], method="sra1", dt=0.01, generator=1, save="final").final
    assert compare_to_marginal(sim, lin, 1.0, x0, level=1e-3).passed
    exact = lin.sample_marginal(x0, 1.0, generator=2)
    assert compare_to_marginal(exact, lin, 1.0, x0, level=1e-3).passed
    # general (matrix) noise through torchsde's srk (additive path)
    lin2 = sf.LinearSDE(A, G=torch.tensor([[0.7, 0.3], [0.0, 0.5]], dtype=F64))
    sim2 = sf.simulate(lin2, x0[:5000], [0.0, 1.0], method="srk", backend="torchsde", dt=0.05, generator=3,
                       save="final").final
    assert compare_to_marginal(sim2, lin2, 1.0, x0[:5000], level=1e-3).passed


def test_propagate_gaussian_and_errors():
    lin = sf.LinearSDE(-torch.eye(2), G=[0.5, 1.0])
    mean, cov = lin.propagate_gaussian([1.0, 2.0], 0.2 * torch.eye(2), 1.0)
    e = np.exp(-1.0)
    torch.testing.assert_close(mean, torch.tensor([e, 2 * e], dtype=F64))
    torch.testing.assert_close(torch.diagonal(cov), torch.tensor([0.2 * e * e + 0.125 * (1 - e * e),
                                                                 0.2 * e * e + 0.5 * (1 - e * e)], dtype=F64))
    with pytest.raises(ValueError, match="square"):
        sf.LinearSDE(torch.ones(2, 3))
    with pytest.raises(ValueError, match="b must have shape"):
        sf.LinearSDE(torch.eye(2), b=[1.0])
    with pytest.raises(ValueError, match="G"):
        sf.LinearSDE(torch.eye(2), G=torch.ones(3, 2))
    with pytest.raises(ValueError, match="singular"):
        lin.marginal_log_prob(torch.zeros(1, 2), 0.0, torch.zeros(1, 2))
    with pytest.raises(ValueError, match=r"\(B, 2\)"):
        lin.drift(torch.tensor(0.0), torch.zeros(3, 3))
