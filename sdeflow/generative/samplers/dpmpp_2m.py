"""DPM-Solver++(2M) (Lu et al. 2022, arXiv 2211.01095): second-order multistep in data prediction."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor

from .base import Callback, Denoiser, GeneratorLike, NoiseSampler, SampleResult, SamplerRun
from .registry import sampler
from .steps import dpmpp_2m_step

__all__ = ["sample_dpmpp_2m"]


@sampler("dpmpp_2m", order=2.0, nfe=lambda steps: steps, stochastic=False)
def sample_dpmpp_2m(
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
    """DPM-Solver++(2M): one evaluation per step, second order from the second step on.

    With ``λ = −log σ`` and ``h = λ_{i+1} − λ_i`` the exact solution of the PF-ODE is
    ``x_{i+1} = e^{−h} x_i + ∫ e^{λ − λ_{i+1}} D dλ``; 2M integrates the linear extrapolation of
    the last two denoised values: ``x_{i+1} = e^{−h} x_i + (1 − e^{−h}) [(1 + 1/2r) D_i − (1/2r) D_{i−1}]``,
    ``r = h_{i−1}/h``. The first step and the step to σ = 0 are first order (the last returns D).
    """
    run = SamplerRun("dpmpp_2m", model, x, schedule, generator=generator, callback=callback, progress=progress,
                     compile=compile, model_kwargs=model_kwargs,
                     noise_sampler=noise_sampler, enable_grad=enable_grad)
    old_den: Tensor | None = None
    s_prev: float | None = None
    for i, s, s_next in run.steps():
        x, den = dpmpp_2m_step(run.denoise, x, s, s_next, old_den, s_prev)
        old_den, s_prev = den, s
        run.report(i, x, s, s_next, den)
    return run.result(x)
