"""The consistency function: boundary condition, coefficients, parameterizations, roles (Hypothesis properties).

The property checks are written as functions of a coefficient map ``coef(t, sigma_data, eps)`` so the
same check runs on the library's coefficients (it must pass) and on the two published bugs the issue
names (it must fail): a ``c_out`` without σ_d, and an ε that is ignored (EDM's coefficients, so
``f(x, ε) ≠ x``).
"""

from __future__ import annotations

import copy
import json
import math
import re
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from sdeflow.consistency import (
    PARAMETERIZATIONS,
    ConsistencyFunction,
    ConsistencyRoles,
    consistency_coefficients,
    edm_to_trigflow_time,
    trigflow_to_edm_time,
)
from sdeflow.generative.config import build_model
from sdeflow.generative.mixture import GaussianMixture
from sdeflow.generative.networks import MLPNet, UNet
from sdeflow.generative.precond import EDMPrecond, edm_coefficients

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[1]


def _mlp(dim=2, **kw):
    kw.setdefault("hidden", 16)
    kw.setdefault("depth", 1)
    kw.setdefault("emb_dim", 8)
    kw.setdefault("zero_init", False)  # a non-trivial F, so c_out = 0 must really cancel it
    kw.setdefault("seed", 0)
    return MLPNet(dim=dim, **kw)


def _library(parameterization):
    def coef(t, sigma_data, eps):
        return consistency_coefficients(t, sigma_data, eps, parameterization)
    return coef


def _mutant_no_sigma_data(t, sigma_data, eps):
    """Published bug 1: c_out = (t − ε)/√(σ_d² + t²), the σ_d factor dropped."""
    c_skip, c_out, c_in, c_noise = consistency_coefficients(t, sigma_data, eps, "cm")
    return c_skip, c_out / sigma_data, c_in, c_noise


def _mutant_eps_ignored(t, sigma_data, eps):
    """Published bug 2: the boundary ε ignored (EDM's coefficients), so f(x, ε) ≠ x."""
    return edm_coefficients(t.clamp_min(eps), sigma_data)


def _apply(coef, net, x, t, sigma_data, eps, **kw):
    """``f = c_skip x + c_out F(c_in x, c_noise)`` from a coefficient map (mirrors ConsistencyFunction.forward)."""
    tv = torch.as_tensor(t, dtype=x.dtype).expand(x.shape[0])
    c_skip, c_out, c_in, c_noise = coef(tv, sigma_data, eps)
    view = (-1,) + (1,) * (x.dim() - 1)
    out = net(c_in.reshape(view) * x, c_noise, **kw).to(x.dtype)
    return c_skip.reshape(view) * x + c_out.reshape(view) * out


# -- the property checks (each raises AssertionError when the property fails) -----------------------------
def check_boundary(coef, net, x, sigma_data, eps):
    """f(x, ε) = x bitwise, and c_skip(ε) = 1, c_out(ε) = 0 exactly."""
    e = torch.full((x.shape[0],), eps, dtype=x.dtype)
    c_skip, c_out, _, _ = coef(e, sigma_data, eps)
    assert bool((c_skip == 1).all()) and bool((c_out == 0).all()), "c_skip(ε) = 1 and c_out(ε) = 0"
    assert torch.equal(_apply(coef, net, x, eps, sigma_data, eps), x), "f(x, ε) = x"


