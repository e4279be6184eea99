"""Shared closed-form machinery for SDEs whose marginals are Gaussian with x0-independent std."""

from __future__ import annotations

import math

import torch
from scipy.special import ndtri
from torch import Tensor

from .._cache import object_cache
from .._checks import as_time, broadcast_time, make_generator
from .base import SDE

__all__ = ["GaussianMarginals", "DiffusionSDE", "as_param", "params_like"]

_LOG_2PI = math.log(2 * math.pi)


def as_param(module: torch.nn.Module, name: str, value: float | Tensor, *, positive: bool = False) -> None:
    """Register ``value`` as a constant of the SDE (float64 when scalar, so it never downgrades float64 states).

    A constant is a non-persistent buffer: it moves with ``.to(device)`` but stays out of
    ``state_dict()`` (so a network that wraps the SDE saves only its weights) and keeps its dtype
    through ``.to(dtype)``/``.half()`` (a bf16 model does not round β_min to 0.1001); the solvers cast
    it to the state's dtype where it is used (:func:`params_like`). An ``nn.Parameter`` is
    registered as a parameter instead, so it can be learned (and is saved).
    Raises ValueError (naming ``name``) for non-finite values, or non-positive ones when ``positive``.
    """
    if isinstance(value, torch.nn.Parameter):
        if positive and not bool((value.detach() > 0).all()):
            raise ValueError(f"{name} must be > 0, got {value.detach()}.")
        module.register_parameter(name, value)
        return
    t = torch.as_tensor(value, dtype=torch.float64) if not isinstance(value, Tensor) else value.detach().clone()
    if not torch.is_floating_point(t):
        t = t.to(torch.float64)
    if t.dim() == 0:
        t = t.to(torch.float64)
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} must be finite, got {value}.")
    if positive and not bool((t > 0).all()):
        raise ValueError(f"{name} must be > 0, got {value}.")
    module.register_buffer(name, t, persistent=False)
    if isinstance(module, SDE):
        module._constant_names = module._constant_names | {name}


def float_time(t: Tensor | float) -> Tensor:
    """A time or noise level as a floating tensor: numbers and integer tensors become float64."""
    t = as_time(t)
    return t if torch.is_floating_point(t) else t.to(torch.float64)


def params_like(module: torch.nn.Module, x: Tensor, *names: str) -> tuple[Tensor, ...]:
    """The named parameters/buffers of ``module`` in ``x``'s dtype and device, cached.

    Mixed-dtype elementwise ops take PyTorch's slower casting path (about 20% per op on CPU), so the
    hot paths use parameters converted once per dtype. The cache entry is reused only while every
    tensor is the same object at the same version (in-place edits and ``.to()`` invalidate it) and
    nothing requires grad (a cached cast would cut the autograd graph).
    """
    tensors = tuple(getattr(module, n) for n in names)
    if torch.compiler.is_compiling():  # traced once into the graph: no Python-side cache
        return tuple(t.to(dtype=x.dtype, device=x.device) for t in tensors)
    key = (x.dtype, x.device, names)
    cache = object_cache(module, "params_like")
    stamp = tuple((id(t), t._version) for t in tensors)
    hit = cache.get(key)
    if hit is not None and hit[0] == stamp:
        return hit[1]
    out = tuple(t.to(dtype=x.dtype, device=x.device) for t in tensors)
    if not any(t.requires_grad for t in tensors):
        cache[key] = (stamp, out)
    return out


def _event_sum(v: Tensor) -> Tensor:
    return v.reshape(v.shape[0], -1).sum(-1) if v.dim() > 1 else v


