"""The classical fourth-order Runge–Kutta method."""

from __future__ import annotations

import torch
from torch import Tensor

from .base import NativeODEMethod


class ODERK4(NativeODEMethod):
    """Classical RK4; order 4, four evaluations per step."""

    name = "rk4"
    order = 4
    evals = 4

    def step(self, t0: Tensor, t1: Tensor, dt: float, x: Tensor) -> Tensor:
        f = self.func
        tm = t0 + 0.5 * dt
        k1 = f(t0, x)
        k2 = f(tm, torch.add(x, k1, alpha=0.5 * dt))
        k3 = f(tm, torch.add(x, k2, alpha=0.5 * dt))
        k4 = f(t1, torch.add(x, k3, alpha=dt))
        return torch.add(x, k1 + 2 * (k2 + k3) + k4, alpha=dt / 6.0)
