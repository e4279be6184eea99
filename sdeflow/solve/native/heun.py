"""Stochastic Heun (predictor–corrector trapezoid) for Stratonovich SDEs."""

from __future__ import annotations

import torch
from torch import Tensor

from .base import NativeSDEMethod, noise_product


class Heun(NativeSDEMethod):
    """Predict ``x̃ = x + f dt + G dW``, correct ``x + ½(f + f̃) dt + ½(G + G̃) dW``.

    Stratonovich (or additive-noise Itô, where the calculi agree). Strong order 1.0 for commutative
    noise (diagonal, scalar, additive), 0.5 for general noise; weak order 1.0.
    """

    name = "heun"
    sde_types = ("stratonovich",)
    strong_order = 1.0
    strong_order_general = 0.5
    weak_order = 1.0
    drift_evals = 2
    diffusion_evals = 2

    def step(self, t0: Tensor, t1: Tensor, dt: float, x: Tensor, dw: Tensor, u: Tensor | None) -> Tensor:
        sde, nt = self.sde, self.noise_type
        f0 = sde.drift(t0, x)
        gw0 = noise_product(sde.diffusion(t0, x), dw, x, nt)
        xp = torch.add(x, f0, alpha=dt) + gw0
        f1 = sde.drift(t1, xp)
        gw1 = noise_product(sde.diffusion(t1, xp), dw, x, nt)
        return torch.add(x, f0 + f1, alpha=0.5 * dt) + 0.5 * (gw0 + gw1)
