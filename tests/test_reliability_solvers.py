"""Issue 13, solver side: silently wrong results become errors or correct results, failures are
reported per path, and sizes that cannot fit are refused before allocating."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
import torchsde

import sdeflow as sf
from sdeflow.solve.solution import STATUS_ABORTED, SolveError
from sdeflow.verify.orders import OrderResult, declared_orders, strong_order, weak_order

X0 = torch.zeros(4, 2, dtype=torch.float64)
OU = sf.OrnsteinUhlenbeck(1.0, 0.0, 0.5)


class Blowup(sf.SDE):
    """dx = x² dt + 0.1 x dW: a path from x0 = 5 explodes near t = 0.2, one from 0.1 stays small."""

    noise_type = "diagonal"
    sde_type = "ito"

    def drift(self, t, x):
        return x**2

    def diffusion(self, t, x):
        return 0.1 * x


# -- the Brownian path and the seed --------------------------------------------------------------------
@pytest.mark.parametrize("backend", ["native", "torchsde"])
def test_bm_covering_less_than_ts_is_refused(backend):
    bm = torchsde.BrownianInterval(0.0, 0.5, size=(4, 2), dtype=torch.float64)
    with pytest.raises(ValueError, match=r"bm covers \[0, 0.5\] but ts spans \[0, 1\]"):
        sf.simulate(OU, X0, [0.0, 1.0], dt=0.1, bm=bm, backend=backend)


def test_generator_with_bm_float_seeds_and_huge_seeds_are_refused():
    bm = torchsde.BrownianInterval(0.0, 1.0, size=(4, 2), dtype=torch.float64)
    with pytest.raises(ValueError, match="either bm .* or generator"):
        sf.simulate(OU, X0, [0.0, 1.0], dt=0.1, bm=bm, generator=0)
    with pytest.raises(TypeError, match="float 1.5"):
        sf.simulate(OU, X0, [0.0, 1.0], dt=0.1, generator=1.5)
    with pytest.raises(ValueError, match=r"generator seed .* 2\*\*64"):
        sf.simulate(OU, X0, [0.0, 1.0], dt=0.1, generator=2**70)
    # a NumPy integer is a seed like an int: same paths
    a = sf.simulate(OU, X0, [0.0, 1.0], dt=0.1, generator=np.int64(7)).xs
    b = sf.simulate(OU, X0, [0.0, 1.0], dt=0.1, generator=7).xs
    assert torch.equal(a, b)


def test_bm_without_the_space_time_area_and_without_a_dt_hint_are_refused_clearly():
    add = sf.OrnsteinUhlenbeck(1.0, 0.0, 0.5)
    bm = torchsde.BrownianInterval(0.0, 1.0, size=(4, 2), dtype=torch.float64)  # levy 'none'
    with pytest.raises(ValueError, match="levy_area_approximation='space-time'"):
        sf.simulate(add, X0, [0.0, 1.0], dt=0.1, method="sra1", bm=bm)
    # more than 10^4 steps on a BrownianInterval without dt: torchsde would hit RecursionError
    with pytest.raises(ValueError, match=r"created without dt.*dt=5e-05"):
        sf.simulate(add, X0, [0.0, 1.0], dt=5e-5, bm=bm, save="final")


def test_torchsde_backend_runs_past_the_recursion_limit():
    # 2.5·10^4 steps: RecursionError in torchsde's BrownianInterval before; a fixed-step run now streams its
    # increments, an adaptive one gets the dt hint
    x0 = torch.zeros(1, 1, dtype=torch.float64)
    sol = sf.simulate(OU, x0, [0.0, 1.0], dt=4e-5, backend="torchsde", generator=0, save="final")
    assert bool(torch.isfinite(sol.final).all())
    again = sf.simulate(OU, x0, [0.0, 1.0], dt=4e-5, backend="torchsde", generator=0, save="final")
    assert torch.equal(sol.final, again.final)  # reproducible for a seed
    from sdeflow.solve.backends.torchsde_backend import StreamingBrownian, make_brownian

    ts = np.array([0.0, 1.0])
    assert isinstance(make_brownian(x0, ts, method="euler", dt=4e-5, brownian_size=1, generator=None,
                                    fixed_step=True), StreamingBrownian)
    hinted = make_brownian(x0, ts, method="srk", dt=4e-5, brownian_size=1, generator=None, fixed_step=False)
    assert isinstance(hinted, torchsde.BrownianInterval) and hinted._dt == 4e-5
    short = make_brownian(x0, ts, method="euler", dt=1e-2, brownian_size=1, generator=None, fixed_step=True)
    assert isinstance(short, torchsde.BrownianInterval) and short._dt is None  # short runs: paths unchanged


def test_streaming_brownian_has_the_law_of_w_and_u():
    from sdeflow.solve.backends.torchsde_backend import StreamingBrownian

    n, h = 200_000, 0.25
    bm = StreamingBrownian(0.0, (n, 1), dtype=torch.float64, device=torch.device("cpu"),
                           generator=torch.Generator().manual_seed(0), levy_area_approximation="space-time")
    w, u = bm(0.0, h, return_U=True)
    w2 = bm(0.0, h)
    assert torch.equal(w, w2)  # a repeated query returns the same step
    # Var W = h, Var U = h^3/3, Cov(W, U) = h^2/2; with n = 2e5 the relative standard error of each
    # second moment is about sqrt(2/n) = 0.3%, so 2% is more than 6 standard errors
    torch.testing.assert_close(float(w.var()), h, rtol=0.02, atol=0)
    torch.testing.assert_close(float(u.var()), h**3 / 3, rtol=0.02, atol=0)
    torch.testing.assert_close(float((w * u).mean()), h**2 / 2, rtol=0.02, atol=0)
    bm(h, 2 * h)
    with pytest.raises(ValueError, match="consecutive steps only"):
        bm(0.0, h)


def test_backward_runs_use_w_of_minus_s_pathwise():
    # dx = dW forward on bm, then backward on the same bm: the backward increments are W(t_next) - W(t),
    # so the path retraces itself to x0 (with W̃(s) = -W(-s) it ended at x0 + 2 W(1)).
    bm_sde = sf.BrownianMotion(0.0, 1.0)
    x0 = torch.zeros(8, 1, dtype=torch.float64)
    for backend in ("native", "torchsde"):
        bm = torchsde.BrownianInterval(0.0, 1.0, size=(8, 1), dtype=torch.float64, entropy=3)
        fwd = sf.simulate(bm_sde, x0, [0.0, 1.0], dt=2.0**-5, bm=bm, backend=backend)
        back = sf.simulate(bm_sde, fwd.final, [1.0, 0.0], dt=2.0**-5, bm=bm, backend=backend)
        torch.testing.assert_close(fwd.final, bm(0.0, 1.0), rtol=0, atol=1e-12)
        torch.testing.assert_close(back.final, x0, rtol=0, atol=1e-12)


class AdditiveGeneral(sf.SDE):
    """Additive noise with a 3-column time-dependent G (d = 2): torchsde's srk is SRA1 on it."""

    noise_type = "additive"

    def __init__(self):
        super().__init__()
        self.register_buffer("G", torch.tensor([[0.3, 0.1, 0.0], [0.0, 0.2, 0.4]], dtype=torch.float64))

    def drift(self, t, x):
        return torch.sin(x) - x**3 * 0.1

    def diffusion(self, t, x):
        return (self.G * (1 + t)).to(x.dtype).expand(x.shape + (3,))


