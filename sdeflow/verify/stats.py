"""Statistical tests of samples against closed forms, other samples, or a density on a grid.

Every test returns a :class:`TestResult` with a p-value; the verdict at ``level`` is "pass" when
the null hypothesis (the samples follow the reference law) is *not* rejected. Several component
tests are combined by Bonferroni: ``p = min(1, k · min_i p_i)``, which keeps the false-rejection
rate at most ``level`` whatever their dependence.

* :func:`compare_to_marginal` — samples of ``x_t`` given ``x_0`` against an SDE's closed form.
  Samples are first mapped to what should be i.i.d. ``N(0, I)`` (``(x − mean)/std`` for the
  Gaussian SDEs, ``L⁻¹(x − mean)`` for :class:`~sdeflow.LinearSDE`, the standardised log for GBM),
  which handles a different ``x_0`` per sample. Components: a Kolmogorov–Smirnov test per
  coordinate (scipy), mean and variance z-tests with their standard errors, and in d > 1 an energy
  distance test against fresh ``N(0, I)`` draws (permutation p-value).
* :func:`compare_samples` — two samples: KS (1-D), mean/variance tests, energy distance (d-D).
* :func:`compare_to_density` — samples against cell averages on a grid (chi-square over bins).

Energy distance ``E = 2 E|X − Y| − E|X − X'| − E|Y − Y'|`` is computed from one pairwise-distance
matrix of the pooled points; each permutation relabels the points (``torch.Generator``-seeded), and
tails beyond the permutations' resolution are extrapolated with a moment-fitted Gamma law.
Its cost is quadratic, so at most ``max_points`` points per sample enter it (a seeded subsample);
the other components use every point.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from scipy import stats as sps
from torch import Tensor

from .._checks import make_generator
from ..sde._gaussian import GaussianMarginals
from ..sde.geometric_brownian_motion import GeometricBrownianMotion
from ..sde.linear import LinearSDE

__all__ = ["TestResult", "compare_to_marginal", "compare_samples", "compare_to_density", "energy_test",
           "standardise"]


@dataclass
class TestResult:
    """The outcome of a statistical test.

    Attributes:
        name: which test.
        statistic: the main statistic (KS distance in 1-D, energy distance in d-D, chi-square).
        p_value: the (combined) p-value.
        level: the significance level of the verdict.
        components: each component test's ``(statistic, p_value)``.
        n: the sample size(s).
    """

    __test__ = False  # not a pytest test class

    name: str
    statistic: float
    p_value: float
    level: float
    components: dict[str, tuple[float, float]] = field(default_factory=dict)
    n: tuple[int, ...] = ()

    @property
    def passed(self) -> bool:
        """True when the null hypothesis is not rejected at ``level`` (``p_value ≥ level``)."""
        return bool(self.p_value >= self.level)

    @property
    def verdict(self) -> str:
        return "pass" if self.passed else "reject"

    def as_dict(self) -> dict:
        d = asdict(self)
        d["components"] = {k: list(v) for k, v in self.components.items()}
        d["passed"], d["verdict"] = self.passed, self.verdict
        return d

    def __str__(self) -> str:
        return f"{self.name}: statistic {self.statistic:.4g}, p = {self.p_value:.3g} at level {self.level:g}: " \
               f"{self.verdict}"


# Fewer permuted statistics than this at or above the observed one: use the fitted Gamma tail.
_TAIL_COUNT = 5


def _check_level(level: float) -> float:
    if not (isinstance(level, float) and 0 < level < 1):
        raise ValueError(f"level must be a float in (0, 1); got {level!r}.")
    return level


def _as_2d(x: object, name: str) -> Tensor:
    if isinstance(x, np.ndarray):
        x = torch.as_tensor(x)
    if not isinstance(x, Tensor) or not torch.is_floating_point(x):
        raise TypeError(f"{name} must be a floating-point tensor of shape (n, *event); got {type(x).__name__}.")
    if x.dim() == 0 or x.shape[0] < 2:
        raise ValueError(f"{name} needs at least 2 samples along dim 0; got shape {tuple(x.shape)}.")
    x = x.detach().to("cpu", torch.float64)
    x = x.reshape(x.shape[0], -1)
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} contains NaN or inf; drop the failed paths (Solution.status) first.")
    return x


def _bonferroni(components: dict[str, tuple[float, float]]) -> float:
    ps = [p for _, p in components.values()]
    return float(min(1.0, len(ps) * min(ps)))


def _z_to_p(z: float) -> float:
    return float(2 * sps.norm.sf(abs(z)))


def _mean_var_tests(x: Tensor, prefix: str, mean0: float | None = None, var0: float | None = None,
                    y: Tensor | None = None) -> dict[str, tuple[float, float]]:
    """z-tests per coordinate: mean (SE = s/√n) and variance (SE = √((m4 − s⁴)/n)); one or two samples."""
    out = {}

    def mv(v: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        n = v.shape[0]
        m = v.mean(0)
        c = v - m
        var = (c * c).mean(0)
        m4 = (c**4).mean(0)
        return m, (var / n).sqrt(), var, ((m4 - var * var).clamp_min(0) / n).sqrt()

    mx, sex, vx, vsex = mv(x)
    if y is not None:
        my, sey, vy, vsey = mv(y)
    for j in range(x.shape[1]):
        if y is None:
            zm = (float(mx[j]) - mean0) / max(float(sex[j]), 1e-300)
            zv = (float(vx[j]) - var0) / max(float(vsex[j]), 1e-300)
        else:
            zm = float(mx[j] - my[j]) / max(math.hypot(float(sex[j]), float(sey[j])), 1e-300)
            zv = float(vx[j] - vy[j]) / max(math.hypot(float(vsex[j]), float(vsey[j])), 1e-300)
        tag = f"[{j}]" if x.shape[1] > 1 else ""
        out[f"{prefix}mean{tag}"] = (zm, _z_to_p(zm))
        out[f"{prefix}var{tag}"] = (zv, _z_to_p(zv))
    return out


def _subsample(x: Tensor, k: int, gen: torch.Generator) -> Tensor:
    if x.shape[0] <= k:
        return x
    idx = torch.randperm(x.shape[0], generator=gen)[:k]
    return x[idx]


def energy_test(
    a: Tensor, b: Tensor, *, n_permutations: int = 200, generator: torch.Generator | int | None = 0,
    max_points: int = 1000,
) -> tuple[float, float]:
    """Energy distance between samples ``a`` (n, d) and ``b`` (m, d) and its permutation p-value.

    Returns ``(statistic, p_value)`` with ``p = (1 + #{permuted ≥ observed}) / (1 + n_permutations)``;
    when fewer than 5 permuted statistics reach the observed one, that count cannot resolve the tail
    (the smallest attainable p is ``1/(1 + n_permutations)``, too coarse for a Bonferroni-combined
    level of 1e-3), so the p-value is the smaller of the count-based one and the upper tail of a
    Gamma law fitted by moments to the permutation statistics.
    """
    if isinstance(n_permutations, bool) or not isinstance(n_permutations, int) or n_permutations < 1:
        raise ValueError(f"n_permutations must be a positive int; got {n_permutations!r}.")
    gen = make_generator(generator if generator is not None else 0, torch.device("cpu"))
    a = _subsample(_as_2d(a, "a"), max_points, gen)
    b = _subsample(_as_2d(b, "b"), max_points, gen)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"a and b must have the same event size; got {a.shape[1]} and {b.shape[1]}.")
    z = torch.cat([a, b])
    n, na = z.shape[0], a.shape[0]
    dist = torch.cdist(z, z)
    labels = torch.zeros(n, n_permutations + 1, dtype=torch.float64)
    base = torch.cat([torch.full((na,), 1.0 / na, dtype=torch.float64),
                      torch.full((n - na,), -1.0 / (n - na), dtype=torch.float64)])
    labels[:, 0] = base
    for k in range(n_permutations):
        labels[:, k + 1] = base[torch.randperm(n, generator=gen)]
    # E = 2 u_aᵀ D u_b − u_aᵀ D u_a − u_bᵀ D u_b = −vᵀ D v with v = u_a − u_b.
    stats = -(labels * (dist @ labels)).sum(0)
    observed = float(stats[0])
    perm = stats[1:].numpy()
    count = int((perm >= observed - 1e-12 * abs(observed)).sum())
    p = (1 + count) / (1 + n_permutations)
    if count < _TAIL_COUNT:
        # Beyond the resolution 1/(1 + n_permutations): extrapolate the tail with a Gamma law fitted to the
        # permutation statistics by their mean and variance (the approximation Gretton et al. use for MMD).
        mean, var = float(perm.mean()), float(perm.var(ddof=1))
        if mean > 0 and var > 0:
            p = min(p, float(sps.gamma.sf(observed, a=mean * mean / var, scale=var / mean)))
    return observed, float(p)


def standardise(samples: Tensor, sde: object, t: float | Tensor, x0: Tensor) -> Tensor:
    """Map samples of ``x_t | x_0`` to what should be i.i.d. ``N(0, I)`` under the closed form: (n, d).

    Supports the Gaussian SDEs (``GaussianMarginals``: OU, BM, VP, sub-VP, VE, EDM),
    :class:`~sdeflow.LinearSDE` and :class:`~sdeflow.GeometricBrownianMotion`. ``x0`` has the
    samples' shape or a single row broadcast to all.
    """
    if not isinstance(samples, Tensor):
        raise TypeError(f"samples must be a tensor (n, *event); got {type(samples).__name__}.")
    x = samples.detach().to(torch.float64)
    x0 = torch.as_tensor(x0).detach().to(device=x.device, dtype=torch.float64)
    if x0.shape[0] == 1 and x.shape[0] > 1:
        x0 = x0.expand(x.shape)
    if x0.shape != x.shape:
        raise ValueError(f"x0 must have the samples' shape {tuple(x.shape)} (or one row); got {tuple(x0.shape)}.")
    tt = torch.as_tensor(t, dtype=torch.float64, device=x.device)
    if isinstance(sde, LinearSDE):
        sde64 = sde.to(x.device)
        mean = sde64.marginal_mean(tt, x0)
        chol = torch.linalg.cholesky(sde64.marginal_cov(tt))
        diff = (x - mean).unsqueeze(-1)
        chol = chol.expand(x.shape[0], *chol.shape[-2:]) if chol.dim() == 2 else chol
        return torch.linalg.solve_triangular(chol, diff, upper=False).squeeze(-1).cpu()
    if isinstance(sde, GeometricBrownianMotion):
        mu, sigma = float(sde.mu), float(sde.sigma)
        r = x / x0
        if bool((r <= 0).any()):
            raise ValueError("GBM samples must have the sign of x0 (the log-normal law has no mass elsewhere).")
        tb = tt.expand(x.shape[0]).reshape((-1,) + (1,) * (x.dim() - 1)) if tt.dim() else tt
        z = (torch.log(r) - (mu - 0.5 * sigma**2) * tb) / (sigma * torch.sqrt(tb))
        return z.reshape(x.shape[0], -1).cpu()
    if isinstance(sde, GaussianMarginals):
        mean = sde.marginal_mean(tt, x0)
        std = sde._std_like(tt, x0)
        return ((x - mean) / std).reshape(x.shape[0], -1).cpu()
    raise TypeError(
        f"no closed-form marginal for {type(sde).__name__}; draw reference samples (e.g. from a fine-step "
        f"simulation) and use compare_samples(samples, reference)."
    )


def compare_to_marginal(
    samples: Tensor,
    sde: object,
    t: float | Tensor,
    x0: Tensor,
    *,
    level: float = 0.01,
    n_permutations: int = 200,
    max_points: int = 1000,
    generator: torch.Generator | int | None = 0,
) -> TestResult:
    """Test samples of ``x_t`` (n, *event) started at ``x0`` against the SDE's closed-form marginal.

    Components (Bonferroni-combined): KS per coordinate, mean and variance z-tests per coordinate
    on the standardised samples (see :func:`standardise`), and in d > 1 an energy-distance test
    against ``n`` fresh ``N(0, I)`` draws (``generator``-seeded permutations and draws).

    Returns:
        :class:`TestResult`; ``statistic`` is the largest KS distance (1-D) or the energy distance.
    """
    level = _check_level(level)
    z = standardise(samples, sde, t, x0)
    z = _as_2d(z, "samples")
    n, d = z.shape
    comps: dict[str, tuple[float, float]] = {}
    for j in range(d):
        ks = sps.kstest(z[:, j].numpy(), "norm")
        comps[f"ks[{j}]" if d > 1 else "ks"] = (float(ks.statistic), float(ks.pvalue))
    comps.update(_mean_var_tests(z, "", mean0=0.0, var0=1.0))
    if d > 1:
        gen = make_generator(generator if generator is not None else 0, torch.device("cpu"))
        ref = torch.randn(min(n, max_points), d, generator=gen, dtype=torch.float64)
        comps["energy"] = energy_test(z, ref, n_permutations=n_permutations, generator=gen, max_points=max_points)
        main = comps["energy"][0]
        name = "closed-form marginal (KS, moments, energy)"
    else:
        main = comps["ks"][0]
        name = "closed-form marginal (KS, moments)"
    return TestResult(name=name, statistic=float(main), p_value=_bonferroni(comps), level=level, components=comps,
                      n=(n,))


def compare_samples(
    a: Tensor,
    b: Tensor,
    *,
    level: float = 0.01,
    n_permutations: int = 200,
    max_points: int = 1000,
    generator: torch.Generator | int | None = 0,
) -> TestResult:
    """Two-sample test: do ``a`` (n, *event) and ``b`` (m, *event) come from the same law?

    Components (Bonferroni-combined): two-sample KS per coordinate (1-D only: in d > 1 the
    coordinates' KS tests are replaced by the energy test), mean and variance z-tests per
    coordinate, and in d > 1 the energy distance with a permutation p-value.
    """
    level = _check_level(level)
    x, y = _as_2d(a, "a"), _as_2d(b, "b")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"a and b must have the same event size; got {x.shape[1]} and {y.shape[1]}.")
    comps: dict[str, tuple[float, float]] = {}
    if x.shape[1] == 1:
        ks = sps.ks_2samp(x[:, 0].numpy(), y[:, 0].numpy())
        comps["ks"] = (float(ks.statistic), float(ks.pvalue))
    comps.update(_mean_var_tests(x, "", y=y))
    if x.shape[1] > 1:
        comps["energy"] = energy_test(x, y, n_permutations=n_permutations, generator=generator,
                                      max_points=max_points)
    main = comps["ks"][0] if "ks" in comps else comps["energy"][0]
    return TestResult(name="two-sample (KS/energy, moments)", statistic=float(main), p_value=_bonferroni(comps),
                      level=level, components=comps, n=(x.shape[0], y.shape[0]))


def compare_to_density(
    samples: Tensor,
    grid: object,
    p: Tensor,
    *,
    cells_per_bin: int | tuple[int, ...] = 1,
    min_expected: float = 5.0,
    level: float = 0.01,
) -> TestResult:
    """Chi-square goodness of fit of samples against cell averages ``p`` on a grid.

    Cells are grouped ``cells_per_bin`` at a time along each axis; bins with fewer than
    ``min_expected`` expected counts are pooled into one bin, together with the samples outside
    the grid (whose expected count is ``n · (1 − mass on the grid)``). ``dof = bins − 1``.

    Args:
        samples: (n, ndim) points.
        grid: a :class:`~sdeflow.fokker_planck.Grid`.
        p: cell averages of the density, shape ``grid.shape``.
    """
    from ..fokker_planck.grid import Grid

    level = _check_level(level)
    if not isinstance(grid, Grid):
        raise TypeError(f"grid must be a sdeflow Grid; got {type(grid).__name__}.")
    x = _as_2d(samples, "samples")
    if x.shape[1] != grid.ndim:
        raise ValueError(f"samples must have {grid.ndim} coordinates for this grid; got {x.shape[1]}.")
    p = torch.as_tensor(p, dtype=torch.float64).detach().cpu()
    if tuple(p.shape) != grid.shape:
        raise ValueError(f"p must have the grid's shape {grid.shape}; got {tuple(p.shape)}.")
    cpb = (cells_per_bin,) * grid.ndim if isinstance(cells_per_bin, int) else tuple(cells_per_bin)
    n = x.shape[0]
    mass = p.clamp_min(0).numpy() * grid.cell_volume
    idx, inside = [], np.ones(n, bool)
    for k in range(grid.ndim):
        lo, hi, nk = grid.bounds[k]
        i = np.floor((x[:, k].numpy() - lo) / (hi - lo) * nk).astype(np.int64)
        inside &= (i >= 0) & (i < nk)
        idx.append(np.clip(i, 0, nk - 1) // cpb[k])
    nbins = tuple(-(-grid.shape[k] // cpb[k]) for k in range(grid.ndim))
    # Expected bin masses: sum the cells of each bin.
    expected = np.zeros(nbins)
    cell_bins = np.meshgrid(*[np.arange(grid.shape[k]) // cpb[k] for k in range(grid.ndim)], indexing="ij")
    np.add.at(expected, tuple(cb.reshape(-1) for cb in cell_bins), mass.reshape(-1))
    observed = np.zeros(nbins)
    np.add.at(observed, tuple(i[inside] for i in idx), 1.0)
    expected = expected.reshape(-1) * n
    observed = observed.reshape(-1)
    out_obs = float((~inside).sum())
    out_exp = max(0.0, n - float(expected.sum()))
    small = expected < min_expected
    pooled_obs = float(observed[small].sum()) + out_obs
    pooled_exp = float(expected[small].sum()) + out_exp
    obs = list(observed[~small])
    exp = list(expected[~small])
    if pooled_exp > 0:
        obs.append(pooled_obs)
        exp.append(pooled_exp)
    obs_a, exp_a = np.asarray(obs), np.asarray(exp)
    if obs_a.size < 2:
        raise ValueError("fewer than two bins have enough expected counts; use more samples or smaller bins.")
    chi2 = float(((obs_a - exp_a) ** 2 / exp_a).sum())
    dof = obs_a.size - 1
    pv = float(sps.chi2.sf(chi2, dof))
    return TestResult(name=f"chi-square ({dof} dof)", statistic=chi2, p_value=pv, level=level,
                      components={"chi2": (chi2, pv)}, n=(n,))
