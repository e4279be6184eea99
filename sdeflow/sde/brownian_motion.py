"""Brownian motion with drift: ``dX = mu dt + sigma dW``, so ``X_t = x0 + mu t + sigma W_t``."""

from __future__ import annotations

import torch
from torch import Tensor

from .._checks import as_time, broadcast_time
from ._gaussian import GaussianMarginals, as_param, params_like
from .base import SDE

__all__ = ["BrownianMotion"]


class BrownianMotion(GaussianMarginals, SDE):
    """Brownian motion with drift ``mu`` and volatility ``sigma`` (diagonal, additive noise).

    Closed forms: mean ``x0 + mu t``, std ``sigma sqrt(t)``; the path is ``x0 + mu t + sigma W_t``.
    """

    noise_type = "diagonal"
    sde_type = "ito"
    additive = True
    elementwise_affine = True

    def __init__(self, mu: float | Tensor = 0.0, sigma: float | Tensor = 1.0) -> None:
        super().__init__()
        as_param(self, "mu", mu)
        as_param(self, "sigma", sigma, positive=True)

    def drift(self, t: Tensor, x: Tensor) -> Tensor:
        return params_like(self, x, "mu")[0].expand(x.shape)

    def diffusion(self, t: Tensor, x: Tensor) -> Tensor:
        return params_like(self, x, "sigma")[0]

    def marginal_mean(self, t: Tensor | float, x0: Tensor) -> Tensor:
        return x0 + self.mu * broadcast_time(t, x0)

    def marginal_std(self, t: Tensor | float) -> Tensor:
        return self.sigma * torch.sqrt(as_time(t))

    def exact_solution(self, x0: Tensor, t: Tensor | float, w_t: Tensor) -> Tensor:
        """The path value ``x0 + mu t + sigma W_t`` for a Brownian value ``w_t`` (shape of ``x0``)."""
        return x0 + self.mu * broadcast_time(t, x0) + self.sigma * w_t