def check_unit_target(coef, sigma_data, eps, t=80.0):
    """For N(0, σ_d²) data, the ideal network output F* = (f* − c_skip x)/c_out has unit std at large t.

    The preconditioning's purpose (Karras et al. 2022; Song et al. 2023, App. C): with data of std σ_d
    the network's target is O(1) at every noise level. Exact in float64: f*(x, t) = g x,
    g = √(σ_d² + ε²)/√(σ_d² + t²), and x ~ N(0, σ_d² + t²), so std(F*) = |g − c_skip| √(σ_d² + t²)/|c_out|.
    At t = 80 and σ_d ∈ [0.2, 5] the correct coefficients give std ∈ [0.93, 1.0] (the analytic value
    is 1 − O(σ_d/t)); the tolerance 0.1 is far from the σ_d-less mutant's std σ_d (0.5 in the test).
    """
    tt = torch.tensor([t], dtype=torch.float64)
    c_skip, c_out, _, _ = coef(tt, sigma_data, eps)
    g = math.sqrt(sigma_data**2 + eps**2) / math.sqrt(sigma_data**2 + t**2)
    std = abs(g - float(c_skip)) * math.sqrt(sigma_data**2 + t**2) / abs(float(c_out))
    assert abs(std - 1.0) < 0.1, f"unit-variance network target: std {std:.4f}"


# -- boundary condition ------------------------------------------------------------------------------------
@given(parameterization=st.sampled_from(PARAMETERIZATIONS), batch=st.integers(1, 5),
       event=st.sampled_from([(1,), (3,), (2, 3), (2, 2, 2)]), dtype=st.sampled_from([torch.float32, torch.float64]),
       sigma_data=st.floats(0.1, 5.0), eps=st.floats(0.0, 0.2), seed=st.integers(0, 3), scale=st.floats(1e-3, 1e3))
@settings(max_examples=40)
def test_boundary_is_exact_for_every_parameterization(parameterization, batch, event, dtype, sigma_data, eps, seed,
                                                      scale):
    net = _mlp(dim=list(event), seed=seed).to(dtype)
    f = ConsistencyFunction(net, sigma_data=sigma_data, eps=eps, T=eps + 80.0, parameterization=parameterization)
    g = torch.Generator().manual_seed(seed)
    x = scale * torch.randn((batch, *event), generator=g, dtype=dtype)
    assert torch.equal(f(x, eps), x)  # a Python float ε
    assert torch.equal(f(x, torch.full((batch,), eps, dtype=torch.float64)), x)  # a float64 tensor, rounded to x's
    out = f(x, eps)
    assert out.dtype == dtype and out.shape == x.shape
    # Per-sample times: the rows at ε are x exactly, the others are not (F is non-trivial).
    t = torch.full((batch,), eps + 1.0, dtype=dtype)
    t[0] = eps
    y = f(x, t)
    assert torch.equal(y[0], x[0])
    if batch > 1:
        assert not torch.equal(y[1:], x[1:])
    check_boundary(_library(parameterization), net, x, sigma_data, eps)


class _Inf(nn.Module):
    def forward(self, x, c_noise, class_labels=None, extra=None):
        return torch.full_like(x, math.inf)


@pytest.mark.parametrize("dtype,bits", [(torch.float32, torch.int32), (torch.float64, torch.int64)])
@pytest.mark.parametrize("parameterization", PARAMETERIZATIONS)
def test_boundary_is_bitwise_with_signed_zeros_and_a_non_finite_network(parameterization, dtype, bits):
    x = torch.tensor([[-0.0, 0.0], [-1.5, 2.0], [-0.0, -0.0]], dtype=dtype)
    for net in (_mlp().to(dtype), _Inf()):
        f = ConsistencyFunction(net, parameterization=parameterization)
        assert torch.equal(f(x, 0.002).view(bits), x.view(bits))  # the bit patterns, −0.0 included
    assert bool(torch.isinf(ConsistencyFunction(_Inf(), parameterization=parameterization)(x, 1.0)).all())


def test_boundary_with_unet_labels_extra_and_bf16_network():
    unet = UNet(in_channels=1, image_size=8, channels=(4, 8), emb_dim=8, num_classes=3, n_extra=1, zero_init=False,
                seed=0)
    x = torch.randn(2, 1, 8, 8)
    kw = {"class_labels": torch.tensor([0, 2]), "extra": torch.randn(2, 1)}
    for p in PARAMETERIZATIONS:
        f = ConsistencyFunction(unet, parameterization=p)
        assert torch.equal(f(x, 0.002, **kw), x)
        assert not torch.equal(f(x, 1.0, **kw), f(x, 1.0, class_labels=torch.tensor([1, 1]), extra=kw["extra"]))
    # A bf16 network: its output is upcast, the result has x's dtype, and the boundary stays exact.
    f16 = ConsistencyFunction(_mlp(dim=3).to(torch.bfloat16))
    x32 = torch.randn(4, 3)
    assert f16(x32, 2.0).dtype == torch.float32
    assert torch.equal(f16(x32, 0.002), x32)


