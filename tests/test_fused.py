"""The fused (compiled) native path gives the eager engine's paths, and falls back cleanly."""

import warnings

import pytest
import torch
import torchsde

import sdeflow as sf
import sdeflow._compile as sdeflow_compile
import sdeflow.solve.native.fused as fused


@pytest.mark.slow
@pytest.mark.parametrize("method", ["euler", "sra1"])
def test_fused_matches_eager_with_saves_inside_and_between_chunks(method):
    ou = sf.OrnsteinUhlenbeck(1.3, 0.2, 0.6)
    x0 = torch.randn(8, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    ts = [0.0, 0.05, 0.3, 1.0]  # 0.05 falls inside the first chunk of 8 steps of 1/64
    eager = sf.simulate(ou, x0, ts, dt=1 / 64, method=method, generator=5, chunk=8)
    fast = sf.simulate(ou, x0, ts, dt=1 / 64, method=method, generator=5, compile=True, chunk=8)
    # Same increments, same arithmetic up to the compiler's reassociation: round-off agreement.
    torch.testing.assert_close(fast.xs, eager.xs, rtol=1e-12, atol=1e-12)
    assert fast.stats.steps == eager.stats.steps
    again = sf.simulate(ou, x0, ts, dt=1 / 64, method=method, generator=5, compile=True, chunk=8)
    assert again.stats.compile_time == 0.0  # the compiled chunk is cached on the SDE
    torch.testing.assert_close(again.xs, fast.xs, rtol=0, atol=0)


@pytest.mark.slow
def test_fused_on_a_brownian_path_matches_torchsde():
    gbm = sf.GeometricBrownianMotion(0.2, 0.5)
    x0 = torch.ones(16, 1, dtype=torch.float64)
    bm = torchsde.BrownianInterval(0.0, 1.0, size=(16, 1), dtype=torch.float64, entropy=3)
    fast = sf.simulate(gbm, x0, [0.0, 1.0], dt=2**-6, method="milstein", bm=bm, compile=True, chunk=16)
    ref = sf.simulate(gbm, x0, [0.0, 1.0], dt=2**-6, method="milstein", bm=bm, backend="torchsde")
    torch.testing.assert_close(fast.xs, ref.xs, rtol=1e-10, atol=1e-10)


def test_fused_falls_back_when_compilation_fails(monkeypatch):
    class Broken:
        def __init__(self, fn, **kw):
            pass

        def __call__(self, *a):
            raise RuntimeError("no compiler here")

    monkeypatch.setattr(fused.torch, "compile", Broken)
    monkeypatch.setattr(sdeflow_compile, "_WARNED", set())
    ou = sf.OrnsteinUhlenbeck()
    x0 = torch.zeros(4, 2)
    with pytest.warns(RuntimeWarning, match="falls back to the eager engine"):
        fast = sf.simulate(ou, x0, [0.0, 1.0], dt=0.01, generator=1, compile=True, chunk=10)
    eager = sf.simulate(ou, x0, [0.0, 1.0], dt=0.01, generator=1, chunk=10)
    assert torch.equal(fast.xs, eager.xs)


def test_bad_chunk_and_compile_with_torchsde():
    ou = sf.OrnsteinUhlenbeck()
    with pytest.raises(ValueError, match="chunk must be a positive int"):
        sf.simulate(ou, torch.zeros(2, 1), [0, 1], dt=0.1, compile=True, chunk=0)
    with pytest.raises(ValueError, match="compile=True fuses the native"):
        sf.simulate(ou, torch.zeros(2, 1), [0, 1], dt=0.1, compile=True, backend="torchsde")


def test_compiled_cache_stays_out_of_the_sde_and_does_not_keep_it_alive():
    import copy
    import gc
    import weakref

    ou = sf.OrnsteinUhlenbeck(1.0, 0.0, 0.5)
    x0 = torch.zeros(4, 2)
    # compiles on this machine, or warns and falls back to the eager engine where compilation is unavailable
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fast = sf.simulate(ou, x0, [0.0, 1.0], dt=0.05, generator=1, compile=True, chunk=5)
    assert not [k for k in vars(ou) if "sdeflow" in k]
    twin = copy.deepcopy(ou)  # how every EMA copy starts; raised while the compiled graph sat in ou.__dict__
    eager = sf.simulate(twin, x0, [0.0, 1.0], dt=0.05, generator=1, chunk=5)
    # float32: the compiled graph may reassociate the step arithmetic (a few ulps over 20 steps)
    torch.testing.assert_close(fast.xs, eager.xs, rtol=1e-6, atol=1e-6)
    alive = weakref.ref(ou)
    del ou, fast
    gc.collect()
    assert alive() is None  # the cached graph takes the method as an argument: it does not pin the SDE


def test_user_method_class_runs_compiled(monkeypatch):
    # The fused path steps a user's class like a built-in one; with compilation unavailable it falls
    # back to the same eager steps, so the paths equal the built-in method's exactly.
    from sdeflow.solve.native import EulerMaruyama

    class Mine(EulerMaruyama):
        name = "mine"

    class Broken:
        def __init__(self, fn, **kw):
            pass

        def __call__(self, *a):
            raise RuntimeError("no compiler here")

    monkeypatch.setattr(fused.torch, "compile", Broken)
    monkeypatch.setattr(sdeflow_compile, "_WARNED", set())
    ou = sf.OrnsteinUhlenbeck()
    x0 = torch.zeros(4, 2)
    with pytest.warns(RuntimeWarning, match="falls back"):
        a = sf.simulate(ou, x0, [0.0, 1.0], dt=0.01, generator=1, compile=True, chunk=10, method=Mine)
    b = sf.simulate(ou, x0, [0.0, 1.0], dt=0.01, generator=1, chunk=10)
    assert torch.equal(a.xs, b.xs) and a.stats.method == "mine"


def test_which_chunks_are_fused(monkeypatch):
    # With torch.compile replaced by the identity, the "compiled" chunks run as Python: record which
    # blocks the integrator fuses. The rule: aligned full blocks of equal steps with no save point
    # strictly inside; a progress bar's ticks (multiples of the chunk) change nothing.
    from sdeflow.solve.plan import plan_simulation

    fused_starts: list[int] = []
    times: list[float] = []

    def identity(fn, **kw):
        def run(method, x, t0, dw, u):
            fused_starts.append(times.index(float(t0)))  # the block's first grid index
            return fn(method, x, t0, dw, u)
        return run

    monkeypatch.setattr(fused.torch, "compile", identity)
    ou = sf.OrnsteinUhlenbeck(1.3, 0.2, 0.6)
    x0 = torch.zeros(3, 2, dtype=torch.float64)
    ts = [0.0, 0.05, 0.3, 1.0]  # saves at steps 4, 20, 65 (dt = 1/64): blocks [0,8) and [16,24) hold one
    times.extend(plan_simulation(ou, x0, ts, dt=1 / 64).times.tolist())
    sol = sf.simulate(ou, x0, ts, dt=1 / 64, generator=5, compile=True, chunk=8)
    # 65 steps in blocks of 8; the last, [64, 65), is short
    assert fused_starts == [8, 24, 32, 40, 48, 56] and sol.stats.steps == 65
    fused_starts.clear()
    again = sf.simulate(ou, x0, ts, dt=1 / 64, generator=5, compile=True, chunk=8, progress=True)
    assert fused_starts == [8, 24, 32, 40, 48, 56] and torch.equal(again.xs, sol.xs)
