"""Step primitives: one sampler update from σ to σ_next, for one σ or a different σ per sample.

Each function takes a denoiser ``D(x, σ, **model_kwargs)``, the state ``x`` (B, *event) and the two
noise levels, as Python floats (the loop samplers) or as (B,) tensors (one level per sample, e.g. a
consistency-distillation teacher step from σ_{n+1} to σ_n for a batch of random n); a 0-dim tensor is
broadcast to (B,). Each returns ``(x_next, denoised)`` with ``denoised = D(x, σ)``, and evaluates the
denoiser with a (B,) tensor of levels in ``x``'s dtype. Where ``σ_next = 0`` the step lands on
``denoised`` (the samplers' last step: exactly for Euler, DPM-Solver++(2M) and Euler–Maruyama; Heun's
Euler step ``x + (0 − σ)(x − D)/σ`` up to round-off).

A (B,) tensor of equal levels gives bitwise the result of the Python float (float32/float64 states):
the per-sample coefficients are computed in float64 with the same formula and rounded to the state's
dtype as the scalar ones are. Euler and Heun coefficients take only arithmetic, computed on the device;
the Euler–Maruyama and DPM-Solver++(2M) coefficients (square root, logarithms) are evaluated on the host
with Python's ``math`` per sample (one device→host copy of the levels per step), because the device's
vectorised transcendental functions do not round as ``math`` does.

The updates, in the noise-level variable of the EDM form of every linear diffusion SDE
(docs/samplers.md; docs/concepts.md for the derivation):

* PF-ODE ``dx/dσ = (x − D(x, σ))/σ``: :func:`euler_step`, :func:`heun_step` (EDM's Algorithm 2
  without churn), :func:`dpmpp_2m_step` (exponential integrator in ``λ = −log σ``);
* reverse SDE ``dx = 2 (x − D(x, σ))/σ dσ + sqrt(2σ) dw̄``: :func:`euler_maruyama_step`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from .base import Denoiser

__all__ = ["euler_step", "heun_step", "dpmpp_2m_step", "euler_maruyama_step", "SigmaLike"]

#: A noise level: a Python number, or a (B,) (or 0-dim) tensor with one level per sample.
SigmaLike = float | Tensor


def _level(name: str, value: object, x: Tensor) -> float | Tensor:
    """A checked level: a float, or a (B,) float64 tensor on ``x``'s device."""
    if isinstance(value, Tensor):
        if value.dim() > 1 or (value.dim() == 1 and value.shape[0] != x.shape[0]):
            raise ValueError(f"{name} must be a number, a 0-dim tensor or a (B,) tensor with B = {x.shape[0]}; "
                             f"got shape {tuple(value.shape)}.")
        if value.dtype.is_complex or value.dtype == torch.bool:
            raise TypeError(f"{name} must be a real tensor; got dtype {value.dtype}.")
        return value.detach().to(device=x.device, dtype=torch.float64).expand(x.shape[0])
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number or a tensor of noise levels; got {type(value).__name__}.")
    value = float(value)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0; got {value!r}.")
    return value


def _column(v: Tensor, x: Tensor) -> Tensor:
    """A (B,) tensor as (B, 1, ..., 1) in ``x``'s dtype, broadcasting over the event dimensions."""
    return v.to(x.dtype).reshape((x.shape[0],) + (1,) * (x.dim() - 1))


def _vector(sigma: float | Tensor, x: Tensor) -> Tensor:
    """The level as the denoiser's (B,) argument in ``x``'s dtype."""
    if isinstance(sigma, Tensor):
        return sigma.to(x.dtype)
    return torch.as_tensor(sigma, dtype=x.dtype, device=x.device).expand(x.shape[0])


def _host(formula: Callable[..., Sequence[float]], x: Tensor, *levels: Tensor) -> list[Tensor]:
    """``formula`` applied per sample on the host (Python floats); the results as columns like ``x``."""
    rows = [formula(*vals) for vals in zip(*(lv.cpu().tolist() for lv in levels), strict=True)]
    return [_column(torch.tensor(col, dtype=torch.float64, device=x.device), x) for col in zip(*rows, strict=True)]


def _pair(sigma: object, sigma_next: object, x: Tensor) -> tuple[float | Tensor, float | Tensor]:
    """The two checked levels (a float σ must be > 0: the denoiser is not evaluated at σ = 0)."""
    if type(sigma) is float and type(sigma_next) is float and 0 < sigma < math.inf and 0 <= sigma_next < math.inf:
        return sigma, sigma_next  # the loop samplers' case, checked in one go
    s, s_next = _level("sigma", sigma, x), _level("sigma_next", sigma_next, x)
    if isinstance(s, float) and not s > 0:
        raise ValueError(f"sigma must be > 0 (the denoiser is not evaluated at σ = 0); got {sigma!r}.")
    return s, s_next


