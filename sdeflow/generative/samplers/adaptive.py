"""An adaptive-step sampler: the PF-ODE through torchdiffeq (dopri5 by default)."""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from ...solve.ode import solve_ode
from ...solve.solution import STATUS_OK
from .base import Callback, Denoiser, GeneratorLike, NoiseSampler, SampleResult, SamplerRun, sample_status
from .registry import sampler

__all__ = ["sample_adaptive"]


@sampler("adaptive", order=None, nfe=None, stochastic=False)
def sample_adaptive(
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
    method: str = "dopri5",
    rtol: float = 1e-5,
    atol: float = 1e-5,
    max_steps: int | None = None,
) -> SampleResult:
    """Integrate the PF-ODE with an adaptive torchdiffeq solver over the schedule's range.

    A sample on which the solver gives up ("underflow in dt") does not abort the batch: it is found
    by bisection (:func:`sdeflow.solve_ode`), its values are NaN and ``SampleResult.status`` is 2 for
    it; the sampler then warns or raises as ``on_failure`` says, like every sampler.

    The ODE is solved in ``u = log σ``, ``dx/du = x − D(x, e^u)`` (smooth over the many decades
    from σ_max to σ_min), from ``schedule[0]`` to the last positive level; a trailing 0 adds one
    final ``x ← D(x, σ_min)``. The schedule's interior levels are output times: the callback sees
    the state at each of them. NFE counts every evaluation the solver made.

    Args:
        method: a torchdiffeq method (``"dopri5"``, ``"dopri8"``, ``"bosh3"``, ...).
        rtol, atol: the solver's tolerances (finite, > 0).
        max_steps: cap on the number of adaptive steps.
    """
    if not isinstance(method, str) or not method:
        raise TypeError(f"method must be the name of a torchdiffeq method (e.g. 'dopri5'); got {method!r}.")
    for name, tol in (("rtol", rtol), ("atol", atol)):
        if isinstance(tol, bool) or not isinstance(tol, numbers.Real) or not math.isfinite(tol) or tol <= 0:
            raise ValueError(f"{name} must be a finite number > 0 (e.g. 1e-5); got {tol!r}.")
    if max_steps is not None and (isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps < 1):
        raise ValueError(f"max_steps must be None or an int >= 1; got {max_steps!r}.")
    run = SamplerRun(f"adaptive_{method}", model, x, schedule, generator=generator, callback=callback,
                     progress=progress, compile=compile, model_kwargs=model_kwargs,
                     noise_sampler=noise_sampler, enable_grad=enable_grad)
    pos = [s for s in run.sigma_values if s > 0]
    us = [math.log(s) for s in pos]

    def field(u: Tensor, y: Tensor) -> Tensor:
        return y - run.denoise(y, torch.exp(u))

    status = None
    if len(us) >= 2:
        with warnings.catch_warnings():  # the sampler reports the failed samples itself (on_failure)
            warnings.simplefilter("ignore", RuntimeWarning)
            sol = solve_ode(field, x, us, method=method, rtol=rtol, atol=atol, max_steps=max_steps,
                            on_failure="return")
        states = list(sol.xs[1:].unbind(0))
        if bool((sol.status != STATUS_OK).any()):
            status = sol.status.clone()
    else:
        states = []
    for i, xs in enumerate(states):
        run.report(i, xs, pos[i], pos[i + 1], None)
    x = states[-1] if states else x
    if run.sigma_values[-1] == 0:
        den = run.denoise(x, pos[-1])
        x = den
        run.report(len(states), x, pos[-1], 0.0, den)
    if status is not None:  # aborted samples (2) keep their status; any other non-finite sample is 1
        status = torch.where(status == STATUS_OK, sample_status(x).to(status.device), status)
    return run.result(x, steps=len(states) + (1 if run.sigma_values[-1] == 0 else 0), status=status)
