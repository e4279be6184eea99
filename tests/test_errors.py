"""Bad input raises ValueError / TypeError naming the argument and the fix."""

import pytest
import torch

import sdeflow as sf

OU = sf.OrnsteinUhlenbeck()
X0 = torch.zeros(4, 2)


@pytest.mark.parametrize(
    "ts, match",
    [
        ([0.0, 0.5, 0.5, 1.0], "strictly increasing or strictly decreasing"),
        ([0.0, 1.0, 0.5], "strictly increasing or strictly decreasing"),
        ([0.0, float("nan"), 1.0], "ts contains a non-finite value"),
        ([0.0], "at least two times"),
        (torch.zeros(2, 2), "ts must be 1-D"),
    ],
)
def test_bad_ts(ts, match):
    with pytest.raises(ValueError, match=match):
        sf.simulate(OU, X0, ts, dt=0.1)
    with pytest.raises(ValueError, match=match):
        sf.solve_ode(lambda t, x: -x, X0, ts)


@pytest.mark.parametrize("dt", [0.0, -0.1, float("inf"), float("nan")])
def test_bad_dt(dt):
    with pytest.raises(ValueError, match="dt must be a finite number > 0"):
        sf.simulate(OU, X0, [0, 1], dt=dt)


def test_missing_dt():
    with pytest.raises(ValueError, match="dt is required"):
        sf.simulate(OU, X0, [0, 1])
    with pytest.raises(ValueError, match="dt is required"):
        sf.solve_ode(lambda t, x: -x, X0, [0, 1], method="rk4", backend="native")


def test_integer_x0():
    with pytest.raises(TypeError, match=r"x0 must be a floating-point tensor.*x0.float\(\)"):
        sf.simulate(OU, torch.zeros(4, 2, dtype=torch.int64), [0, 1], dt=0.1)
    with pytest.raises(TypeError, match="x0 must be a floating-point tensor"):
        sf.solve_ode(lambda t, x: -x, torch.zeros(4, dtype=torch.int32), [0, 1])


def test_scalar_x0_needs_batch_dim():
    with pytest.raises(ValueError, match="batch dimension"):
        sf.simulate(OU, torch.tensor(1.0), [0, 1], dt=0.1)


def test_x0_and_sde_on_different_devices():
    # The meta device stands in for a GPU on CPU-only machines: same check, same message.
    with pytest.raises(ValueError, match=r"sde has parameters or buffers on cpu but x0 is on meta.*\.to\(x0.device\)"):
        sf.simulate(OU, torch.zeros(4, 2, device="meta"), [0, 1], dt=0.1)


def test_generator_on_wrong_device():
    with pytest.raises(ValueError, match="generator lives on"):
        sf.simulate(sf.OrnsteinUhlenbeck().to("meta"), torch.zeros(4, 2, device="meta"), [0, 1], dt=0.1, generator=torch.Generator())


class WrongDrift(sf.SDE):
    def drift(self, t, x):
        return torch.zeros(x.shape[0], x.shape[1] + 1)

    def diffusion(self, t, x):
        return torch.ones_like(x)


class WrongDiffusion(sf.SDE):
    noise_type = "general"

    def drift(self, t, x):
        return -x

    def diffusion(self, t, x):
        return torch.ones(x.shape[0], 7, 2)


class NaNDrift(sf.SDE):
    def drift(self, t, x):
        return torch.log(x - 10)

    def diffusion(self, t, x):
        return torch.ones_like(x)


class Float64Drift(sf.SDE):
    def drift(self, t, x):
        return -x.double()

    def diffusion(self, t, x):
        return torch.ones_like(x)


def test_wrong_shapes_name_function_and_both_shapes():
    with pytest.raises(ValueError, match=r"drift\(t, x\) returned shape \(4, 3\) but the state x has shape \(4, 2\)"):
        sf.simulate(WrongDrift(), X0, [0, 1], dt=0.1)
    with pytest.raises(ValueError, match=r"diffusion\(t, x\) returned shape \(4, 7, 2\) but the state x has shape \(4, 2\)"):
        sf.simulate(WrongDiffusion(), X0, [0, 1], dt=0.1)
    with pytest.raises(ValueError, match=r"func\(t, x\) returned shape \(4, 3\) but the state x has shape \(4, 2\)"):
        sf.solve_ode(lambda t, x: torch.zeros(4, 3), X0, [0, 1])


def test_nan_and_dtype_from_user_functions():
    with pytest.raises(ValueError, match=r"drift\(t, x\) returned NaN or inf"):
        sf.simulate(NaNDrift(), X0, [0, 1], dt=0.1)
    with pytest.raises(TypeError, match=r"drift\(t, x\) returned dtype torch.float64 for a state of dtype torch.float32"):
        sf.simulate(Float64Drift(), X0, [0, 1], dt=0.1)


def test_method_without_support_lists_alternatives():
    gbm = sf.GeometricBrownianMotion()
    with pytest.raises(ValueError, match=r"method='sra1'.*state-dependent noise.*Methods that can: native: euler, milstein"):
        sf.simulate(gbm, X0 + 1, [0, 1], dt=0.1, method="sra1")

    class General(WrongDiffusion):
        def diffusion(self, t, x):
            return torch.ones(x.shape + (3,))

    with pytest.raises(ValueError, match=r"method='milstein'.*noise_type='general'.*Methods that can: native: euler; torchsde: euler"):
        sf.simulate(General(), X0, [0, 1], dt=0.1, method="milstein")
    with pytest.raises(ValueError, match="unknown method 'rk45'; choose one of"):
        sf.simulate(gbm, X0, [0, 1], dt=0.1, method="rk45")


def test_adaptive_euler_maruyama_is_refused():
    with pytest.raises(ValueError, match="adaptive step sizes with Euler–Maruyama do not converge"):
        sf.simulate(OU, X0, [0, 1], method="euler", adaptive=True)
    with pytest.raises(ValueError, match="native engine takes fixed steps"):
        sf.simulate(OU, X0, [0, 1], method="milstein", adaptive=True, backend="native")


def test_bad_options():
    with pytest.raises(ValueError, match="save must be"):
        sf.simulate(OU, X0, [0, 1], dt=0.1, save="all")
    with pytest.raises(ValueError, match="backend must be"):
        sf.simulate(OU, X0, [0, 1], dt=0.1, backend="jax")
    with pytest.raises(ValueError, match="save='steps' needs the native backend"):
        sf.simulate(OU, X0, [0, 1], dt=0.1, backend="torchsde", save="steps")
    with pytest.raises(TypeError, match="torchsde's protocol"):
        sf.simulate(object(), X0, [0, 1], dt=0.1)
    with pytest.raises(ValueError, match="bm returns increments of shape"):
        import torchsde

        sf.simulate(OU, X0, [0, 1], dt=0.1, bm=torchsde.BrownianInterval(0.0, 1.0, size=(4, 5)))


def test_diverging_paths_are_flagged_not_silent():
    class Explode(sf.SDE):
        def drift(self, t, x):
            return x**3

        def diffusion(self, t, x):
            return torch.ones_like(x)

    x0 = torch.tensor([[0.1], [5.0]])
    with pytest.warns(RuntimeWarning, match="1 of 2 paths became NaN or infinite"):
        sol = sf.simulate(Explode(), x0, [0, 1], dt=0.1, generator=0)
    assert sol.status.tolist() == [0, 1]
    assert sol.ok.tolist() == [True, False]
