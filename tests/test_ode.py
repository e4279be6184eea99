"""solve_ode(): torchdiffeq and native backends against closed forms; orders; adjoint."""

import math

import pytest
import torch
from torch import nn

import sdeflow as sf


def decay(t, x):
    return -x


@pytest.mark.parametrize("method", ["dopri5", "bosh3"])
def test_adaptive_torchdiffeq_methods(method):
    x0 = torch.ones(3, 2, dtype=torch.float64)
    sol = sf.solve_ode(decay, x0, [0.0, 1.0, 2.0], method=method, rtol=1e-9, atol=1e-11)
    exact = torch.exp(-torch.tensor([0.0, 1.0, 2.0], dtype=torch.float64))
    torch.testing.assert_close(sol.xs[:, 0, 0], exact, rtol=1e-6, atol=1e-8)
    assert sol.stats.nfe > 2 and sol.stats.backend == "torchdiffeq"


def test_every_torchdiffeq_method_runs():
    # dopri8's dense output in torchdiffeq is lower order than the step, so it is only smoke-tested here.
    from sdeflow.solve.backends.torchdiffeq_backend import FIXED_GRID_METHODS, TORCHDIFFEQ_METHODS

    x0 = torch.ones(2, 1, dtype=torch.float64)
    for method in TORCHDIFFEQ_METHODS:
        if method == "scipy_solver":
            continue
        dt = 0.001 if method in FIXED_GRID_METHODS else None
        sol = sf.solve_ode(decay, x0, [0.0, 1.0], method=method, dt=dt, rtol=1e-6, atol=1e-8)
        assert abs(float(sol.final[0, 0]) - math.exp(-1)) < 1e-3, method


def test_decreasing_ts_both_backends():
    x1 = torch.full((2, 1), math.exp(-1.0), dtype=torch.float64)
    for kw in (dict(method="dopri5"), dict(method="rk4", backend="native", dt=0.01)):
        sol = sf.solve_ode(decay, x1, [1.0, 0.0], **kw)
        torch.testing.assert_close(sol.final, torch.ones_like(x1), rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("method, order", [("euler", 1), ("heun", 2), ("rk4", 4)])
def test_native_orders(method, order):
    x0 = torch.ones(1, 1, dtype=torch.float64)

    def f(t, x):
        return torch.cos(t) * x  # x(t) = exp(sin t)

    errs = []
    dts = [0.1, 0.05, 0.025]
    for dt in dts:
        sol = sf.solve_ode(f, x0, [0.0, 2.0], method=method, backend="native", dt=dt)
        errs.append(abs(float(sol.final) - math.exp(math.sin(2.0))))
    slope = math.log(errs[0] / errs[2]) / math.log(dts[0] / dts[2])
    assert abs(slope - order) < 0.1, (method, slope)


def test_native_matches_torchdiffeq_rk4_on_same_grid():
    x0 = torch.randn(5, 3, dtype=torch.float64)
    a = sf.solve_ode(decay, x0, [0.0, 1.0], method="rk4", backend="native", dt=0.1)
    b = sf.solve_ode(decay, x0, [0.0, 1.0], method="rk4", dt=0.1)
    # torchdiffeq's rk4 uses the 3/8 rule, the native one the classical tableau: both 4th order.
    torch.testing.assert_close(a.final, b.final, rtol=1e-5, atol=1e-6)


def test_image_shaped_state():
    x0 = torch.randn(2, 3, 4, 4)
    sol = sf.solve_ode(decay, x0, [0.0, 0.5, 1.0], method="rk4", backend="native", dt=0.05)
    assert sol.xs.shape == (3, 2, 3, 4, 4)
    torch.testing.assert_close(sol.final, x0 * math.exp(-1), rtol=1e-5, atol=1e-5)


def test_adjoint_gradient_matches_autograd():
    class Field(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Parameter(torch.tensor(0.7, dtype=torch.float64))

        def forward(self, t, x):
            return -self.a * x

    f = Field()
    x0 = torch.ones(4, 1, dtype=torch.float64)
    loss = sf.solve_ode(f, x0, [0.0, 1.0], adjoint=True, rtol=1e-10, atol=1e-12).final.sum()
    (g_adj,) = torch.autograd.grad(loss, f.a)
    # d/da sum(exp(-a)) = -4 exp(-a)
    assert abs(float(g_adj) + 4 * math.exp(-0.7)) < 1e-6
    loss = sf.solve_ode(f, x0, [0.0, 1.0], method="rk4", backend="native", dt=0.01).final.sum()
    (g_nat,) = torch.autograd.grad(loss, f.a)
    assert abs(float(g_nat) + 4 * math.exp(-0.7)) < 1e-6


def test_unknown_methods():
    with pytest.raises(ValueError, match="not a native ODE method"):
        sf.solve_ode(decay, torch.ones(1, 1), [0, 1], method="dopri5", backend="native", dt=0.1)
    with pytest.raises(ValueError, match="unknown torchdiffeq method"):
        sf.solve_ode(decay, torch.ones(1, 1), [0, 1], method="rk45")
    with pytest.raises(TypeError, match="func must be callable"):
        sf.solve_ode(3, torch.ones(1, 1), [0, 1])
