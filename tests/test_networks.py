"""Networks (MLPNet, UNet), preconditioning (EDMPrecond, SDEPrecond) and classifier-free guidance."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from sdeflow.consistency import ConsistencyFunction, consistency_coefficients
from sdeflow.conversion.parameterization import PREDICTIONS, convert_prediction
from sdeflow.generative.config import build_model
from sdeflow.generative.mixture import GaussianMixture
from sdeflow.generative.networks import (
    MLPNet,
    NoiseFeatures,
    UNet,
    count_parameters,
    flops_per_call,
    model_summary,
)
from sdeflow.generative.precond import (
    SDES,
    ClassifierFreeGuidance,
    EDMPrecond,
    SDEPrecond,
    edm_coefficients,
    estimate_sigma_data,
    guidance_from_scale,
    guided,
    scale_from_guidance,
)
from sdeflow.generative.samplers import SAMPLERS, sample, sample_heun
from sdeflow.generative.schedules import karras_sigmas
from sdeflow.generative.toy_data import eight_gaussians

torch.set_num_threads(1)


def _mlp(**kw):
    kw.setdefault("hidden", 32)
    kw.setdefault("depth", 2)
    kw.setdefault("emb_dim", 16)
    kw.setdefault("zero_init", False)  # untrained but non-trivial outputs
    kw.setdefault("seed", 0)
    return MLPNet(**kw)


def _unet(**kw):
    kw.setdefault("channels", (8, 16))
    kw.setdefault("emb_dim", 16)
    kw.setdefault("zero_init", False)
    kw.setdefault("seed", 0)
    return UNet(**kw)


# -- shapes -----------------------------------------------------------------------------------------
@given(batch=st.integers(1, 5), dim=st.integers(1, 4), num_classes=st.integers(0, 3), n_extra=st.integers(0, 2),
       modulation=st.sampled_from(["film", "shift", "input"]), residual=st.booleans(),
       embedding=st.sampled_from(["fourier", "sinusoidal"]))
@settings(max_examples=15)
def test_mlp_shapes(batch, dim, num_classes, n_extra, modulation, residual, embedding):
    net = _mlp(dim=dim, num_classes=num_classes, n_extra=n_extra, modulation=modulation, residual=residual,
               embedding=embedding)
    x = torch.randn(batch, dim)
    c = torch.randn(batch)
    labels = torch.randint(0, num_classes + 1, (batch,)) if num_classes else None
    extra = torch.randn(batch, n_extra) if n_extra else None
    out = net(x, c, class_labels=labels, extra=extra)
    assert out.shape == x.shape and out.dtype == x.dtype and bool(torch.isfinite(out).all())
    assert net(x, c).shape == x.shape  # None = the null class / zeros
    assert net(x, c[0]).shape == x.shape  # a scalar c_noise is repeated


def test_mlp_event_shape_is_flattened():
    net = _mlp(dim=[1, 3, 2])
    x = torch.randn(4, 1, 3, 2)
    out = net(x, torch.zeros(4))
    assert out.shape == x.shape
    assert net.event_shape == (1, 3, 2)


@pytest.mark.parametrize("kw", [
    {},
    {"num_classes": 10},
    {"n_extra": 2},
    {"num_classes": 3, "n_extra": 1, "num_res_blocks": 2},
    {"in_channels": 3, "image_size": [8, 4], "channels": (8, 16, 16)},
])
def test_unet_shapes(kw):
    net = _unet(**kw)
    c, h, w = net.event_shape
    x = torch.randn(3, c, h, w)
    labels = torch.tensor([0, 1, net.num_classes]) if net.num_classes else None
    extra = torch.randn(3, net.n_extra) if net.n_extra else None
    out = net(x, torch.randn(3), class_labels=labels, extra=extra)
    assert out.shape == x.shape and bool(torch.isfinite(out).all())


@pytest.mark.parametrize("make", [_mlp, _unet])
def test_conditioning_reaches_output(make):
    """Labels and extra change the output; None is the null label / zero extra; zero_init gives F = 0."""
    net = make(num_classes=3, n_extra=1)
    (x, c), _ = net.example_inputs(4)
    x = torch.randn_like(x)
    y = torch.tensor([0, 1, 2, 0])
    base = net(x, c, class_labels=y)
    assert not torch.allclose(base, net(x, c, class_labels=(y + 1) % 3))
    assert not torch.allclose(base, net(x, c, class_labels=y, extra=torch.ones(4, 1)))
    assert not torch.allclose(base, net(x, c + 1.0, class_labels=y))
    null = torch.full((4,), net.null_label)
    assert torch.equal(net(x, c), net(x, c, class_labels=null, extra=torch.zeros(4, 1)))
    zero = make(num_classes=3, zero_init=True)
    assert torch.equal(zero(x, c, class_labels=y), torch.zeros_like(x))


# -- configs, seeds, copies ----------------------------------------------------------------------------
def _models():
    mlp = _mlp(num_classes=3, n_extra=1)
    return {
        "mlp": mlp,
        "unet": _unet(num_classes=2),
        "edm": EDMPrecond(_mlp(num_classes=3, n_extra=1), sigma_data=1.3),
        "sde": SDEPrecond(_mlp(num_classes=3), sde="ve", sde_args={"sigma_max": 20.0}, prediction="v",
                          time_scale=2.0, sigma_data=1.0),
        "cfg": guided(EDMPrecond(_mlp(num_classes=3)), 1.5),
        "consistency": ConsistencyFunction(_mlp(n_extra=1), sigma_data=0.8, eps=0.01, parameterization="ctm"),
    }


def _call(model, b=3):
    g = torch.Generator().manual_seed(1)
    args, kwargs = model.example_inputs(b)
    x = torch.randn(args[0].shape, generator=g)
    s = torch.rand(b, generator=g) + 0.2
    if model.num_classes:
        kwargs["class_labels"] = torch.randint(0, model.num_classes, (b,), generator=g)
    if model.n_extra:
        kwargs["extra"] = torch.randn(b, model.n_extra, generator=g)
    return model(x, s, **kwargs)


@pytest.mark.parametrize("name", ["mlp", "unet", "edm", "sde", "cfg", "consistency"])
def test_config_round_trip(name):
    model = _models()[name]
    cfg = json.loads(json.dumps(model.get_config()))  # what the JSON sidecar holds
    rebuilt = build_model(cfg)
    assert type(rebuilt) is type(model) and rebuilt.get_config() == cfg
    rebuilt.load_state_dict(model.state_dict())
    assert torch.equal(_call(rebuilt), _call(model))


def test_fourier_frequencies_are_saved_and_seed_reproduces():
    a, b = MLPNet(seed=3), MLPNet(seed=3)
    assert any(k.endswith("noise_features.freqs") for k in a.state_dict())
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert ka == kb and torch.equal(va, vb)
    c = MLPNet(seed=4)
    assert not torch.equal(a.cond.noise_features.freqs, c.cond.noise_features.freqs)
    state = torch.get_rng_state()
    MLPNet(seed=5)
    assert torch.equal(state, torch.get_rng_state())  # a seeded build leaves the global RNG alone


@pytest.mark.parametrize("name", ["mlp", "edm", "sde", "cfg", "consistency"])
def test_deepcopy_is_independent(name):
    model = _models()[name]
    twin = copy.deepcopy(model)  # what an EMA copy does
    assert torch.equal(_call(twin), _call(model))
    with torch.no_grad():
        for p in twin.parameters():
            p.add_(0.1)
    assert not torch.equal(_call(twin), _call(model))
    before = _call(model)
    assert torch.equal(before, _call(copy.deepcopy(model)))


def test_sde_precond_copy_calls_its_own_network():
    model = _models()["sde"]
    twin = copy.deepcopy(model)
    assert twin._denoiser.model_fn.__self__ is twin


def test_unregistered_network_works_but_cannot_be_saved():
    class Plain(nn.Module):
        def forward(self, x, c_noise, class_labels=None, extra=None):
            return torch.zeros_like(x)

    d = EDMPrecond(Plain())
    x = torch.randn(2, 2)
    assert torch.allclose(d(x, 1.0), x * 0.25 / 1.25)
    with pytest.raises(TypeError, match="net=Plain"):
        d.get_config()


# -- cost ----------------------------------------------------------------------------------------------
def test_mlp_flops_are_the_linear_layers():
    net = _mlp(num_classes=2, n_extra=1)
    macs = sum(m.in_features * m.out_features for m in net.modules() if isinstance(m, nn.Linear))
    for batch in (1, 5):
        assert flops_per_call(net, batch=batch) == 2 * batch * macs
    info = model_summary(net, batch=5)
    assert info["parameters"] == sum(p.numel() for p in net.parameters()) == count_parameters(net)
    assert info["macs"] == 5 * macs and info["flops_per_example"] == 2 * macs
    assert f"parameters={info['parameters']:,}" in repr(net)


def test_unet_flops_scale_with_batch_and_wrappers_count_the_same():
    net = _unet()
    one = flops_per_call(net, batch=1)
    assert one > 0 and flops_per_call(net, batch=3) == 3 * one
    assert flops_per_call(EDMPrecond(net), batch=3) == 3 * one
    x = torch.zeros(2, 1, 8, 8)
    assert model_summary(net, x, torch.zeros(2))["flops"] == 2 * one
    assert "parameters=" in repr(net)


# -- EDM preconditioning ------------------------------------------------------------------------------
@given(sigma=st.floats(1e-4, 1e3), sigma_data=st.floats(0.05, 10.0))
def test_edm_coefficients(sigma, sigma_data):
    s = torch.tensor([sigma], dtype=torch.float64)
    c_skip, c_out, c_in, c_noise = edm_coefficients(s, sigma_data)
    sd = sigma_data
    assert torch.allclose(c_skip, torch.tensor(sd**2 / (sigma**2 + sd**2), dtype=torch.float64), rtol=1e-12)
    assert torch.allclose(c_out, torch.tensor(sigma * sd / math.sqrt(sigma**2 + sd**2), dtype=torch.float64),
                          rtol=1e-12)
    assert torch.allclose(c_noise, torch.tensor(math.log(sigma) / 4, dtype=torch.float64), rtol=1e-12, atol=1e-15)
    # Unit-variance input: c_in² (σ_d² + σ²) = 1.
    assert torch.allclose(c_in**2 * (sd**2 + sigma**2), torch.ones(1, dtype=torch.float64), rtol=1e-12)
    # Unit-variance target: c_out² = (1 − c_skip)² σ_d² + c_skip² σ² (the variance of x_0 − c_skip (x_0 + σn)).
    assert torch.allclose(c_out**2, (1 - c_skip) ** 2 * sd**2 + c_skip**2 * sigma**2, rtol=1e-10)
    # σ = 0 exactly: c_skip = 1 and c_out = 0, so D(x, 0) = x bit for bit.
    z_skip, z_out, _, z_noise = edm_coefficients(torch.zeros(1, dtype=torch.float64), sigma_data)
    assert float(z_skip) == 1.0 and float(z_out) == 0.0 and math.isfinite(float(z_noise))
    # c_skip = c_out² / σ² = σ_d² c_in².
    assert torch.allclose(c_skip, c_out**2 / sigma**2, rtol=1e-10)
    assert torch.allclose(c_skip, sd**2 * c_in**2, rtol=1e-12)


@given(sigma_data=st.floats(0.1, 5.0), sigma_min=st.floats(1e-4, 0.1), sigma=st.floats(0.0, 100.0))
@settings(max_examples=15)
def test_consistency_boundary_condition_and_coefficients(sigma_data, sigma_min, sigma):
    # The consistency function's "cm" coefficients share EDM's c_in, c_noise (more in test_consistency_function.py).
    f = ConsistencyFunction(_mlp(dim=3, n_extra=1).double(), sigma_data=sigma_data, eps=sigma_min)
    x = torch.randn(4, 3, dtype=torch.float64)
    extra = torch.randn(4, 1, dtype=torch.float64)
    assert torch.equal(f(x, sigma_min, extra=extra), x)  # f(x, ε) = x for any network
    s = torch.tensor([sigma], dtype=torch.float64)
    c_skip, c_out, c_in, c_noise = consistency_coefficients(s, sigma_data, sigma_min)
    off = max(sigma - sigma_min, 0.0)
    assert float(c_skip) == pytest.approx(sigma_data**2 / (off**2 + sigma_data**2), rel=1e-12)
    assert float(c_out) == pytest.approx(sigma_data * off / math.sqrt(sigma_data**2 + sigma**2), rel=1e-12, abs=1e-300)
    e_skip, e_out, e_in, e_noise = edm_coefficients(s.clamp_min(sigma_min), sigma_data)
    assert torch.equal(c_in, e_in) and torch.equal(c_noise, e_noise)
    # With ε = 0 the consistency parameterization is EDM's.
    z = consistency_coefficients(s, sigma_data, 0.0)
    e_skip, e_out, _, _ = edm_coefficients(s, sigma_data)
    assert torch.allclose(z[0], e_skip, rtol=1e-14) and torch.allclose(z[1], e_out, rtol=1e-14)


def test_edm_limits_and_forward_formula():
    net = _mlp(dim=3)
    d = EDMPrecond(net, sigma_data=0.7)
    x = torch.randn(4, 3, dtype=torch.float64)
    net.double()
    assert torch.equal(d(x, 0.0), x)  # σ = 0: D = x exactly (c_skip = 1, c_out = 0, c_noise finite)
    assert torch.allclose(d(x, 1e-8), x, atol=1e-8)
    sig = torch.tensor([0.01, 0.5, 3.0, 80.0], dtype=torch.float64)
    c_skip, c_out, c_in, c_noise = edm_coefficients(sig, 0.7)
    want = c_skip[:, None] * x + c_out[:, None] * net(c_in[:, None] * x, c_noise)
    assert torch.allclose(d(x, sig), want, rtol=1e-12, atol=1e-14)
    big = d(x, 1e8)  # σ → ∞: c_skip → 0, c_out → σ_d, the network sees c_in x → 0
    assert torch.allclose(big, 0.7 * net(torch.zeros_like(x), torch.full((4,), math.log(1e8) / 4)), atol=1e-6)


def test_edm_zero_network_is_the_exact_gaussian_denoiser():
    """For N(0, σ_d² I) data the optimal denoiser is c_skip x: a zero-initialised net under EDMPrecond is exact."""
    sd = 1.7
    d = EDMPrecond(MLPNet(dim=2, hidden=16, emb_dim=8, seed=0).double(), sigma_data=sd)
    gm = GaussianMixture([1.0], [[0.0, 0.0]], sd**2)
    x = torch.randn(6, 2, dtype=torch.float64)
    sig = torch.logspace(-2, 2, 6, dtype=torch.float64)
    assert torch.allclose(d(x, sig), gm.denoiser_sigma(x, sig), rtol=1e-12, atol=1e-14)


def test_low_precision_network_output_is_upcast():
    net = _mlp(dim=2)
    x = torch.randn(5, 2)
    sig = torch.tensor([1e-3, 0.1, 1.0, 10.0, 50.0])
    ref = EDMPrecond(net, 2.0)(x, sig)
    low = EDMPrecond(copy.deepcopy(net).to(torch.bfloat16), 2.0)
    out = low(x, sig)
    assert out.dtype == torch.float32
    # The skip connection runs in float32: D = c_skip x + c_out F with only F in bf16.
    c_skip, c_out, c_in, c_noise = edm_coefficients(sig, 2.0)
    f = low.net(c_in[:, None] * x, c_noise).float()
    assert torch.equal(out, c_skip[:, None] * x + c_out[:, None] * f)
    assert torch.allclose(out, ref, rtol=0.05, atol=0.05)  # bf16 has ~3 significant digits
    with torch.autocast("cpu", dtype=torch.bfloat16):
        auto = EDMPrecond(net, 2.0)(x, sig)
    assert auto.dtype == torch.float32 and torch.allclose(auto, ref, rtol=0.05, atol=0.05)


def test_estimate_sigma_data():
    x = eight_gaussians().sample(200_000, generator=0)
    # std over all coordinates: √(16/2 + 0.2²) = 2.8355; the estimate's standard error is ~0.003 at this n.
    assert abs(estimate_sigma_data(x) - math.sqrt(8.04)) < 0.02
    y = torch.randn(10, 3)
    assert estimate_sigma_data(y) == pytest.approx(float(y.double().std(correction=0)), rel=1e-12)
    with pytest.raises(TypeError, match="x must be a floating-point"):
        estimate_sigma_data(torch.ones(3, dtype=torch.long))
    with pytest.raises(ValueError, match="zero spread"):
        estimate_sigma_data(torch.ones(4))


# -- SDE preconditioning against exact mixtures --------------------------------------------------------
def _mixture():
    return GaussianMixture([0.3, 0.7], [[-1.0, 0.5], [1.5, -0.5]], [[0.2, 0.1], [0.3, 0.05]])


class _Oracle(nn.Module):
    """A raw network built from the exact mixture: the exact prediction at (x_t, t), recovered from c_noise."""

    def __init__(self, gm, precond):
        super().__init__()
        self.gm = gm
        object.__setattr__(self, "pre", precond)  # no module cycle

    def forward(self, x, c_noise, class_labels=None, extra=None):
        pre = self.pre
        if pre.time_scale is not None:
            t = c_noise / pre.time_scale
        elif pre.sde_name == "edm":
            t = torch.exp(4 * c_noise)
        else:
            t = c_noise
        if pre.sigma_data is not None:  # undo the input scaling
            a, s = pre.sde.marginal_scale(t), pre.sde.marginal_std(t)
            x = x * torch.sqrt(a * a * pre.sigma_data**2 + s * s)[:, None]
        score = self.gm.score(x, t, pre.sde)
        return convert_prediction(score, x, t, pre.sde, source="score", target=pre.prediction)


def _oracle_precond(sde, prediction, **kw):
    pre = SDEPrecond(nn.Identity(), sde=sde, prediction=prediction, **kw)
    pre.net = _Oracle(_mixture(), pre)
    return pre


@pytest.mark.parametrize("sde", sorted(SDES))
@pytest.mark.parametrize("prediction", PREDICTIONS)
def test_sde_precond_oracle_reproduces_exact_denoiser(sde, prediction):
    pre = _oracle_precond(sde, prediction)
    gm = _mixture()
    g = torch.Generator().manual_seed(0)
    x = 2 * torch.randn(16, 2, generator=g, dtype=torch.float64)
    sig = torch.logspace(-1.5, 1.0, 16, dtype=torch.float64)
    assert torch.allclose(pre(x, sig), gm.denoiser_sigma(x, sig), rtol=1e-8, atol=1e-8)
    # raw_model is the prediction in the SDE's own variables (what its losses train).
    t = torch.linspace(0.05, 0.9, 16, dtype=torch.float64) * pre.sde.T
    xt = 2 * torch.randn(16, 2, generator=g, dtype=torch.float64)
    want = convert_prediction(gm.score(xt, t, pre.sde), xt, t, pre.sde, source="score", target=prediction)
    assert torch.allclose(pre.raw_model(xt, t), want, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("kw", [{"time_scale": 999.0}, {"sigma_data": 1.2}, {"sde_args": {"sigma_max": 10.0}}])
def test_sde_precond_options_keep_the_exact_denoiser(kw):
    pre = _oracle_precond("ve", "eps", **kw)
    x = torch.randn(8, 2, dtype=torch.float64)
    sig = torch.logspace(-1, 0.8, 8, dtype=torch.float64)
    assert torch.allclose(pre(x, sig), _mixture().denoiser_sigma(x, sig), rtol=1e-8, atol=1e-8)


def test_sde_precond_noise_conditioning():
    t = torch.tensor([0.1, 0.5], dtype=torch.float64)
    assert torch.equal(SDEPrecond(_mlp(), "vp").c_noise(t), t)
    assert torch.equal(SDEPrecond(_mlp(), "vp", time_scale=999.0).c_noise(t), 999.0 * t)
    assert torch.allclose(SDEPrecond(_mlp(), "edm").c_noise(t), torch.log(t) / 4)
    pre = SDEPrecond(_mlp(), "subvp", sde_args={"beta_max": 10.0})
    assert type(pre.sde) is SDES["subvp"] and float(pre.sde.beta_max) == 10.0


# -- classifier-free guidance --------------------------------------------------------------------------
def _cfg_parts(dtype=torch.float64):
    d = EDMPrecond(_mlp(num_classes=4, n_extra=1).to(dtype), sigma_data=1.0)
    g = torch.Generator().manual_seed(2)
    x = torch.randn(6, 2, generator=g, dtype=dtype)
    sig = torch.rand(6, generator=g, dtype=dtype) + 0.1
    y = torch.randint(0, 4, (6,), generator=g)
    extra = torch.randn(6, 1, generator=g, dtype=dtype)
    return d, x, sig, y, extra


def test_cfg_zero_guidance_is_the_conditional_denoiser():
    d, x, sig, y, extra = _cfg_parts()
    cond = d(x, sig, class_labels=y, extra=extra)
    assert torch.equal(ClassifierFreeGuidance(d)(x, sig, class_labels=y, extra=extra), cond)
    # A tensor w = 0 goes through the batched 2B call: equal up to the batched matmul's rounding.
    out = guided(d, 3.0)(x, sig, class_labels=y, extra=extra, guidance=torch.zeros(6, dtype=x.dtype))
    assert torch.allclose(out, cond, rtol=1e-12, atol=1e-12)


@given(w=st.floats(-1.0, 10.0))
@settings(max_examples=10)
def test_cfg_matches_both_conventions(w):
    d, x, sig, y, extra = _cfg_parts()
    cond = d(x, sig, class_labels=y, extra=extra)
    null = d(x, sig, class_labels=torch.full_like(y, 4), extra=extra)
    out = guided(d, w)(x, sig, class_labels=y, extra=extra)
    assert torch.allclose(out, cond + w * (cond - null), rtol=1e-10, atol=1e-10)  # Ho & Salimans
    s = scale_from_guidance(w)
    assert s == 1 + w and guidance_from_scale(s) == pytest.approx(w, abs=1e-12)
    assert torch.allclose(out, null + s * (cond - null), rtol=1e-10, atol=1e-10)  # the s = 1 + w convention


def test_cfg_per_example_guidance_and_override():
    d, x, sig, y, extra = _cfg_parts()
    wv = torch.tensor([0.0, 0.5, 1.0, 2.0, 4.0, -1.0], dtype=torch.float64)
    cfg = ClassifierFreeGuidance(d, guidance=7.0)
    out = cfg(x, sig, class_labels=y, extra=extra, guidance=wv)
    for i in range(6):
        row = cfg(x[i:i + 1], sig[i:i + 1], class_labels=y[i:i + 1], extra=extra[i:i + 1], guidance=float(wv[i]))
        assert torch.allclose(out[i:i + 1], row, rtol=1e-10, atol=1e-10)
    # w = −1 is the unconditional model; no labels means ∅ whatever w.
    null = d(x, sig, class_labels=torch.full_like(y, 4), extra=extra)
    assert torch.allclose(cfg(x, sig, class_labels=y, extra=extra, guidance=-1.0), null, rtol=1e-10, atol=1e-10)
    assert torch.equal(cfg(x, sig, extra=extra), d(x, sig, extra=extra))
    assert cfg.null_label == 4 == d.null_label


def test_cfg_errors():
    d, x, sig, y, _ = _cfg_parts()
    with pytest.raises(ValueError, match="guidance"):
        guided(d, 1.0)(x, sig, class_labels=y, guidance=torch.ones(5, dtype=x.dtype))
    with pytest.raises(ValueError, match="guidance"):
        guided(d, float("nan"))
    with pytest.raises(ValueError, match="null_label"):
        ClassifierFreeGuidance(lambda x, sigma, class_labels=None: x)
    with pytest.raises(ValueError, match="class_labels"):
        guided(d, 1.0)(x, sig, class_labels=y[:3])


# -- samplers ------------------------------------------------------------------------------------------
def test_heun_passes_labels_and_keeps_no_graph():
    d = EDMPrecond(_mlp(num_classes=3), sigma_data=1.0)
    sigmas = karras_sigmas(6, 0.01, 10.0)
    x = 10.0 * torch.randn(4, 2, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([0, 1, 2, 3])
    r1 = sample_heun(d, x, sigmas, model_kwargs={"class_labels": y})
    r2 = sample_heun(d, x, sigmas, model_kwargs={"class_labels": (y + 1) % 4})
    assert r1.x.shape == x.shape and bool(torch.isfinite(r1.x).all())
    assert not torch.allclose(r1.x, r2.x)  # the labels reached the network
    assert torch.equal(r1.x, sample_heun(d, x, sigmas, model_kwargs={"class_labels": y}).x)
    assert r1.x.grad_fn is None and not r1.x.requires_grad


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_every_sampler_runs_guided_conditional_models(name):
    d = guided(EDMPrecond(_mlp(num_classes=3, n_extra=1), sigma_data=1.0), 2.0)
    sigmas = karras_sigmas(5, 0.02, 5.0)
    x = 5.0 * torch.randn(3, 2, generator=torch.Generator().manual_seed(1))
    kwargs = {"class_labels": torch.tensor([0, 1, 2]), "extra": torch.ones(3, 1), "guidance": torch.ones(3)}
    r = sample(name, d, x, sigmas, generator=0, model_kwargs=kwargs)
    assert r.x.shape == x.shape and bool(torch.isfinite(r.x).all()) and r.x.grad_fn is None


def test_unet_under_sde_precond_samples():
    pre = SDEPrecond(_unet(num_classes=2), sde="vp", prediction="eps")
    sigmas = karras_sigmas(3, 0.05, 5.0)
    x = 5.0 * torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    r = sample_heun(pre, x, sigmas, model_kwargs={"class_labels": torch.tensor([0, 2])})
    assert r.x.shape == x.shape and bool(torch.isfinite(r.x).all())


# -- errors name the argument --------------------------------------------------------------------------
def test_network_input_errors():
    net = _mlp(num_classes=3, n_extra=2)
    x, c = torch.randn(4, 2), torch.zeros(4)
    with pytest.raises(ValueError, match=r"class_labels must lie in \[0, 3\]"):
        net(x, c, class_labels=torch.tensor([0, 1, 4, 0]))
    with pytest.raises(ValueError, match="class_labels must lie"):
        net(x, c, class_labels=torch.tensor([0, -1, 0, 0]))
    with pytest.raises(TypeError, match="class_labels must be an integer"):
        net(x, c, class_labels=torch.zeros(4))
    with pytest.raises(ValueError, match=r"class_labels must have shape \(4,\)"):
        net(x, c, class_labels=torch.zeros(4, 1, dtype=torch.long))
    with pytest.raises(ValueError, match=r"extra must have shape \(4, 2\)"):
        net(x, c, extra=torch.zeros(4, 1))
    with pytest.raises(ValueError, match=r"x must have shape \(B, 2\)"):
        net(torch.randn(4, 3), c)
    with pytest.raises(ValueError, match="c_noise must have shape"):
        net(x, torch.zeros(3))
    plain = _mlp()
    with pytest.raises(ValueError, match="num_classes=0"):
        plain(x, c, class_labels=torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="n_extra=0"):
        plain(x, c, extra=torch.zeros(4, 1))
    with pytest.raises(ValueError, match=r"x must have shape \(B, 1, 8, 8\)"):
        _unet()(torch.randn(2, 1, 4, 4), torch.zeros(2))


def test_constructor_and_wrapper_errors():
    with pytest.raises(ValueError, match="image_size"):
        UNet(image_size=6, channels=(8, 16, 32))
    with pytest.raises(ValueError, match="embedding"):
        MLPNet(embedding="learned")
    with pytest.raises(ValueError, match="modulation"):
        MLPNet(modulation="gate")
    with pytest.raises(ValueError, match="num_features must be even"):
        NoiseFeatures(3)
    with pytest.raises(ValueError, match="sigma_data"):
        EDMPrecond(_mlp(), sigma_data=0.0)
    with pytest.raises(ValueError, match="sde must be one of"):
        SDEPrecond(_mlp(), sde="ddpm")
    with pytest.raises(ValueError, match="prediction"):
        SDEPrecond(_mlp(), prediction="noise")
    with pytest.raises(TypeError, match="sde_args"):
        SDEPrecond(_mlp(), sde="vp", sde_args={"sigma_max": 3.0})
    d = EDMPrecond(_mlp())
    x = torch.randn(3, 2)
    with pytest.raises(ValueError, match=r"sigma must be a scalar or have shape \(3,\)"):
        d(x, torch.ones(2))
    with pytest.raises(ValueError, match="sigma must be >= 0"):
        d(x, -1.0)
    with pytest.raises(TypeError, match="extra"):
        d(x, 1.0, extras=None)