# -- coefficients -----------------------------------------------------------------------------------------------
@given(parameterization=st.sampled_from(PARAMETERIZATIONS), sigma_data=st.floats(0.1, 5.0), eps=st.floats(0.0, 0.1),
       t=st.floats(0.0, 1.0), h=st.floats(1e-9, 1e-4))
@settings(max_examples=40)
def test_coefficients_continuous_and_bounded(parameterization, sigma_data, eps, t, h):
    # t ∈ [ε, T] mapped from [0, 1] (more draws near ε); T = 80.
    T = 80.0
    tt = eps + (T - eps) * t**3
    pts = torch.tensor([tt, min(tt + h * T, T)], dtype=torch.float64)
    c_skip, c_out, c_in, c_noise = consistency_coefficients(pts, sigma_data, eps, parameterization)
    assert bool(torch.isfinite(torch.stack([c_skip, c_out, c_in, c_noise])).all())
    assert bool((c_skip > 0).all()) and bool((c_skip <= 1).all())  # bounded
    assert bool((c_out.abs() <= sigma_data).all())
    assert bool((c_in > 0).all()) and bool((c_in <= 1 / sigma_data).all())
    # Continuity: |Δc| ≤ L |Δt| with L = 2/σ_d (every |dc/dt| here is below 0.65/σ_d and 1).
    dt = float(pts[1] - pts[0])
    lip = 2.0 / sigma_data + 2.0
    assert float((c_skip[1] - c_skip[0]).abs()) <= lip * dt + 1e-15
    assert float((c_out[1] - c_out[0]).abs()) <= lip * dt + 1e-15
    # Formulas (the docstring's), independently.
    s, sd, e = tt, sigma_data, eps
    if parameterization == "cm":
        want = (sd**2 / ((s - e) ** 2 + sd**2), sd * (s - e) / math.sqrt(sd**2 + s**2))
    elif parameterization == "ctm":
        want = ((sd**2 + e * s) / (s**2 + sd**2), sd * (s - e) / math.sqrt(sd**2 + s**2))
    else:
        a, b = math.atan(s / sd), math.atan(e / sd)
        want = (math.cos(a - b) * math.cos(a) / math.cos(b), -sd * math.sin(a - b) / math.cos(b))
    assert float(c_skip[0]) == pytest.approx(want[0], rel=1e-12, abs=1e-300)
    assert float(c_out[0]) == pytest.approx(want[1], rel=1e-10, abs=1e-15)


@given(parameterization=st.sampled_from(PARAMETERIZATIONS), sigma_data=st.floats(0.2, 5.0), eps=st.floats(0.0, 0.01))
@settings(max_examples=20)
def test_network_target_has_unit_scale(parameterization, sigma_data, eps):
    check_unit_target(_library(parameterization), sigma_data, eps)


def test_coefficients_below_eps_act_as_eps_and_bad_times_raise():
    f = ConsistencyFunction(_mlp(), eps=0.01)
    x = torch.randn(3, 2)
    assert torch.equal(f(x, 0.0), x) and torch.equal(f(x, 0.005), x)
    with pytest.raises(ValueError, match="t must be >= 0"):
        f(x, -1.0)
    with pytest.raises(ValueError, match="t must be >= 0"):
        f(x, torch.tensor([1.0, float("nan"), 1.0]))
    with pytest.raises(ValueError, match=r"shape \(3,\)"):
        f(x, torch.ones(2))
    with pytest.raises(TypeError, match="t must be a number"):
        f(x, "1.0")
    with pytest.raises(TypeError, match="floating-point"):
        f(torch.ones(3, 2, dtype=torch.long), 1.0)
    c = f.coefficients(torch.tensor([0.01, 1.0]))
    assert all(v.shape == (2,) for v in c) and float(c[0][0]) == 1.0 and float(c[1][0]) == 0.0


