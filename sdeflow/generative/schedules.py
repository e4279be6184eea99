"""Noise-level schedules for the samplers: decreasing ``σ_0 > σ_1 > ... > σ_{n-1}`` (then 0).

Every function returns a float64 CPU tensor of shape (n + 1,) ending in 0 (``append_zero=True``)
or (n,) without it. The samplers convert it to the state's dtype and device. A sampler given a
schedule of n positive levels and a trailing zero takes n steps.

========================  =====================================================================
:func:`karras_sigmas`     ``(σ_max^{1/ρ} + i/(n−1) (σ_min^{1/ρ} − σ_max^{1/ρ}))^ρ`` (EDM, ρ = 7)
:func:`uniform_sigmas`    uniform in σ
:func:`log_snr_sigmas`    uniform in ``log σ`` (= uniform in log-SNR, ``SNR = 1/σ²``; DPM-Solver's grid)
:func:`time_uniform_sigmas`  ``σ̃(t_i)`` of a diffusion SDE for ``t_i`` uniform in ``[eps, T]``
:func:`vp_sigmas`         the VP SDE's time-uniform grid (``β_min = 0.1``, ``β_max = 20``)
========================  =====================================================================
"""

from __future__ import annotations

import math
import numbers

import torch
from torch import Tensor

from ..conversion.parameterization import noise_level
from ..sde._gaussian import DiffusionSDE
from ..sde.vp import VPSDE

__all__ = [
    "karras_sigmas",
    "uniform_sigmas",
    "log_snr_sigmas",
    "time_uniform_sigmas",
    "vp_sigmas",
    "check_schedule",
]


#: The most noise levels a schedule function builds (2^24: 128 MiB of float64). Samplers use tens to
#: thousands of levels; a larger n is a typo (e.g. 10**10 for 10) and would exhaust memory.
MAX_LEVELS = 1 << 24


def _check_n(n: object) -> int:
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
        raise ValueError(f"n must be a positive int (the number of noise levels); got {n!r}.")
    if n > MAX_LEVELS:
        raise ValueError(f"n={n} noise levels would take {n * 8 / 2**30:.3g} GiB (float64); samplers use tens to "
                         f"thousands of levels. Pass a smaller n (at most {MAX_LEVELS}).")
    return int(n)


def _real(name: str, v: object, *, positive: bool = True) -> float:
    """A finite real number (Python or numpy scalar), > 0 when ``positive``."""
    if isinstance(v, bool) or not isinstance(v, numbers.Real):
        raise TypeError(f"{name} must be a number; got {type(v).__name__} {v!r}.")
    v = float(v)
    if not math.isfinite(v) or (positive and v <= 0):
        raise ValueError(f"{name} must be a finite number{' > 0' if positive else ''}; got {v!r}.")
    return v


def _check_range(sigma_min: float, sigma_max: float) -> tuple[float, float]:
    lo, hi = _real("sigma_min", sigma_min), _real("sigma_max", sigma_max)
    if not lo < hi:
        raise ValueError(f"need sigma_min < sigma_max; got sigma_min={sigma_min}, sigma_max={sigma_max}.")
    return lo, hi


def _check_levels(sig: Tensor, what: str) -> Tensor:
    """The built levels must be finite, > 0 and strictly decreasing (else the inputs were out of range)."""
    if not bool(torch.isfinite(sig).all()) or not bool((sig > 0).all()):
        raise ValueError(f"{what} gives non-finite or non-positive noise levels (from {float(sig[0])!r} to "
                         f"{float(sig[-1])!r}); narrow the range.")
    if not bool((sig[1:] < sig[:-1]).all()):
        raise ValueError(f"{what} gives repeated noise levels (float64 cannot tell them apart); use fewer levels or "
                         f"a wider range.")
    return sig


def _finish(sig: Tensor, append_zero: bool) -> Tensor:
    if append_zero:
        sig = torch.cat([sig, sig.new_zeros(1)])
    return sig


def _ramp(n: int) -> Tensor:
    return torch.linspace(0.0, 1.0, n, dtype=torch.float64) if n > 1 else torch.zeros(1, dtype=torch.float64)


def karras_sigmas(n: int, sigma_min: float, sigma_max: float, rho: float = 7.0, *, append_zero: bool = True) -> Tensor:
    """Karras et al. (2022) levels ``(σ_max^{1/ρ} + i/(n−1)(σ_min^{1/ρ} − σ_max^{1/ρ}))^ρ``, i = 0..n−1.

    Larger ``rho`` concentrates steps near ``sigma_min``; ``rho = 1`` is :func:`uniform_sigmas` and
    ``rho → ∞`` tends to :func:`log_snr_sigmas`.
    """
    n = _check_n(n)
    lo, hi = _check_range(sigma_min, sigma_max)
    rho = _real("rho", rho)
    a, b = hi ** (1.0 / rho), lo ** (1.0 / rho)
    sig = (a + _ramp(n) * (b - a)) ** rho
    sig[0] = hi  # exact ends (the power leaves round-off)
    if n > 1:
        sig[-1] = lo
    return _finish(_check_levels(sig, f"karras_sigmas(n={n}, rho={rho})"), append_zero)


