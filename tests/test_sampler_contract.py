"""The sampler contract for trained networks: no autograd graph by default, conditioning, mixed precision,
per-sample noise, compile without touching the model, and one declaration per sampler."""

import copy
import gc
import warnings
import weakref

import pytest
import torch

import sdeflow as sf
from sdeflow._cache import object_cache
from sdeflow.generative.samplers import SAMPLER_SPECS, SamplerSpec, sampler, sampler_spec

M, S = 0.3, 0.5


def gauss_denoiser(x, sigma, **kwargs):
    """Exact denoiser of N(M, S² I) data, elementwise (rows never mix, so per-sample results are bitwise)."""
    s = sigma.reshape((-1,) + (1,) * (x.dim() - 1))
    return M + (S * S / (S * S + s * s)) * (x - M)


class TinyDenoiser(torch.nn.Module):
    """A small network denoiser D(x, σ) = c_skip x + c_out F([c_in x, log σ]) (EDM preconditioning)."""

    def __init__(self, dim=2, width=16):
        super().__init__()
        torch.manual_seed(0)
        self.net = torch.nn.Sequential(torch.nn.Linear(dim + 1, width), torch.nn.SiLU(), torch.nn.Linear(width, dim))

    def forward(self, x, sigma):
        s = sigma[:, None]
        c_in = torch.rsqrt(1 + s * s)
        return x / (1 + s * s) + self.net(torch.cat([x * c_in, torch.log(s) / 4], dim=1)) * s * c_in


SCHED = sf.karras_sigmas(6, 0.01, 10.0)


def _start(b=8, dtype=torch.float32, seed=0):
    return sf.initial_noise((b, 2), SCHED, generator=seed, dtype=dtype)


# -- 1. no autograd graph unless asked -------------------------------------------------------------------
def test_sample_euler_builds_no_graph_by_default_and_one_when_asked():
    net = TinyDenoiser()
    x = _start()
    out = sf.sample_euler(net, x, SCHED).x
    assert out.grad_fn is None and not out.requires_grad
    res = sf.sample_euler(net, x, SCHED, enable_grad=True)
    assert res.x.grad_fn is not None
    res.x.square().sum().backward()
    assert all(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in net.parameters())
    torch.testing.assert_close(res.x.detach(), out, rtol=0, atol=0)  # same samples either way


@pytest.mark.parametrize("name", list(sf.SAMPLERS))
def test_every_sampler_builds_no_graph_even_from_a_leaf_that_requires_grad(name):
    net = TinyDenoiser()
    x = _start().requires_grad_(True)
    assert sf.sample(name, net, x, SCHED, generator=1).x.grad_fn is None
    with pytest.raises(TypeError, match="enable_grad must be True or False"):
        sf.sample(name, net, x, SCHED, enable_grad="yes")


def test_a_custom_sampler_on_sampler_run_gets_graph_free_denoiser_calls():
    net = TinyDenoiser()
    run = sf.SamplerRun("custom", net, _start(), SCHED)
    assert run.denoise(run.x0, 1.0).grad_fn is None
    run = sf.SamplerRun("custom", net, _start(), SCHED, enable_grad=True)
    assert run.denoise(run.x0, 1.0).grad_fn is not None


# -- 2. conditioning ---------------------------------------------------------------------------------------
class Recorder:
    """A class-conditional denoiser with guidance scale w that records the extra arguments of every call."""

    def __init__(self):
        self.calls = []

    def __call__(self, x, sigma, class_labels=None, w=None):
        self.calls.append({"class_labels": class_labels, "w": w})
        shift = 0.1 * w * class_labels.to(x.dtype)[:, None]
        return gauss_denoiser(x, sigma) + shift


@pytest.mark.parametrize("name", list(sf.SAMPLERS))
def test_model_kwargs_reach_every_network_call_unchanged(name):
    rec = Recorder()
    y = torch.arange(8) % 3
    res = sf.sample(name, rec, _start(dtype=torch.float64), SCHED, generator=1,
                    model_kwargs={"class_labels": y, "w": 2.5})
    assert len(rec.calls) == res.nfe > 0
    assert all(c["class_labels"] is y and c["w"] == 2.5 for c in rec.calls)
    # the conditioning changes the samples (it is used, not dropped)
    other = sf.sample(name, Recorder(), _start(dtype=torch.float64), SCHED, generator=1,
                      model_kwargs={"class_labels": y, "w": 0.0})
    assert not torch.equal(res.x, other.x)


