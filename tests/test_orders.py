"""Measured convergence orders against the orders the methods declare, on both backends.

Why ±0.1: the declared orders are asymptotic; over h = 2^-4 ... 2^-9 the fitted slopes of these
problems sit within 0.03 of them (pre-asymptotic terms), and the Monte Carlo uncertainty of the slope
is ±0.01–0.03 (the 95% intervals from batch resampling, asserted below to be narrower than 0.1). A
tolerance of 0.1 is therefore several CI widths from both the true value and from the next order a
wrong method would show (0.5 apart). Every path uses a fixed seed, so the numbers are reproducible.
"""

import json
import struct

import numpy as np
import pytest
import torch
import torchsde

import sdeflow as sf
from sdeflow.verify import (
    NestedBrownianPath,
    declared_orders,
    get_problem,
    strong_order,
    weak_order,
)

F64 = torch.float64
EXACT_DTS = [2.0**-k for k in range(4, 10)]
FINE_DTS = [2.0**-k for k in range(3, 9)]  # fine reference at 2^-12


@pytest.mark.parametrize(
    "problem,method,backend,declared",
    [
        ("gbm", "euler", "native", 0.5),
        ("gbm", "milstein", "native", 1.0),
        ("gbm_stratonovich", "heun", "native", 1.0),
        ("sine_additive", "sra1", "native", 1.5),
        ("sine_additive", "euler", "native", 1.0),
        ("gbm", "euler", "torchsde", 0.5),
        ("gbm", "milstein", "torchsde", 1.0),
        ("gbm_stratonovich", "heun", "torchsde", 1.0),
        ("gbm_stratonovich", "midpoint", "torchsde", 1.0),
        ("sine_additive", "srk", "torchsde", 1.5),
    ],
)
def test_strong_order_matches_declared(problem, method, backend, declared):
    prob = get_problem(problem)
    exact = prob.exact is not None
    n = 4000 if exact else 2000
    res = strong_order(prob.make_sde(), prob.initial(n), prob.t1, method=method, backend=backend,
                       dts=EXACT_DTS if exact else FINE_DTS, exact=prob.exact, generator=0, problem=problem)
    assert res.declared == declared
    assert res.reference == ("exact" if exact else "fine")
    assert abs(res.order - declared) <= 0.1, str(res)
    assert res.passed
    assert res.ci[0] <= res.order <= res.ci[1] and res.ci[1] - res.ci[0] < 0.1, str(res)
    assert res.min_snr > 10  # the errors are resolved at every step size


@pytest.mark.parametrize("backend", ["native", "torchsde"])
def test_weak_order_of_euler_maruyama(backend):
    # E[X_T] of GBM (mu = 0.75, sigma = 0.3): the exact pathwise solution on the same Brownian path is a control
    # variate with known mean, so the estimator's spread is the strong error (~0.01), not sd(X_T) (~0.6);
    # 20,000 paths resolve the weak error (~1e-3 at h = 2^-9) to about 4%.
    prob = get_problem("gbm_weak")
    res = weak_order(prob.make_sde(), prob.initial(20_000), prob.t1, method="euler", backend=backend, dts=EXACT_DTS,
                     exact=prob.exact, generator=0)
    assert res.declared == 1.0 and res.reference == "control-variate"
    assert abs(res.order - 1.0) <= 0.1, str(res)
    assert res.ci[1] - res.ci[0] < 0.1
    assert res.min_snr > 10


def test_weak_order_with_exact_mean_only():
    # Without the control variate the Monte Carlo noise, sd(X_T)/sqrt(n) = 0.22/sqrt(30,000) = 0.0013, must sit
    # well below the weak error, about e^1.5 mu^2 h / 2 = 5 h (0.02 at h = 2^-8): a strong drift and weak noise.
    gbm = sf.GeometricBrownianMotion(1.5, 0.05)
    x0 = torch.ones(30_000, 1, dtype=F64)
    res = weak_order(gbm, x0, 1.0, method="euler", dts=[2.0**-k for k in range(4, 9)], exact_mean=float(np.exp(1.5)),
                     generator=1)
    assert res.reference == "exact-mean"
    assert abs(res.order - 1.0) <= 0.1, str(res)


