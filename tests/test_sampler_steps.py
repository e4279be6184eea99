"""Step primitives (sdeflow.generative.samplers.steps): float or per-sample σ, and the loop samplers built on them."""

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import sdeflow as sf
from sdeflow.generative.samplers import dpmpp_2m_step, euler_maruyama_step, euler_step, heun_step

M, S = 0.3, 0.5  # Gaussian data N(M, S² I): its exact denoiser is elementwise, so rows never mix


def gauss_denoiser(x, sigma, **kwargs):
    s = sigma.reshape((-1,) + (1,) * (x.dim() - 1))
    return M + (S * S / (S * S + s * s)) * (x - M)


def _x(dtype, b=6, seed=0):
    return 3.0 * torch.randn(b, 3, 2, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _noise(x, seed=1):
    return torch.randn(x.shape, generator=torch.Generator().manual_seed(seed), dtype=x.dtype)


def _all_steps(x, s, s_next, s_prev, den_prev, noise):
    """Every primitive at the given levels (floats or tensors): a dict of (x_next, denoised)."""
    return {
        "euler": euler_step(gauss_denoiser, x, s, s_next),
        "heun": heun_step(gauss_denoiser, x, s, s_next),
        "dpmpp_2m_first": dpmpp_2m_step(gauss_denoiser, x, s, s_next),
        "dpmpp_2m": dpmpp_2m_step(gauss_denoiser, x, s, s_next, den_prev, s_prev),
        "euler_maruyama": euler_maruyama_step(gauss_denoiser, x, s, s_next, noise),
    }


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@given(s=st.floats(0.01, 80.0), ratio=st.floats(0.0, 0.99), prev_ratio=st.floats(1.05, 4.0))
def test_equal_per_sample_levels_give_bitwise_the_float_result(dtype, s, ratio, prev_ratio):
    """A (B,) tensor of equal levels follows the same float64 formulas as the Python float, rounded alike."""
    s_next = s * ratio if ratio > 0.02 else 0.0  # include the last step, to σ = 0
    s_prev = s * prev_ratio
    x = _x(dtype)
    den_prev = gauss_denoiser(x, torch.full((6,), s_prev, dtype=dtype))
    noise = _noise(x)
    b = x.shape[0]
    floats = _all_steps(x, s, s_next, s_prev, den_prev, noise)
    for kind in ("f64", "x_dtype", "0-dim"):
        if kind == "f64":
            t = [torch.full((b,), v, dtype=torch.float64) for v in (s, s_next, s_prev)]
        elif kind == "x_dtype":  # levels representable in x's dtype: round them first, for both paths
            t = [torch.full((b,), v, dtype=dtype) for v in (s, s_next, s_prev)]
        else:
            t = [torch.tensor(v, dtype=torch.float64) for v in (s, s_next, s_prev)]
        ref = floats if kind != "x_dtype" else _all_steps(x, *(float(v[0]) for v in t), den_prev, noise)
        tensors = _all_steps(x, t[0], t[1], t[2], den_prev, noise)
        for name in ref:
            assert torch.equal(tensors[name][0], ref[name][0]), (name, kind)
            assert torch.equal(tensors[name][1], ref[name][1]), (name, kind)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_different_levels_per_sample_match_each_sample_alone(dtype):
    """Row b of a per-sample step equals the float step of row b alone (its own σ_b, σ_next_b)."""
    x = _x(dtype, b=5)
    s = torch.tensor([80.0, 10.0, 1.0, 0.2, 0.02], dtype=torch.float64)
    s_next = torch.tensor([40.0, 0.0, 0.5, 0.1, 0.0], dtype=torch.float64)
    s_prev = torch.tensor([81.0, 20.0, 3.0, 0.3, 0.05], dtype=torch.float64)
    den_prev = gauss_denoiser(x, s_prev.to(dtype))
    noise = _noise(x)
    batch = _all_steps(x, s, s_next, s_prev, den_prev, noise)
    for b in range(5):
        row = _all_steps(x[b:b + 1], float(s[b]), float(s_next[b]), float(s_prev[b]), den_prev[b:b + 1],
                         noise[b:b + 1])
        for name in row:
            assert torch.equal(batch[name][0][b:b + 1], row[name][0]), (name, b)
            assert torch.equal(batch[name][1][b:b + 1], row[name][1]), (name, b)
    # where σ_next = 0 the steps land on the denoised value (Heun's Euler step x + (0 − σ)(x − D)/σ up to
    # round-off: a few ulps of states of size ~3)
    for name in batch:
        tol = 8 * torch.finfo(dtype).eps * 3 if name == "heun" else 0.0
        torch.testing.assert_close(batch[name][0][[1, 4]], batch[name][1][[1, 4]], rtol=0, atol=tol)


def test_steps_are_the_textbook_updates():
    """Independent closed forms of each update (float64), not the code's own expressions."""
    x = _x(torch.float64)
    s, sn, sp = 2.0, 1.2, 3.1
    z = _noise(x)

    def d(v, lv):
        return gauss_denoiser(v, torch.full((6,), lv, dtype=torch.float64))

    torch.testing.assert_close(euler_step(gauss_denoiser, x, s, sn)[0], x + (sn - s) * (x - d(x, s)) / s)
    xe = x + (sn - s) * (x - d(x, s)) / s
    heun = x + 0.5 * (sn - s) * ((x - d(x, s)) / s + (xe - d(xe, sn)) / sn)
    torch.testing.assert_close(heun_step(gauss_denoiser, x, s, sn)[0], heun)
    h, hp = math.log(s / sn), math.log(sp / s)
    dp = d(x, sp)
    c = h / (2 * hp)  # 1/(2r), r = h_prev/h
    want = (sn / s) * x + (1 - math.exp(-h)) * ((1 + c) * d(x, s) - c * dp)
    torch.testing.assert_close(dpmpp_2m_step(gauss_denoiser, x, s, sn, dp, sp)[0], want)
    em = x + 2 * (s - sn) / s * (d(x, s) - x) + math.sqrt(2 * s * (s - sn)) * z
    torch.testing.assert_close(euler_maruyama_step(gauss_denoiser, x, s, sn, z)[0], em)


def test_steps_pass_model_kwargs_and_a_batch_of_levels():
    seen = []

    def model(x, sigma, **kw):
        seen.append((sigma.shape, sigma.dtype, kw))
        return gauss_denoiser(x, sigma)

    x = _x(torch.float32)
    y = torch.arange(6)
    for fn, extra in [(euler_step, ()), (heun_step, ()), (dpmpp_2m_step, ()), (euler_maruyama_step, (_noise(x),))]:
        fn(model, x, 1.0, torch.full((6,), 0.5), *extra, class_labels=y, w=2.0)
    assert all(shape == (6,) and dt == torch.float32 and kw["class_labels"] is y and kw["w"] == 2.0
               for shape, dt, kw in seen) and len(seen) == 5


def test_step_errors():
    x = _x(torch.float64)
    with pytest.raises(ValueError, match="sigma must be a number, a 0-dim tensor or a \\(B,\\) tensor"):
        euler_step(gauss_denoiser, x, torch.ones(3), 0.5)
    with pytest.raises(ValueError, match="sigma must be > 0"):
        euler_step(gauss_denoiser, x, 0.0, 0.0)
    with pytest.raises(ValueError, match="sigma_next must be a finite number >= 0"):
        heun_step(gauss_denoiser, x, 1.0, -0.5)
    with pytest.raises(TypeError, match="sigma must be a number or a tensor"):
        euler_step(gauss_denoiser, x, "1.0", 0.5)
    with pytest.raises(ValueError, match="noise is required"):
        euler_maruyama_step(gauss_denoiser, x, 1.0, 0.5, None)
    with pytest.raises(ValueError, match="noise must have x's shape"):
        euler_maruyama_step(gauss_denoiser, x, 1.0, 0.5, torch.zeros(2))
    with pytest.raises(ValueError, match="denoised_prev and sigma_prev go together"):
        dpmpp_2m_step(gauss_denoiser, x, 1.0, 0.5, denoised_prev=x)
    # a float σ_next = 0 needs no noise: the step returns D
    out, den = euler_maruyama_step(gauss_denoiser, x, 1.0, 0.0, None)
    assert torch.equal(out, den)


# -- the loop samplers are the samplers they were before the step primitives ------------------------------
# The pre-refactor loops, written out (the update formulas of each sampler as they stood): the samplers,
# now built on the primitives, must reproduce them bitwise for the same seed.
def _old_euler(model, x, sig):
    for s, sn in zip(sig[:-1], sig[1:], strict=True):
        den = model(x, torch.full((x.shape[0],), s, dtype=x.dtype))
        x = torch.lerp(den, x, sn / s)
    return x


def _old_heun(model, x, sig, churn, gen):
    n = len(sig) - 1
    gamma = min(churn / n, math.sqrt(2.0) - 1.0) if churn > 0 else 0.0
    for s, sn in zip(sig[:-1], sig[1:], strict=True):
        sh = s * (1.0 + gamma)
        if gamma > 0:
            x = x + math.sqrt(sh * sh - s * s) * torch.randn(x.shape, generator=gen, dtype=x.dtype)
        den = model(x, torch.full((x.shape[0],), sh, dtype=x.dtype))
        d = (x - den) / sh
        xn = x + (sn - sh) * d
        if sn > 0:
            d2 = (xn - model(xn, torch.full((x.shape[0],), sn, dtype=x.dtype))) / sn
            xn = x + (0.5 * (sn - sh)) * (d + d2)
        x = xn
    return x


def _old_em(model, x, sig, gen):
    for s, sn in zip(sig[:-1], sig[1:], strict=True):
        den = model(x, torch.full((x.shape[0],), s, dtype=x.dtype))
        if sn == 0:
            x = den
        else:
            h = s - sn
            x = x + (2.0 * h / s) * (den - x) + math.sqrt(2.0 * s * h) * torch.randn(x.shape, generator=gen,
                                                                                       dtype=x.dtype)
    return x


def _old_dpmpp_2m(model, x, sig):
    old, h_last = None, 0.0
    for s, sn in zip(sig[:-1], sig[1:], strict=True):
        den = model(x, torch.full((x.shape[0],), s, dtype=x.dtype))
        if sn == 0:
            x = den
        else:
            h = math.log(s) - math.log(sn)
            d = den if old is None else torch.add(den, den - old, alpha=1.0 / (2.0 * (h_last / h)))
            x = torch.add((sn / s) * x, d, alpha=-math.expm1(-h))
            h_last = h
        old = den
    return x


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_loop_samplers_reproduce_the_pre_refactor_loops(dtype):
    mixture = sf.eight_gaussians()
    model = mixture.as_denoiser()
    sched = sf.karras_sigmas(12, 0.002, 80.0)
    sig = sched.tolist()
    x = sf.initial_noise((128, 2), sched, generator=3, dtype=dtype)
    g = torch.Generator().manual_seed

    assert torch.equal(sf.sample_euler(model, x, sched).x, _old_euler(model, x, sig))
    assert torch.equal(sf.sample_heun(model, x, sched).x, _old_heun(model, x, sig, 0.0, None))
    assert torch.equal(sf.sample_heun(model, x, sched, S_churn=20.0, generator=7).x,
                       _old_heun(model, x, sig, 20.0, g(7)))
    assert torch.equal(sf.sample_euler_maruyama(model, x, sched, generator=7).x, _old_em(model, x, sig, g(7)))
    assert torch.equal(sf.sample_pc(model, x, sched, snr=0.0, generator=7).x, _old_em(model, x, sig, g(7)))
    assert torch.equal(sf.sample_dpmpp_2m(model, x, sched).x, _old_dpmpp_2m(model, x, sig))


def test_dpmpp_2m_nan_previous_level_marks_a_first_order_sample():
    x = _x(torch.float64, b=3)
    s, sn = torch.tensor([2.0, 2.0, 2.0], dtype=torch.float64), torch.tensor([1.0, 1.0, 1.0], dtype=torch.float64)
    prev = torch.tensor([4.0, float("nan"), 3.0], dtype=torch.float64)
    dp = gauss_denoiser(x, torch.tensor([4.0, 4.0, 3.0], dtype=torch.float64))
    mixed = dpmpp_2m_step(gauss_denoiser, x, s, sn, dp, prev)[0]
    assert torch.equal(mixed[1], dpmpp_2m_step(gauss_denoiser, x, 2.0, 1.0)[0][1])
    assert torch.equal(mixed[[0, 2]], dpmpp_2m_step(gauss_denoiser, x, s, sn, dp, prev.nan_to_num(4.0))[0][[0, 2]])