def test_native_sra1_backward_on_a_space_time_bm_matches_torchsde():
    # the path has the space-time area: it is reflected (with U), not refused
    bm = torchsde.BrownianInterval(0.0, 1.0, size=(4, 3), dtype=torch.float64, entropy=1,
                                   levy_area_approximation="space-time")
    x1 = torch.ones(4, 2, dtype=torch.float64)
    sde = AdditiveGeneral()
    nat = sf.simulate(sde, x1, [1.0, 0.5, 0.0], dt=2.0**-6, method="sra1", backend="native", bm=bm)
    ref = sf.simulate(sde, x1, [1.0, 0.5, 0.0], dt=2.0**-6, method="srk", backend="torchsde", bm=bm)
    torch.testing.assert_close(nat.xs, ref.xs, rtol=1e-10, atol=1e-10)


# -- per-path failures -----------------------------------------------------------------------------------
@pytest.mark.filterwarnings("ignore:Hitting minimum allowed step size:UserWarning")
def test_adaptive_torchsde_failure_is_reported_per_path():
    x0 = torch.tensor([[0.1], [5.0], [0.2]], dtype=torch.float64)
    kw = dict(method="srk", adaptive=True, dt=0.01, backend="torchsde", generator=0)
    with pytest.warns(RuntimeWarning, match=r"gave up on 1 of 3 paths \(1 at t=.*Solution.status"):
        sol = sf.simulate(Blowup(), x0, [0.0, 1.0], **kw)
    assert sol.status.tolist() == [0, STATUS_ABORTED, 0]
    assert sol.ok.tolist() == [True, False, True]
    assert bool(torch.isfinite(sol.xs[:, sol.ok]).all()) and bool(torch.isnan(sol.final[1]).all())
    assert 0.15 < float(sol.failed_at[1]) < 0.25 and math.isnan(float(sol.failed_at[0]))
    with pytest.raises(SolveError, match="on_failure='return' returns the finite paths") as info:
        sf.simulate(Blowup(), x0, [0.0, 1.0], on_failure="raise", **kw)
    assert info.value.paths == [1]
    with pytest.raises(ValueError, match="on_failure must be"):
        sf.simulate(Blowup(), x0, [0.0, 1.0], on_failure="ignore", **kw)