def test_model_kwargs_must_be_a_mapping():
    with pytest.raises(TypeError, match="model_kwargs must be a mapping"):
        sf.sample_euler(gauss_denoiser, _start(), SCHED, model_kwargs=[1, 2])


def test_model_kwargs_with_compile_reuse_one_compiled_function():
    """compile=True with conditioning: no new function per call, so the second run compiles nothing."""
    rec_model = _CondNet()
    y = torch.arange(8) % 3
    kw = {"class_labels": y, "w": 1.5}
    eager = sf.sample_heun(rec_model, _start(), SCHED, model_kwargs=kw).x
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RuntimeWarning)  # a CPU without a compiler falls back eagerly
        first = sf.sample_heun(rec_model, _start(), SCHED, model_kwargs=kw, compile=True)
        second = sf.sample_heun(rec_model, _start(), SCHED, model_kwargs=kw, compile=True)
    if not any("torch.compile" in str(w.message) for w in caught):
        assert first.info["compile_time"] > 0  # it did compile, once
    torch.testing.assert_close(first.x, eager, rtol=1e-5, atol=1e-5)  # compiled kernels may reassociate
    torch.testing.assert_close(second.x, first.x, rtol=0, atol=0)
    assert second.info.get("compile_time", 0.0) == 0.0
    assert list(object_cache(rec_model, "compiled")) == ["denoiser"]


class _CondNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = torch.nn.Embedding(3, 2)

    def forward(self, x, sigma, class_labels, w):
        return gauss_denoiser(x, sigma) + 0.1 * w * self.emb(class_labels)


# -- 3. mixed precision --------------------------------------------------------------------------------------
@pytest.mark.parametrize("low", [torch.bfloat16, torch.float16])
def test_low_precision_network_output_is_cast_to_the_state_dtype(low):
    x = _start(dtype=torch.float32)

    def half_net(x, sigma):  # a network run in low precision (e.g. under autocast)
        return gauss_denoiser(x.to(low), sigma.to(low))

    def upcast(x, sigma):  # the same outputs, cast by hand: what the sampler must do
        return half_net(x, sigma).to(torch.float32)

    for name in sf.SAMPLERS:
        got = sf.sample(name, half_net, x, SCHED, generator=1)
        assert got.x.dtype == torch.float32, name
        torch.testing.assert_close(got.x, sf.sample(name, upcast, x, SCHED, generator=1).x, rtol=0, atol=0,
                                   msg=name)


def test_non_float_network_output_raises():
    with pytest.raises(TypeError, match="returns floating-point values"):
        sf.sample_euler(lambda x, s: x.to(torch.int64), _start(), SCHED)


# -- 4. per-sample reproducible noise ---------------------------------------------------------------------------
STOCHASTIC_RUNS = [(name, {}) for name, spec in SAMPLER_SPECS.items() if spec.stochastic and name != "pc"] + [
    ("pc", {"corrector_norm": "sample"}), ("heun", {"S_churn": 5.0})]


@pytest.mark.parametrize("seeds", ["list", "tensor", "generators"])
@pytest.mark.parametrize("name,opts", STOCHASTIC_RUNS)
def test_first_samples_of_a_batch_equal_a_smaller_batch_with_the_same_seeds(name, opts, seeds):
    def gens(n):
        if seeds == "list":
            return list(range(100, 100 + n))
        if seeds == "tensor":
            return torch.arange(100, 100 + n)
        return [torch.Generator().manual_seed(100 + i) for i in range(n)]

    x8 = sf.initial_noise((8, 2), SCHED, generator=gens(8), dtype=torch.float64)
    x4 = sf.initial_noise((4, 2), SCHED, generator=gens(4), dtype=torch.float64)
    assert torch.equal(x8[:4], x4)
    a = sf.sample(name, gauss_denoiser, x8, SCHED, generator=gens(8), **opts).x
    b = sf.sample(name, gauss_denoiser, x4, SCHED, generator=gens(4), **opts).x
    assert torch.equal(a[:4], b)
    c = sf.sample(name, gauss_denoiser, x8, SCHED, generator=gens(8)[::-1] if seeds != "tensor"
                  else gens(8).flip(0), **opts).x
    assert not torch.equal(a, c)  # the noise does depend on the seeds


