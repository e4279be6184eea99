"""Heun's method (explicit trapezoid) for ODEs."""

from __future__ import annotations

import torch
from torch import Tensor

from .base import NativeODEMethod


class ODEHeun(NativeODEMethod):
    """``k1 = f(t0, x)``, ``k2 = f(t1, x + dt k1)``, ``x + dt (k1 + k2)/2``; order 2, two evaluations."""

    name = "heun"
    order = 2
    evals = 2

    def step(self, t0: Tensor, t1: Tensor, dt: float, x: Tensor) -> Tensor:
        k1 = self.func(t0, x)
        k2 = self.func(t1, torch.add(x, k1, alpha=dt))
        return torch.add(x, k1 + k2, alpha=0.5 * dt)