def euler_step(denoiser: Denoiser, x: Tensor, sigma: SigmaLike, sigma_next: SigmaLike,
               **model_kwargs: Any) -> tuple[Tensor, Tensor]:
    """One Euler step of the PF-ODE: ``x + (σ_next − σ)(x − D)/σ = lerp(D, x, σ_next/σ)``; one evaluation.

    Args:
        denoiser: ``D(x, σ, **model_kwargs)``.
        x: state (B, *event) at ``sigma``.
        sigma, sigma_next: levels, floats or (B,) tensors (``sigma > 0``).
        model_kwargs: passed to the denoiser unchanged.

    Returns:
        ``(x_next, denoised)``, both (B, *event).
    """
    s, s_next = _pair(sigma, sigma_next, x)
    den = denoiser(x, _vector(s, x), **model_kwargs)
    if isinstance(s, float) and isinstance(s_next, float):
        return torch.lerp(den, x, s_next / s), den
    ratio = torch.as_tensor(s_next, dtype=torch.float64, device=x.device) / s
    return torch.lerp(den, x, _column(ratio, x).expand_as(x)), den


def heun_step(denoiser: Denoiser, x: Tensor, sigma: SigmaLike, sigma_next: SigmaLike,
              **model_kwargs: Any) -> tuple[Tensor, Tensor]:
    """One Heun step of the PF-ODE (EDM Alg. 2 without churn); an Euler step where ``σ_next = 0``.

    ``d = (x − D(x, σ))/σ``, ``x̃ = x + (σ_next − σ) d``, ``d' = (x̃ − D(x̃, σ_next))/σ_next``,
    ``x_next = x + ½(σ_next − σ)(d + d')``. Two evaluations (one for a float ``σ_next = 0``; with tensor
    levels always two, the second at ``σ`` for samples with ``σ_next = 0``, whose result is discarded).

    Returns:
        ``(x_next, denoised)`` with ``denoised = D(x, σ)``.
    """
    s, s_next = _pair(sigma, sigma_next, x)
    den = denoiser(x, _vector(s, x), **model_kwargs)
    if isinstance(s, float) and isinstance(s_next, float):
        d = (x - den) / s
        x_next = x + (s_next - s) * d
        if s_next > 0:
            den2 = denoiser(x_next, _vector(s_next, x), **model_kwargs)
            d2 = (x_next - den2) / s_next
            x_next = x + (0.5 * (s_next - s)) * (d + d2)
        return x_next, den
    s_t = s if isinstance(s, Tensor) else torch.full((x.shape[0],), s, dtype=torch.float64, device=x.device)
    sn_t = (s_next if isinstance(s_next, Tensor)
            else torch.full((x.shape[0],), s_next, dtype=torch.float64, device=x.device))
    last = sn_t == 0
    d = (x - den) / _column(s_t, x)
    x_euler = x + _column(sn_t - s_t, x) * d
    safe = torch.where(last, s_t, sn_t)  # the second evaluation is not made at σ = 0
    den2 = denoiser(x_euler, safe.to(x.dtype), **model_kwargs)
    d2 = (x_euler - den2) / _column(safe, x)
    x_heun = x + _column(0.5 * (sn_t - s_t), x) * (d + d2)
    return torch.where(_column(last, x).bool(), x_euler, x_heun), den


def _dpmpp_2m_coefficients(s: float, s_next: float, s_prev: float | None) -> tuple[float, float, float, float]:
    """(keep the step, e^{−h}, 1 − e^{−h}, 1/(2r)) of a DPM-Solver++(2M) step; ``s_prev`` None: first order."""
    if s_next == 0:
        return 0.0, 0.0, 0.0, 0.0
    h = math.log(s) - math.log(s_next)
    if s_prev is None or math.isnan(s_prev):
        return 1.0, s_next / s, -math.expm1(-h), 0.0
    h_last = math.log(s_prev) - math.log(s)
    r = h_last / h
    return 1.0, s_next / s, -math.expm1(-h), 1.0 / (2.0 * r)


