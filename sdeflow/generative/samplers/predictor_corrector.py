"""Predictor–corrector sampling (Song et al. 2021, Algorithms 4–5) with a Langevin corrector."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .base import Callback, Denoiser, SampleResult, SamplerRun, check_nonneg

__all__ = ["sample_pc"]


def _batch_mean_norm(v: Tensor) -> Tensor:
    return v.reshape(v.shape[0], -1).norm(dim=-1).mean()


def sample_pc(
    model: Denoiser,
    x: Tensor,
    schedule: Tensor,
    *,
    generator: torch.Generator | int | None = None,
    callback: Callback | None = None,
    progress: bool = False,
    compile: bool = False,
    snr: float = 0.16,
    corrector_steps: int = 1,
) -> SampleResult:
    """Reverse-SDE Euler–Maruyama predictor, then ``corrector_steps`` Langevin steps at the new level.

    Langevin corrector at level σ with score ``s = (D(x, σ) − x)/σ²``:
    ``x ← x + ε s + sqrt(2ε) z`` with ``ε = 2 (snr · ‖z‖ / ‖s‖)²``, the norms averaged over the
    batch as in Song et al.'s reference algorithm (so the step size depends on the batch; the run is
    still reproducible from ``generator``). No corrector at σ = 0. NFE = n + corrector_steps (n − 1)
    for n steps ending at 0.

    Args:
        snr: the signal-to-noise ratio ``r`` of the corrector (0.16 in Song et al. for VE models;
            smaller is safer, 0 disables the corrector's drift and noise).
        corrector_steps: Langevin steps after each predictor step (>= 0).
    """
    snr = check_nonneg("snr", snr)
    if isinstance(corrector_steps, bool) or not isinstance(corrector_steps, int) or corrector_steps < 0:
        raise ValueError(f"corrector_steps must be an int >= 0; got {corrector_steps!r}.")
    run = SamplerRun("pc", model, x, schedule, generator=generator, callback=callback, progress=progress,
                     compile=compile)
    for i, s, s_next in run.steps():
        den = run.denoise(x, s)
        if s_next == 0:
            x = den
        else:
            h = s - s_next
            x = x + (2.0 * h / s) * (den - x) + math.sqrt(2.0 * s * h) * run.randn_like(x)
            for _ in range(corrector_steps if snr > 0 else 0):
                score = (run.denoise(x, s_next) - x) / (s_next * s_next)
                z = run.randn_like(x)
                step = 2.0 * (snr * _batch_mean_norm(z) / _batch_mean_norm(score).clamp_min(1e-30)) ** 2
                x = x + step * score + torch.sqrt(2.0 * step) * z
        run.report(i, x, s, s_next, den)
    return run.result(x)
