"""Sampling with a consistency function: one step, multistep (Song et al. 2023, Alg. 1), and the τ search.

One step: ``x_0 = f(x_T, T)``. Multistep with decreasing ``τ_1 = T > τ_2 > … > τ_k > ε``: after the first
evaluation, re-noise ``x ← x + √(τ_i² − ε²) z`` (the state at ε is ``x_0 + ε n``, so this gives noise
level τ_i) and map back ``x ← f(x, τ_i)``; ``k`` network evaluations. :func:`sample_consistency` has the
samplers' signature and :class:`sdeflow.SampleResult` (docs/samplers.md), with the consistency
function in place of the denoiser. :func:`search_taus` picks ``τ_2`` (then ``τ_3``) greedily by a
golden-section (ternary) search, as the CM paper does, on ΔNLL under an exact mixture or any metric.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from .._checks import make_generator
from ..generative.metrics import mixture_sample_quality
from ..generative.mixture import GaussianMixture
from ..generative.samplers.base import Callback, GeneratorLike, NoiseSampler, SampleResult, SamplerRun
from ..generative.samplers.registry import sampler
from ..sde import EDMSDE

__all__ = ["sample_consistency", "search_taus", "TauSearch"]

_GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0


def _resolve_eps(f: object, eps: float | None) -> float:
    value = eps if eps is not None else getattr(f, "eps", None)
    if value is None:
        raise ValueError("f has no eps attribute; pass eps= (the consistency function's boundary noise level).")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < math.inf:
        raise ValueError(f"eps must be a finite number >= 0; got {value!r}.")
    return float(value)


def _check_taus(taus: object, eps: float) -> Tensor:
    if isinstance(taus, (int, float)) and not isinstance(taus, bool):
        taus = [taus]
    try:
        tv = torch.as_tensor(taus.detach().cpu() if isinstance(taus, Tensor) else taus, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError) as err:
        raise TypeError(f"taus must be a number or a 1-D sequence of noise levels; got {type(taus).__name__}.") from err
    tv = tv.reshape(-1) if tv.dim() == 0 else tv
    if tv.dim() != 1 or tv.numel() < 1:
        raise ValueError(f"taus must be a non-empty 1-D list of noise levels (τ_1 = T first); got shape "
                         f"{tuple(tv.shape)}.")
    if not bool(torch.isfinite(tv).all()) or not bool((tv[1:] < tv[:-1]).all()) or not float(tv[-1]) > eps:
        raise ValueError(f"taus must be finite, strictly decreasing and every τ > eps = {eps:g} "
                         f"(τ_1 = T > τ_2 > ... > eps); got {tv.tolist()}.")
    return tv


@sampler("consistency", order=None, nfe=lambda steps, **_: steps, stochastic=True, register=False)
def sample_consistency(
    f: Callable[..., Tensor],
    x: Tensor,
    taus: Sequence[float] | Tensor | float,
    *,
    generator: GeneratorLike = None,
    callback: Callback | None = None,
    progress: bool = False,
    compile: bool = False,
    model_kwargs: Mapping[str, Any] | None = None,
    noise_sampler: NoiseSampler | None = None,
    enable_grad: bool = False,
    eps: float | None = None,
) -> SampleResult:
    """Consistency sampling (Song et al. 2023, Algorithm 1): one step, or multistep with re-noising.

    Declared with ``@sampler(..., register=False)``: it has the samplers' signature, result, NFE count,
    noise handling (one generator, per-sample generators, a ``noise_sampler``) and grad mode, but it
    takes a consistency function rather than a denoiser, so it is not in :data:`sdeflow.SAMPLERS`
    (whose entries all integrate a PF-ODE or reverse SDE with a denoiser).

    Args:
        f: the consistency function ``f(x, t, **model_kwargs)`` (a :class:`ConsistencyFunction`, the exact
            :func:`exact_consistency_function`, ...), ``t`` a (B,) tensor.
        x: the starting state at ``taus[0]`` (B, *event), e.g. ``T * randn`` (:func:`sdeflow.initial_noise`).
        taus: ``[τ_1 = T, τ_2, ...]`` strictly decreasing, every τ > ε (a number: one step).
        generator, callback, progress, compile, model_kwargs, noise_sampler, enable_grad: as for every
            sampler (:class:`sdeflow.SamplerRun`). The noise of step i is drawn for the interval
            ``(ε, τ_i)`` (``noise_sampler(ε, τ_i)``).
        eps: ε (default ``f.eps``).

    Returns:
        :class:`sdeflow.SampleResult` with ``nfe = len(taus)``, ``steps = len(taus)``, ``sigmas`` the
        schedule ``[τ_1, ..., τ_k, ε]``, and ``info["taus"]``.
    """
    eps = _resolve_eps(f, eps)
    tv = _check_taus(taus, eps)
    schedule = torch.cat([tv, tv.new_full((1,), eps)])
    run = SamplerRun("consistency", f, x, schedule, generator=generator, callback=callback, progress=progress,
                     compile=compile, model_kwargs=model_kwargs, noise_sampler=noise_sampler, enable_grad=enable_grad)
    for i, tau, nxt in run.steps():
        if i > 0:
            x = x + math.sqrt(tau * tau - eps * eps) * run.randn_like(x, eps, tau)
        x = run.denoise(x, tau)
        run.report(i, x, tau, nxt, x)
    return run.result(x, taus=tv.tolist())


@dataclass
class TauSearch:
    """Result of :func:`search_taus`.

    Attributes:
        taus: the chosen ``[T, τ_2, ...]`` (pass to :func:`sample_consistency`).
        value: the metric at ``taus`` on the search batch.
        one_step_value: the metric of one-step sampling on the same batch.
        delta_nll, delta_nll_se: ΔNLL (nats) and its standard error at ``taus`` on a fresh batch
            (mixture metric only; None otherwise).
        history: every ``(taus, value)`` evaluated, in order.
        evaluations: sampling runs made.
    """

    taus: list[float]
    value: float
    one_step_value: float
    delta_nll: float | None = None
    delta_nll_se: float | None = None
    history: list[tuple[list[float], float]] = field(default_factory=list)
    evaluations: int = 0


def search_taus(
    f: Callable[..., Tensor],
    mixture_or_metric: GaussianMixture | Callable[[Tensor], float],
    n_steps: int = 2,
    *,
    n: int = 4096,
    T: float | None = None,  # noqa: N803
    eps: float | None = None,
    generator: int = 0,
    scan: int = 9,
    iterations: int = 16,
    model_kwargs: Mapping[str, Any] | None = None,
    event_shape: Sequence[int] | None = None,
) -> TauSearch:
    """Choose the τ of ``n_steps``-step consistency sampling, greedily (the CM paper's search).

    ``τ_2`` is searched in ``(ε, T)`` with ``τ_1 = T``; then, for 3 steps, ``τ_3`` in ``(ε, τ_2)`` with
    ``τ_2`` fixed, and so on. Each search runs in ``log τ``: a scan of ``scan`` evenly spaced points,
    then ``iterations`` golden-section steps in the bracket around the best one (a ternary search
    that needs one evaluation per step). Every evaluation samples the same batch: the same ``x_T`` and
    the same re-noising draws (common random numbers), so the objective is a smooth function of τ.

    (:func:`sdeflow.optimize_schedule` fits a denoiser sampler's grid to the exact PF-ODE end states by
    pathwise RMS; multistep consistency sampling is stochastic and is judged by the law of its samples,
    so this search minimises a distribution metric instead.)

    Args:
        f: the consistency function.
        mixture_or_metric: a :class:`sdeflow.GaussianMixture` — minimise ΔNLL of the samples under the
            exact density of ``p_ε`` (the data convolved with ``N(0, ε²)``, what ``f`` samples); the
            search minimises ``−mean log p_ε(samples)``, which differs from ΔNLL by a constant — or a
            callable ``metric(samples) -> float`` (lower is better).
        n_steps: 2 or more (3 in the CM paper's tables).
        n: samples per evaluation.
        T, eps: τ_1 and ε (default ``f.T`` and ``f.eps``).
        generator: int seed of the batch (``x_T`` and every re-noising draw).
        scan, iterations: points of the coarse scan and golden-section steps, per τ.
        model_kwargs: conditioning for ``f``.
        event_shape: the state's event shape (default: the mixture's ``(d,)``, else ``f``'s example inputs).
    """
    if isinstance(n_steps, bool) or not isinstance(n_steps, int) or n_steps < 2:
        raise ValueError(f"n_steps must be an int >= 2 (one step has no τ to choose); got {n_steps!r}.")
    for name, v, lo in (("n", n, 2), ("scan", scan, 3), ("iterations", iterations, 0)):
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            raise ValueError(f"{name} must be an int >= {lo}; got {v!r}.")
    if isinstance(generator, bool) or not isinstance(generator, int):
        raise TypeError(f"generator must be an int seed (every evaluation re-draws the same noise); got "
                        f"{type(generator).__name__}.")
    eps = _resolve_eps(f, eps)
    t_max = T if T is not None else getattr(f, "T", None)
    if isinstance(t_max, bool) or not isinstance(t_max, (int, float)) or not eps < t_max < math.inf:
        raise ValueError(f"T must be a finite number > eps (τ_1); got {t_max!r} (pass T= if f has no T).")
    t_max = float(t_max)
    if isinstance(mixture_or_metric, GaussianMixture):
        mixture = mixture_or_metric
        sde = EDMSDE(T=t_max, eps=eps) if eps > 0 else None

        def metric(samples: Tensor) -> float:
            x64 = samples.detach().to(torch.float64)
            if not bool(torch.isfinite(x64).all()):
                return math.inf
            lp = mixture.log_prob(x64, eps, sde) if sde is not None else mixture.log_prob(x64)
            return float(-lp.mean())

        shape = (mixture.dim,)
    elif callable(mixture_or_metric):
        mixture, metric = None, mixture_or_metric
        shape = None
    else:
        raise TypeError(f"mixture_or_metric must be a GaussianMixture or a callable metric(samples) -> float; got "
                        f"{type(mixture_or_metric).__name__}.")
    if event_shape is not None:
        shape = tuple(int(s) for s in event_shape)
    if shape is None:
        make = getattr(f, "example_inputs", None)
        if not callable(make):
            raise ValueError("pass event_shape= (f has no example_inputs to tell the state's shape).")
        (x1, *_), _ = make(1)
        shape = tuple(x1.shape[1:])
    from ..generative.evaluation import model_device, model_dtype

    dtype, device = model_dtype(f, torch.float64), model_device(f)
    gen = make_generator(generator, torch.device("cpu"))
    x_T = (t_max * torch.randn((n, *shape), generator=gen, dtype=dtype)).to(device)  # noqa: N806
    history: list[tuple[list[float], float]] = []

    def evaluate(taus: list[float]) -> float:
        out = sample_consistency(f, x_T, taus, generator=generator + 1, model_kwargs=model_kwargs, eps=eps)
        val = float(metric(out.x.cpu()))
        val = val if math.isfinite(val) else math.inf
        history.append((list(taus), val))
        return val

    one_step = evaluate([t_max])
    taus = [t_max]
    best = one_step
    for _ in range(1, n_steps):
        hi, lo = math.log(taus[-1]), math.log(max(eps, 1e-12 * taus[-1]))
        span = hi - lo
        grid = [lo + span * (k + 1) / (scan + 1) for k in range(scan)]  # open interval (lo, hi)
        vals = [evaluate(taus + [math.exp(g)]) for g in grid]
        k = min(range(scan), key=vals.__getitem__)
        a = grid[k - 1] if k > 0 else lo + 1e-9 * span
        b = grid[k + 1] if k < scan - 1 else hi - 1e-9 * span
        c, d = b - _GOLDEN * (b - a), a + _GOLDEN * (b - a)
        fc, fd = evaluate(taus + [math.exp(c)]), evaluate(taus + [math.exp(d)])
        for _ in range(iterations):
            if fc <= fd:
                b, d, fd = d, c, fc
                c = b - _GOLDEN * (b - a)
                fc = evaluate(taus + [math.exp(c)])
            else:
                a, c, fc = c, d, fd
                d = a + _GOLDEN * (b - a)
                fd = evaluate(taus + [math.exp(d)])
        cands = [(vals[k], grid[k]), (fc, c), (fd, d)]
        best, g_best = min(cands)
        taus = taus + [math.exp(g_best)]
    result = TauSearch(taus=taus, value=best, one_step_value=one_step, history=history, evaluations=len(history))
    if mixture is not None:
        fresh = t_max * torch.randn((n, *shape), generator=make_generator(generator + 2, torch.device("cpu")),
                                    dtype=dtype).to(device)
        out = sample_consistency(f, fresh, taus, generator=generator + 3, model_kwargs=model_kwargs, eps=eps)
        q = mixture_sample_quality(mixture, out.x.cpu(), t=eps if eps > 0 else None,
                                   sde=EDMSDE(T=t_max, eps=eps) if eps > 0 else None)
        result.delta_nll, result.delta_nll_se = q.delta_nll, q.delta_nll_se
    return result
