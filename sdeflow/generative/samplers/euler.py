"""Euler's method on the probability-flow ODE ``dx/dσ = (x − D(x, σ)) / σ``."""

from __future__ import annotations

import torch
from torch import Tensor

from .base import Callback, Denoiser, SampleResult, SamplerRun

__all__ = ["sample_euler"]


def sample_euler(
    model: Denoiser,
    x: Tensor,
    schedule: Tensor,
    *,
    generator: torch.Generator | int | None = None,
    callback: Callback | None = None,
    progress: bool = False,
    compile: bool = False,
) -> SampleResult:
    """First-order Euler steps of the PF-ODE over ``schedule``; one evaluation per step (NFE = steps).

    ``x ← x + (σ_{i+1} − σ_i)(x − D(x, σ_i))/σ_i``; the step to σ = 0 returns ``D(x, σ_i)``.
    Deterministic (``generator`` is accepted for the common signature and unused).
    """
    run = SamplerRun("euler", model, x, schedule, generator=generator, callback=callback, progress=progress,
                     compile=compile)
    for i, s, s_next in run.steps():
        den = run.denoise(x, s)
        # x + (s_next - s)(x - den)/s = (s_next/s) x + (1 - s_next/s) den
        r = s_next / s
        x = torch.lerp(den, x, r)
        run.report(i, x, s, s_next, den)
    return run.result(x)