def test_dopri5_failure_is_reported_per_path_at_the_blowup_time():
    # x' = x² from x0 explodes at t = 1/x0: the path from 5 at 0.2; the others are solved to the end
    x0 = torch.tensor([[0.1], [5.0], [0.2], [0.3]], dtype=torch.float64)
    with pytest.warns(RuntimeWarning, match="gave up on 1 of 4 paths"):
        sol = sf.solve_ode(lambda t, x: x**2, x0, [0.0, 1.0])
    assert sol.status.tolist() == [0, STATUS_ABORTED, 0, 0]
    assert abs(float(sol.failed_at[1]) - 0.2) < 1e-3
    exact = x0[[0, 2, 3]] / (1 - x0[[0, 2, 3]])  # x(1) = x0 / (1 - x0)
    torch.testing.assert_close(sol.final[[0, 2, 3]], exact, rtol=1e-5, atol=0)
    with pytest.raises(SolveError):
        sf.solve_ode(lambda t, x: x**2, x0, [0.0, 1.0], on_failure="raise")


def test_fixed_step_failures_follow_the_same_convention():
    x0 = torch.tensor([[0.1], [50.0]], dtype=torch.float64)
    with pytest.raises(SolveError, match=r"1 of 2 paths became NaN or infinite \(paths 1\)"):
        sf.simulate(Blowup(), x0, [0.0, 1.0], dt=0.01, generator=0, on_failure="raise")


# -- solve_ode options ------------------------------------------------------------------------------------
@pytest.mark.parametrize("kw, match", [
    (dict(rtol=0.0), "rtol must be a finite number > 0"),
    (dict(rtol=-1e-3), "rtol must be a finite number > 0"),
    (dict(atol=-1.0), "atol must be a finite number > 0"),
    (dict(atol=float("nan")), "atol must be a finite number > 0"),
    (dict(max_steps=0), "max_steps must be an int >= 1"),
])
def test_solve_ode_refuses_bad_tolerances_and_max_steps(kw, match):
    with pytest.raises(ValueError, match=match):
        sf.solve_ode(lambda t, x: -x, X0, [0.0, 1.0], **kw)


def test_solve_ode_native_grid_matches_float32_times():
    # float32 times 0.1, 0.2, ... are not multiples of dt in float64: without the time tolerance the grid
    # took a sliver step at each of them
    ts = torch.linspace(0, 1, 11, dtype=torch.float32)
    sol = sf.solve_ode(lambda t, x: -x, torch.ones(2, 1), ts, method="euler", backend="native", dt=0.1)
    assert sol.stats.steps == 10


def test_half_precision_states_keep_float32_times():
    seen = set()

    class Rec(sf.SDE):
        noise_type = "diagonal"
        sde_type = "ito"

        def drift(self, t, x):
            seen.add(float(t))
            return torch.zeros_like(x)

        def diffusion(self, t, x):
            return torch.full_like(x, 1e-3)

    x0 = torch.zeros(2, 1, dtype=torch.float16)
    sol = sf.simulate(Rec(), x0, [0.0, 70000.0], dt=7000.0, generator=0)
    assert sol.ts.dtype == torch.float32 and sol.ts.tolist() == [0.0, 70000.0]
    seen.clear()
    sf.simulate(Rec(), x0, [0.0, 1.0], dt=1e-4, generator=0, save="final")
    assert len(seen) > 9900  # float16 has ~4300 distinct values in [0, 1]


# -- torchsde's scalar Milstein --------------------------------------------------------------------------
class Rotating(sf.SDE):
    """Scalar noise with g(x) = A x, A not symmetric."""

    noise_type = "scalar"
    sde_type = "ito"

    def drift(self, t, x):
        return -0.1 * x

    def diffusion(self, t, x):
        return torch.stack([0.3 * x[:, 1], -0.2 * x[:, 0]], dim=1)