def test_constructor_errors():
    with pytest.raises(ValueError, match="parameterization"):
        ConsistencyFunction(_mlp(), parameterization="edm")
    with pytest.raises(ValueError, match="sigma_data"):
        ConsistencyFunction(_mlp(), sigma_data=0.0)
    with pytest.raises(ValueError, match="eps"):
        ConsistencyFunction(_mlp(), eps=-0.1)
    with pytest.raises(ValueError, match="T must be"):
        ConsistencyFunction(_mlp(), eps=1.0, T=1.0)
    with pytest.raises(TypeError, match="nn.Module"):
        ConsistencyFunction(lambda x, c: x)
    with pytest.raises(TypeError, match="raw network"):
        ConsistencyFunction(ConsistencyFunction(_mlp()))


# -- the two published bugs are caught -----------------------------------------------------------------------
def test_library_coefficient_helper_matches_the_module():
    net = _mlp(dim=3).double()
    x = torch.randn(4, 3, dtype=torch.float64)
    for p in PARAMETERIZATIONS:
        f = ConsistencyFunction(net, sigma_data=0.7, eps=0.01, parameterization=p)
        t = torch.tensor([0.01, 0.3, 5.0, 80.0], dtype=torch.float64)
        assert torch.equal(_apply(_library(p), net, x, t, 0.7, 0.01), f(x, t))


def test_mutant_without_sigma_data_is_caught():
    sigma_data, eps = 0.5, 0.002
    check_unit_target(_library("cm"), sigma_data, eps)
    with pytest.raises(AssertionError, match="unit-variance"):
        check_unit_target(_mutant_no_sigma_data, sigma_data, eps)
    # ... and by the EDM/TrigFlow agreement check below (ε = 0: "cm" must be EDM's denoiser).
    t = torch.logspace(-2, 2, 9, dtype=torch.float64)
    with pytest.raises(AssertionError):
        check_edm_agreement(_mutant_no_sigma_data, t, sigma_data)
    check_edm_agreement(_library("cm"), t, sigma_data)
    # The boundary alone cannot see it (c_out(ε) = 0 either way): that is why the scale check exists.
    net, x = _mlp().double(), torch.randn(3, 2, dtype=torch.float64)
    check_boundary(_mutant_no_sigma_data, net, x, sigma_data, eps)


def test_mutant_ignoring_eps_is_caught():
    net, x = _mlp().double(), torch.randn(5, 2, dtype=torch.float64)
    check_boundary(_library("cm"), net, x, 0.5, 0.002)
    with pytest.raises(AssertionError, match="c_skip"):
        check_boundary(_mutant_eps_ignored, net, x, 0.5, 0.002)


def check_edm_agreement(coef, t, sigma_data):
    """With ε = 0 a consistency parameterization is EDM's denoiser: the same (c_skip, c_out, c_in)."""
    got = coef(t, sigma_data, 0.0)
    want = edm_coefficients(t, sigma_data)
    for a, b in zip(got[:3], want[:3], strict=True):
        assert torch.allclose(a, b, rtol=1e-13, atol=0)


# -- EDM / CTM / TrigFlow agree under t = σ_d tan s -------------------------------------------------------------
@given(t=st.floats(1e-3, 200.0), sigma_data=st.floats(0.1, 5.0))
@settings(max_examples=20)
def test_time_maps_are_inverse(t, sigma_data):
    s = edm_to_trigflow_time(t, sigma_data)
    assert 0 < s < math.pi / 2
    assert trigflow_to_edm_time(s, sigma_data) == pytest.approx(t, rel=1e-12)
    tt = torch.tensor([t], dtype=torch.float64)
    assert float(trigflow_to_edm_time(edm_to_trigflow_time(tt, sigma_data), sigma_data)) == pytest.approx(t, rel=1e-12)


