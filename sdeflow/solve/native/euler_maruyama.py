"""Euler–Maruyama: ``x + f dt + G dW``."""

from __future__ import annotations

import torch
from torch import Tensor

from .base import NativeSDEMethod, add_noise


class EulerMaruyama(NativeSDEMethod):
    """Strong order 0.5 (1.0 for additive noise), weak order 1.0; Itô, every noise type."""

    name = "euler"
    sde_types = ("ito",)
    strong_order = 0.5
    strong_order_additive = 1.0
    weak_order = 1.0

    def step(self, t0: Tensor, t1: Tensor, dt: float, x: Tensor, dw: Tensor, u: Tensor | None) -> Tensor:
        sde = self.sde
        y = torch.add(x, sde.drift(t0, x), alpha=dt)
        return add_noise(y, sde.diffusion(t0, x), dw, x, self.noise_type)