def test_one_seed_for_the_batch_mixes_samples_and_pc_batch_norm_couples_them():
    """Why per-sample seeds exist: with one stream (the default, unchanged) or PC's batch-averaged norms,
    the first samples of a batch of 8 are not those of a batch of 4."""
    x8, x4 = _start(8, torch.float64), _start(8, torch.float64)[:4]
    a = sf.sample_euler_maruyama(gauss_denoiser, x8, SCHED, generator=1).x
    b = sf.sample_euler_maruyama(gauss_denoiser, x4, SCHED, generator=1).x
    assert not torch.equal(a[:4], b)
    seeds8, seeds4 = list(range(8)), list(range(4))
    a = sf.sample_pc(gauss_denoiser, x8, SCHED, generator=seeds8).x
    b = sf.sample_pc(gauss_denoiser, x4, SCHED, generator=seeds4).x
    assert not torch.equal(a[:4], b)


def test_an_int_seed_still_draws_the_whole_batch_from_one_generator():
    """The default stream is unchanged: noise from torch.Generator().manual_seed(seed), batch-shaped."""
    x = _start(8, torch.float64)
    drawn = []

    def record(sigma, sigma_next):
        z = torch.randn((8, 2), generator=gen, dtype=torch.float64)
        drawn.append((sigma, sigma_next))
        return z

    gen = torch.Generator().manual_seed(5)
    via_sampler = sf.sample_euler_maruyama(gauss_denoiser, x, SCHED, noise_sampler=record).x
    assert torch.equal(sf.sample_euler_maruyama(gauss_denoiser, x, SCHED, generator=5).x, via_sampler)
    levels = SCHED.tolist()
    assert drawn == list(zip(levels[:-2], levels[1:-1], strict=True))  # one draw per step to σ > 0


def test_noise_sampler_is_called_with_each_steps_interval():
    calls = []

    def ns(sigma, sigma_next):
        calls.append((sigma, sigma_next))
        return torch.zeros(8, 2)

    x = _start()
    sf.sample_heun(gauss_denoiser, x, SCHED, S_churn=5.0, noise_sampler=ns)
    assert len(calls) == 6 and all(b > a for a, b in calls)  # churn raises σ to σ̂
    calls.clear()
    sf.sample_pc(gauss_denoiser, x, SCHED, noise_sampler=ns)
    assert len(calls) == 5 + 5 and calls[1][0] == calls[1][1]  # predictor (σ_i, σ_i+1), corrector (σ_i+1, σ_i+1)
    with pytest.raises(ValueError, match="either generator or noise_sampler"):
        sf.sample_pc(gauss_denoiser, x, SCHED, noise_sampler=ns, generator=0)
    with pytest.raises(ValueError, match="must return a tensor of the state's shape"):
        sf.sample_euler_maruyama(gauss_denoiser, x, SCHED, noise_sampler=lambda a, b: torch.zeros(3))
    with pytest.raises(TypeError, match="noise_sampler must be callable"):
        sf.sample_euler_maruyama(gauss_denoiser, x, SCHED, noise_sampler=3)


def test_per_sample_seed_errors():
    x = _start()
    with pytest.raises(ValueError, match="3 per-sample seeds/generators for a batch of 8"):
        sf.sample_euler_maruyama(gauss_denoiser, x, SCHED, generator=[1, 2, 3])
    with pytest.raises(TypeError, match="1-D integer tensor"):
        sf.sample_euler_maruyama(gauss_denoiser, x, SCHED, generator=torch.zeros(8))
    with pytest.raises(TypeError, match="generator must be"):
        sf.sample_euler_maruyama(gauss_denoiser, x, SCHED, generator=[1.5] * 8)


# -- 5. compile=True leaves the model alone ------------------------------------------------------------------------
def _no_sdeflow_keys(obj):
    return not any("sdeflow" in k for k in vars(obj))


