"""UniPC (Zhao et al. 2023, arXiv 2302.04867): multistep predictor plus a free corrector.

In ``λ = −log σ`` a step ``h = λ_{i+1} − λ_i`` of the PF-ODE is
``x_{i+1} = e^{−h} x_i + ∫_0^h e^{τ−h} D(λ_i + τ) dτ``. The predictor replaces D by the polynomial
through the last ``order`` denoised values (for order 2 in the DPM-Solver++(2M) form, ``B(h)``
variant ``"bh2"``, or ``"bh1"``); the denoiser is then evaluated at the predicted state, and the
corrector integrates exactly the polynomial through the same history plus that new value, one
order higher. The new evaluation is the next step's history value, so the corrector costs no
network evaluation: NFE = steps. With the moment conditions of UniPC solved exactly (square
systems), its corrector is exactly this integral of the interpolating polynomial, whatever B(h).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from ._exponential import exponential_weights
from .base import Callback, Denoiser, GeneratorLike, NoiseSampler, SampleResult, SamplerRun
from .registry import sampler

__all__ = ["sample_unipc"]

_VARIANTS = ("bh1", "bh2")


def _newton_integral(h: float, nodes: list[float], values: list[Tensor], weights: tuple[float, ...]) -> Tensor:
    """``∫_0^h e^{τ−h} (P(τ) − P(0)) dτ`` for the polynomial P through ``(nodes[j], values[j])``.

    ``nodes[0] = 0`` (the current level); P is built in Newton form, whose basis polynomials
    ``Π_{m<j} (τ − nodes[m])`` are expanded into monomials and integrated with ``weights[k] = I_k``.
    """
    k = len(nodes)
    # divided differences, in place: coef[j] = P[nodes_0..nodes_j]
    coef = list(values)
    for level in range(1, k):
        for j in range(k - 1, level - 1, -1):
            coef[j] = (coef[j] - coef[j - 1]) / (nodes[j] - nodes[j - level])
    out: Tensor | None = None
    basis = [1.0]  # monomial coefficients of Π_{m<j}(τ − nodes[m]), lowest power first
    for j in range(1, k):
        new = [0.0] * (len(basis) + 1)
        for p, c in enumerate(basis):
            new[p + 1] += c
            new[p] -= c * nodes[j - 1]
        basis = new
        w = sum(c * weights[p] for p, c in enumerate(basis))  # basis[0] = 0 since nodes[0] = 0
        out = coef[j] * w if out is None else out + coef[j] * w
    return out if out is not None else torch.zeros_like(values[0])


@sampler("unipc", order=3.0, nfe=lambda steps, **_: steps, stochastic=False)
def sample_unipc(
    model: Denoiser,
    x: Tensor,
    schedule: Tensor,
    *,
    generator: GeneratorLike = None,
    callback: Callback | None = None,
    progress: bool = False,
    compile: bool = False,
    model_kwargs: Mapping[str, Any] | None = None,
    noise_sampler: NoiseSampler | None = None,
    enable_grad: bool = False,
    order: int = 2,
    variant: str = "bh2",
    lower_order_final: bool = True,
) -> SampleResult:
    """UniPC: predictor of order ``order`` (1–3), corrector of order ``order + 1``; NFE = steps.

    Args:
        order: the predictor's order, using ``order`` denoised values (the first steps ramp up).
            ``order=2`` is UniPC-2 (DPM-Solver++(2M) predictor, third-order corrected result).
        variant: the second-order predictor's ``B(h)``: ``"bh2"`` (``B = e^h − 1``, DPM-Solver++(2M))
            or ``"bh1"`` (``B = h``); higher orders integrate the polynomial exactly.
        lower_order_final: on schedules of fewer than 10 steps, cap the order by the number of
            steps left (more stable at very low NFE, as in the reference implementations).

    The step to σ = 0 returns ``D``; the state at the last positive level is not corrected (its
    denoised value, evaluated at the predicted state, is the output), as in UniPC.
    """
    if isinstance(order, bool) or order not in (1, 2, 3):
        raise ValueError(f"order must be 1, 2 or 3; got {order!r}.")
    if variant not in _VARIANTS:
        raise ValueError(f"variant must be one of {_VARIANTS}; got {variant!r}.")
    run = SamplerRun("unipc", model, x, schedule, generator=generator, callback=callback, progress=progress,
                     compile=compile, model_kwargs=model_kwargs,
                     noise_sampler=noise_sampler, enable_grad=enable_grad)
    sig = run.sigma_values
    n_pos = sum(1 for s in sig if s > 0)
    lam = [-math.log(s) if s > 0 else math.inf for s in sig]
    few = run.n_steps < 10
    hist: list[tuple[float, Tensor]] = []  # (λ, D) at earlier levels, newest last
    den: Tensor | None = None
    for i, s, s_next in run.steps():
        if den is None:
            den = run.denoise(x, s)
        if s_next == 0:
            x = den
            run.report(i, x, s, s_next, den)
            continue
        p = min(order, len(hist) + 1)
        if lower_order_final and few:
            p = min(p, n_pos - 1 - i)
        p = max(p, 1)
        h = lam[i + 1] - lam[i]
        w = exponential_weights(h, 3)
        base = torch.add(math.exp(-h) * x, den, alpha=w[0])
        # predictor
        if p == 1:
            x_pred = base
        elif p == 2:
            lam1, den1 = hist[-1]
            dd = (den - den1) / (lam[i] - lam1)
            coef = h * h / 2 if variant == "bh1" else w[0] * h / 2
            x_pred = base + coef * dd
        else:
            past = hist[-(p - 1):][::-1]
            nodes = [0.0] + [lp - lam[i] for lp, _ in past]
            x_pred = base + _newton_integral(h, nodes, [den] + [d for _, d in past], w)
        den_next = run.denoise(x_pred, s_next)
        last_positive = i + 2 >= len(sig) or sig[i + 2] == 0
        if last_positive:
            x_new = x_pred
        else:
            past = hist[-(p - 1):][::-1] if p > 1 else []
            nodes = [0.0, h] + [lp - lam[i] for lp, _ in past]
            vals = [den, den_next] + [d for _, d in past]
            x_new = base + _newton_integral(h, nodes, vals, w)
        hist = (hist + [(lam[i], den)])[-3:]
        x, den = x_new, den_next
        run.report(i, x, s, s_next, den)
    return run.result(x)
