"""The "empirical" SDE of Karras et al. (2022) and consistency models: σ(t) = t."""

from __future__ import annotations

import torch
from torch import Tensor

from .._checks import as_time, broadcast_time, check_finite_args
from ._gaussian import DiffusionSDE, float_time

__all__ = ["EDMSDE"]


class EDMSDE(DiffusionSDE):
    """``dx = sqrt(2t) dW``: zero drift, ``g(t)² = 2t``, so ``x_t = x_0 + N(0, t² I)``.

    Its probability-flow ODE is ``dx/dt = −t ∇log p_t(x)`` (docs/concepts.md §3). Closed forms:
    ``scale(t) = 1``, ``std(t) = t``; prior ``N(0, T² I)`` with T = 80, eps = 0.002.
    """

    noise_type = "diagonal"
    sde_type = "ito"
    elementwise_affine = True

    def __init__(self, T: float = 80.0, eps: float = 0.002) -> None:
        super().__init__()
        check_finite_args(type(self).__name__, T=T, eps=eps)
        if not 0 < eps < T:
            raise ValueError(f"need 0 < eps < T, got eps={eps}, T={T}.")
        self.T, self.eps, self.prior_std = float(T), float(eps), float(T)

    def drift(self, t: Tensor, x: Tensor) -> Tensor:
        return torch.zeros_like(x)

    def diffusion(self, t: Tensor, x: Tensor) -> Tensor:
        return torch.sqrt(2 * broadcast_time(t, x))

    def marginal_scale(self, t: Tensor | float) -> Tensor:
        return torch.ones_like(as_time(t))

    def marginal_std(self, t: Tensor | float) -> Tensor:
        return as_time(t) * 1.0

    def noise_level(self, t: Tensor | float) -> Tensor:
        """σ̃(t) = t."""
        return float_time(t) * 1.0

    def time_at_noise_level(self, sigma: Tensor | float) -> Tensor:
        """t = σ̃."""
        return float_time(sigma) * 1.0

    def sigma(self, t: Tensor) -> Tensor:
        """σ(t) = t."""
        return as_time(t)
