"""Groundwork for trained networks: noise levels on the SDE, constants outside state_dict, one noise
operator, one divergence, caches kept outside users' objects."""

import copy
import gc

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import sdeflow as sf
from sdeflow._cache import _TABLES, object_cache
from sdeflow.calculus import EXACT_MAX_DIM, divergence
from sdeflow.sde._gaussian import DiffusionSDE
from sdeflow.sde.noise_op import noise_op_for

F64 = torch.float64
DIFFUSION_SDES = [sf.VPSDE, sf.SubVPSDE, sf.VESDE, sf.EDMSDE]


# -- noise levels ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("cls", DIFFUSION_SDES)
def test_closed_form_time_at_noise_level_matches_the_generic_inverse(cls):
    sde = cls()
    t = torch.linspace(sde.eps, sde.T, 40, dtype=F64)
    sig = sde.noise_level(t)
    closed = sde.time_at_noise_level(sig)
    generic = DiffusionSDE.time_at_noise_level(sde, sig)  # the fallback other schedules get
    torch.testing.assert_close(closed, t, rtol=1e-12, atol=1e-13)
    # The bisection resolves t to T·2^-64; its error is float64 round-off of σ̃ near t (rtol 1e-9 covers
    # the flat start of VP/sub-VP, where dσ̃/dt is small).
    torch.testing.assert_close(generic, t, rtol=1e-9, atol=1e-12)
    assert sde.noise_level(sde.time_at_noise_level(torch.tensor(0.7, dtype=F64))).item() == pytest.approx(0.7,
                                                                                                         rel=1e-12)


def test_noise_level_methods_need_no_type_dispatch():
    class CosineVP(sf.VPSDE):  # another schedule: only the generic inverse applies
        def marginal_scale(self, t):
            t = torch.as_tensor(t, dtype=F64)
            return torch.cos(0.5 * torch.pi * t / 1.1)

        def marginal_std(self, t):
            return torch.sqrt(1 - self.marginal_scale(t) ** 2)

    sde = CosineVP()
    assert type(sde).time_at_noise_level is sf.VPSDE.time_at_noise_level  # inherits VP's closed form ...
    t = torch.linspace(0.05, 0.9, 9, dtype=F64)
    sig = sde.noise_level(t)
    # ... which is wrong for this schedule; the generic inverse is right:
    assert (sde.time_at_noise_level(sig) - t).abs().max() > 1e-3
    torch.testing.assert_close(DiffusionSDE.time_at_noise_level(sde, sig), t, rtol=1e-10, atol=1e-12)
    # float32 input keeps its dtype; integer input is promoted
    assert DiffusionSDE.time_at_noise_level(sde, sig.float()).dtype == torch.float32
    assert sf.EDMSDE().time_at_noise_level(torch.tensor([1, 2])).dtype == F64


# -- constants are not state -------------------------------------------------------------------------------
def test_sde_constants_stay_out_of_state_dict_and_keep_their_dtype():
    vp = sf.VPSDE(beta_min=0.1, beta_max=20.0)
    net = torch.nn.Linear(2, 2)
    den = sf.denoiser_from_model(net, vp, prediction="eps")
    assert set(den.state_dict()) == {"model.weight", "model.bias"}
    den.to(torch.bfloat16)
    assert net.weight.dtype == torch.bfloat16
    assert vp.beta_min.dtype == F64 and vp.beta_min.item() == 0.1  # not rounded to bf16's 0.10009765625
    # a learnable parameter is state, and is cast
    ou = sf.OrnsteinUhlenbeck(theta=torch.nn.Parameter(torch.tensor(1.0)), mean=0.5, sigma=0.3)
    assert set(ou.state_dict()) == {"theta"}
    ou.half()
    assert ou.theta.dtype == torch.float16 and ou.mean.dtype == F64
    # load_state_dict round trip of the wrapping network
    den2 = sf.denoiser_from_model(torch.nn.Linear(2, 2), sf.VPSDE(), prediction="eps")
    den2.load_state_dict(sf.denoiser_from_model(torch.nn.Linear(2, 2), sf.VPSDE(), prediction="eps").state_dict())


