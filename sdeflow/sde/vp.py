"""Variance-preserving SDE (Song et al. 2021), the continuous limit of DDPM."""

from __future__ import annotations

import torch
from torch import Tensor

from .._checks import as_time, broadcast_time, check_finite_args
from ._gaussian import DiffusionSDE, as_param, float_time

__all__ = ["VPSDE"]


class VPSDE(DiffusionSDE):
    """``dx = -½ β(t) x dt + sqrt(β(t)) dW`` with ``β(t) = β_min + t (β_max − β_min)``, t ∈ [0, T].

    Closed forms, with ``B(t) = ∫_0^t β = β_min t + ½ (β_max − β_min) t²``:
    ``scale(t) = exp(−½ B(t))``, ``std(t) = sqrt(1 − exp(−B(t)))``; prior ``N(0, I)``.
    """

    noise_type = "diagonal"
    sde_type = "ito"
    elementwise_affine = True

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0, T: float = 1.0, eps: float = 1e-3) -> None:
        super().__init__()
        check_finite_args(type(self).__name__, beta_min=beta_min, beta_max=beta_max, T=T, eps=eps)
        if not 0 < beta_min <= beta_max:
            raise ValueError(f"need 0 < beta_min <= beta_max, got beta_min={beta_min}, beta_max={beta_max}.")
        if not 0 < eps < T:
            raise ValueError(f"need 0 < eps < T, got eps={eps}, T={T}.")
        as_param(self, "beta_min", beta_min, positive=True)
        as_param(self, "beta_max", beta_max, positive=True)
        self.T, self.eps, self.prior_std = float(T), float(eps), 1.0

    def beta(self, t: Tensor) -> Tensor:
        """β(t)."""
        return self.beta_min + t * (self.beta_max - self.beta_min)

    def integrated_beta(self, t: Tensor) -> Tensor:
        """B(t) = ∫_0^t β(s) ds."""
        return self.beta_min * t + 0.5 * (self.beta_max - self.beta_min) * t * t

    def drift(self, t: Tensor, x: Tensor) -> Tensor:
        return -0.5 * self.beta(broadcast_time(t, x)) * x

    def diffusion(self, t: Tensor, x: Tensor) -> Tensor:
        return torch.sqrt(self.beta(broadcast_time(t, x)))

    def marginal_scale(self, t: Tensor | float) -> Tensor:
        return torch.exp(-0.5 * self.integrated_beta(as_time(t)))

    def marginal_std(self, t: Tensor | float) -> Tensor:
        return torch.sqrt(-torch.expm1(-self.integrated_beta(as_time(t))))

    def inverse_integrated_beta(self, big_b: Tensor) -> Tensor:
        """The time t with ``B(t) = big_b`` (closed form, no cancellation at small B)."""
        b0 = self.beta_min.to(big_b)
        db = (self.beta_max - self.beta_min).to(big_b)
        # B(t) = b0 t + ½ db t²  ->  t = 2B / (b0 + sqrt(b0² + 2 db B)), exact also for db = 0.
        return 2 * big_b / (b0 + torch.sqrt(b0 * b0 + 2 * db * big_b))

    def time_at_noise_level(self, sigma: Tensor | float) -> Tensor:
        """Closed form: ``B(t) = log(1 + σ̃²)``."""
        sig = float_time(sigma)
        return self.inverse_integrated_beta(torch.log1p(sig * sig))