def uniform_sigmas(n: int, sigma_min: float, sigma_max: float, *, append_zero: bool = True) -> Tensor:
    """``n`` levels uniform in σ from ``sigma_max`` down to ``sigma_min``."""
    n = _check_n(n)
    lo, hi = _check_range(sigma_min, sigma_max)
    return _finish(_check_levels(hi + _ramp(n) * (lo - hi), f"uniform_sigmas(n={n})"), append_zero)


def log_snr_sigmas(n: int, sigma_min: float, sigma_max: float, *, append_zero: bool = True) -> Tensor:
    """``n`` levels uniform in ``log σ`` (equivalently in log-SNR) from ``sigma_max`` down to ``sigma_min``."""
    n = _check_n(n)
    lo, hi = _check_range(sigma_min, sigma_max)
    sig = torch.exp(math.log(hi) + _ramp(n) * (math.log(lo) - math.log(hi)))
    return _finish(_check_levels(sig, f"log_snr_sigmas(n={n})"), append_zero)


def time_uniform_sigmas(
    n: int, sde: DiffusionSDE, *, t_min: float | None = None, t_max: float | None = None, append_zero: bool = True
) -> Tensor:
    """Noise levels ``σ̃(t) = σ(t)/α(t)`` of ``sde`` at ``n`` times uniform from ``t_max`` (T) to ``t_min`` (eps)."""
    n = _check_n(n)
    if not isinstance(sde, DiffusionSDE):
        raise TypeError(f"sde must be a sdeflow.DiffusionSDE; got {type(sde).__name__}.")
    t_min = float(sde.eps) if t_min is None else _real("t_min", t_min)
    t_max = float(sde.T) if t_max is None else _real("t_max", t_max)
    if not 0 < t_min < t_max:
        raise ValueError(f"need 0 < t_min < t_max; got t_min={t_min}, t_max={t_max}.")
    if t_max > float(sde.T):
        raise ValueError(f"t_max={t_max} is beyond the SDE's time range [0, T={float(sde.T)}]; pass t_max <= T.")
    ts = t_max + _ramp(n) * (t_min - t_max)
    sig = noise_level(sde, ts).to(torch.float64)
    return _finish(_check_levels(sig, f"time_uniform_sigmas(n={n}, {type(sde).__name__}, t in [{t_min}, {t_max}])"),
                   append_zero)


def vp_sigmas(
    n: int, beta_min: float = 0.1, beta_max: float = 20.0, eps: float = 1e-3, *, append_zero: bool = True
) -> Tensor:
    """The VP SDE's time-uniform grid: ``σ̃(t) = sqrt(exp(B(t)) − 1)`` for t uniform from 1 to ``eps``."""
    return time_uniform_sigmas(n, VPSDE(beta_min=beta_min, beta_max=beta_max, eps=eps), append_zero=append_zero)


def check_schedule(schedule: object, name: str = "schedule") -> Tensor:
    """Check a schedule: 1-D, at least 2 entries, finite, strictly decreasing, only the last may be 0.

    Returns it as a float64 CPU tensor.
    """
    if isinstance(schedule, Tensor):
        sig = schedule.detach().to("cpu", torch.float64)
    else:
        try:
            sig = torch.as_tensor(schedule, dtype=torch.float64)
        except (TypeError, ValueError, RuntimeError) as err:
            raise TypeError(f"{name} must be a 1-D tensor of noise levels; got {type(schedule).__name__}.") from err
    if sig.dim() != 1 or sig.numel() < 2:
        raise ValueError(
            f"{name} must be a 1-D tensor of at least 2 noise levels (e.g. karras_sigmas(n, sigma_min, sigma_max)); "
            f"got shape {tuple(sig.shape)}."
        )
    if not bool(torch.isfinite(sig).all()):
        raise ValueError(f"{name} contains a non-finite value.")
    if not bool((sig[1:] < sig[:-1]).all()):
        raise ValueError(f"{name} must be strictly decreasing (from sigma_max down to sigma_min or 0).")
    if not bool((sig[:-1] > 0).all()) or float(sig[-1]) < 0:
        raise ValueError(f"{name} must be positive, except a trailing 0 (the clean data).")
    return sig
