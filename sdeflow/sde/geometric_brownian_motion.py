"""Geometric Brownian motion: ``dX = mu X dt + sigma X dW`` (Itô)."""

from __future__ import annotations

import math

import torch
from scipy.special import ndtri
from torch import Tensor

from .._checks import broadcast_time, make_generator
from ._gaussian import as_param, params_like
from .base import SDE

__all__ = ["GeometricBrownianMotion"]


class GeometricBrownianMotion(SDE):
    """GBM with diagonal, multiplicative noise.

    Pathwise solution ``X_t = x0 exp((mu - sigma^2/2) t + sigma W_t)``; ``X_t / x0`` is log-normal with
    mean ``e^{mu t}`` and variance ``e^{2 mu t}(e^{sigma^2 t} - 1)``.
    """

    noise_type = "diagonal"
    sde_type = "ito"
    elementwise_affine = True

    def __init__(self, mu: float | Tensor = 0.0, sigma: float | Tensor = 1.0) -> None:
        super().__init__()
        as_param(self, "mu", mu)
        as_param(self, "sigma", sigma, positive=True)

    def drift(self, t: Tensor, x: Tensor) -> Tensor:
        return params_like(self, x, "mu")[0] * x

    def diffusion(self, t: Tensor, x: Tensor) -> Tensor:
        return params_like(self, x, "sigma")[0] * x

    def diffusion_derivative(self, t: Tensor, x: Tensor) -> Tensor:
        return params_like(self, x, "sigma")[0].expand(x.shape)

    # -- closed forms -------------------------------------------------------------------------
    def exact_solution(self, x0: Tensor, t: Tensor | float, w_t: Tensor) -> Tensor:
        """``x0 exp((mu - sigma^2/2) t + sigma W_t)`` for Brownian values ``w_t`` (shape of ``x0``)."""
        t = broadcast_time(t, x0)
        return x0 * torch.exp((self.mu - 0.5 * self.sigma**2) * t + self.sigma * w_t)

    def marginal_mean(self, t: Tensor | float, x0: Tensor) -> Tensor:
        return x0 * torch.exp(self.mu * broadcast_time(t, x0))

    def marginal_std(self, t: Tensor | float, x0: Tensor) -> Tensor:
        """Std of X_t given x0 (shape of ``x0``): ``|x0| e^{mu t} sqrt(e^{sigma^2 t} - 1)``."""
        t = broadcast_time(t, x0)
        return x0.abs() * torch.exp(self.mu * t) * torch.sqrt(torch.expm1(self.sigma**2 * t))

    def sample_marginal(
        self, x0: Tensor, t: Tensor | float, *, generator: torch.Generator | int | None = None
    ) -> Tensor:
        """Exact draw of X_t given x0 (shape of ``x0``)."""
        gen = make_generator(generator, x0.device)
        z = torch.randn(x0.shape, generator=gen, device=x0.device, dtype=x0.dtype)
        return self.exact_solution(x0, t, torch.sqrt(broadcast_time(t, x0)) * z)

    def marginal_log_prob(self, x: Tensor, t: Tensor | float, x0: Tensor) -> Tensor:
        """Log-normal log-density of X_t = x given x0, summed over event dims; shape (B,).

        Points on the other side of zero from x0 have density zero (``-inf``).
        """
        t = broadcast_time(t, x0)
        r = x / x0
        s = self.sigma * torch.sqrt(t)
        logr = torch.log(r.clamp_min(torch.finfo(x.dtype).tiny))
        z = (logr - (self.mu - 0.5 * self.sigma**2) * t) / s
        lp = -0.5 * z * z - torch.log(s) - logr - torch.log(x0.abs()) - 0.5 * math.log(2 * math.pi)
        lp = torch.where(r > 0, lp, torch.full_like(lp, -math.inf))
        return lp.reshape(lp.shape[0], -1).sum(-1) if lp.dim() > 1 else lp

    def marginal_quantile(self, q: float, t: Tensor | float, x0: Tensor) -> Tensor:
        """The q-quantile of X_t given x0 (x0 > 0 gives increasing quantiles; x0 < 0 mirrors them)."""
        if not 0.0 < q < 1.0:
            raise ValueError(f"q must lie strictly between 0 and 1, got {q}.")
        t = broadcast_time(t, x0)
        zq = torch.where(x0 > 0, torch.full_like(x0, float(ndtri(q))), torch.full_like(x0, float(ndtri(1 - q))))
        return x0 * torch.exp((self.mu - 0.5 * self.sigma**2) * t + self.sigma * torch.sqrt(t) * zq)
