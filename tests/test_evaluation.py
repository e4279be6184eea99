"""A model's error as numbers against the exact mixture references (score_error, nll_gap, sampler_error)."""

import math

import pytest
import torch

import sdeflow as sf
from sdeflow.generative.evaluation import nll_gap, sampler_error, score_error


@pytest.fixture(scope="module")
def gm():
    return sf.eight_gaussians()


def test_the_exact_denoiser_has_zero_error_and_a_shrunk_one_does_not(gm):
    exact = gm.as_denoiser()
    e = score_error(exact, gm, n=256)
    assert torch.equal(e.rms, torch.zeros_like(e.rms))

    def shrunk(x, s):  # D = 0.98 D*: the error is 0.02 ‖D*‖ at every σ, exactly
        return 0.98 * exact(x, s)

    w = score_error(shrunk, gm, n=256, generator=1)
    # the same draws as the reference computation below (same seed): RMS of 0.02 D*
    g = torch.Generator().manual_seed(1)
    for s, rms, rel in zip(w.sigmas.tolist(), w.rms.tolist(), w.relative.tolist(), strict=True):
        x0 = gm.sample(256, generator=g, dtype=torch.float64)
        x = x0 + s * torch.randn(x0.shape, generator=g, dtype=torch.float64)
        d = exact(x, torch.full((256,), s, dtype=torch.float64))
        assert rms == pytest.approx(float(0.02 * d.pow(2).sum(-1).mean().sqrt()), rel=1e-12)
        assert rel == pytest.approx(rms / float((d - x).pow(2).sum(-1).mean().sqrt()), rel=1e-12)
    assert "score rel. err" in w.table() and len(w.rows()) == len(w.sigmas)


def test_score_error_plot(gm, tmp_path):
    out = score_error(gm.as_denoiser(), gm, sigmas=[0.1, 1.0], n=64).plot(tmp_path / "err.png")
    assert out.read_bytes()[:4] == b"\x89PNG"


def test_nll_gap_is_near_zero_for_the_exact_denoiser_and_positive_for_a_wrong_one(gm):
    exact = nll_gap(gm.as_denoiser(), gm, n=32)
    # the same ODE solve with the exact score: the gap is the solver's error (rtol 1e-5), far below 0.01 nats
    assert abs(exact.gap) < 0.01 and abs(exact.exact_gap) < 0.01
    wrong = nll_gap(lambda x, s: 0.9 * gm.denoiser_sigma(x, s), gm, n=32)
    assert wrong.gap > 10 * wrong.gap_se > 0


def test_sampler_error_from_the_same_x_T(gm):
    den = gm.as_denoiser()
    same = sampler_error(den, gm, n=2000, steps=6)
    assert same.pathwise == 0.0 and same.delta_nll == same.exact_delta_nll and same.nfe == 11
    off = sampler_error(lambda x, s: den(x, s) + 0.05, gm, n=2000, steps=18)
    # a constant bias of the denoiser moves every sample off the exact trajectories and lowers the likelihood
    assert off.pathwise > 0.01 and math.isfinite(off.delta_nll)
    assert off.delta_nll > off.exact_delta_nll + 3 * math.hypot(off.delta_nll_se, off.exact_delta_nll_se)
    with pytest.raises(ValueError, match="unknown sampler"):
        sampler_error(den, gm, sampler="nope")
    with pytest.raises(ValueError, match="sigmas must be"):
        score_error(den, gm, sigmas=[0.0])


def test_call_model_runs_in_the_models_dtype_and_returns_in_the_callers():
    from sdeflow.generative.evaluation import call_model, model_device

    seen = {}

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.tensor(2.0))

        def forward(self, x, sigma, class_labels=None):
            seen.update(x=x.dtype, sigma=sigma.dtype, labels=class_labels.dtype, grad=torch.is_grad_enabled())
            return self.w * x + sigma[:, None]

    net = Net()
    x = torch.randn(4, 2, dtype=torch.float64, requires_grad=True)
    out = call_model(net, x, torch.ones(4, dtype=torch.float64), {"class_labels": torch.arange(4)})
    assert out.dtype == torch.float64 and out.device == x.device and not out.requires_grad
    assert seen == {"x": torch.float32, "sigma": torch.float32, "labels": torch.int64, "grad": False}
    assert model_device(net) == torch.device("cpu") and model_device(lambda x, s: x) == torch.device("cpu")
    # grad=True keeps the graph through the dtype moves (the log-likelihood's divergence needs it)
    out = call_model(net, x, torch.ones(4, dtype=torch.float64), {"class_labels": torch.arange(4)}, grad=True)
    (g,) = torch.autograd.grad(out.sum(), x)
    assert torch.allclose(g, torch.full_like(g, 2.0))
    with pytest.raises(ValueError, match="must return a tensor"):
        call_model(lambda x, s: None, x, torch.ones(4))


@pytest.mark.cuda
def test_evaluation_of_a_cuda_model_against_the_cpu_references(gm):
    net = sf.EDMPrecond(sf.MLPNet(2, hidden=32, depth=1), sigma_data=2.8).cuda()
    se = sampler_error(net, gm, steps=6, n=256)
    assert math.isfinite(se.delta_nll) and math.isfinite(se.pathwise)
    assert all(math.isfinite(r["rms"]) for r in score_error(net, gm, n=64).rows())
    assert math.isfinite(nll_gap(net, gm, n=16).gap)