def test_simulation_is_unchanged_by_a_dtype_round_trip_of_the_sde():
    ou = sf.OrnsteinUhlenbeck(theta=2.0, mean=0.5, sigma=0.3)
    a = sf.simulate(ou, torch.zeros(16, 2, dtype=F64), [0.0, 1.0], dt=1e-2, generator=3).final
    ou.to(torch.bfloat16).to(torch.float32)
    b = sf.simulate(ou, torch.zeros(16, 2, dtype=F64), [0.0, 1.0], dt=1e-2, generator=3).final
    assert torch.equal(a, b)


# -- caches outside users' objects ---------------------------------------------------------------------
def test_object_cache_lives_with_its_object_and_not_in_it():
    m = torch.nn.Linear(2, 2)
    object_cache(m, "test")["k"] = 1
    assert object_cache(m, "test") == {"k": 1}
    assert object_cache(torch.nn.Linear(2, 2), "test") == {}
    assert not any(k.startswith("_sdeflow") or k.endswith("_cache") for k in m.__dict__)
    copy.deepcopy(m)
    n_before = len(_TABLES["test"])
    del m
    gc.collect()
    assert len(_TABLES["test"]) == n_before - 1
    assert object_cache(3, "test") == {}  # not weak-referenceable: no caching, no error


def test_params_like_cache_is_outside_the_sde():
    ou = sf.OrnsteinUhlenbeck(theta=1.0, mean=0.5, sigma=0.3)
    sf.simulate(ou, torch.zeros(4, 2), [0.0, 0.1], dt=1e-2, generator=0)
    assert "_params_like_cache" not in ou.__dict__
    copy.deepcopy(ou)


# -- the noise operator ------------------------------------------------------------------------------------
def _dense(kind, g, x):
    b, d = x.shape[0], x[0].numel()
    if kind == "diagonal":
        return torch.diag_embed(g.expand(x.shape).reshape(b, d))
    if kind == "scalar":
        return g.expand(x.shape).reshape(b, d, 1)
    return g.expand(x.shape + (g.shape[-1],)).reshape(b, d, -1)


@given(kind=st.sampled_from(["diagonal", "scalar", "general", "additive"]),
       batch=st.integers(1, 4), event=st.lists(st.integers(1, 3), min_size=1, max_size=3),
       m=st.integers(1, 4), shared=st.booleans(), seed=st.integers(0, 2**16))
def test_noise_operator_products_agree_with_the_dense_matrix(kind, batch, event, m, shared, seed):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn((batch, *event), generator=gen, dtype=F64)
    op = noise_op_for(kind)
    if kind in ("diagonal", "scalar"):
        g = torch.randn(x.shape, generator=gen, dtype=F64)
    else:
        g = torch.randn(((batch,) if not shared else ()) + tuple(event) + (m,), generator=gen, dtype=F64)
    gm = _dense(kind, g, x)  # (B, d, m)
    dw = torch.randn(op.brownian_shape(x, g), generator=gen, dtype=F64)
    v = torch.randn(x.shape, generator=gen, dtype=F64)
    b = x.shape[0]
    assert op.brownian_size(x, g) == gm.shape[-1]
    want_prod = torch.bmm(gm, dw.reshape(b, -1, 1)).reshape(x.shape)
    torch.testing.assert_close(op.prod(g, dw, x).expand(x.shape), want_prod)
    torch.testing.assert_close(op.add(v, g, dw, x), v + want_prod)
    gtv = torch.bmm(gm.transpose(1, 2), v.reshape(b, -1, 1))
    torch.testing.assert_close(op.gt(g, v, x).reshape(b, -1), gtv.reshape(b, -1))
    torch.testing.assert_close(op.ggt(g, v, x), torch.bmm(gm, gtv).reshape(x.shape))
    torch.testing.assert_close(op.matrix(g, x), gm)


