"""Samplers with one signature: ``sample_x(model, x, schedule, *, generator, callback, progress, **options)``.

``model`` is a denoiser ``D(x, σ)``; ``schedule`` a decreasing tensor of noise levels (usually ending
in 0). Each returns a :class:`SampleResult` with the samples and the number of network evaluations.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from .adaptive import sample_adaptive
from .base import Callback, Denoiser, SampleResult, SamplerRun, initial_noise
from .dpmpp_2m import sample_dpmpp_2m
from .dpmpp_3m import sample_dpmpp_3m
from .euler import sample_euler
from .euler_maruyama import sample_euler_maruyama
from .heun import sample_heun
from .predictor_corrector import sample_pc
from .unipc import sample_unipc

__all__ = [
    "SAMPLERS", "sample", "SampleResult", "SamplerRun", "initial_noise", "Denoiser", "Callback",
    "sample_euler", "sample_heun", "sample_euler_maruyama", "sample_pc", "sample_dpmpp_2m",
    "sample_dpmpp_3m", "sample_unipc", "sample_adaptive",
]

SAMPLERS: dict[str, Callable[..., SampleResult]] = {
    "euler": sample_euler,
    "heun": sample_heun,
    "euler_maruyama": sample_euler_maruyama,
    "pc": sample_pc,
    "dpmpp_2m": sample_dpmpp_2m,
    "dpmpp_3m": sample_dpmpp_3m,
    "unipc": sample_unipc,
    "adaptive": sample_adaptive,
}


def sample(
    name: str,
    model: Denoiser,
    x: Tensor,
    schedule: Tensor,
    *,
    generator: torch.Generator | int | None = None,
    callback: Callback | None = None,
    progress: bool = False,
    compile: bool = False,
    **options: object,
) -> SampleResult:
    """Run the sampler called ``name`` (a key of :data:`SAMPLERS`) with its options."""
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; choose one of {', '.join(SAMPLERS)}.")
    return SAMPLERS[name](model, x, schedule, generator=generator, callback=callback, progress=progress,
                          compile=compile, **options)
