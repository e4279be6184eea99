"""Rößler's SRA1: a two-stage stochastic Runge–Kutta scheme of strong order 1.5 for additive noise."""

from __future__ import annotations

import torch
from torch import Tensor

from .base import NativeSDEMethod, noise_product


class SRA1(NativeSDEMethod):
    """SRA1 (Rößler 2010, SIAM J. Numer. Anal. 48(3)), the tableau torchsde's ``srk`` uses for additive noise.

    With ``U = ∫ (W_s − W_t0) ds`` over the step:
    ``H = x + ¾ f(t0, x) dt + (3/2) G(t1) U/dt``,
    ``x1 = x + (⅓ f(t0, x) + ⅔ f(t0 + ¾dt, H)) dt + G(t1)(dW − U/dt) + G(t0) U/dt``.
    Strong order 1.5, weak order 2.0; additive noise only (either calculus).
    """

    name = "sra1"
    sde_types = ("ito", "stratonovich")
    requires_additive = True
    needs_space_time = True
    strong_order = 1.5
    weak_order = 2.0
    drift_evals = 2
    diffusion_evals = 2

    def step(self, t0: Tensor, t1: Tensor, dt: float, x: Tensor, dw: Tensor, u: Tensor | None) -> Tensor:
        sde, nt = self.sde, self.noise_type
        u_dt = u / dt
        g0 = sde.diffusion(t0, x)
        g1 = sde.diffusion(t1, x)
        f0 = sde.drift(t0, x)
        h = torch.add(x, f0, alpha=0.75 * dt) + noise_product(g1, 1.5 * u_dt, x, nt)
        f1 = sde.drift(t0 + 0.75 * dt, h)
        y = torch.add(x, torch.add(f0, f1, alpha=2.0), alpha=dt / 3.0)
        return y + noise_product(g1, dw - u_dt, x, nt) + noise_product(g0, u_dt, x, nt)
