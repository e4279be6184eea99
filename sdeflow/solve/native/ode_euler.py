"""Explicit Euler for ODEs."""

from __future__ import annotations

import torch
from torch import Tensor

from .base import NativeODEMethod


class ODEEuler(NativeODEMethod):
    """``x + dt f(t0, x)``; order 1, one evaluation per step."""

    name = "euler"
    order = 1
    evals = 1

    def step(self, t0: Tensor, t1: Tensor, dt: float, x: Tensor) -> Tensor:
        return torch.add(x, self.func(t0, x), alpha=dt)