class _FromDenoiser(nn.Module):
    """A raw network that outputs what makes a parameterization reproduce x̂_0 = D(x, t) (a given predictor).

    EDM form (cm/ctm, c_noise = ¼ ln t): F = (D − c_skip^EDM x)/c_out^EDM. TrigFlow (c_noise = s):
    D = cos(s) x_s − sin(s) σ_d F with x_s = cos(s) x, so F = (cos(s) x_s − D)/(σ_d sin s). The input is
    c_in x, with c_in = 1/√(t² + σ_d²) for both.
    """

    def __init__(self, denoiser, sigma_data, form):
        super().__init__()
        self.denoiser, self.sigma_data, self.form = denoiser, sigma_data, form

    def forward(self, y, c_noise, class_labels=None, extra=None):
        sd = self.sigma_data
        t = torch.exp(4 * c_noise) if self.form == "edm" else sd * torch.tan(c_noise)
        x = y * torch.sqrt(t * t + sd * sd)[:, None]
        d = self.denoiser(x, t)
        if self.form == "edm":
            c_skip, c_out, _, _ = edm_coefficients(t, sd)
            return (d - c_skip[:, None] * x) / c_out[:, None]
        s = c_noise[:, None]
        return (torch.cos(s) ** 2 * x - d) / (sd * torch.sin(s))


@given(eps=st.floats(0.0, 0.05), sigma_data=st.floats(0.3, 3.0), seed=st.integers(0, 5))
@settings(max_examples=15)
def test_edm_and_trigflow_forms_agree_for_the_same_x0_prediction(eps, sigma_data, seed):
    # What is compared: the x̂_0 prediction D(x, t) of the network is held fixed (the exact denoiser of a
    # mixture); the CTM (EDM form, t) and TrigFlow (s = arctan(t/σ_d), x_s = cos(s) x_t) consistency
    # functions built on it must both be the DDIM step from t to ε: f = D + (ε/t)(x − D).
    g = torch.Generator().manual_seed(seed)
    mix = GaussianMixture([0.3, 0.7], torch.randn(2, 2, generator=g, dtype=torch.float64), [0.2, 0.5])
    den = mix.denoiser_sigma
    x = 3 * torch.randn(6, 2, generator=g, dtype=torch.float64)
    t = torch.tensor([0.01, 0.1, 0.5, 2.0, 10.0, 80.0], dtype=torch.float64) + eps
    ctm = ConsistencyFunction(_FromDenoiser(den, sigma_data, "edm"), sigma_data=sigma_data, eps=eps,
                              T=100.0, parameterization="ctm")
    trig = ConsistencyFunction(_FromDenoiser(den, sigma_data, "trig"), sigma_data=sigma_data, eps=eps,
                               T=100.0, parameterization="trigflow")
    d = den(x, t)
    ddim = d + (eps / t)[:, None] * (x - d)
    assert torch.allclose(ctm(x, t), ddim, rtol=1e-9, atol=1e-9)
    assert torch.allclose(trig(x, t), ddim, rtol=1e-9, atol=1e-9)
    if eps == 0.0:  # and then "cm" is the same (its offset vanishes): the EDM denoiser itself
        cm = ConsistencyFunction(_FromDenoiser(den, sigma_data, "edm"), sigma_data=sigma_data, eps=0.0, T=100.0)
        assert torch.allclose(cm(x, t), d, rtol=1e-9, atol=1e-9)


