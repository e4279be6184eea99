"""simulate(): shapes, dtypes, backends on one Brownian path, save modes, seeds, calculus conversion."""

import math
from textwrap import dedent as textwrap_dedent

import numpy as np
import pytest
import torch
import torchsde
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

import sdeflow as sf
from sdeflow.solve.native import EulerMaruyama, Milstein, NativeSDEMethod
from sdeflow.solve.native.base import add_noise

from helpers import mean_and_se


class GeneralNoise(sf.SDE):
    """dX = -X dt + G(X) dW with a 2-column, state-dependent G, for any event shape."""

    noise_type = "general"

    def drift(self, t, x):
        return -x

    def diffusion(self, t, x):
        return torch.stack([0.3 * torch.sin(x), 0.2 * torch.ones_like(x)], dim=-1)


class ScalarNoise(sf.SDE):
    noise_type = "scalar"

    def drift(self, t, x):
        return -0.5 * x

    def diffusion(self, t, x):
        return 0.4 * torch.cos(x)


class AdditiveGeneral(sf.SDE):
    """Additive noise with a 3-column time-dependent G (d = 2)."""

    noise_type = "additive"

    def __init__(self):
        super().__init__()
        self.register_buffer("G", torch.tensor([[0.3, 0.1, 0.0], [0.0, 0.2, 0.4]], dtype=torch.float64))

    def drift(self, t, x):
        return torch.sin(x) - x**3 * 0.1

    def diffusion(self, t, x):
        return (self.G * (1 + t)).to(x.dtype).expand(x.shape + (3,))


class StratGBM(sf.SDE):
    """dX = mu X dt + sigma X ∘ dW, solution x0 exp(mu t + sigma W_t)."""

    sde_type = "stratonovich"

    def __init__(self, mu=0.2, sigma=0.5):
        super().__init__()
        self.mu, self.sigma = mu, sigma

    def drift(self, t, x):
        return self.mu * x

    def diffusion(self, t, x):
        return self.sigma * x

    def diffusion_derivative(self, t, x):
        return torch.full_like(x, self.sigma)


