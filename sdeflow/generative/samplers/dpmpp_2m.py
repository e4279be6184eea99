"""DPM-Solver++(2M) (Lu et al. 2022, arXiv 2211.01095): second-order multistep in data prediction."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .base import Callback, Denoiser, SampleResult, SamplerRun

__all__ = ["sample_dpmpp_2m"]


def sample_dpmpp_2m(
    model: Denoiser,
    x: Tensor,
    schedule: Tensor,
    *,
    generator: torch.Generator | int | None = None,
    callback: Callback | None = None,
    progress: bool = False,
    compile: bool = False,
) -> SampleResult:
    """DPM-Solver++(2M): one evaluation per step, second order from the second step on.

    With ``λ = −log σ`` and ``h = λ_{i+1} − λ_i`` the exact solution of the PF-ODE is
    ``x_{i+1} = e^{−h} x_i + ∫ e^{λ − λ_{i+1}} D dλ``; 2M integrates the linear extrapolation of
    the last two denoised values: ``x_{i+1} = e^{−h} x_i + (1 − e^{−h}) [(1 + 1/2r) D_i − (1/2r) D_{i−1}]``,
    ``r = h_{i−1}/h``. The first step and the step to σ = 0 are first order (the last returns D).
    """
    run = SamplerRun("dpmpp_2m", model, x, schedule, generator=generator, callback=callback, progress=progress,
                     compile=compile)
    old_den: Tensor | None = None
    h_last = 0.0
    for i, s, s_next in run.steps():
        den = run.denoise(x, s)
        if s_next == 0:
            x = den
        else:
            h = math.log(s) - math.log(s_next)
            decay = s_next / s  # e^{-h}
            if old_den is None:
                d = den
            else:
                r = h_last / h
                d = torch.add(den, den - old_den, alpha=1.0 / (2.0 * r))
            x = torch.add(decay * x, d, alpha=-math.expm1(-h))
            h_last = h
        old_den = den
        run.report(i, x, s, s_next, den)
    return run.result(x)
