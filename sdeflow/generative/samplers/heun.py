"""EDM's second-order Heun sampler (Karras et al. 2022, Algorithm 2), with optional churn."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from torch import Tensor

from .base import Callback, Denoiser, GeneratorLike, NoiseSampler, SampleResult, SamplerRun, check_nonneg
from .registry import sampler
from .steps import heun_step

__all__ = ["sample_heun"]


@sampler("heun", order=2.0, nfe=lambda steps, **_: 2 * steps - 1, stochastic=False)
def sample_heun(
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
    S_churn: float = 0.0,
    S_min: float = 0.0,
    S_max: float = float("inf"),
    S_noise: float = 1.0,
) -> SampleResult:
    """Heun steps of the PF-ODE; the step to σ = 0 is an Euler step, so n steps cost 2n − 1 NFE.

    Churn (stochastic sampling, EDM Alg. 2): for ``S_min ≤ σ_i ≤ S_max`` the level is raised to
    ``σ̂ = σ_i (1 + γ)``, ``γ = min(S_churn / n, √2 − 1)``, by adding noise of std
    ``S_noise · sqrt(σ̂² − σ_i²)`` drawn from ``generator``; ``S_churn = 0`` (default) is the
    deterministic second-order ODE solver.
    """
    churn = check_nonneg("S_churn", S_churn)
    s_min = check_nonneg("S_min", S_min)
    if isinstance(S_max, bool) or not isinstance(S_max, (int, float)) or not S_max >= s_min:
        raise ValueError(f"S_max must be a number >= S_min; got {S_max!r}.")
    s_noise = check_nonneg("S_noise", S_noise)
    run = SamplerRun("heun", model, x, schedule, generator=generator, callback=callback, progress=progress,
                     compile=compile, model_kwargs=model_kwargs,
                     noise_sampler=noise_sampler, enable_grad=enable_grad)
    gamma_max = min(churn / max(run.n_steps, 1), math.sqrt(2.0) - 1.0)
    for i, s, s_next in run.steps():
        gamma = gamma_max if (churn > 0 and s_min <= s <= S_max) else 0.0
        s_hat = s * (1.0 + gamma)
        if gamma > 0:
            x = x + (s_noise * math.sqrt(s_hat * s_hat - s * s)) * run.randn_like(x, s, s_hat)
        x, den = heun_step(run.denoise, x, s_hat, s_next)
        run.report(i, x, s, s_next, den)
    return run.result(x)