@pytest.mark.parametrize("event_shape", [(), (3,), (2, 3, 4)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("backend", ["native", "torchsde"])
def test_shapes_and_dtypes(event_shape, dtype, backend):
    x0 = torch.randn((5,) + event_shape, dtype=dtype)
    for sde in (sf.OrnsteinUhlenbeck(), GeneralNoise(), ScalarNoise()):
        sol = sf.simulate(sde, x0, [0.0, 0.25, 0.5], dt=0.05, backend=backend, generator=0)
        assert sol.xs.shape == (3, 5) + event_shape
        assert sol.xs.dtype == dtype and sol.ts.dtype == dtype
        assert torch.equal(sol.xs[0], x0)
        assert bool(torch.isfinite(sol.xs).all())
        assert sol.status.shape == (5,) and int(sol.status.sum()) == 0
        assert sol.stats.backend == backend


def _bm(b, m, t1=1.0, levy="none"):
    return torchsde.BrownianInterval(0.0, t1, size=(b, m), dtype=torch.float64, entropy=11,
                                     levy_area_approximation=levy)


@pytest.mark.parametrize(
    "sde_factory, method, levy",
    [
        (lambda: sf.OrnsteinUhlenbeck(1.2, 0.3, 0.7), "euler", "none"),
        (lambda: sf.GeometricBrownianMotion(0.3, 0.6), "euler", "none"),
        (lambda: sf.GeometricBrownianMotion(0.3, 0.6), "milstein", "none"),
        (lambda: ScalarNoise(), "milstein", "none"),
        (lambda: StratGBM(), "heun", "none"),
        (lambda: StratGBM(), "milstein", "none"),
        (lambda: GeneralNoise(), "euler", "none"),
        (lambda: AdditiveGeneral(), "srk", "space-time"),
    ],
)
def test_native_and_torchsde_agree_pathwise(sde_factory, method, levy):
    sde = sde_factory()
    b, d = 64, 2
    x0 = torch.rand(b, d, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) + 0.5
    m = {"general": 2, "additive": 3, "scalar": 1}.get(sde.noise_type, d)
    bm = _bm(b, m, levy=levy)
    ts = [0.0, 0.5, 1.0]
    dt = 2.0**-6  # exact in binary: both backends query the path at identical times
    nat = sf.simulate(sde, x0, ts, dt=dt, method=method, backend="native", bm=bm)
    ref = sf.simulate(sde, x0, ts, dt=dt, method=method, backend="torchsde", bm=bm)
    assert nat.stats.backend == "native" and ref.stats.backend == "torchsde"
    torch.testing.assert_close(nat.xs, ref.xs, rtol=1e-10, atol=1e-10)


def test_decreasing_ts_runs_backward_on_both_backends():
    sde = sf.GeometricBrownianMotion(0.3, 0.6)
    b = 32
    x0 = torch.ones(b, 1, dtype=torch.float64)
    bm = torchsde.BrownianInterval(0.0, 1.0, size=(b, 1), dtype=torch.float64, entropy=5)
    ts = [1.0, 0.5, 0.0]
    nat = sf.simulate(sde, x0, ts, dt=2.0**-6, method="milstein", backend="native", bm=bm)
    ref = sf.simulate(sde, x0, ts, dt=2.0**-6, method="milstein", backend="torchsde", bm=bm)
    torch.testing.assert_close(nat.xs, ref.xs, rtol=1e-10, atol=1e-10)
    assert torch.equal(nat.ts, torch.tensor(ts, dtype=torch.float64))
    # Backward in time with no noise: dx = mu x dt integrated from 1 to 0 divides by e^{mu}.
    ode_like = sf.GeometricBrownianMotion(0.3, 1e-12)
    sol = sf.simulate(ode_like, x0, ts, dt=1e-3, method="euler", generator=0)
    assert abs(float(sol.final.mean()) - math.exp(-0.3)) < 1e-3


def test_save_modes_and_stats():
    sde = sf.OrnsteinUhlenbeck()
    x0 = torch.zeros(4, 3)
    full = sf.simulate(sde, x0, [0.0, 0.3, 1.0], dt=0.1, generator=3)
    final = sf.simulate(sde, x0, [0.0, 0.3, 1.0], dt=0.1, generator=3, save="final")
    steps = sf.simulate(sde, x0, [0.0, 0.3, 1.0], dt=0.1, generator=3, save="steps")
    assert final.xs.shape == (1, 4, 3) and torch.equal(final.final, full.final)
    assert final.ts.tolist() == pytest.approx([1.0])
    # 0.3 = 3 steps of 0.1, then 0.7 = 7 steps: 10 steps, 11 saved states.
    assert steps.xs.shape == (11, 4, 3) and steps.stats.steps == 10
    assert torch.equal(steps.xs[3], full.xs[1]) and torch.equal(steps.final, full.final)
    assert full.stats.drift_evals == 11 and full.stats.diffusion_evals == 11
    assert full.stats.wall_time > 0


def test_uneven_ts_are_hit_exactly():
    sde = sf.BrownianMotion(mu=1.0, sigma=1e-9)  # almost deterministic: x_t = t
    sol = sf.simulate(sde, torch.zeros(2, 1, dtype=torch.float64), [0.0, 0.123, 0.5, 0.77], dt=0.1, generator=0)
    torch.testing.assert_close(sol.xs[:, 0, 0], torch.tensor([0.0, 0.123, 0.5, 0.77], dtype=torch.float64),
                               atol=1e-6, rtol=0)


def test_seeds_reproduce_and_differ():
    sde = sf.OrnsteinUhlenbeck()
    x0 = torch.zeros(16, 2)
    a = sf.simulate(sde, x0, [0.0, 1.0], dt=0.01, generator=42)
    b = sf.simulate(sde, x0, [0.0, 1.0], dt=0.01, generator=torch.Generator().manual_seed(42))
    c = sf.simulate(sde, x0, [0.0, 1.0], dt=0.01, generator=43)
    assert torch.equal(a.xs, b.xs)
    assert not torch.equal(a.xs, c.xs)
    torch.manual_seed(5)
    d = sf.simulate(sde, x0, [0.0, 1.0], dt=0.01)
    torch.manual_seed(5)
    e = sf.simulate(sde, x0, [0.0, 1.0], dt=0.01)
    assert torch.equal(d.xs, e.xs)
    f = sf.simulate(sde, x0, [0.0, 1.0], dt=0.01, generator=42, backend="torchsde")
    g = sf.simulate(sde, x0, [0.0, 1.0], dt=0.01, generator=42, backend="torchsde")
    assert torch.equal(f.xs, g.xs)


def test_auto_backend_rule():
    ou = sf.OrnsteinUhlenbeck()
    x0 = torch.zeros(3, 1)
    assert sf.simulate(ou, x0, [0, 1], dt=0.1, generator=0).stats.backend == "native"
    assert sf.simulate(ou, x0, [0, 1], dt=0.1, method="srk", generator=0).stats.method == "sra1"
    assert sf.simulate(ou, x0, [0, 1], dt=0.1, method="midpoint", generator=0).stats.backend == "torchsde"
    gbm = sf.GeometricBrownianMotion()
    assert sf.simulate(gbm, x0 + 1, [0, 1], method="milstein", adaptive=True, generator=0).stats.backend == "torchsde"
    assert sf.simulate(gbm, x0 + 1, [0, 1], dt=0.1, method="srk", generator=0).stats.backend == "torchsde"


def test_torchsde_protocol_object_is_accepted():
    class Plain:  # not an nn.Module, torchsde's protocol only
        noise_type = "diagonal"
        sde_type = "ito"

        def f(self, t, y):
            return -y

        def g(self, t, y):
            return 0.1 * torch.ones_like(y)

    x0 = torch.ones(8, 2, dtype=torch.float64)
    for backend in ("native", "torchsde"):
        sol = sf.simulate(Plain(), x0, [0.0, 1.0], dt=0.01, backend=backend, generator=0)
        assert abs(float(sol.final.mean()) - math.exp(-1)) < 0.05
    # and an sdeflow SDE goes straight into torchsde
    ys = torchsde.sdeint(sf.OrnsteinUhlenbeck(1.0, 0.0, 0.1), x0, torch.tensor([0.0, 1.0], dtype=torch.float64),
                         dt=0.01)
    assert ys.shape == (2, 8, 2) and ys.dtype == torch.float64


def test_ito_stratonovich_conversion_monte_carlo():
    n = 40_000
    x0 = torch.ones(n, 1, dtype=torch.float64)
    mu, sigma, t = 0.2, 0.5, 1.0
    # Stratonovich GBM as Itô: mean x0 exp((mu + sigma^2/2) t).
    ito = sf.to_ito(StratGBM(mu, sigma))
    assert ito.sde_type == "ito"
    sol = sf.simulate(ito, x0, [0.0, t], dt=1 / 512, method="milstein", generator=1)
    m, se = mean_and_se(sol.final)
    assert abs(m - math.exp((mu + sigma**2 / 2) * t)) < 4 * se
    # Itô GBM as Stratonovich, integrated by Heun: mean x0 exp(mu t).
    strat = sf.to_stratonovich(sf.GeometricBrownianMotion(mu, sigma))
    sol = sf.simulate(strat, x0, [0.0, t], dt=1 / 512, method="heun", generator=2)
    m, se = mean_and_se(sol.final)
    assert abs(m - math.exp(mu * t)) < 4 * se
    # Without the conversion the Stratonovich reading of Itô GBM is visibly wrong (power check).
    wrong = sf.simulate(StratGBM(mu, sigma), x0, [0.0, t], dt=1 / 512, method="heun", generator=2)
    m, se = mean_and_se(wrong.final)
    assert abs(m - math.exp(mu * t)) > 10 * se


def test_general_noise_correction_matches_brute_force_jacobian():
    sde = GeneralNoise()
    x = torch.randn(3, 2, dtype=torch.float64)
    t = torch.tensor(0.0, dtype=torch.float64)
    c = sf.ito_stratonovich_correction(sde, t, x)
    for b in range(3):
        G = sde.diffusion(t, x[b : b + 1])[0]  # (d, m)
        J = torch.autograd.functional.jacobian(lambda y: sde.diffusion(t, y[None])[0], x[b])  # (d, m, d)
        brute = torch.einsum("jk,ikj->i", G, J)
        torch.testing.assert_close(c[b], brute)


def test_adjoint_gradients_match_backprop_through_native():
    class LearnableOU(sf.SDE):
        def __init__(self):
            super().__init__()
            self.theta = nn.Parameter(torch.tensor(0.8, dtype=torch.float64))

        def drift(self, t, x):
            return -self.theta * x

        def diffusion(self, t, x):
            return 0.3 * torch.ones_like(x)

    sde = LearnableOU()
    b = 128
    x0 = torch.ones(b, 1, dtype=torch.float64)
    bm = torchsde.BrownianInterval(0.0, 1.0, size=(b, 1), dtype=torch.float64, entropy=1)
    loss = sf.simulate(sde, x0, [0.0, 1.0], dt=2.0**-8, backend="native", bm=bm).final.pow(2).mean()
    (g_native,) = torch.autograd.grad(loss, sde.theta)
    loss = sf.simulate(sde, x0, [0.0, 1.0], dt=2.0**-8, method="euler", adjoint=True, bm=bm).final.pow(2).mean()
    (g_adj,) = torch.autograd.grad(loss, sde.theta)
    # Exact derivative of E[X_1^2] = e^{-2θ} + 0.09 (1 - e^{-2θ}) / (2θ) is about -0.41; both estimates
    # differ only by the O(dt) gap between the discrete and the continuous adjoint.
    assert abs(float(g_native - g_adj)) < 0.01 * abs(float(g_native))


def test_milstein_and_conversion_with_state_independent_diffusion_not_flagged_additive():
    class ConstNoise(sf.SDE):
        noise_type = "diagonal"

        def drift(self, t, x):
            return x - x**3

        def diffusion(self, t, x):
            return 0.5 * torch.ones_like(x)

    x0 = torch.zeros(8, 1, dtype=torch.float64)
    bm = torchsde.BrownianInterval(0.0, 1.0, size=(8, 1), dtype=torch.float64, entropy=2)
    a = sf.simulate(ConstNoise(), x0, [0.0, 1.0], dt=2**-6, method="milstein", bm=bm)
    b = sf.simulate(ConstNoise(), x0, [0.0, 1.0], dt=2**-6, method="euler", bm=bm)
    torch.testing.assert_close(a.xs, b.xs)  # g' = 0: Milstein is Euler–Maruyama
    c = sf.ito_stratonovich_correction(ConstNoise(), torch.tensor(0.0), x0 + 1)
    assert torch.equal(c, torch.zeros_like(x0))


# -- simulate as plan + drive: method classes, declared costs, caches, grids ---------------------------------
class MyEuler(NativeSDEMethod):
    """A user's own Euler–Maruyama, written against the step() interface only."""

    name = "my_euler"
    noise_types = ("diagonal", "scalar", "additive", "general")
    strong_order = 0.5
    weak_order = 1.0

    def step(self, t0, t1, dt, x, dw, u):
        y = torch.add(x, self.sde.drift(t0, x), alpha=dt)
        return add_noise(y, self.sde.diffusion(t0, x), dw, x, self.noise_type)


@pytest.mark.parametrize("ts", [[0.0, 0.13, 0.5, 1.0], [1.0, 0.4, 0.0]])
@pytest.mark.parametrize("save", ["ts", "final", "steps"])
def test_a_user_method_class_gives_the_builtin_paths(ts, save):
    # x + f dt + G dW in the same two operations as the built-in Euler–Maruyama, the same generator and
    # chunking: identical paths, bit for bit
    for sde, x0 in ((sf.GeometricBrownianMotion(0.3, 0.6), torch.ones(6, 3, dtype=torch.float64)),
                    (GeneralNoise(), torch.randn(5, 2, generator=torch.Generator().manual_seed(1)))):
        ref = sf.simulate(sde, x0, ts, dt=0.03, method="euler", generator=7, save=save)
        mine = sf.simulate(sde, x0, ts, dt=0.03, method=MyEuler, generator=7, save=save)
        assert torch.equal(mine.xs, ref.xs) and torch.equal(mine.ts, ref.ts)
        assert mine.stats.method == "my_euler" and mine.stats.backend == "native"
        assert mine.stats.steps == ref.stats.steps


def test_a_user_method_class_on_a_brownian_path_and_a_subclass_of_a_builtin():
    gbm = sf.GeometricBrownianMotion(0.3, 0.6)
    x0 = torch.ones(8, 1, dtype=torch.float64)
    bm = torchsde.BrownianInterval(0.0, 1.0, size=(8, 1), dtype=torch.float64, entropy=4)
    ref = sf.simulate(gbm, x0, [0.0, 1.0], dt=2**-6, method="euler", bm=bm)
    mine = sf.simulate(gbm, x0, [0.0, 1.0], dt=2**-6, method=MyEuler, bm=bm)
    torch.testing.assert_close(mine.xs, ref.xs, rtol=1e-14, atol=1e-14)

    class Renamed(Milstein):  # inherits step, support and costs; reported under its class name
        pass

    a = sf.simulate(gbm, x0, [0.0, 1.0], dt=0.01, method=Renamed, generator=3)
    b = sf.simulate(gbm, x0, [0.0, 1.0], dt=0.01, method="milstein", generator=3)
    assert torch.equal(a.xs, b.xs) and a.stats.method == "Renamed"


def test_method_class_errors_name_the_argument():
    x0 = torch.ones(4, 2)
    gbm = sf.GeometricBrownianMotion()

    class NotAMethod:
        def step(self, *a):
            return a[3]

    class NoStep(NativeSDEMethod):
        strong_order = weak_order = 0.5

    class AdditiveOnly(MyEuler):
        requires_additive = True

    with pytest.raises(TypeError, match="must subclass sdeflow.solve.native.NativeSDEMethod"):
        sf.simulate(gbm, x0, [0, 1], dt=0.1, method=NotAMethod)
    with pytest.raises(TypeError, match="does not implement step"):
        sf.simulate(gbm, x0, [0, 1], dt=0.1, method=NoStep)
    with pytest.raises(TypeError, match="not an instance; pass method=EulerMaruyama"):
        sf.simulate(gbm, x0, [0, 1], dt=0.1, method=EulerMaruyama(gbm))
    with pytest.raises(ValueError, match=r"method='AdditiveOnly' \(native backend\).*state-dependent noise"):
        sf.simulate(gbm, x0, [0, 1], dt=0.1, method=AdditiveOnly)
    with pytest.raises(ValueError, match="native method class"):
        sf.simulate(gbm, x0, [0, 1], dt=0.1, method=MyEuler, backend="torchsde")
    with pytest.raises(ValueError, match="native method class"):
        sf.simulate(gbm, x0, [0, 1], method=MyEuler, adaptive=True)
    with pytest.raises(TypeError, match="method must be a string or a NativeSDEMethod subclass"):
        sf.simulate(gbm, x0, [0, 1], dt=0.1, method=3)


class _NoDerivativeGBM(sf.SDE):
    """GBM without an analytic ∂g: Milstein takes it by autograd (one more diffusion evaluation)."""

    def drift(self, t, x):
        return 0.2 * x

    def diffusion(self, t, x):
        return 0.4 * x


def test_declared_costs_give_the_stats_of_every_path():
    x0 = torch.ones(4, 1, dtype=torch.float64)
    n = 10
    cases = [
        (sf.GeometricBrownianMotion(0.2, 0.4), "milstein", (1, 1)),  # analytic derivative
        (_NoDerivativeGBM(), "milstein", (1, 2)),  # autograd: one more diffusion evaluation
        (ScalarNoise(), "milstein", (1, 2)),
        (sf.OrnsteinUhlenbeck(), "milstein", (1, 1)),  # additive: no derivative term
        (StratGBM(), "heun", (2, 2)),
        (sf.OrnsteinUhlenbeck(), "sra1", (2, 2)),
    ]
    for sde, method, (fd, gd) in cases:
        assert sf.SDE_METHODS[method].costs(sde, torch.tensor(0.0, dtype=torch.float64), x0) == (fd, gd)
        first = sf.simulate(sde, x0, [0.0, 1.0], dt=0.1, method=method, generator=0)
        again = sf.simulate(sde, x0, [0.0, 1.0], dt=0.1, method=method, generator=0)
        # the first call also evaluates drift and diffusion once to check them; the second reuses the check
        assert (first.stats.drift_evals, first.stats.diffusion_evals) == (1 + n * fd, 1 + n * gd), (sde, method)
        assert (again.stats.drift_evals, again.stats.diffusion_evals) == (n * fd, n * gd), (sde, method)

    class Costly(MyEuler):
        drift_evals = 3
        diffusion_evals = 2

    sol = sf.simulate(sf.OrnsteinUhlenbeck(), x0, [0.0, 1.0], dt=0.1, method=Costly, generator=0)
    assert (sol.stats.drift_evals, sol.stats.diffusion_evals) == (1 + 3 * n, 1 + 2 * n)
    # torchsde counts its own evaluations (midpoint: 2 drift evaluations per step)
    sol = sf.simulate(sf.OrnsteinUhlenbeck(0.5), x0, [0.0, 1.0], dt=0.1, method="midpoint", generator=0)
    assert sol.stats.backend == "torchsde" and sol.stats.drift_evals >= 2 * n


def test_the_check_of_the_sde_is_cached_until_a_parameter_changes():
    ou = sf.OrnsteinUhlenbeck(1.0, 0.0, 0.5)
    x0 = torch.zeros(3, 2)
    assert sf.simulate(ou, x0, [0.0, 1.0], dt=0.25, generator=0).stats.drift_evals == 5
    assert sf.simulate(ou, x0, [0.0, 1.0], dt=0.25, generator=0).stats.drift_evals == 4  # cached check
    assert sf.simulate(ou, torch.zeros(3, 4), [0.0, 1.0], dt=0.25, generator=0).stats.drift_evals == 5  # new shape
    ou.sigma.fill_(float("nan"))  # an in-place update: the check runs again and catches it
    with pytest.raises(ValueError, match=r"diffusion\(t, x\) returned NaN or inf"):
        sf.simulate(ou, x0, [0.0, 1.0], dt=0.25, generator=0)
    assert not [k for k in vars(ou) if "sdeflow" in k]


def test_caches_stay_out_of_the_sde_and_deepcopy_works():
    import copy

    ou = sf.OrnsteinUhlenbeck(1.0, 0.0, 0.5)
    x0 = torch.zeros(4, 2)
    for ts in ([0.0, 1.0], [1.0, 0.0]):
        sf.simulate(ou, x0, ts, dt=0.1, generator=0)
        sf.simulate(ou, x0, ts, dt=0.1, generator=0, method="milstein", save="steps")
    twin = copy.deepcopy(ou)
    assert not [k for k in vars(ou) if "sdeflow" in k]
    a = sf.simulate(ou, x0, [0.0, 1.0], dt=0.1, generator=3)
    b = sf.simulate(twin, x0, [0.0, 1.0], dt=0.1, generator=3)
    assert torch.equal(a.xs, b.xs)


def test_float32_times_do_not_add_rounding_steps():
    # linspace in float32 rounds the times by up to an ulp: 1000 intervals of dt must stay 1000 steps
    # (a remainder of ~1e-7 used to become an extra step per interval: 1384 steps)
    ou = sf.OrnsteinUhlenbeck()
    x0 = torch.zeros(2, 1)
    ts = torch.linspace(0, 1, 1001)
    sol = sf.simulate(ou, x0, ts, dt=1e-3, generator=0)
    assert sol.stats.steps == 1000 and sol.xs.shape == (1001, 2, 1)
    assert torch.equal(sol.ts, ts)
    # float64 times keep the 1e-6 dt rule: a remainder of 1e-9 (1e-7 dt) is absorbed, one of 1e-7 (1e-5 dt) is a step
    for rem, steps in ((1e-9, 100), (1e-7, 101)):
        s = sf.simulate(ou, x0.double(), torch.tensor([0.0, 1.0 + rem], dtype=torch.float64), dt=1e-2, generator=0)
        assert s.stats.steps == steps


def _reference_grid(ts, dt, snap=1e-6):
    """The interval-by-interval construction the vectorised build_grid replaces."""
    pieces, save, count = [np.asarray(ts[:1], dtype=np.float64)], [0], 0
    for a, b in zip(ts[:-1], ts[1:], strict=True):
        n = max(1, math.ceil((b - a) / dt - snap))
        pieces += [a + dt * np.arange(1, n, dtype=np.float64), np.asarray([b], dtype=np.float64)]
        count += n
        save.append(count)
    return np.concatenate(pieces), np.asarray(save)


@given(st.lists(st.floats(-5.0, 5.0), min_size=2, max_size=10, unique=True), st.floats(1e-3, 2.0))
def test_build_grid_matches_the_interval_by_interval_construction(points, dt):
    from sdeflow.solve.grid import build_grid

    ts = np.sort(np.asarray(points))
    if np.any(np.diff(ts) <= 0):
        return
    times, save = _reference_grid(ts, dt)
    grid = build_grid(ts, dt)
    assert np.array_equal(grid.times.view(np.int64), times.view(np.int64))  # bit for bit
    assert np.array_equal(grid.save_index, save)


def test_progress_bar_does_not_change_the_paths():
    ou = sf.OrnsteinUhlenbeck()
    x0 = torch.zeros(3, 2)
    a = sf.simulate(ou, x0, [0.0, 0.37, 1.0], dt=1e-3, generator=2, progress=True)
    b = sf.simulate(ou, x0, [0.0, 0.37, 1.0], dt=1e-3, generator=2)
    assert torch.equal(a.xs, b.xs)


def test_plan_records_the_resolution():
    from sdeflow.solve.plan import plan_simulation

    ou = sf.OrnsteinUhlenbeck()
    x0 = torch.zeros(2, 3)
    p = plan_simulation(ou, x0, [1.0, 0.5, 0.0], dt=0.1, generator=0, save="final")
    assert p.backend == "native" and p.integrator == "eager" and p.method_cls is EulerMaruyama
    assert p.decreasing and p.n_steps == 10 and p.save_index == (10,)
    assert p.noise_shape == (2, 3) and p.ts_out.tolist() == [0.0]
    with pytest.raises(AttributeError):
        p.backend = "torchsde"  # frozen
    q = plan_simulation(ou, x0, [0.0, 1.0], dt=0.1, method="midpoint", generator=0)
    assert q.backend == "torchsde" and q.integrator == "torchsde" and q.method_cls is None


def test_api_core_method_class_example_runs():
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "docs" / "api_core.md").read_text()
    block = next(b for b in re.findall(r"```python\n(.*?)```", text, flags=re.S) if "NativeSDEMethod" in b)
    scope: dict = {}
    exec(compile(textwrap_dedent(block), "api_core.md", "exec"), scope)
    ref = sf.simulate(sf.OrnsteinUhlenbeck(), torch.zeros(8, 2), [0.0, 1.0], dt=0.01, generator=0)
    assert torch.equal(scope["sol"].xs, ref.xs) and scope["sol"].stats.method == "my_euler"


def test_large_saved_states_written_in_place_equal_the_stacked_ones():
    # 2048 x 8 states: under no_grad the driver copies each saved state into the output as it is
    # saved (and sums it for the status); with an autograd graph it stacks them. Same values, same status.
    ou = sf.OrnsteinUhlenbeck(1.0, 0.2, 0.5)
    x0 = torch.randn(2048, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        fast = sf.simulate(ou, x0, [0.0, 0.3, 0.5], dt=0.01, generator=4, save="steps")
    graph = sf.simulate(ou, x0.clone().requires_grad_(), [0.0, 0.3, 0.5], dt=0.01, generator=4, save="steps")
    assert graph.xs.requires_grad and not fast.xs.requires_grad
    assert torch.equal(fast.xs, graph.xs.detach()) and torch.equal(fast.status, graph.status)

    class Explode(sf.SDE):
        def drift(self, t, x):
            return x**3

        def diffusion(self, t, x):
            return 1e-3 * torch.ones_like(x)  # small noise: only the path started at 5 blows up

    x0 = torch.full((2048, 8), 0.1)
    x0[5, 3] = 5.0  # only this path blows up
    with torch.no_grad(), pytest.warns(RuntimeWarning, match="1 of 2048 paths"):
        sol = sf.simulate(Explode(), x0, [0.0, 0.5, 1.0], dt=0.1, generator=0)
    assert sol.status.nonzero().flatten().tolist() == [5]


def test_a_repeated_call_rebuilds_nothing(monkeypatch):
    # What made a B=1 call slow next to a plain loop was per-call work; a repeated call with the same
    # times and SDE must not rebuild the grid, its tensors or the noise schedule, nor re-check the SDE.
    import sdeflow.solve.plan as plan

    calls = {"grid": 0, "noise": 0, "check": 0}

    def counting(name, fn):
        def wrapped(*a, **k):
            calls[name] += 1
            return fn(*a, **k)
        return wrapped

    monkeypatch.setattr(plan, "build_grid", counting("grid", plan.build_grid))
    monkeypatch.setattr(plan, "noise_schedule", counting("noise", plan.noise_schedule))
    monkeypatch.setattr(plan, "check_sde_functions", counting("check", plan.check_sde_functions))
    ou = sf.OrnsteinUhlenbeck(0.7, 0.1, 0.3)
    x0 = torch.zeros(1, 1)
    ts = torch.linspace(0, 1.23, 124)  # times no other test uses: nothing cached yet
    first = sf.simulate(ou, x0, ts, dt=1e-2, generator=5)
    assert calls == {"grid": 1, "noise": 1, "check": 1}
    again = sf.simulate(ou, x0, ts, dt=1e-2, generator=5)
    assert calls == {"grid": 1, "noise": 1, "check": 1}
    assert torch.equal(first.xs, again.xs) and first.stats.steps == 123
    again.ts.add_(1.0)  # the returned times are the caller's own: the cached ones stay intact
    assert torch.equal(sf.simulate(ou, x0, ts, dt=1e-2, generator=5).ts, ts)
