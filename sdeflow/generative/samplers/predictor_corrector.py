"""Predictor–corrector sampling (Song et al. 2021, Algorithms 4–5) with a Langevin corrector."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from .base import Callback, Denoiser, GeneratorLike, NoiseSampler, SampleResult, SamplerRun, check_nonneg
from .registry import sampler
from .steps import euler_maruyama_step

__all__ = ["sample_pc"]


_NORMS = ("batch", "sample")


def _norm(v: Tensor, per_sample: bool) -> Tensor:
    """Per-sample norms as a (B, 1, ..., 1) column, or their batch mean (a 0-dim tensor).

    The batch mean is over the samples whose norm is finite: a sample that became NaN or infinite
    does not spread to the others through the shared step size (it stays non-finite itself and is
    reported in ``SampleResult.status``). When every norm is finite this is ``n.mean()`` bit for bit;
    no host synchronisation either way.
    """
    n = v.reshape(v.shape[0], -1).norm(dim=-1)
    if per_sample:
        return n.reshape((-1,) + (1,) * (v.dim() - 1))
    finite = torch.isfinite(n)
    finite_mean = torch.where(finite, n, 0.0).sum() / finite.sum().clamp_min(1)
    return torch.where(finite.all(), n.mean(), finite_mean)


@sampler("pc", order=None, stochastic=True,
         nfe=lambda steps, snr=0.16, corrector_steps=1, **_: steps + (corrector_steps if snr > 0 else 0) * (steps - 1))
def sample_pc(
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
    snr: float = 0.16,
    corrector_steps: int = 1,
    corrector_norm: str = "batch",
) -> SampleResult:
    """Reverse-SDE Euler–Maruyama predictor, then ``corrector_steps`` Langevin steps at the new level.

    Langevin corrector at level σ with score ``s = (D(x, σ) − x)/σ²``:
    ``x ← x + ε s + sqrt(2ε) z`` with ``ε = 2 (snr · ‖z‖ / ‖s‖)²``, the norms averaged over the
    batch as in Song et al.'s reference algorithm (over its finite samples: one sample that turns NaN
    does not turn the batch NaN; see ``SampleResult.status``) (so the step size depends on the batch; the run is
    still reproducible from ``generator``), or per sample with ``corrector_norm="sample"`` (then each
    sample's path depends on its own noise only: per-sample seeds reproduce it in any batch). No
    corrector at σ = 0. NFE = n + corrector_steps (n − 1) for n steps ending at 0.

    Args:
        snr: the signal-to-noise ratio ``r`` of the corrector (0.16 in Song et al. for VE models;
            smaller is safer, 0 disables the corrector's drift and noise).
        corrector_steps: Langevin steps after each predictor step (>= 0).
        corrector_norm: ``"batch"`` (default, Song et al.) or ``"sample"``: where the norms in ε are
            averaged.
    """
    snr = check_nonneg("snr", snr)
    if isinstance(corrector_steps, bool) or not isinstance(corrector_steps, int) or corrector_steps < 0:
        raise ValueError(f"corrector_steps must be an int >= 0; got {corrector_steps!r}.")
    if corrector_norm not in _NORMS:
        raise ValueError(f"corrector_norm must be one of {_NORMS}; got {corrector_norm!r}.")
    per_sample = corrector_norm == "sample"
    run = SamplerRun("pc", model, x, schedule, generator=generator, callback=callback, progress=progress,
                     compile=compile, model_kwargs=model_kwargs,
                     noise_sampler=noise_sampler, enable_grad=enable_grad)
    for i, s, s_next in run.steps():
        noise = run.randn_like(x, s, s_next) if s_next > 0 else None
        x, den = euler_maruyama_step(run.denoise, x, s, s_next, noise)
        if s_next > 0:
            for _ in range(corrector_steps if snr > 0 else 0):
                score = (run.denoise(x, s_next) - x) / (s_next * s_next)
                z = run.randn_like(x, s_next, s_next)
                step = 2.0 * (snr * _norm(z, per_sample) / _norm(score, per_sample).clamp_min(1e-30)) ** 2
                x = x + step * score + torch.sqrt(2.0 * step) * z
        run.report(i, x, s, s_next, den)
    return run.result(x)
