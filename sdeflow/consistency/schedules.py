"""Discretisation and rate schedules of consistency distillation and training (pure functions of the step).

Every schedule here is a pure function of the training step ``k`` (0-based) and the run length ``K``, so
nothing about it needs saving in a checkpoint and a resumed run sees the same values.

* :func:`karras_grid` — the ascending Karras grid ``ε = t_1 < … < t_N = T`` (ρ = 7) of CD and CT
  (Song et al. 2023, eq. 5 / Appendix C; Karras et al. 2022 eq. 5).
* :func:`cm_num_steps`, :func:`cm_ema_rate` — consistency training's ``N(k)`` and ``μ(k)`` (Song et al.
  2023, Appendix C):  ``N(k) = ⌈√(k/K·((s₁+1)² − s₀²) + s₀²) − 1⌉ + 1``,  ``μ(k) = exp(s₀ ln μ₀ / N(k))``.
* :func:`ict_num_steps` — improved CT's doubling curriculum (Song & Dhariwal 2023, Section 3.4):
  ``N(k) = min(s₀ · 2^⌊k/K'⌋, s₁) + 1`` with ``K' = ⌊K / (log₂⌊s₁/s₀⌋ + 1)⌋``.
* :func:`lognormal_index_weights` — improved CT's discretised lognormal over the grid intervals
  (Song & Dhariwal 2023, Section 3.5): ``p(i) ∝ erf((ln t_{i+1} − P_mean)/(√2 P_std)) − erf((ln t_i −
  P_mean)/(√2 P_std))``.
* :func:`ect_ratio` — ECT's shrinking Δt (Geng et al. 2024, Section 3): ``r = t·(1 − n(t)/q^s)`` with
  ``n(t) = 1 + k·sigmoid(−b t)`` in stage ``s``, clamped to ``r ≥ ε`` (stage 0 is the ``r = ε``
  denoising objective: fine-tuning starts where the score model is).
* :func:`linear_warmup` — sCM's tangent warm-up factor (Lu & Song 2024, Section 4.1).

Theory: docs/concepts.md §6 and docs/consistency.md.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..generative.schedules import karras_sigmas

__all__ = ["karras_grid", "cm_num_steps", "cm_ema_rate", "ict_num_steps", "lognormal_index_weights",
           "ect_ratio", "ect_stage", "linear_warmup"]


def _int(name: str, value: object, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an int >= {low}; got {value!r}.")
    return value


def _num(name: str, value: object, *, positive: bool = True) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(float(value)):
        raise ValueError(f"{name} must be a finite number; got {value!r}.")
    if positive and not float(value) > 0:
        raise ValueError(f"{name} must be > 0; got {value!r}.")
    return float(value)


def karras_grid(n: int, eps: float = 0.002, T: float = 80.0, rho: float = 7.0) -> Tensor:
    """The ascending Karras grid ``t_1 = ε < … < t_N = T`` (n points, float64, strictly increasing).

    ``t_i = (ε^{1/ρ} + (i−1)/(N−1)(T^{1/ρ} − ε^{1/ρ}))^ρ`` (Song et al. 2023, Appendix C, ρ = 7), the
    reverse of :func:`sdeflow.generative.schedules.karras_sigmas` without the appended zero.
    """
    _int("n", n, 2)
    eps, T = _num("eps", eps), _num("T", T)
    if not eps < T:
        raise ValueError(f"eps must be < T; got eps={eps!r}, T={T!r}.")
    return karras_sigmas(n, eps, T, rho, append_zero=False).flip(0).contiguous()


def cm_num_steps(k: int, K: int, s0: int = 2, s1: int = 150) -> int:
    """Consistency training's grid size ``N(k)`` (Song et al. 2023, Appendix C; s₀ = 2, s₁ = 150 on CIFAR-10).

    The number of grid points: non-decreasing in k, from ``s₀`` at k = 0 to ``s₁ + 1`` at k = K (k is clamped
    to [0, K]).
    """
    _int("k", k, 0), _int("K", K, 1), _int("s0", s0, 1), _int("s1", s1, 1)
    if s1 < s0:
        raise ValueError(f"s1 must be >= s0; got s0={s0}, s1={s1}.")
    frac = min(k, K) / K
    return int(math.ceil(math.sqrt(frac * ((s1 + 1) ** 2 - s0**2) + s0**2) - 1)) + 1


def cm_ema_rate(k: int, K: int, s0: int = 2, s1: int = 150, mu0: float = 0.9) -> float:
    """Consistency training's target EMA rate ``μ(k) = exp(s₀ ln μ₀ / N(k))`` (Song et al. 2023, Appendix C).

    In (0, 1) for μ₀ in (0, 1): μ₀ at the start (N(0) = s₀), rising towards 1 as N(k) grows.
    """
    mu0 = _num("mu0", mu0)
    if not mu0 < 1:
        raise ValueError(f"mu0 must be in (0, 1); got {mu0!r}.")
    return math.exp(s0 * math.log(mu0) / cm_num_steps(k, K, s0, s1))


def ict_num_steps(k: int, K: int, s0: int = 10, s1: int = 1280) -> int:
    """Improved CT's doubling curriculum ``N(k) = min(s₀·2^⌊k/K'⌋, s₁) + 1`` (Song & Dhariwal 2023, Section 3.4).

    ``K' = ⌊K/(log₂⌊s₁/s₀⌋ + 1)⌋`` (at least 1): the number of intervals doubles every K' steps from s₀ to s₁
    (10 → 1280 on CIFAR-10: eight stages).
    """
    _int("k", k, 0), _int("K", K, 1), _int("s0", s0, 1), _int("s1", s1, 1)
    if s1 < s0:
        raise ValueError(f"s1 must be >= s0; got s0={s0}, s1={s1}.")
    k_stage = max(1, int(K // (math.log2(s1 // s0) + 1)))
    return min(s0 * 2 ** (k // k_stage), s1) + 1


def lognormal_index_weights(grid: Tensor, P_mean: float = -1.1, P_std: float = 2.0) -> Tensor:
    """Probabilities of the N − 1 intervals ``[t_i, t_{i+1}]`` of an ascending grid (N,), positive, summing to 1.

    Improved CT's discretised lognormal (Song & Dhariwal 2023, Section 3.5; P_mean = −1.1, P_std = 2.0):
    ``p(i) ∝ erf((ln t_{i+1} − P_mean)/(√2 P_std)) − erf((ln t_i − P_mean)/(√2 P_std))``. Computed with
    ``erfc`` in float64 so intervals far in the tails keep a positive weight instead of rounding to 0.
    """
    if not isinstance(grid, Tensor) or grid.dim() != 1 or grid.numel() < 2:
        raise ValueError("grid must be a 1-D tensor of at least 2 ascending noise levels.")
    g = grid.to(torch.float64)
    if not bool((g > 0).all()) or not bool((g[1:] > g[:-1]).all()):
        raise ValueError("grid must be strictly increasing and > 0 (e.g. karras_grid(n)).")
    P_mean, P_std = _num("P_mean", P_mean, positive=False), _num("P_std", P_std)
    z = (torch.log(g) - P_mean) / (math.sqrt(2.0) * P_std)
    # erf(b) − erf(a) = erfc(a) − erfc(b); on the lower tail use erfc(−b) − erfc(−a) (no cancellation there)
    upper = torch.special.erfc(z[:-1]) - torch.special.erfc(z[1:])
    lower = torch.special.erfc(-z[1:]) - torch.special.erfc(-z[:-1])
    w = torch.where(z[1:] > 0, upper, lower).clamp_min(torch.finfo(torch.float64).tiny)
    return w / w.sum()


def ect_stage(k: int, K: int, stages: int = 8) -> int:
    """ECT's stage ``s = ⌊k / d⌋`` with ``d = K / stages`` iterations per stage (Δt halves each stage for q = 2)."""
    _int("k", k, 0), _int("K", K, 1), _int("stages", stages, 1)
    return min(stages - 1, k * stages // K)


def ect_ratio(t: Tensor, stage: int, *, q: float = 2.0, k: float = 8.0, b: float = 1.0,
              eps: float = 0.002) -> Tensor:
    """ECT's second point ``r = t·(1 − n(t)/q^s)``, ``n(t) = 1 + k·sigmoid(−b t)``, clamped to r ≥ ε (Geng et al. 2024).

    ``t`` (B,) noise levels, ``stage`` s ≥ 0. Stage 0 gives ``r = ε`` everywhere (1 − n(t) ≤ 0); each stage
    divides ``t − r`` by q (continuous-time consistency training in the limit).
    """
    _int("stage", stage, 0)
    q, k, b, eps = _num("q", q), _num("k", k, positive=False), _num("b", b, positive=False), _num("eps", eps)
    if not q > 1:
        raise ValueError(f"q must be > 1 (the factor Δt shrinks by per stage); got {q!r}.")
    n = 1.0 + k * torch.sigmoid(-b * t)
    r = t * (1.0 - n / q**stage)
    return torch.maximum(r, torch.full_like(t, eps))


def linear_warmup(k: int, iters: int) -> float:
    """``min(1, (k + 1)/iters)`` (``iters = 0``: 1): sCM's tangent warm-up factor (Lu & Song 2024, Section 4.1)."""
    _int("k", k, 0), _int("iters", iters, 0)
    return 1.0 if iters == 0 else min(1.0, (k + 1) / iters)
