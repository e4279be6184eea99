"""Sub-variance-preserving SDE (Song et al. 2021)."""

from __future__ import annotations

import torch
from torch import Tensor

from .._checks import as_time, broadcast_time
from ._gaussian import float_time
from .vp import VPSDE

__all__ = ["SubVPSDE"]


class SubVPSDE(VPSDE):
    """``dx = -½ β(t) x dt + sqrt(β(t) (1 − e^{−2 B(t)})) dW``, with β and B as in :class:`VPSDE`.

    Closed forms: ``scale(t) = exp(−½ B(t))``, ``std(t) = 1 − exp(−B(t))`` (its variance is below
    the VP one at every t); prior ``N(0, I)``.
    """

    def diffusion(self, t: Tensor, x: Tensor) -> Tensor:
        t = broadcast_time(t, x)
        return torch.sqrt(self.beta(t) * -torch.expm1(-2 * self.integrated_beta(t)))

    def marginal_std(self, t: Tensor | float) -> Tensor:
        return -torch.expm1(-self.integrated_beta(as_time(t)))

    def time_at_noise_level(self, sigma: Tensor | float) -> Tensor:
        """Closed form: ``B(t) = 2 asinh(σ̃ / 2)``."""
        return self.inverse_integrated_beta(2 * torch.asinh(float_time(sigma) / 2))
