"""Statistical tests: they accept samples from the right law and reject a wrong variance (power), fixed seeds.

Acceptance uses level 1e-3 (a false rejection has probability at most 0.1% per test, and the seeds are
fixed, so the outcome is reproducible). The power checks use a 10% wrong spread with 5,000 samples: the
variance z-test alone has z ≈ (1.21 − 1)/sqrt(2/5000) ≈ 10, so p-values are below 1e-10.
"""

import pytest
import torch

import sdeflow as sf
from sdeflow.fokker_planck import Grid1D
from sdeflow.verify import TestResult, compare_samples, compare_to_density, compare_to_marginal, energy_test

F64 = torch.float64
LEVEL = 1e-3


def _scaled(x, mean, factor):
    return mean + factor * (x - mean)


@pytest.mark.parametrize(
    "sde,d,t",
    [
        (sf.OrnsteinUhlenbeck(1.0, 0.5, 0.3), 1, 1.0),
        (sf.GeometricBrownianMotion(0.3, 0.4), 1, 0.8),
        (sf.VPSDE(), 3, 0.5),
        (sf.LinearSDE(-torch.tensor([[1.0, -1.0], [1.0, 1.0]]), G=0.7 * torch.ones(2)), 2, 1.0),
    ],
)
def test_compare_to_marginal_accepts_correct_and_rejects_wrong_variance(sde, d, t):
    n = 5000
    x0 = torch.full((n, d), 0.7, dtype=F64)
    x = sde.sample_marginal(x0, t, generator=11)
    good = compare_to_marginal(x, sde, t, x0, level=LEVEL)
    assert good.passed, good.components
    if isinstance(sde, sf.GeometricBrownianMotion):
        wrong = x0 * (x / x0) ** 1.1  # log-normal with a 10% larger log-spread (and mean)
    else:
        wrong = _scaled(x, sde.marginal_mean(t, x0), 1.1)
    bad = compare_to_marginal(wrong, sde, t, x0, level=LEVEL)
    assert not bad.passed and bad.p_value < 1e-10
    assert "ks" in "".join(bad.components) and ("energy" in bad.components) == (d > 1)


def test_compare_to_marginal_per_sample_initial_values_and_simulation():
    ou = sf.OrnsteinUhlenbeck(2.0, 0.0, 0.5)
    x0 = torch.randn(8000, 1, generator=torch.Generator().manual_seed(2), dtype=F64)
    sol = sf.simulate(ou, x0, [0.0, 0.5], dt=1e-3, generator=3, save="final")
    assert compare_to_marginal(sol.final, ou, 0.5, x0, level=LEVEL).passed
    # A shifted mean (0.1 sd) is detected with 8,000 samples (z ≈ 9).
    shift = 0.1 * float(ou.marginal_std(0.5))
    assert not compare_to_marginal(sol.final + shift, ou, 0.5, x0, level=LEVEL).passed


def test_compare_samples_one_and_two_dimensional():
    g = torch.Generator().manual_seed(4)
    a, b = torch.randn(4000, 2, generator=g, dtype=F64), torch.randn(4000, 2, generator=g, dtype=F64)
    same = compare_samples(a, b, level=LEVEL)
    assert same.passed and "energy" in same.components
    assert not compare_samples(a, 1.1 * b, level=LEVEL).passed
    assert compare_samples(a[:, :1], b[:, :1], level=LEVEL).passed
    one = compare_samples(a[:, :1], 1.1 * b[:, :1], level=LEVEL)
    assert not one.passed and "ks" in one.components
    # A difference only in the correlation is invisible to the marginal moment tests but not to the energy test.
    rho = torch.stack([b[:, 0], 0.8 * b[:, 0] + 0.6 * b[:, 1]], -1)
    corr = compare_samples(a, rho, level=LEVEL)
    assert corr.components["energy"][1] < LEVEL and not corr.passed


def test_energy_test_is_seeded_and_calibrated():
    g = torch.Generator().manual_seed(5)
    a, b = torch.randn(300, 3, generator=g, dtype=F64), torch.randn(300, 3, generator=g, dtype=F64)
    s1, p1 = energy_test(a, b, generator=7, n_permutations=99)
    s2, p2 = energy_test(a, b, generator=7, n_permutations=99)
    assert (s1, p1) == (s2, p2)
    assert 0.01 <= p1 <= 1.0 and s1 >= 0
    _, p_bad = energy_test(a, b + 0.5, generator=7, n_permutations=99)
    # The observed statistic beats every permutation: the Gamma tail resolves p below 1/100.
    assert p_bad < 1e-6
    # Calibration under the null: over 40 seeded pairs of N(0, I) samples, the p-values are roughly uniform
    # (the fraction below 0.1 is 0.1 ± 3 binomial standard errors, 0.14).
    ps = [energy_test(torch.randn(100, 2, generator=g, dtype=F64), torch.randn(100, 2, generator=g, dtype=F64),
                      generator=s, n_permutations=99)[1] for s in range(40)]
    assert sum(p < 0.1 for p in ps) / 40 <= 0.24 and sum(p > 0.5 for p in ps) / 40 > 0.25


def test_compare_to_density_chi_square():
    ou = sf.OrnsteinUhlenbeck(1.0, 0.0, 0.5)
    grid = Grid1D(-3.0, 3.0, 120)
    x0 = torch.full((20_000, 1), 1.0, dtype=F64)
    x = ou.sample_marginal(x0, 1.0, generator=6)
    mean, sd = float(ou.marginal_mean(1.0, x0[:1])), float(ou.marginal_std(1.0))
    good = compare_to_density(x, grid, grid.gaussian(mean, sd**2), cells_per_bin=4, level=LEVEL)
    assert good.passed and good.name.startswith("chi-square")
    bad = compare_to_density(x, grid, grid.gaussian(mean + 0.05, sd**2), cells_per_bin=4, level=LEVEL)
    assert not bad.passed


def test_result_object_and_input_errors():
    r = TestResult(name="x", statistic=1.0, p_value=0.2, level=0.05)
    assert r.passed and r.verdict == "pass" and r.as_dict()["passed"]
    assert TestResult.__test__ is False  # pytest must not collect it
    ou = sf.OrnsteinUhlenbeck()
    x0 = torch.zeros(10, 1, dtype=F64)
    with pytest.raises(ValueError, match="NaN"):
        compare_to_marginal(torch.full((10, 1), float("nan"), dtype=F64), ou, 1.0, x0)
    with pytest.raises(ValueError, match="level"):
        compare_to_marginal(torch.zeros(10, 1, dtype=F64), ou, 1.0, x0, level=2.0)

    class Custom(sf.SDE):
        def drift(self, t, x):
            return -x

        def diffusion(self, t, x):
            return torch.ones_like(x)

    with pytest.raises(TypeError, match="compare_samples"):
        compare_to_marginal(torch.zeros(10, 1, dtype=F64), Custom(), 1.0, x0)
    with pytest.raises(ValueError, match="event size"):
        compare_samples(torch.zeros(10, 1, dtype=F64), torch.zeros(10, 2, dtype=F64))