class GaussianMarginals:
    """Mixin: ``x_t | x_0 ~ N(marginal_mean(t, x0), marginal_std(t)^2 I)``.

    Subclasses implement :meth:`marginal_mean` and :meth:`marginal_std`; sampling, log-density and
    quantiles follow.
    """

    def marginal_mean(self, t: Tensor | float, x0: Tensor) -> Tensor:
        """E[x_t | x_0]; ``x0`` of shape (B, *event), ``t`` scalar or (B,). Returns x0's shape."""
        raise NotImplementedError

    def marginal_std(self, t: Tensor | float) -> Tensor:
        """Standard deviation of each coordinate of x_t given x_0 (same shape as ``t``)."""
        raise NotImplementedError

    def _std_like(self, t: Tensor | float, x0: Tensor) -> Tensor:
        return self.marginal_std(broadcast_time(t, x0))

    def sample_marginal(
        self, x0: Tensor, t: Tensor | float, *, generator: torch.Generator | int | None = None
    ) -> Tensor:
        """Draw x_t given x_0 exactly (no discretisation). Shape of ``x0``."""
        gen = make_generator(generator, x0.device)
        z = torch.randn(x0.shape, generator=gen, device=x0.device, dtype=x0.dtype)
        return self.marginal_mean(t, x0) + self._std_like(t, x0) * z

    def marginal_log_prob(self, x: Tensor, t: Tensor | float, x0: Tensor) -> Tensor:
        """log p(x_t = x | x_0), summed over event dimensions; returns shape (B,)."""
        mean = self.marginal_mean(t, x0)
        std = self._std_like(t, x0).expand_as(mean)
        z = (x - mean) / std
        return _event_sum(-0.5 * z * z - torch.log(std) - 0.5 * _LOG_2PI)

    def marginal_quantile(self, q: float, t: Tensor | float, x0: Tensor) -> Tensor:
        """The q-quantile of each coordinate of x_t given x_0 (shape of ``x0``)."""
        if not 0.0 < q < 1.0:
            raise ValueError(f"q must lie strictly between 0 and 1, got {q}.")
        return self.marginal_mean(t, x0) + self._std_like(t, x0) * float(ndtri(q))


class DiffusionSDE(GaussianMarginals, SDE):
    """A diffusion-model SDE: linear, ``x_t | x_0 ~ N(scale(t) x_0, std(t)^2 I)``, with a prior at T.

    Attributes:
        T: the end time, where samples are drawn from the prior.
        eps: the smallest time a sampler goes down to (numerical stability).
        prior_std: the std of the isotropic Gaussian prior ``N(0, prior_std^2 I)`` at T.
    """

    T: float = 1.0
    eps: float = 1e-3
    prior_std: float = 1.0
    additive = True

    def marginal_scale(self, t: Tensor | float) -> Tensor:
        """The mean coefficient ``scale(t)`` with E[x_t | x_0] = scale(t) x_0 (same shape as ``t``)."""
        raise NotImplementedError

    def marginal_mean(self, t: Tensor | float, x0: Tensor) -> Tensor:
        return self.marginal_scale(broadcast_time(t, x0)) * x0

    def noise_level(self, t: Tensor | float) -> Tensor:
        """The EDM noise level ``σ̃(t) = std(t) / scale(t)`` (same shape as ``t``).

        In the rescaled state ``x̃ = x_t / scale(t)`` every diffusion SDE reads ``x̃ = x_0 + σ̃ ε``,
        which is how the samplers see it (docs/concepts.md, "One noise level for every SDE").
        """
        t = float_time(t)
        return self.marginal_std(t) / self.marginal_scale(t)

    def time_at_noise_level(self, sigma: Tensor | float) -> Tensor:
        """The time ``t`` with ``σ̃(t) = sigma``: the inverse of :meth:`noise_level` (shape of ``sigma``).

        Subclasses with a closed form override this (VP, sub-VP, VE, EDM do). The generic fallback
        assumes ``σ̃`` increases with ``t`` on ``[0, T]`` and bisects there in float64 for a fixed 64
        halvings, vectorised over ``sigma`` and without a host synchronisation (no data-dependent
        stopping test), which resolves ``t`` to ``T·2⁻⁶⁴``, below float64's resolution. Noise levels
        outside ``[σ̃(0), σ̃(T)]`` map to the nearest end of ``[0, T]``.
        """
        sig = float_time(sigma)
        target = sig.to(torch.float64)
        lo = torch.zeros_like(target)
        hi = torch.full_like(target, float(self.T))
        for _ in range(64):
            mid = 0.5 * (lo + hi)
            below = self.noise_level(mid).to(torch.float64) < target
            lo = torch.where(below, mid, lo)
            hi = torch.where(below, hi, mid)
        return (0.5 * (lo + hi)).to(sig.dtype)

    def prior_sample(
        self,
        shape: tuple[int, ...] | torch.Size,
        *,
        generator: torch.Generator | int | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> Tensor:
        """Sample ``x_T ~ N(0, prior_std^2 I)`` of the given shape (B, *event)."""
        device = torch.device(device) if device is not None else torch.device("cpu")
        gen = make_generator(generator, device)
        return self.prior_std * torch.randn(tuple(shape), generator=gen, device=device, dtype=dtype)

    def prior_log_prob(self, x: Tensor) -> Tensor:
        """log N(x; 0, prior_std^2 I) summed over event dimensions; shape (B,)."""
        z = x / self.prior_std
        return _event_sum(-0.5 * z * z - math.log(self.prior_std) - 0.5 * _LOG_2PI)
