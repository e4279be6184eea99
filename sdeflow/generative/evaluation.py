"""A trained model's error as numbers, against the exact Gaussian-mixture references.

None of the anchors ships this: for Gaussian-mixture data the ideal denoiser, the score, the
log-density and the PF-ODE samples are exact (:class:`sdeflow.GaussianMixture`), so a learned
denoiser ``D_θ(x, σ, **cond)`` can be measured where it matters:

* :func:`score_error` — RMS of ``D_θ − D*`` and the relative score error ``‖s_θ − s*‖ / ‖s*‖``
  (``s = (D − x)/σ²``, so the ratio is ``‖D_θ − D*‖ / ‖D* − x‖``) at each noise level, over
  ``x = x_0 + σ ε`` with ``x_0`` from the mixture: *where in σ* the model is wrong;
* :func:`nll_gap` — the learned model's PF-ODE log-likelihood against the exact log-density at the
  same points (nats; the exact score's own gap, the integration error, is reported beside it);
* :func:`sampler_error` — ΔNLL of samples drawn with the learned denoiser and with the exact one by
  the same sampler from the same ``x_T``, and the pathwise RMS between them.

All work in the EDM form of the samplers (docs/concepts.md §4): ``D(x, σ)`` on ``x = x_0 + σ ε``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from .._checks import make_generator
from .metrics import mixture_sample_quality, pathwise_rms
from .mixture import GaussianMixture

__all__ = ["ScoreError", "score_error", "nll_gap", "NLLGap", "sampler_error", "SamplerError",
           "DEFAULT_SIGMAS", "model_dtype", "model_device", "call_model"]

#: Noise levels of the default score-error table (EDM's range, σ_min = 0.002 to σ_max = 80).
DEFAULT_SIGMAS: tuple[float, ...] = (0.002, 0.01, 0.05, 0.2, 0.5, 1.0, 2.0, 5.0, 20.0, 80.0)


def model_dtype(model: object, default: torch.dtype = torch.float64) -> torch.dtype:
    """The floating dtype of ``model``'s first parameter (``default`` for plain functions)."""
    params = getattr(model, "parameters", None)
    if callable(params):
        for p in params():
            if p.is_floating_point():
                return p.dtype
    return default


def model_device(model: object, default: torch.device | str = "cpu") -> torch.device:
    """The device of ``model``'s first parameter or buffer (``default`` for plain functions)."""
    for attr in ("parameters", "buffers"):
        items = getattr(model, attr, None)
        if callable(items):
            for p in items():
                return p.device
    return torch.device(default)


def _move(v: object, device: torch.device, dtype: torch.dtype) -> object:
    """A tensor onto the model's device (floating ones also to its dtype); anything else as it is."""
    if isinstance(v, Tensor):
        return v.to(device=device, dtype=dtype) if v.is_floating_point() else v.to(device)
    return v


def _move_kwargs(model_kwargs: Mapping[str, object] | None, device: torch.device, dtype: torch.dtype) -> dict:
    return {k: _move(v, device, dtype) for k, v in (model_kwargs or {}).items()}


def call_model(model: Callable[..., Tensor], x: Tensor, sigma: Tensor, model_kwargs: Mapping[str, object] | None = None,
               *, grad: bool = False) -> Tensor:
    """``model(x, σ, **model_kwargs)`` on the model's own device and dtype, returned in ``x``'s.

    The one place the evaluation tools cross from the reference computations (float64, on the CPU) to a
    network (float32 or bf16, on any device): ``x``, ``σ`` and tensor-valued ``model_kwargs`` (class labels)
    move to :func:`model_device` (floating ones to :func:`model_dtype`), the output comes back to ``x``'s
    device and dtype. Without gradients unless ``grad=True`` (the log-likelihood's divergence needs them;
    the moves are differentiable).
    """
    dtype = model_dtype(model, x.dtype)
    device = model_device(model, x.device)
    kwargs = _move_kwargs(model_kwargs, device, dtype)
    with torch.set_grad_enabled(grad and torch.is_grad_enabled()):
        out = model(_move(x, device, dtype), _move(sigma, device, dtype), **kwargs)
    if not isinstance(out, Tensor):
        raise ValueError(f"the model must return a tensor of x's shape {tuple(x.shape)}; got {type(out).__name__}.")
    return out.to(device=x.device, dtype=x.dtype)