def test_a_wrong_declared_order_fails():
    prob = get_problem("gbm")
    res = strong_order(prob.make_sde(), prob.initial(1000), prob.t1, method="euler", dts=EXACT_DTS,
                       exact=prob.exact, declared=1.0)
    assert not res.passed and abs(res.order - 0.5) < 0.1


def test_declared_orders():
    gbm, add = get_problem("gbm").make_sde(), get_problem("sine_additive").make_sde()
    assert declared_orders("euler", "native", gbm) == (0.5, 1.0)
    assert declared_orders("euler", "native", add) == (1.0, 1.0)
    assert declared_orders("srk", "native", add) == (1.5, 2.0)  # srk maps to SRA1 for additive noise
    assert declared_orders("euler", "torchsde", gbm)[0] == 0.5
    assert declared_orders("srk", "torchsde", add)[0] == 1.5
    with pytest.raises(ValueError, match="native"):
        declared_orders("log_ode", "native", gbm)


def test_nested_brownian_path_is_consistent():
    path = NestedBrownianPath(0.0, 1.0, (20_000, 1), n_fine=64, generator=0)
    h = 1 / 64
    w_fine = torch.stack([path(i * h, (i + 1) * h) for i in range(64)])
    torch.testing.assert_close(w_fine.sum(0), path(0.0, 1.0))
    # U over [a, b] from the fine pieces: U = Σ (U_i + (W_i − W_a) h)
    a, b = 8, 24
    u_sum = sum(path(i * h, (i + 1) * h, return_U=True)[1] + path(a * h, i * h) * h for i in range(a, b))
    torch.testing.assert_close(path(a * h, b * h, return_U=True)[1], u_sum)
    # Moments over 20,000 paths (4 standard errors): Var W = T, Var U = T^3/3, Cov(W, U) = T^2/2 for an interval T.
    T = (b - a) * h
    w, u = path(a * h, b * h, return_U=True)
    se = 4 * np.sqrt(2 / 20_000)
    assert abs(float(w.var()) / T - 1) < se
    assert abs(float(u.var()) / (T**3 / 3) - 1) < se
    assert abs(float((w * u).mean()) / (T**2 / 2) - 1) < 2 * se
    with pytest.raises(ValueError, match="fine grid"):
        path(0.0, 0.3)
    # It is a torchsde BaseBrownian: torchsde.sdeint accepts it.
    ys = torchsde.sdeint(sf.BrownianMotion(0.0, 1.0), torch.zeros(4, 1, dtype=F64), torch.tensor([0.0, 1.0]),
                         bm=NestedBrownianPath(0.0, 1.0, (4, 1), n_fine=8, generator=1), dt=1 / 8)
    torch.testing.assert_close(ys[-1], NestedBrownianPath(0.0, 1.0, (4, 1), n_fine=8, generator=1)(0.0, 1.0))


def test_plot_and_input_errors(tmp_path):
    prob = get_problem("gbm")
    res = strong_order(prob.make_sde(), prob.initial(200), prob.t1, method="milstein", dts=EXACT_DTS[:3],
                       exact=prob.exact, n_batches=10)
    out = res.plot(tmp_path / "order.png")
    assert out.read_bytes()[:8] == struct.pack(">Q", 0x89504E470D0A1A0A)  # PNG signature
    # Milstein on GBM has strong order 1: the check passes, and its dict form is JSON with the same numbers.
    d = json.loads(json.dumps(res.as_dict()))
    assert d["passed"] is True and res.passed
    assert d["order"] == res.order and d["ci"] == list(res.ci) and d["errors"] == res.errors.tolist()
    assert d["ci"][0] <= d["order"] <= d["ci"][1]
    with pytest.raises(ValueError, match="divide"):
        strong_order(prob.make_sde(), prob.initial(200), 1.0, method="euler", dts=[0.3, 0.1], exact=prob.exact)
    with pytest.raises(ValueError, match="multiple of n_batches"):
        strong_order(prob.make_sde(), prob.initial(210), 1.0, method="euler", dts=EXACT_DTS[:2], exact=prob.exact)
    with pytest.raises(ValueError, match="exact"):
        weak_order(prob.make_sde(), prob.initial(200), 1.0, method="euler")