def test_compile_does_not_write_into_the_model_and_deepcopy_works():
    net = TinyDenoiser()
    x = _start()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # compilation may fail on a CPU and fall back
        res = sf.sample_euler(net, x, SCHED, compile=True)
    assert _no_sdeflow_keys(net)
    twin = copy.deepcopy(net)  # how every EMA copy starts
    torch.testing.assert_close(sf.sample_euler(twin, x, SCHED).x, res.x, rtol=1e-5, atol=1e-5)
    fn = object_cache(net, "compiled")["denoiser"]
    assert _no_sdeflow_keys(fn)  # nor into the compiled function (compile signatures: sdeflow._cache too)
    # the cache does not keep the model alive
    ref = weakref.ref(net)
    del net, fn
    gc.collect()
    assert ref() is None


def test_compile_of_a_function_denoiser_leaves_the_function_alone():
    den = sf.eight_gaussians().as_denoiser()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        sf.sample_euler(den, _start(), SCHED, compile=True)
    assert _no_sdeflow_keys(den)
    copy.deepcopy(den)


# -- 6. one declaration per sampler -------------------------------------------------------------------------------
def test_specs_are_declared_once_and_fill_the_registry():
    assert set(SAMPLER_SPECS) == set(sf.SAMPLERS)
    for name, spec in SAMPLER_SPECS.items():
        assert isinstance(spec, SamplerSpec) and spec.name == name and spec.fn is sf.SAMPLERS[name]
        assert sampler_spec(name) is spec and sampler_spec(sf.SAMPLERS[name]) is spec
    assert sampler_spec("pc").nfe_for(10, corrector_steps=3) == 10 + 3 * 9
    assert sampler_spec("pc").nfe_for(10, snr=0.0) == 10
    assert sampler_spec("adaptive").nfe_for(10) is None
    assert sampler_spec("euler_maruyama").order_kind == "weak" and sampler_spec("euler_maruyama").stochastic
    from sdeflow.generative.checks import SAMPLER_ORDERS  # verify's order checks read the same declarations

    builtin = {n: s.order for n, s in SAMPLER_SPECS.items() if (s.fn.__module__ or "").startswith("sdeflow.")
               and s.order is not None and s.order_kind == "ode" and not s.stochastic}
    assert SAMPLER_ORDERS == builtin and set(builtin) == {"euler", "heun", "dpmpp_2m", "dpmpp_3m", "unipc"}
    with pytest.raises(ValueError, match="unknown sampler"):
        sampler_spec("ddim")
    with pytest.raises(TypeError, match="no spec"):
        sampler_spec(gauss_denoiser)


def test_a_user_sampler_declared_with_the_decorator_runs_by_name():
    @sampler("test_midpoint", order=2.0, nfe=lambda steps: 2 * steps - 1, stochastic=False)
    def sample_midpoint(model, x, schedule, **common):
        run = sf.SamplerRun("test_midpoint", model, x, schedule, **common)
        for i, s, s_next in run.steps():
            den = run.denoise(x, s)
            if s_next == 0:
                x = den
            else:
                s_mid = (s * s_next) ** 0.5
                x_mid = x + (s_mid - s) * (x - den) / s
                x = x + (s_next - s) * (x_mid - run.denoise(x_mid, s_mid)) / s_mid
            run.report(i, x, s, s_next, den)
        return run.result(x)

    try:
        net = TinyDenoiser()
        res = sf.sample("test_midpoint", net, _start(), SCHED)
        assert res.nfe == sampler_spec("test_midpoint").nfe_for(6) == 11
        assert res.x.grad_fn is None  # the decorator runs it under no_grad
        with pytest.raises(ValueError, match="already registered"):
            sampler("test_midpoint", order=1.0, nfe=None, stochastic=False)(lambda *a, **k: None)
        unregistered = sampler("test_other", order=None, nfe=None, stochastic=False, register=False)(sample_midpoint)
        assert "test_other" not in sf.SAMPLERS and unregistered.spec.name == "test_other"
    finally:
        sf.SAMPLERS.pop("test_midpoint", None)
        SAMPLER_SPECS.pop("test_midpoint", None)
    with pytest.raises(ValueError, match="order must be a positive number"):
        sampler("bad", order=-1.0, nfe=None, stochastic=False)


# -- a Brownian tree as the noise source ---------------------------------------------------------------------------
def _em_error_to_fine(noise_for, x, ns, fine=640):
    ref = sf.sample_euler_maruyama(gauss_denoiser, x, sf.karras_sigmas(fine, 0.01, 10.0), **noise_for()).x
    return [float((sf.sample_euler_maruyama(gauss_denoiser, x, sf.karras_sigmas(n, 0.01, 10.0),
                                             **noise_for()).x - ref).pow(2).mean().sqrt()) for n in ns]


