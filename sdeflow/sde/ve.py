"""Variance-exploding SDE (Song et al. 2021), the continuous limit of SMLD / NCSN."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .._checks import as_time, broadcast_time, check_finite_args
from ._gaussian import DiffusionSDE, as_param, float_time

__all__ = ["VESDE"]


class VESDE(DiffusionSDE):
    """``dx = sqrt(d σ²/dt) dW`` with ``σ(t) = σ_min (σ_max/σ_min)^t``, t ∈ [0, 1].

    ``g(t) = σ(t) sqrt(2 ln(σ_max/σ_min))``. Closed forms: ``scale(t) = 1``,
    ``std(t) = sqrt(σ(t)² − σ_min²)`` (exact from x0 at t = 0); prior ``N(0, σ_max² I)``.
    """

    noise_type = "diagonal"
    sde_type = "ito"
    elementwise_affine = True

    def __init__(self, sigma_min: float = 0.01, sigma_max: float = 50.0, T: float = 1.0, eps: float = 1e-5) -> None:
        super().__init__()
        check_finite_args(type(self).__name__, sigma_min=sigma_min, sigma_max=sigma_max, T=T, eps=eps)
        if not 0 < sigma_min < sigma_max:
            raise ValueError(f"need 0 < sigma_min < sigma_max, got sigma_min={sigma_min}, sigma_max={sigma_max}.")
        if not 0 < eps < T:
            raise ValueError(f"need 0 < eps < T, got eps={eps}, T={T}.")
        as_param(self, "sigma_min", sigma_min, positive=True)
        as_param(self, "sigma_max", sigma_max, positive=True)
        self._log_ratio = math.log(sigma_max / sigma_min)
        self.T, self.eps, self.prior_std = float(T), float(eps), float(sigma_max)

    def sigma(self, t: Tensor) -> Tensor:
        """σ(t) = σ_min (σ_max/σ_min)^(t/T)."""
        return self.sigma_min * torch.exp(self._log_ratio * as_time(t) / self.T)

    def drift(self, t: Tensor, x: Tensor) -> Tensor:
        return torch.zeros_like(x)

    def diffusion(self, t: Tensor, x: Tensor) -> Tensor:
        return self.sigma(broadcast_time(t, x)) * math.sqrt(2 * self._log_ratio / self.T)

    def marginal_scale(self, t: Tensor | float) -> Tensor:
        return torch.ones_like(as_time(t))

    def marginal_std(self, t: Tensor | float) -> Tensor:
        s = self.sigma(as_time(t))
        return torch.sqrt(s * s - self.sigma_min**2)

    def time_at_noise_level(self, sigma: Tensor | float) -> Tensor:
        """``t = T ln(sqrt(σ̃² + σ_min²)/σ_min) / ln(σ_max/σ_min)`` (closed form)."""
        sig = float_time(sigma)
        smin = self.sigma_min.to(sig)
        return torch.log(torch.sqrt(sig * sig + smin * smin) / smin) * (self.T / self._log_ratio)
