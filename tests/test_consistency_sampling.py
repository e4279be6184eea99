"""Exact consistency functions, the self-consistency error, consistency sampling and the τ search."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sdeflow import EDMSDE, VPSDE, probability_flow, solve_ode
from sdeflow._cache import object_cache
from sdeflow.consistency import (
    ConsistencyFunction,
    exact_consistency_function,
    gaussian_consistency_function,
    pf_ode_trajectory,
    sample_consistency,
    search_taus,
    self_consistency_error,
)
from sdeflow.generative.mixture import GaussianMixture
from sdeflow.generative.networks import MLPNet
from sdeflow.generative.precond import edm_coefficients
from sdeflow.generative.samplers import initial_noise

torch.set_num_threads(1)
EPS = 0.002


def _gaussian(seed=0, d=2):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(d, d, generator=g, dtype=torch.float64)
    cov = a @ a.T / d + 0.1 * torch.eye(d, dtype=torch.float64)
    mean = torch.randn(d, generator=g, dtype=torch.float64)
    return mean, cov


def _mixture():
    return GaussianMixture([0.3, 0.7], [[-1.5, 0.5], [1.0, -0.5]], [[0.1, 0.3], [0.4, 0.05]])


def _pf_solve(mixture, x, t_from, t_to, sde=None, rtol=1e-10, atol=1e-10):
    """An independent trajectory: the PF-ODE with the mixture's exact *score*, by solve_ode (torchdiffeq dopri5).

    EDM (``sde=None``): ``dx/dt = −t ∇log p_t(x)``, integrated in ``λ = ln t`` (``dx/dλ = −t² ∇log p_t``) so the
    solver's steps follow the trajectory's scale. Another SDE: :func:`sdeflow.probability_flow` in its own time.
    """
    if t_from == t_to:
        return x
    if sde is None:
        edm = EDMSDE()

        def velocity(lam, y):
            t = torch.exp(lam)
            return -(t * t) * mixture.score(y, t.expand(y.shape[0]), edm)

        return solve_ode(velocity, x, [math.log(t_from), math.log(t_to)], rtol=rtol, atol=atol).final
    pf = probability_flow(sde, mixture.score_fn(sde))
    return solve_ode(pf, x, [t_from, t_to], rtol=rtol, atol=atol).final


# -- the exact consistency function ------------------------------------------------------------------------------
@given(seed=st.integers(0, 20), d=st.integers(1, 3), t=st.lists(st.floats(0.0, 80.0), min_size=4, max_size=4))
@settings(max_examples=8)
def test_ode_solution_matches_the_gaussian_closed_form(seed, d, t):
    mean, cov = _gaussian(seed, d)
    closed = gaussian_consistency_function(mean, cov, EPS)
    ode = exact_consistency_function(GaussianMixture([1.0], mean[None], cov[None]), method="ode")
    assert closed.closed_form and not ode.closed_form
    g = torch.Generator().manual_seed(seed)
    tv = torch.tensor(t, dtype=torch.float64)
    x = mean + (tv[:, None] + 0.5) * torch.randn(4, d, generator=g, dtype=torch.float64)
    a, b = closed(x, tv), ode(x, tv)
    # rtol = atol = 1e-9 (float64): the solve's global error stays below 1e-7 in data units.
    assert torch.allclose(a, b, rtol=0, atol=1e-7)
    # The closed form is the formula m + (S + ε²I)^{1/2}(S + t²I)^{-1/2}(x − m), evaluated with eigh here.
    lam, u = torch.linalg.eigh(cov)
    for i in range(4):
        ti = max(float(tv[i]), EPS)
        gain = u @ torch.diag(torch.sqrt(lam + EPS**2) / torch.sqrt(lam + ti**2)) @ u.T
        assert torch.allclose(a[i], mean + gain @ (x[i] - mean), rtol=1e-12, atol=1e-12)


@given(seed=st.integers(0, 50), t=st.floats(EPS, 80.0), t2=st.floats(EPS, 80.0))
@settings(max_examples=20)
def test_gaussian_f_star_is_constant_along_pf_ode_trajectories(seed, t, t2):
    # Points of one PF-ODE trajectory (torchdiffeq dopri5 via solve_ode, exact score, rtol = atol = 1e-10)
    # map to the same f*. Tolerance 1e-7: the solver's error (~1e-9 relative on states up to ~80) times
    # the gain of f* (≤ 1).
    mean, cov = _gaussian(seed, 2)
    mix = GaussianMixture([1.0], mean[None], cov[None])
    f = gaussian_consistency_function(mean, cov, EPS)
    g = torch.Generator().manual_seed(seed)
    x_t = mean + math.sqrt(t**2 + 1.0) * torch.randn(3, 2, generator=g, dtype=torch.float64)
    x_t2 = _pf_solve(mix, x_t, t, t2)
    assert torch.allclose(f(x_t, t), f(x_t2, t2), rtol=0, atol=1e-7)
    assert torch.equal(f(x_t, EPS), x_t)  # boundary, exactly


@given(seed=st.integers(0, 10), t=st.floats(0.01, 80.0), t2=st.floats(0.01, 80.0))
@settings(max_examples=6)
def test_mixture_f_star_agrees_with_itself_along_trajectories(seed, t, t2):
    mix = _mixture()
    f = exact_consistency_function(mix)
    g = torch.Generator().manual_seed(seed)
    x_t = mix.sample(3, generator=g, dtype=torch.float64) + t * torch.randn(3, 2, generator=g, dtype=torch.float64)
    x_t2 = _pf_solve(mix, x_t, t, t2, rtol=1e-10, atol=1e-10)
    # Two float64 solves at 1e-9 and the connecting one at 1e-10: agreement to 1e-6.
    assert torch.allclose(f(x_t, t), f(x_t2, t2), rtol=0, atol=1e-6)


def test_batched_start_times_equal_one_at_a_time_and_boundary():
    mix = _mixture()
    f = exact_consistency_function(mix)
    t = torch.tensor([EPS, 0.05, 1.0, 7.0, 80.0], dtype=torch.float64)
    x = torch.randn(5, 2, generator=torch.Generator().manual_seed(3), dtype=torch.float64) * (t[:, None] + 0.5)
    batched = f(x, t)
    single = torch.cat([f(x[i:i + 1], float(t[i])) for i in range(5)])
    assert torch.allclose(batched, single, rtol=0, atol=1e-7)
    assert torch.equal(batched[0], x[0])  # t = ε: x itself
    assert f(x.float(), t).dtype == torch.float32
    # Self-consistency against the library's trajectory helper too.
    traj = pf_ode_trajectory(mix.as_denoiser(), x[4:5], torch.tensor([80.0, 3.0, 0.1, EPS]), rtol=1e-10,
                             atol=1e-10)
    ends = f(traj[:, 0], torch.tensor([80.0, 3.0, 0.1, EPS], dtype=torch.float64))
    assert torch.allclose(ends, ends[-1].expand_as(ends), rtol=0, atol=1e-6)


def test_f_star_under_vp_sde_is_self_consistent():
    mix = _mixture()
    vp = VPSDE()
    f = exact_consistency_function(mix, vp, eps=1e-3)
    g = torch.Generator().manual_seed(0)
    x0 = mix.sample(3, generator=g, dtype=torch.float64)
    x_a = vp.sample_marginal(x0, 0.7, generator=g)
    x_b = _pf_solve(mix, x_a, 0.7, 0.2, sde=vp, rtol=1e-10, atol=1e-10)
    x_eps = _pf_solve(mix, x_a, 0.7, 1e-3, sde=vp, rtol=1e-10, atol=1e-10)
    assert torch.allclose(f(x_a, 0.7), f(x_b, 0.2), rtol=0, atol=1e-6)
    assert torch.allclose(f(x_a, 0.7), x_eps, rtol=0, atol=1e-6)  # f* is the solution at ε


def test_exact_function_errors():
    mix = _mixture()
    with pytest.raises(ValueError, match="single Gaussian"):
        exact_consistency_function(mix, method="closed_form")
    with pytest.raises(ValueError, match="method"):
        exact_consistency_function(mix, method="rk4")
    with pytest.raises(TypeError, match="GaussianMixture"):
        exact_consistency_function("mix")
    with pytest.raises(TypeError, match="DiffusionSDE"):
        exact_consistency_function(mix, sde="edm")
    f = exact_consistency_function(mix)
    with pytest.raises(ValueError, match="t must be"):
        f(torch.zeros(2, 2), -1.0)
    with pytest.raises(ValueError, match=r"shape \(B, 2\)"):
        f(torch.zeros(2, 3), 1.0)
    with pytest.raises(TypeError, match="no keyword"):
        f(torch.zeros(2, 2), 1.0, class_labels=None)


# -- multistep sampling reproduces the data law ---------------------------------------------------------------------
@pytest.mark.parametrize("taus", [[80.0], [80.0, 0.8], [80.0, 2.0, 0.3]])
def test_multistep_sampling_with_f_star_reproduces_mean_and_covariance(taus):
    # x_T drawn from the exact p_T (data + T·noise): then every step keeps the law exactly N(m, S + ε²I)
    # (re-noising a p_ε sample by √(τ² − ε²) gives p_τ, and f* maps p_τ to p_ε). Tolerance: 4 standard
    # errors of the sample mean (√(S_ii/n)) and covariance (√((S_ii S_jj + S_ij²)/n)); n = 20000, seed 0.
    mean, cov = _gaussian(1, 2)
    f = gaussian_consistency_function(mean, cov, EPS)
    n = 20000
    g = torch.Generator().manual_seed(0)
    x0 = mean + torch.randn(n, 2, generator=g, dtype=torch.float64) @ torch.linalg.cholesky(cov).T
    x_T = x0 + 80.0 * torch.randn(n, 2, generator=g, dtype=torch.float64)
    out = sample_consistency(f, x_T, taus, generator=1)
    assert out.nfe == len(taus) and out.steps == len(taus) and out.sampler == "consistency"
    target = cov + EPS**2 * torch.eye(2, dtype=torch.float64)
    se_mean = torch.sqrt(torch.diagonal(target) / n)
    assert bool(((out.x.mean(0) - mean).abs() <= 4 * se_mean).all())
    emp = torch.cov(out.x.T)
    d = torch.diagonal(target)
    se_cov = torch.sqrt((d[:, None] * d[None, :] + target**2) / n)
    assert bool(((emp - target).abs() <= 4 * se_cov).all())


class _Elementwise:
    eps = EPS

    def __call__(self, x, t):
        return x / (1 + t[:, None])


def test_sample_consistency_contract():
    net = MLPNet(dim=2, hidden=16, depth=1, emb_dim=8, num_classes=2, zero_init=False, seed=0)
    f = ConsistencyFunction(net)
    taus = [80.0, 1.0, 0.2]
    x = initial_noise((4, 2), torch.tensor(taus), generator=0)
    seen = []
    y = torch.tensor([0, 1, 0, 1])
    r = sample_consistency(f, x, taus, generator=[5, 6, 7, 8], callback=seen.append, model_kwargs={"class_labels": y})
    assert r.nfe == 3 and [c["sigma"] for c in seen] == taus and r.info["taus"] == taus
    assert r.sigmas.tolist() == taus + [0.002] and not r.x.requires_grad
    # Per-sample generators: a batch's first two samples equal a batch of two with the same seeds (to float32
    # round-off: the network's matmuls may block differently for another batch size) ...
    r2 = sample_consistency(f, x[:2], taus, generator=[5, 6], model_kwargs={"class_labels": y[:2]})
    assert torch.allclose(r.x[:2], r2.x, rtol=1e-5, atol=1e-6)
    # ... and bitwise with an elementwise function (the noise itself is the same).
    elementwise = _Elementwise()
    e4 = sample_consistency(elementwise, x, taus, generator=[5, 6, 7, 8])
    e2 = sample_consistency(elementwise, x[:2], taus, generator=[5, 6])
    assert torch.equal(e4.x[:2], e2.x) and not torch.equal(e4.x, sample_consistency(elementwise, x, taus).x)
    # Same seed, same samples; one step is deterministic and equals f(x_T, T).
    a = sample_consistency(f, x, taus, generator=3, model_kwargs={"class_labels": y})
    b = sample_consistency(f, x, taus, generator=3, model_kwargs={"class_labels": y})
    assert torch.equal(a.x, b.x)
    one = sample_consistency(f, x, 80.0, model_kwargs={"class_labels": y})
    with torch.no_grad():
        assert torch.equal(one.x, f(x, 80.0, class_labels=y)) and one.nfe == 1
    assert sample_consistency.spec.nfe_for(3) == 3 and sample_consistency.spec.stochastic
    from sdeflow.generative.samplers import SAMPLERS

    assert "consistency" not in SAMPLERS  # declared with register=False: it takes f, not a denoiser
    with pytest.raises(ValueError, match="strictly decreasing"):
        sample_consistency(f, x, [80.0, 1.0, 2.0])
    with pytest.raises(ValueError, match="every τ > eps"):
        sample_consistency(f, x, [80.0, 0.002])
    with pytest.raises(ValueError, match="eps="):
        sample_consistency(lambda x, t: x, x, [80.0])


# -- the self-consistency error -------------------------------------------------------------------------------------
class _EpsIgnored(torch.nn.Module):
    """The second published bug as a whole function: EDM coefficients (ε ignored) around a network."""

    eps, T = EPS, 80.0

    def __init__(self, net, sigma_data=0.5):
        super().__init__()
        self.net, self.sigma_data = net, sigma_data

    def forward(self, x, t):
        c_skip, c_out, c_in, c_noise = edm_coefficients(t, self.sigma_data)
        return c_skip[:, None] * x + c_out[:, None] * self.net(c_in[:, None] * x, c_noise)


def test_self_consistency_error_of_exact_and_wrong_functions(tmp_path):
    mix = _mixture()
    f_star = exact_consistency_function(mix)
    kw = {"mixture": mix, "n": 64, "n_levels": 6, "T": 80.0}
    exact = self_consistency_error(f_star, **kw)
    assert exact.teacher == "exact" and exact.sigmas.shape == (6,) and float(exact.sigmas[-1]) == EPS
    assert float(exact.to_end.max()) < 1e-6 and float(exact.exact.max()) < 1e-6
    assert float(exact.adjacent[:-1].max()) < 1e-6 and math.isnan(float(exact.adjacent[-1]))
    net = MLPNet(dim=2, hidden=16, depth=1, emb_dim=8, zero_init=False, seed=0).double()
    fresh = self_consistency_error(ConsistencyFunction(net), **kw)
    assert float(fresh.to_end[-1]) == 0.0  # a proper consistency function: exact at ε
    assert float(fresh.to_end[0]) > 0.1 and fresh.mean_error > 0.05
    bug = self_consistency_error(_EpsIgnored(net), **kw)
    assert float(bug.to_end[-1]) > 0.0  # the ε-ignored bug shows at the boundary level
    # Reporting.
    rows = fresh.rows()
    assert len(rows) == 6 and rows[-1]["adjacent"] is None and rows[0]["exact"] == pytest.approx(rows[0]["to_end"])
    d = fresh.as_dict()
    assert d["n"] == 64 and d["one_step_error"] == pytest.approx(float(fresh.exact[0]))
    assert "to end" in fresh.table()
    pytest.importorskip("matplotlib")
    assert fresh.plot(tmp_path / "sc.png").stat().st_size > 0


def test_self_consistency_error_with_a_learned_teacher_and_the_cache():
    mix = _mixture()
    den = mix.as_denoiser()

    def teacher(x, sigma):  # a plain callable: the "learned" path, here exact so the answers are known
        return den(x, sigma)

    net = MLPNet(dim=2, hidden=16, depth=1, emb_dim=8, zero_init=False, seed=1).double()
    f = ConsistencyFunction(net)
    kw = {"n": 32, "n_levels": 5}
    learned = self_consistency_error(f, teacher=teacher, mixture=mix, **kw)
    assert learned.teacher == "learned"
    exact = self_consistency_error(f, mixture=mix, **kw)
    # The same trajectories (same seed and grid) and an exact teacher: f* at every point is the trajectory end.
    assert torch.allclose(learned.exact, exact.exact, rtol=1e-5, atol=1e-7)
    assert torch.allclose(learned.to_end, exact.to_end, rtol=1e-12)
    no_mix = self_consistency_error(f, teacher=teacher, **kw)
    assert no_mix.exact is None and no_mix.mean_error == pytest.approx(float(no_mix.to_end.mean()))
    # The cache: one entry per owner, reused (the same tensors) by the next call.
    store = object_cache(mix, "consistency_trajectories")
    (key, (traj, _)), = store.items()
    again = self_consistency_error(f, mixture=mix, **kw)
    assert store[key][0] is traj and torch.equal(again.to_end, exact.to_end)
    with pytest.raises(ValueError, match="mixture= "):
        self_consistency_error(f)
    with pytest.raises(ValueError, match="strictly decreasing"):
        self_consistency_error(f, mixture=mix, sigmas=[1.0, 2.0])


# -- the τ search -------------------------------------------------------------------------------------------------
class _ReturnsT:
    """f(x, t) = t everywhere: k-step sampling returns the last τ, so a metric of the mean has a known minimiser."""

    eps, T = EPS, 80.0

    def __call__(self, x, t):
        return torch.zeros_like(x) + t[:, None]


def test_search_taus_finds_a_known_minimum():
    res = search_taus(_ReturnsT(), lambda y: float((y.mean() - 1.7) ** 2), 2, n=8, event_shape=(1,))
    assert res.taus[0] == 80.0 and res.taus[1] == pytest.approx(1.7, rel=1e-3)
    assert res.evaluations == len(res.history) and res.delta_nll is None
    three = search_taus(_ReturnsT(), lambda y: float((y.mean() - 0.4) ** 2), 3, n=8, event_shape=(1,))
    assert len(three.taus) == 3 and three.taus[0] > three.taus[1] > three.taus[2] > EPS
    assert three.taus[1] == pytest.approx(0.4, rel=1e-3)


def test_search_taus_with_the_exact_mixture_metric():
    # With f* every τ gives the exact law, so the chosen 2-step sampler's ΔNLL (fresh batch) is 0 within 4 SE.
    mean, cov = _gaussian(2, 2)
    f = gaussian_consistency_function(mean, cov, EPS)
    res = search_taus(f, f.mixture, 2, n=2048, T=80.0, scan=5, iterations=4)
    assert len(res.taus) == 2 and EPS < res.taus[1] < 80.0
    assert abs(res.delta_nll) <= 4 * res.delta_nll_se
    with pytest.raises(ValueError, match="n_steps"):
        search_taus(f, f.mixture, 1, T=80.0)
    with pytest.raises(ValueError, match="T must be"):
        search_taus(f, f.mixture, 2)
    with pytest.raises(TypeError, match="mixture_or_metric"):
        search_taus(f, 3.0, 2, T=80.0)


class _Offset:
    """f* plus a constant offset δ away from the boundary: a function whose errors are known exactly."""

    eps, T = EPS, 80.0

    def __init__(self, f_star, delta):
        self.f_star, self.delta = f_star, delta

    def __call__(self, x, t):
        return self.f_star(x, t) + self.delta * (t > EPS).to(x.dtype)[:, None]


def test_self_consistency_error_measures_a_known_offset():
    mean, cov = _gaussian(4, 2)
    f_star = gaussian_consistency_function(mean, cov, EPS)
    delta = 0.03
    res = self_consistency_error(_Offset(f_star, delta), mixture=f_star.mixture, n=64, n_levels=7)
    want = delta * math.sqrt(2)  # ‖(δ, δ)‖ at every level above ε; 0 at ε
    assert torch.allclose(res.to_end[:-1], torch.full((6,), want, dtype=torch.float64), rtol=1e-6)
    assert torch.allclose(res.exact, res.to_end) and float(res.to_end[-1]) == 0.0
    assert float(res.adjacent[:-2].abs().max()) < 1e-6 and float(res.adjacent[-2]) == pytest.approx(want, rel=1e-6)
    assert res.mean_error == pytest.approx(want * 6 / 7, rel=1e-6)