def test_torchsde_scalar_milstein_is_refused_for_a_non_symmetric_jacobian():
    x0 = torch.ones(4, 2, dtype=torch.float64)
    with pytest.raises(ValueError, match="Jᵀg where it needs J g"):
        sf.simulate(Rotating(), x0, [0.0, 1.0], dt=0.1, method="milstein", backend="torchsde", generator=0)
    sol = sf.simulate(Rotating(), x0, [0.0, 1.0], dt=0.1, method="milstein", backend="auto", generator=0)
    assert sol.stats.backend == "native"
    assert declared_orders("milstein", "torchsde", Rotating())[0] == 0.5
    assert declared_orders("milstein", "native", Rotating())[0] == 1.0


# -- orders ------------------------------------------------------------------------------------------------
def test_orders_refuse_one_batch_no_resamples_wrong_exact_and_0d_functionals():
    x0 = torch.ones(40, 1, dtype=torch.float64)
    gbm = sf.GeometricBrownianMotion(0.1, 0.2)
    kw = dict(method="euler", dts=[0.25, 0.125])
    with pytest.raises(ValueError, match="n_batches must be an int >= 2"):
        strong_order(gbm, x0, 1.0, n_batches=1, **kw)
    with pytest.raises(ValueError, match="n_boot must be an int >= 10"):
        strong_order(gbm, x0, 1.0, n_batches=4, n_boot=0, **kw)

    def wrong(x, t, w):
        return (x * torch.exp(0.1 * t + 0.2 * w)).sum()  # 0-d: would broadcast

    with pytest.raises(ValueError, match="exact.*must return X_t with x0's shape"):
        strong_order(gbm, x0, 1.0, n_batches=4, exact=wrong, **kw)
    with pytest.raises(ValueError, match=r"fn\(x\) must return one value per path"):
        weak_order(gbm, x0, 1.0, n_batches=4, fn=lambda x: x.mean(), exact_mean=1.1, **kw)


def test_an_order_above_the_declared_one_passes_and_says_so():
    base = dict(kind="strong", method="sra1", backend="native", problem="p", dts=np.array([0.1, 0.05]),
                errors=np.array([1e-2, 2.5e-3]), errors_se=np.array([1e-4, 1e-4]), ci=(1.9, 2.1), declared=1.5,
                tolerance=0.1, n_paths=100, reference="exact")
    above = OrderResult(order=2.0, **base)
    assert above.passed and above.above and "above the declared order on this problem" in str(above)
    below = OrderResult(order=1.2, **base)
    assert not below.passed and "FAIL (below the declared order)" in str(below)