@dataclass
class ScoreError:
    """Output of :func:`score_error`: one row per noise level.

    Attributes:
        sigmas: (S,) the noise levels.
        rms: (S,) ``sqrt(E‖D_θ − D*‖²)``, in data units.
        relative: (S,) ``sqrt(E‖D_θ − D*‖²) / sqrt(E‖D* − x‖²)``, the relative error of the score.
        n: points per level.
    """

    sigmas: Tensor
    rms: Tensor
    relative: Tensor
    n: int

    def rows(self) -> list[dict[str, float]]:
        """``[{"sigma", "rms", "relative"}, ...]``."""
        return [{"sigma": float(s), "rms": float(r), "relative": float(q)}
                for s, r, q in zip(self.sigmas, self.rms, self.relative, strict=True)]

    def table(self) -> str:
        """A fixed-width text table."""
        lines = [f"{'sigma':>8}  {'denoiser RMS':>12}  {'score rel. err':>14}"]
        lines += [f"{r['sigma']:>8.3g}  {r['rms']:>12.4g}  {r['relative']:>14.4g}" for r in self.rows()]
        return "\n".join(lines)

    def plot(self, path: str | Path) -> Path:
        """Save a log-log plot of both errors against σ (PNG, written atomically). Needs matplotlib."""
        from ..plots import pyplot, save_figure

        plt = pyplot()

        fig, ax = plt.subplots(figsize=(5.5, 3.8))
        ax.loglog(self.sigmas, self.rms, "o-", label="denoiser RMS ‖D_θ − D*‖")
        ax.loglog(self.sigmas, self.relative, "s--", label="relative score error")
        ax.set_xlabel("noise level σ")
        ax.set_ylabel("error")
        ax.set_title(f"learned vs exact denoiser ({self.n} points per σ)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
        fig.tight_layout()
        return save_figure(fig, path)


def score_error(
    model: Callable[..., Tensor],
    mixture: GaussianMixture,
    sigmas: Sequence[float] | Tensor = DEFAULT_SIGMAS,
    *,
    n: int = 4096,
    generator: torch.Generator | int | None = 0,
    model_kwargs: Mapping[str, object] | None = None,
) -> ScoreError:
    """The learned denoiser ``model(x, σ, **model_kwargs)`` against the mixture's exact one, per noise level.

    Args:
        model: a denoiser ``D(x, σ)`` (x (n, d), σ (n,)), e.g. ``EDMPrecond(net)`` or ``load_model(dir)``.
        mixture: the data law, with its exact denoiser.
        sigmas: noise levels (each > 0).
        n: points per level, ``x = x_0 + σ ε`` with ``x_0`` drawn from the mixture (float64).
        generator: seed of the draws (the same points for every model compared).
        model_kwargs: conditioning passed to the model.

    Returns:
        :class:`ScoreError` (``.table()``, ``.plot(path)``, ``.rows()``).
    """
    sig = torch.as_tensor(sigmas, dtype=torch.float64).reshape(-1)
    if sig.numel() == 0 or not bool((sig > 0).all()) or not bool(torch.isfinite(sig).all()):
        raise ValueError("sigmas must be a non-empty list of finite noise levels > 0.")
    if isinstance(n, bool) or not isinstance(n, int) or n < 2:
        raise ValueError(f"n must be an int >= 2 (points per noise level); got {n!r}.")
    gen = make_generator(generator, torch.device("cpu"))
    kwargs = dict(model_kwargs or {})
    rms, rel = [], []
    for s in sig.tolist():
        x0 = mixture.sample(n, generator=gen, dtype=torch.float64)
        x = x0 + s * torch.randn(x0.shape, generator=gen, dtype=torch.float64)
        sv = torch.full((n,), s, dtype=torch.float64)
        exact = mixture.denoiser_sigma(x, sv)
        got = call_model(model, x, sv, kwargs)
        err = (got - exact).pow(2).sum(-1).mean().sqrt()
        scale = (exact - x).pow(2).sum(-1).mean().sqrt()
        rms.append(float(err))
        rel.append(float(err / scale))
    return ScoreError(sigmas=sig, rms=torch.tensor(rms, dtype=torch.float64),
                      relative=torch.tensor(rel, dtype=torch.float64), n=n)


@dataclass
class NLLGap:
    """Output of :func:`nll_gap` (nats, means over the points, with standard errors).

    Attributes:
        gap: ``mean(log p_exact − log p_model)`` at the points: > 0 when the model's density is lower.
        gap_se: its standard error.
        exact_gap: the same for the exact score through the same ODE solve (integration error).
        model_nll, exact_nll: ``−mean log p`` of the model's PF-ODE density and of the exact density.
        n: points.
    """

    gap: float
    gap_se: float
    exact_gap: float
    model_nll: float
    exact_nll: float
    n: int


def nll_gap(
    model: Callable[..., Tensor],
    mixture: GaussianMixture,
    *,
    n: int = 256,
    sigma_min: float = 0.002,
    sigma_max: float = 80.0,
    generator: torch.Generator | int | None = 0,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    model_kwargs: Mapping[str, object] | None = None,
) -> NLLGap:
    """The learned denoiser's PF-ODE log-likelihood against the exact mixture log-density (nats).

    Points are drawn from the mixture diffused to ``sigma_min`` (the marginal the PF-ODE density
    describes); both densities come from :func:`sdeflow.log_likelihood` under the EDM SDE with
    ``eps = sigma_min``, ``T = sigma_max`` (exact traces: d ≤ 16), the exact one also in closed form.
    """
    from ..conversion.likelihood import log_likelihood
    from ..conversion.parameterization import score_from_denoiser
    from ..sde.edm import EDMSDE

    sde = EDMSDE(T=sigma_max, eps=sigma_min)
    gen = make_generator(generator, torch.device("cpu"))
    x0 = mixture.sample(n, generator=gen, dtype=torch.float64)
    x = x0 + sigma_min * torch.randn(x0.shape, generator=gen, dtype=torch.float64)
    kwargs = dict(model_kwargs or {})

    def learned(xx: Tensor, s: Tensor) -> Tensor:
        return call_model(model, xx, s, kwargs, grad=True)

    lp_model = log_likelihood(sde, score_from_denoiser(learned, sde), x, rtol=rtol, atol=atol).log_prob
    lp_exact_ode = log_likelihood(sde, mixture.score_fn(sde), x, rtol=rtol, atol=atol).log_prob
    lp_true = mixture.log_prob(x, torch.tensor(sigma_min, dtype=torch.float64), sde)
    diff = lp_true - lp_model
    return NLLGap(gap=float(diff.mean()), gap_se=float(diff.std() / math.sqrt(n)),
                  exact_gap=float((lp_true - lp_exact_ode).mean()), model_nll=float(-lp_model.mean()),
                  exact_nll=float(-lp_true.mean()), n=n)


@dataclass
class SamplerError:
    """Output of :func:`sampler_error`.

    Attributes:
        delta_nll, delta_nll_se: ΔNLL of the learned model's samples under the exact density.
        exact_delta_nll, exact_delta_nll_se: the same sampler with the exact denoiser, same ``x_T``.
        pathwise: RMS distance between the two sample sets (same ``x_T``, so the same trajectories
            if the model were exact).
        nfe: network evaluations of the sampler.
        n: samples.
        extra: sampler name and steps.
    """

    delta_nll: float
    delta_nll_se: float
    exact_delta_nll: float
    exact_delta_nll_se: float
    pathwise: float
    nfe: int
    n: int
    extra: dict = field(default_factory=dict)


def sampler_error(
    model: Callable[..., Tensor],
    mixture: GaussianMixture,
    *,
    sampler: str = "heun",
    steps: int = 18,
    n: int = 100_000,
    seed: int = 0,
    sigma_min: float = 0.002,
    sigma_max: float = 80.0,
    model_kwargs: Mapping[str, object] | None = None,
    **sampler_options: object,
) -> SamplerError:
    """Sample with ``model`` and with the exact denoiser from the same ``x_T``; compare both with the truth.

    ``x_T = σ_max · z`` with ``z`` from ``torch.Generator().manual_seed(seed)`` in float64 (the
    convention of ``benchmarks/bench_samplers.py``); the schedule is Karras' with ``steps`` steps
    (Heun: ``2·steps − 1`` evaluations, 35 for 18). The learned model runs in its own dtype.
    """
    from .samplers import SAMPLERS
    from .schedules import karras_sigmas

    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; choose one of {', '.join(SAMPLERS)}.")
    sigmas = karras_sigmas(steps, sigma_min, sigma_max)
    x_T = sigma_max * torch.randn(n, mixture.dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    dtype, device = model_dtype(model, torch.float64), model_device(model)
    fn = SAMPLERS[sampler]
    got = fn(model, x_T.to(device=device, dtype=dtype), sigmas, generator=seed + 1,
             model_kwargs=_move_kwargs(model_kwargs, device, dtype),
             **sampler_options)
    ref = fn(mixture.as_denoiser(), x_T, sigmas, generator=seed + 1, **sampler_options)
    got_x = got.x.to(device="cpu", dtype=torch.float64)
    q = mixture_sample_quality(mixture, got_x)
    qe = mixture_sample_quality(mixture, ref.x)
    return SamplerError(delta_nll=q.delta_nll, delta_nll_se=q.delta_nll_se, exact_delta_nll=qe.delta_nll,
                        exact_delta_nll_se=qe.delta_nll_se, pathwise=pathwise_rms(got_x, ref.x), nfe=got.nfe, n=n,
                        extra={"sampler": sampler, "steps": steps})
