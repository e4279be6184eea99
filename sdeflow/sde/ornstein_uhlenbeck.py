"""Ornstein–Uhlenbeck process: ``dX = theta (mean - X) dt + sigma dW``."""

from __future__ import annotations

import torch
from torch import Tensor

from .._checks import as_time, broadcast_time
from ._gaussian import GaussianMarginals, as_param, params_like
from .base import SDE

__all__ = ["OrnsteinUhlenbeck"]


class OrnsteinUhlenbeck(GaussianMarginals, SDE):
    """Mean-reverting OU process (diagonal, additive noise).

    Closed forms: mean ``m + (x0 - m) e^{-theta t}``, variance ``sigma^2 (1 - e^{-2 theta t}) / (2 theta)``,
    stationary law ``N(m, sigma^2 / (2 theta))``.
    """

    noise_type = "diagonal"
    sde_type = "ito"
    additive = True
    elementwise_affine = True

    def __init__(self, theta: float | Tensor = 1.0, mean: float | Tensor = 0.0, sigma: float | Tensor = 1.0) -> None:
        super().__init__()
        as_param(self, "theta", theta, positive=True)
        as_param(self, "mean", mean)
        as_param(self, "sigma", sigma, positive=True)

    def drift(self, t: Tensor, x: Tensor) -> Tensor:
        theta, mean = params_like(self, x, "theta", "mean")
        return (mean - x) * theta

    def diffusion(self, t: Tensor, x: Tensor) -> Tensor:
        return params_like(self, x, "sigma")[0]

    def marginal_mean(self, t: Tensor | float, x0: Tensor) -> Tensor:
        t = broadcast_time(t, x0)
        return self.mean + (x0 - self.mean) * torch.exp(-self.theta * t)

    def marginal_std(self, t: Tensor | float) -> Tensor:
        t = as_time(t)
        return self.sigma * torch.sqrt(-torch.expm1(-2 * self.theta * t) / (2 * self.theta))

    def stationary_std(self) -> Tensor:
        """``sigma / sqrt(2 theta)``."""
        return self.sigma / torch.sqrt(2 * self.theta)
