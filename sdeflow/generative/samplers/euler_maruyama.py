"""Euler–Maruyama on the reverse-time SDE in the noise-level variable.

Every linear diffusion SDE, written for ``x̃ = x/α`` with the noise level ``σ̃ = σ/α`` as time, is
``dx̃ = sqrt(2σ) dW`` (docs/concepts.md §4: the EDM SDE), whose reverse-time SDE is
``dx = −2σ ∇log p_σ(x) dσ + sqrt(2σ) dw̄ = 2 (x − D(x, σ))/σ dσ + sqrt(2σ) dw̄`` run from σ_max down.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor

from .base import Callback, Denoiser, GeneratorLike, NoiseSampler, SampleResult, SamplerRun
from .registry import sampler
from .steps import euler_maruyama_step

__all__ = ["sample_euler_maruyama"]


@sampler("euler_maruyama", order=1.0, order_kind="weak", nfe=lambda steps: steps, stochastic=True)
def sample_euler_maruyama(
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
    """Stochastic sampler: Euler–Maruyama steps of the reverse SDE; one evaluation per step.

    ``x ← x + 2h (D(x, σ_i) − x)/σ_i + sqrt(2 σ_i h) z`` with ``h = σ_i − σ_{i+1}``. The last step to
    σ = 0 returns ``D(x, σ_i)`` (no noise is added at the clean data). Noise from ``generator``.
    """
    run = SamplerRun("euler_maruyama", model, x, schedule, generator=generator, callback=callback,
                     progress=progress, compile=compile, model_kwargs=model_kwargs,
                     noise_sampler=noise_sampler, enable_grad=enable_grad)
    for i, s, s_next in run.steps():
        noise = run.randn_like(x, s, s_next) if s_next > 0 else None
        x, den = euler_maruyama_step(run.denoise, x, s, s_next, noise)
        run.report(i, x, s, s_next, den)
    return run.result(x)
