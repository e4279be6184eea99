"""Fit a sampler's noise levels to a model: minimise its distance to the exact PF-ODE solution.

Karras ρ = 7 was tuned on images; a model whose denoiser changes fastest at other noise levels
(data of another scale, narrow modes) is sampled better by a grid placed where it is needed.
:func:`optimize_schedule` finds one once per (model, sampler, number of steps), in the spirit of
"optimized time steps" / "align your steps": it solves the PF-ODE accurately from a pilot batch of
starting states (adaptive dopri5), then moves the interior levels one at a time (coordinate
descent in ``log σ``) to minimise the RMS distance between the sampler's output and that
reference. The end levels and the step count stay fixed, so the sampler's NFE is unchanged; the
search itself costs a few hundred sampler runs on the pilot batch (reported in the result).
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

from .._checks import check_state
from .samplers.adaptive import sample_adaptive
from .samplers.base import Denoiser, SampleResult
from .schedules import check_schedule, karras_sigmas

__all__ = ["ScheduleSearch", "optimize_schedule"]

_GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0


@dataclass
class ScheduleSearch:
    """Result of :func:`optimize_schedule`.

    Attributes:
        sigmas: the fitted schedule (float64, trailing 0 kept if the initial one had it).
        error: RMS distance to the reference on the pilot batch with the fitted schedule.
        initial_error: the same with the initial schedule.
        evaluations: sampler runs made by the search.
        pilot_nfe: denoiser evaluations spent (reference solve + search), each on the pilot batch.
    """

    sigmas: Tensor
    error: float
    initial_error: float
    evaluations: int
    pilot_nfe: int


def optimize_schedule(
    sampler: Callable[..., SampleResult],
    model: Denoiser,
    x_pilot: Tensor,
    schedule: Tensor | None = None,
    *,
    n: int | None = None,
    sigma_min: float | None = None,
    sigma_max: float | None = None,
    reference: Tensor | None = None,
    sweeps: int = 3,
    min_log_step: float = 0.02,
    sampler_options: dict | None = None,
    reference_rtol: float = 1e-8,
) -> ScheduleSearch:
    """Fit the interior levels of a schedule to ``model`` for a deterministic ``sampler``.

    Args:
        sampler: a sampler function, e.g. :func:`sdeflow.sample_dpmpp_2m` (deterministic: the PF-ODE).
        model: the denoiser ``D(x, σ)``.
        x_pilot: starting states at the schedule's first level, (P, *event); a few hundred suffice.
            Use other draws than the ones you will sample from.
        schedule: the initial schedule; default ``karras_sigmas(n, sigma_min, sigma_max)``.
        n, sigma_min, sigma_max: for the default initial schedule.
        reference: exact end states for ``x_pilot`` (default: an adaptive dopri5 solve at
            ``reference_rtol``).
        sweeps: passes of coordinate descent over the interior levels.
        min_log_step: the smallest allowed step in ``log σ`` (keeps finite differences of the
            multistep samplers well conditioned in float32).
        sampler_options: extra keyword options for ``sampler``.

    Returns:
        :class:`ScheduleSearch` with the fitted schedule (pass it to the same sampler).
    """
    x_pilot = check_state(x_pilot, "x_pilot")
    if not callable(sampler):
        raise TypeError(f"sampler must be a sampler function such as sample_dpmpp_2m; got {type(sampler).__name__}.")
    if schedule is None:
        if n is None or sigma_min is None or sigma_max is None:
            raise ValueError("pass an initial schedule, or n, sigma_min and sigma_max for a Karras one.")
        schedule = karras_sigmas(n, sigma_min, sigma_max)
    sig0 = check_schedule(schedule)
    if isinstance(sweeps, bool) or not isinstance(sweeps, int) or sweeps < 0:
        raise ValueError(f"sweeps must be an int >= 0; got {sweeps!r}.")
    if isinstance(min_log_step, bool) or not isinstance(min_log_step, numbers.Real) \
            or not math.isfinite(min_log_step) or min_log_step < 0:
        raise ValueError(f"min_log_step must be a finite number >= 0; got {min_log_step!r}.")
    if isinstance(reference_rtol, bool) or not isinstance(reference_rtol, numbers.Real) \
            or not math.isfinite(reference_rtol) or reference_rtol <= 0:
        raise ValueError(f"reference_rtol must be a finite number > 0; got {reference_rtol!r}.")
    if sampler_options is not None and (not isinstance(sampler_options, Mapping)
                                        or not all(isinstance(k, str) for k in sampler_options)):
        raise TypeError(f"sampler_options must be a dict of the sampler's keyword options; got "
                        f"{type(sampler_options).__name__}.")
    opts = dict(sampler_options or {})
    tail_zero = float(sig0[-1]) == 0.0
    logs = torch.log(sig0[:-1] if tail_zero else sig0).tolist()  # decreasing
    if len(logs) < 2:
        raise ValueError(f"schedule needs at least 2 positive noise levels to optimise; got {sig0.tolist()}.")
    steps = [a - b for a, b in zip(logs[:-1], logs[1:], strict=True)]
    if min(steps) < min_log_step:
        raise ValueError(f"the initial schedule has a log-step below min_log_step={min_log_step}; lower it.")
    pilot_nfe = 0
    if reference is None:
        ref_run = sample_adaptive(model, x_pilot, sig0, rtol=reference_rtol, atol=reference_rtol)
        reference, pilot_nfe = ref_run.x, ref_run.nfe
    elif not isinstance(reference, Tensor) or reference.shape != x_pilot.shape:
        raise ValueError("reference must be a tensor of x_pilot's shape (the exact end states).")
    if not bool(torch.isfinite(reference).all()):
        raise ValueError("reference (the exact end states) contains NaN or infinite values; the error against it "
                         "would be meaningless. Pass finite end states (or lower reference_rtol's demands).")
    evaluations = 0

    def build(lg: list[float]) -> Tensor:
        s = torch.exp(torch.tensor(lg, dtype=torch.float64))
        s[0], s[-1] = float(sig0[0]), float(sig0[-2] if tail_zero else sig0[-1])
        return torch.cat([s, s.new_zeros(1)]) if tail_zero else s

    def error(lg: list[float]) -> float:
        nonlocal evaluations, pilot_nfe
        with warnings.catch_warnings():  # a trial schedule whose samples diverge scores inf: no warning each
            warnings.simplefilter("ignore", RuntimeWarning)
            out = sampler(model, x_pilot, build(lg), **opts)
        evaluations += 1
        pilot_nfe += out.nfe
        err = float((out.x - reference).reshape(x_pilot.shape[0], -1).pow(2).sum(-1).mean().sqrt())
        return err if math.isfinite(err) else math.inf

    best = error(logs)
    initial = best
    for _ in range(sweeps):
        for i in range(1, len(logs) - 1):
            hi, lo = logs[i - 1] - min_log_step, logs[i + 1] + min_log_step  # log σ_i must stay in (lo, hi)
            if hi <= lo:
                continue
            # coarse scan, then golden-section refinement around the best point
            cands = [lo + f * (hi - lo) for f in (0.1, 0.3, 0.5, 0.7, 0.9)]
            vals = []
            for c in cands:
                trial = logs.copy()
                trial[i] = c
                vals.append(error(trial))
            k = min(range(len(cands)), key=vals.__getitem__)
            if vals[k] < best:
                best, logs[i] = vals[k], cands[k]
            a, b = max(lo, logs[i] - 0.2 * (hi - lo)), min(hi, logs[i] + 0.2 * (hi - lo))
            for _ in range(4):
                c1, c2 = b - _GOLDEN * (b - a), a + _GOLDEN * (b - a)
                t1, t2 = logs.copy(), logs.copy()
                t1[i], t2[i] = c1, c2
                e1, e2 = error(t1), error(t2)
                if e1 < best:
                    best, logs[i] = e1, c1
                if e2 < best:
                    best, logs[i] = e2, c2
                if e1 <= e2:
                    b = c2
                else:
                    a = c1
    return ScheduleSearch(sigmas=build(logs), error=best, initial_error=initial, evaluations=evaluations,
                          pilot_nfe=pilot_nfe)