def test_the_sde_carries_its_noise_operator():
    assert sf.VPSDE().noise_op is noise_op_for("diagonal")
    with pytest.raises(ValueError, match="noise_type must be one of"):
        noise_op_for("diagnal")


# -- one divergence --------------------------------------------------------------------------------------------
def test_divergence_exact_and_hutchinson():
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(5, 5, generator=gen, dtype=F64)
    x = torch.randn(64, 5, generator=gen, dtype=F64)

    def field(z):
        return torch.tanh(z) @ a.T

    def exact_div(z):  # tr(A diag(1 - tanh²))
        return ((1 - torch.tanh(z) ** 2) * torch.diagonal(a)).sum(-1)

    out, div = divergence(field, x, method="exact")
    torch.testing.assert_close(out, field(x))
    torch.testing.assert_close(div, exact_div(x))
    _, auto = divergence(field, x)  # 5 <= EXACT_MAX_DIM: exact
    assert torch.equal(auto, div)
    # Hutchinson with many Rademacher probes: unbiased, per-point std ~ ||offdiag(J)||_F sqrt(2/P);
    # the mean over 64 points is within 4 of its standard errors of the exact mean.
    _, est = divergence(field, x, method="hutchinson", n_probes=400, generator=1)
    err = (est - div).mean().abs()
    se = (est - div).std() / 8
    assert err < 4 * se + 1e-12
    # fixed probes give a reproducible estimate
    probes = torch.ones(1, 64, 5, dtype=F64)
    _, p1 = divergence(field, x, probes=probes)
    _, p2 = divergence(field, x, probes=probes)
    assert torch.equal(p1, p2)


def test_divergence_auto_switches_to_hutchinson_above_the_exact_limit():
    d = EXACT_MAX_DIM + 1
    x = torch.randn(3, d, dtype=F64)
    calls = []

    def field(z):
        calls.append(1)
        return 2.0 * z

    _, div = divergence(field, x, generator=0)  # one probe: J = 2I gives exactly 2d for ±1 probes
    torch.testing.assert_close(div, torch.full((3,), 2.0 * d, dtype=F64))
    with pytest.raises(ValueError, match="method must be one of"):
        divergence(field, x, method="trace")
    with pytest.raises(ValueError, match="probes must have shape"):
        divergence(field, x, probes=torch.ones(2, 3, 4))
    with pytest.raises(ValueError, match="n_probes"):
        divergence(field, x, method="hutchinson", n_probes=0)


def test_log_likelihood_auto_trace_is_hutchinson_on_image_states(monkeypatch):
    # On a (1, 8, 8) state "auto" must not take 64 vector–Jacobian products per evaluation: count them.
    vp = sf.VPSDE()
    grads = {"n": 0}
    real_grad = torch.autograd.grad

    def counting_grad(*args, **kwargs):
        grads["n"] += 1
        return real_grad(*args, **kwargs)

    monkeypatch.setattr(torch.autograd, "grad", counting_grad)

    def score(x, t):
        return -x * (1 + 0.1 * t.reshape(-1, 1, 1, 1))

    x = torch.randn(2, 1, 8, 8, dtype=F64)
    auto = sf.log_likelihood(vp, score, x, method="euler", dt=0.25, generator=0)
    n_auto, grads["n"] = grads["n"], 0
    exact = sf.log_likelihood(vp, score, x, method="euler", dt=0.25, trace="exact")
    n_exact = grads["n"]
    assert n_exact == 64 * n_auto  # one probe per evaluation against one product per coordinate
    assert auto.nfe == exact.nfe
    # The score is linear in x, so the Jacobian is a multiple of I and a ±1 probe gives its trace exactly.
    torch.testing.assert_close(auto.log_prob, exact.log_prob, rtol=1e-10, atol=1e-10)
    with pytest.raises(ValueError, match="trace must be one of"):
        sf.log_likelihood(vp, score, x, trace="exactly")