# -- ensembles ---------------------------------------------------------------------------------------------
def test_ensemble_drops_diverging_paths_and_reports_them():
    def starts(n, gen):
        x = torch.full((n, 1), 0.1, dtype=torch.float64)
        x[::5] = 50.0  # every fifth path explodes within the first step
        return x

    ts = [0.0, 0.5, 1.0]
    # batches of 16, 16 and 8 paths: 4 + 4 + 2 start at 50
    with pytest.warns(RuntimeWarning, match=r"10 of 40 paths became NaN or infinite .*EnsembleStats.dropped"):
        st = sf.ensemble_statistics(Blowup(), starts, ts, n_paths=40, batch_size=16, dt=0.01, seed=3)
    assert st.dropped == 10 and st.count == 30
    assert st.dropped_paths.tolist() == [0, 5, 10, 15, 16, 21, 26, 31, 32, 37]
    assert bool(torch.isfinite(st.mean).all()) and bool(torch.isfinite(st.var).all())
    # the statistics are exactly those of the finite paths of each batch
    finite = []
    for b in range(3):
        nb = min(16, 40 - 16 * b)
        gen = sf.ensemble.batch_generator(3, b)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            xs = sf.simulate(Blowup(), starts(nb, gen), ts, dt=0.01, generator=gen).xs
        finite.append(xs[:, torch.isfinite(xs).all(0).all(-1)])
    allx = torch.cat(finite, dim=1)
    torch.testing.assert_close(st.mean, allx.mean(1), rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(st.var, allx.var(1), rtol=1e-10, atol=1e-14)


def test_ensemble_generator_is_the_seed():
    kw = dict(n_paths=64, batch_size=32, dt=0.05)
    a = sf.ensemble_statistics(OU, torch.ones(2), [0.0, 1.0], seed=5, **kw)
    b = sf.ensemble_statistics(OU, torch.ones(2), [0.0, 1.0], generator=5, **kw)
    assert torch.equal(a.mean, b.mean) and torch.equal(a.m2, b.m2)
    with pytest.raises(ValueError, match="not both"):
        sf.ensemble_statistics(OU, torch.ones(2), [0.0, 1.0], seed=5, generator=6, **kw)


# -- sizes -------------------------------------------------------------------------------------------------
def test_sizes_that_cannot_fit_are_refused_before_allocating(monkeypatch):
    monkeypatch.setenv("SDEFLOW_MEMORY_BUDGET", str(1 << 30))  # 1 GiB, whatever the machine has
    with pytest.raises(ValueError, match=r"grid of 1e\+12 steps .*use a larger dt"):
        sf.simulate(OU, X0, [0.0, 1.0], dt=1e-12)
    big = torch.zeros(1 << 16, 64)  # 16 MiB per state
    with pytest.raises(ValueError, match="keeps 101 states.*save='final'"):
        sf.simulate(OU, big, np.linspace(0, 1, 101), dt=0.01)
    with pytest.raises(ValueError, match="about 149.0 GiB"):
        sf.Grid1D(-1.0, 1.0, 10**9)
    with pytest.raises(ValueError, match="use fewer bins"):
        sf.ensemble_statistics(OU, torch.ones(2), [0.0, 1.0], n_paths=4, dt=0.1, histogram=(-1, 1, 10**9))
    with pytest.raises(ValueError, match="solve_ode.*grid of 1e\\+12 steps"):
        sf.solve_ode(lambda t, x: -x, X0, [0.0, 1.0], method="euler", backend="native", dt=1e-12)


# -- checks of arguments ------------------------------------------------------------------------------------
def test_non_finite_constructor_arguments_are_refused():
    for make in (lambda: sf.EDMSDE(T=math.inf), lambda: sf.VESDE(T=math.inf), lambda: sf.VPSDE(T=math.inf),
                 lambda: sf.VESDE(sigma_max=math.inf), lambda: sf.EDMSDE(eps=math.nan)):
        with pytest.raises(ValueError, match="finite"):
            make()


def test_fokker_planck_callable_p0_is_checked_like_an_array():
    grid = sf.Grid1D(-3.0, 3.0, 32)
    drift = sf.OrnsteinUhlenbeck()
    with pytest.raises(ValueError, match=r"p0\(x\).*non-negative"):
        sf.solve_fokker_planck(drift, lambda x: -torch.exp(-x[:, 0] ** 2), grid, [0.0, 0.1])
    with pytest.raises(ValueError, match=r"p0\(x\).*zero everywhere"):
        sf.solve_fokker_planck(drift, lambda x: torch.zeros(x.shape[0], dtype=x.dtype), grid, [0.0, 0.1])


def test_messages_name_what_the_user_passed():
    class NanAtOne(sf.SDE):
        noise_type = "diagonal"
        sde_type = "ito"

        def drift(self, t, x):
            return x * (1.0 / (1.0 - t))  # inf at t = 1

        def diffusion(self, t, x):
            return torch.ones_like(x)

    with pytest.raises(ValueError, match="at the initial time 1;"):
        sf.simulate(NanAtOne(), X0, [1.0, 0.0], dt=0.1)
    with pytest.raises(TypeError, match=r"not the class OrnsteinUhlenbeck; create one first"):
        sf.simulate(sf.OrnsteinUhlenbeck, X0, [0.0, 1.0], dt=0.1)
    sol = sf.simulate(OU, X0, [0.0, 1.0], dt=np.float32(0.25), generator=0)  # NumPy scalars are numbers
    assert sol.stats.steps == 4


def test_meta_and_non_finite_starts_are_named():
    class NoParams(sf.SDE):
        noise_type = "diagonal"
        sde_type = "ito"

        def drift(self, t, x):
            return -x

        def diffusion(self, t, x):
            return torch.ones_like(x)

    with pytest.raises(ValueError, match="x0 is on the meta device"):
        sf.simulate(NoParams(), torch.zeros(3, 2, device="meta"), [0.0, 1.0], dt=0.1)
    x0 = torch.zeros(3, 2)
    x0[2, 1] = float("nan")
    with pytest.raises(ValueError, match=r"x0 contains NaN or inf \(path 2 first\)"):
        sf.simulate(NoParams(), x0, [0.0, 1.0], dt=0.1)


def test_every_path_aborted_says_what_the_solver_said_and_bounds_the_bisection():
    x0 = torch.ones(64, 2)
    with pytest.warns(RuntimeWarning, match=r"gave up on 64 of 64 paths .*max_num_steps exceeded"):
        sol = sf.solve_ode(lambda t, x: -x, x0, [0.0, 1.0], max_steps=2)
    assert bool((sol.status == STATUS_ABORTED).all()) and "max_num_steps" in sol.failure
    # the budget (16 + 8 * bit_length(64) = 72 sub-solves) bounds the work: each attempt takes at most
    # a handful of evaluations before torchdiffeq gives up
    assert sol.stats.nfe < 73 * 20