def dpmpp_2m_step(denoiser: Denoiser, x: Tensor, sigma: SigmaLike, sigma_next: SigmaLike,
                  denoised_prev: Tensor | None = None, sigma_prev: SigmaLike | None = None,
                  **model_kwargs: Any) -> tuple[Tensor, Tensor]:
    """One DPM-Solver++(2M) step (Lu et al. 2022, arXiv 2211.01095); one evaluation.

    With ``λ = −log σ``, ``h = λ_next − λ`` and ``r = h_prev/h`` (``h_prev = log σ_prev − log σ``):
    ``x_next = e^{−h} x + (1 − e^{−h}) [(1 + 1/2r) D − (1/2r) D_prev]``; without ``denoised_prev``
    (the first step) the first-order ``D`` replaces the bracket. Where ``σ_next = 0`` it returns ``D``.

    Args:
        denoised_prev: ``D`` of the previous step (at ``sigma_prev``), or None.
        sigma_prev: the previous step's level (required with ``denoised_prev``); float or (B,). A NaN
            entry of a (B,) ``sigma_prev`` makes that sample's step first order (no history yet).

    Returns:
        ``(x_next, denoised)``; pass ``denoised`` and ``sigma`` as the next step's ``denoised_prev`` and
        ``sigma_prev``.
    """
    s, s_next = _pair(sigma, sigma_next, x)
    if (denoised_prev is None) != (sigma_prev is None):
        raise ValueError("denoised_prev and sigma_prev go together: pass both (a second-order step) or neither.")
    s_prev = None if sigma_prev is None else _level("sigma_prev", sigma_prev, x)
    den = denoiser(x, _vector(s, x), **model_kwargs)
    if isinstance(s, float) and isinstance(s_next, float) and (s_prev is None or isinstance(s_prev, float)):
        if s_next == 0:
            return den, den
        _, decay, weight, extra = _dpmpp_2m_coefficients(s, s_next, s_prev)
        d = den if denoised_prev is None else torch.add(den, den - denoised_prev, alpha=extra)
        return torch.add(decay * x, d, alpha=weight), den
    levels = [lv if isinstance(lv, Tensor) else torch.full((x.shape[0],), lv, dtype=torch.float64, device=x.device)
              for lv in (s, s_next)]
    if s_prev is None:
        keep, decay, weight, extra = _host(lambda a, b: _dpmpp_2m_coefficients(a, b, None), x, *levels)
        d = den
    else:
        prev = s_prev if isinstance(s_prev, Tensor) else torch.full_like(levels[0], s_prev)
        keep, decay, weight, extra = _host(_dpmpp_2m_coefficients, x, *levels, prev)
        d = torch.addcmul(den, den - denoised_prev, extra)
    x_next = torch.addcmul(decay * x, d, weight)
    return torch.where(keep.bool(), x_next, den), den


def _em_coefficients(s: float, s_next: float) -> tuple[float, float, float]:
    """(keep the step, 2h/σ, sqrt(2σh)) of a reverse-SDE Euler–Maruyama step, ``h = σ − σ_next``."""
    if s_next == 0:
        return 0.0, 0.0, 0.0
    h = s - s_next
    return 1.0, 2.0 * h / s, math.sqrt(2.0 * s * h)


def euler_maruyama_step(denoiser: Denoiser, x: Tensor, sigma: SigmaLike, sigma_next: SigmaLike,
                        noise: Tensor | None, **model_kwargs: Any) -> tuple[Tensor, Tensor]:
    """One Euler–Maruyama step of the reverse SDE ``dx = 2(x − D)/σ dσ + sqrt(2σ) dw̄``; one evaluation.

    ``x_next = x + (2h/σ)(D(x, σ) − x) + sqrt(2σh) z`` with ``h = σ − σ_next`` and ``z = noise``
    (standard normal, x's shape); where ``σ_next = 0`` it returns ``D`` and ignores the noise.

    Args:
        noise: the step's standard normal draw (B, *event); may be None only for a float ``σ_next = 0``.

    Returns:
        ``(x_next, denoised)``.
    """
    s, s_next = _pair(sigma, sigma_next, x)
    scalar = isinstance(s, float) and isinstance(s_next, float)
    if noise is None and not (scalar and s_next == 0):
        raise ValueError("noise is required (a standard normal tensor of x's shape) unless sigma_next is 0.")
    if noise is not None and noise.shape != x.shape:
        raise ValueError(f"noise must have x's shape {tuple(x.shape)}; got {tuple(noise.shape)}.")
    den = denoiser(x, _vector(s, x), **model_kwargs)
    if scalar:
        if s_next == 0:
            return den, den
        _, drift, scale = _em_coefficients(s, s_next)
        return x + drift * (den - x) + scale * noise, den
    levels = [lv if isinstance(lv, Tensor) else torch.full((x.shape[0],), lv, dtype=torch.float64, device=x.device)
              for lv in (s, s_next)]
    keep, drift, scale = _host(_em_coefficients, x, *levels)
    x_next = x + drift * (den - x) + scale * noise.to(x.dtype)
    return torch.where(keep.bool(), x_next, den), den
