"""Samplers with one signature: ``sample_x(model, x, schedule, *, generator, callback, progress, compile,
model_kwargs, noise_sampler, enable_grad, **options)``.

``model`` is a denoiser ``D(x, σ, **model_kwargs)``; ``schedule`` a decreasing tensor of noise levels
(usually ending in 0). Each returns a :class:`SampleResult` with the samples and the number of network
evaluations. Each is declared once with :func:`sampler` (name, order, NFE, stochastic), which fills
:data:`SAMPLERS` and :data:`SAMPLER_SPECS`; the updates themselves are the step primitives of
:mod:`.steps`, usable with a different noise level per sample.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor

from .adaptive import sample_adaptive
from .base import (
    Callback,
    Denoiser,
    GeneratorLike,
    NoiseSampler,
    SampleResult,
    SamplerRun,
    SamplingError,
    initial_noise,
    per_sample_randn,
    sample_status,
)
from .dpmpp_2m import sample_dpmpp_2m
from .dpmpp_3m import sample_dpmpp_3m
from .euler import sample_euler
from .euler_maruyama import sample_euler_maruyama
from .heun import sample_heun
from .noise import BrownianTreeNoise
from .predictor_corrector import sample_pc
from .registry import SAMPLER_SPECS, SAMPLERS, SamplerSpec, sampler, sampler_spec
from .steps import dpmpp_2m_step, euler_maruyama_step, euler_step, heun_step
from .unipc import sample_unipc

__all__ = [
    "SAMPLERS", "SAMPLER_SPECS", "SamplerSpec", "sampler", "sampler_spec", "sample", "SampleResult", "SamplerRun",
    "SamplingError", "sample_status",
    "initial_noise", "per_sample_randn", "Denoiser", "Callback", "NoiseSampler", "GeneratorLike",
    "sample_euler", "sample_heun", "sample_euler_maruyama", "sample_pc", "sample_dpmpp_2m",
    "sample_dpmpp_3m", "sample_unipc", "sample_adaptive",
    "euler_step", "heun_step", "dpmpp_2m_step", "euler_maruyama_step", "BrownianTreeNoise",
]


def sample(
    name: str,
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
    **options: object,
) -> SampleResult:
    """Run the sampler called ``name`` (a key of :data:`SAMPLERS`) with its options.

    The common arguments are those of :class:`SamplerRun`: ``model_kwargs`` reach every network call
    as ``model(x, σ, **model_kwargs)``; ``generator`` may hold one seed/generator per sample;
    ``noise_sampler(sigma, sigma_next)`` replaces the generator; ``enable_grad=True`` keeps the
    autograd graph (default: none is built); ``on_failure="return"|"raise"`` says what non-finite
    samples get (a warning naming ``SampleResult.status``, or :class:`SamplingError`).
    """
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; choose one of {', '.join(SAMPLERS)}.")
    return SAMPLERS[name](model, x, schedule, generator=generator, callback=callback, progress=progress,
                          compile=compile, model_kwargs=model_kwargs, noise_sampler=noise_sampler,
                          enable_grad=enable_grad, **options)
