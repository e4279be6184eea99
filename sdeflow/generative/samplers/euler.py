"""Euler's method on the probability-flow ODE ``dx/dσ = (x − D(x, σ)) / σ``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor

from .base import Callback, Denoiser, GeneratorLike, NoiseSampler, SampleResult, SamplerRun
from .registry import sampler
from .steps import euler_step

__all__ = ["sample_euler"]


@sampler("euler", order=1.0, nfe=lambda steps: steps, stochastic=False)
def sample_euler(
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
) -> SampleResult:
    """First-order Euler steps of the PF-ODE over ``schedule``; one evaluation per step (NFE = steps).

    ``x ← x + (σ_{i+1} − σ_i)(x − D(x, σ_i))/σ_i``; the step to σ = 0 returns ``D(x, σ_i)``.
    Deterministic (``generator`` is accepted for the common signature and unused).
    """
    run = SamplerRun("euler", model, x, schedule, generator=generator, callback=callback, progress=progress,
                     compile=compile, model_kwargs=model_kwargs,
                     noise_sampler=noise_sampler, enable_grad=enable_grad)
    for i, s, s_next in run.steps():
        x, den = euler_step(run.denoise, x, s, s_next)
        run.report(i, x, s, s_next, den)
    return run.result(x)