@given(eps=st.floats(0.0, 0.1), sigma_data=st.floats(0.1, 5.0))
@settings(max_examples=20)
def test_trigflow_is_ctm_with_negated_network_in_its_own_variables(eps, sigma_data):
    # TrigFlow evaluated in its own variables (the sCM formula with the DDIM boundary) equals the module.
    t = torch.logspace(math.log10(max(eps, 1e-3)), 2, 12, dtype=torch.float64)
    net = _mlp(dim=3).double()
    f = ConsistencyFunction(net, sigma_data=sigma_data, eps=eps, T=200.0, parameterization="trigflow")
    x = torch.randn(12, 3, dtype=torch.float64) * (t[:, None] + 1)
    s = edm_to_trigflow_time(t, sigma_data)[:, None]
    s_eps = math.atan(eps / sigma_data)
    x_s = torch.cos(s) * x
    F = net(x_s / sigma_data, s.squeeze(1))
    x_at_eps = torch.cos(s - s_eps) * x_s - torch.sin(s - s_eps) * sigma_data * F  # TrigFlow state at s_ε
    assert torch.allclose(f(x, t), x_at_eps / math.cos(s_eps), rtol=1e-11, atol=1e-11)
    # Coefficients: TrigFlow = CTM with c_out negated, for every ε.
    a = consistency_coefficients(t, sigma_data, eps, "ctm")
    b = consistency_coefficients(t, sigma_data, eps, "trigflow")
    assert torch.allclose(a[0], b[0], rtol=1e-13) and torch.allclose(a[1], -b[1], rtol=1e-12, atol=1e-15)
    assert torch.allclose(a[2], b[2], rtol=1e-14)


# -- config, copies, roles -------------------------------------------------------------------------------------
@pytest.mark.parametrize("parameterization", PARAMETERIZATIONS)
def test_config_round_trip_and_deepcopy(parameterization):
    f = ConsistencyFunction(_mlp(num_classes=2), sigma_data=0.8, eps=0.005, T=40.0, parameterization=parameterization)
    cfg = json.loads(json.dumps(f.get_config()))
    assert cfg["kind"] == "consistency_function" and cfg["parameterization"] == parameterization
    g = build_model(cfg)
    g.load_state_dict(f.state_dict())
    x, t, y = torch.randn(3, 2), torch.tensor([0.01, 1.0, 40.0]), torch.tensor([0, 1, 2])
    assert torch.equal(g(x, t, class_labels=y), f(x, t, class_labels=y))
    assert (g.sigma_data, g.eps, g.T, g.parameterization) == (0.8, 0.005, 40.0, parameterization)
    twin = copy.deepcopy(f)  # what an EMA target is made from
    with torch.no_grad():
        for p in twin.parameters():
            p.add_(0.1)
    assert not torch.equal(twin(x, t), f(x, t))
    (xe, te), _ = f.example_inputs(2)
    assert te.shape == (2,) and float(te[0]) == 40.0


def test_roles():
    student = ConsistencyFunction(_mlp())
    target = copy.deepcopy(student)
    teacher = EDMPrecond(_mlp())
    roles = ConsistencyRoles(student=student, target=target, teacher=teacher)
    assert roles.has_teacher and roles.target_fn() is target
    ict = ConsistencyRoles(student)
    assert not ict.has_teacher and ict.target_fn() is student
    x = torch.randn(3, 2)
    out = ict.target_eval(x, 1.0)
    assert not out.requires_grad and torch.equal(out, student(x, 1.0).detach())
    with pytest.raises(TypeError, match="not a ConsistencyFunction"):
        ConsistencyRoles(student, teacher=target)
    with pytest.raises(ValueError, match="share the student"):
        ConsistencyRoles(student, target=ConsistencyFunction(_mlp(), eps=0.01))
    with pytest.raises(TypeError, match="student must be"):
        ConsistencyRoles(teacher)
    with pytest.raises(TypeError, match="target must be"):
        ConsistencyRoles(student, target=teacher)
    with pytest.raises(AttributeError):
        roles.student = target  # frozen


# -- docs/consistency.md runs ------------------------------------------------------------------------------------
def test_docs_consistency_python_blocks_run():
    text = (ROOT / "docs" / "consistency.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert blocks, "docs/consistency.md has python blocks"
    ns: dict = {}
    for block in blocks:
        exec(compile(block, "docs/consistency.md", "exec"), ns)  # noqa: S102