def test_brownian_tree_noise_refines_one_path():
    """With a Brownian tree, Euler–Maruyama converges pathwise as the schedule is refined (additive noise:
    strong order 1, so 4x the steps cut the error about 4x; 2x is asked); with a seeded generator each
    run's noise is unrelated and the distance to the fine run stays O(1)."""
    from sdeflow.generative.samplers import BrownianTreeNoise

    x = _start(64, torch.float64)
    errs = _em_error_to_fine(lambda: {"noise_sampler": BrownianTreeNoise(x, 0.01, 10.0, seed=3)}, x, [20, 80])
    assert errs[1] < errs[0] / 2, errs
    indep = _em_error_to_fine(lambda: {"generator": 3}, x, [20, 80])
    assert min(indep) > 0.3 > errs[1], (indep, errs)  # O(S) = O(0.5) spread between unrelated paths


def test_brownian_tree_noise_per_sample_seeds_and_errors():
    from sdeflow.generative.samplers import BrownianTreeNoise

    x8, x4 = _start(8, torch.float64), _start(8, torch.float64)[:4]
    a = sf.sample_euler_maruyama(gauss_denoiser, x8, SCHED, noise_sampler=BrownianTreeNoise(x8, 0.01, 10.0,
                                                                                            seed=list(range(8)))).x
    b = sf.sample_euler_maruyama(gauss_denoiser, x4, SCHED, noise_sampler=BrownianTreeNoise(x4, 0.01, 10.0,
                                                                                            seed=list(range(4)))).x
    assert torch.equal(a[:4], b)
    z = BrownianTreeNoise(torch.zeros(20000, 1, dtype=torch.float64), 0.01, 10.0, seed=1)(5.0, 4.0)
    # standard normal: mean within 4 SE (SE = 1/sqrt(20000) = 0.007), variance within 4 SE (sqrt(2/n) = 0.01)
    assert abs(float(z.mean())) < 0.03 and abs(float(z.var()) - 1.0) < 0.04
    with pytest.raises(ValueError, match="zero-length interval"):
        sf.sample_pc(gauss_denoiser, x8, SCHED, noise_sampler=BrownianTreeNoise(x8, 0.01, 10.0))
    with pytest.raises(ValueError, match="leaves the tree's range"):
        sf.sample_euler_maruyama(gauss_denoiser, x8, SCHED, noise_sampler=BrownianTreeNoise(x8, 0.1, 10.0))
    with pytest.raises(ValueError, match="3 per-sample seeds for a batch of 8"):
        BrownianTreeNoise(x8, 0.01, 10.0, seed=[1, 2, 3])
    with pytest.raises(ValueError, match="sigma_min < sigma_max"):
        BrownianTreeNoise(x8, 1.0, 0.5)


# -- the reproduction: a network on a VP SDE through denoiser_from_model ------------------------------------
class _EpsNet(torch.nn.Module):
    """An ε-prediction network eps(x_t, t, class_labels) on the VP SDE (untrained: only the plumbing is tested)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        self.net = torch.nn.Sequential(torch.nn.Linear(3, 16), torch.nn.SiLU(), torch.nn.Linear(16, 2))
        self.emb = torch.nn.Embedding(3, 2)
        self.seen = []

    def forward(self, x, t, class_labels):
        self.seen.append(class_labels)
        return self.net(torch.cat([x, t[:, None]], dim=1)) + self.emb(class_labels)


def test_a_vp_network_through_denoiser_from_model_samples_without_graph_and_with_labels():
    net = _EpsNet()
    den = sf.denoiser_from_model(net, sf.VPSDE(), prediction="eps")
    sched = sf.vp_sigmas(8)
    x = sf.initial_noise((8, 2), sched, generator=0)
    y = torch.arange(8) % 3
    res = sf.sample_heun(den, x, sched, model_kwargs={"class_labels": y})
    assert res.x.grad_fn is None and torch.isfinite(res.x).all()
    assert len(net.seen) == res.nfe and all(lab is y for lab in net.seen)
    assert sf.sample_heun(den, x, sched, model_kwargs={"class_labels": y}, enable_grad=True).x.grad_fn is not None
