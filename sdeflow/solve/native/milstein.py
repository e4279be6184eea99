"""Milstein for commutative (diagonal / scalar / additive) noise."""

from __future__ import annotations

import torch
from torch import Tensor

from ...sde.base import SDE, diffusion_times_derivative
from .base import NativeSDEMethod, add_noise


class Milstein(NativeSDEMethod):
    """``x + f dt + g dW + ½ g ∂g (dW² − dt)`` (Itô) or ``... + ½ g ∂g dW²`` (Stratonovich).

    Strong order 1.0, weak order 1.0. ``∂g`` comes from ``sde.diffusion_derivative`` when the SDE
    provides it, otherwise from autograd (one more diffusion evaluation per step).
    """

    name = "milstein"
    sde_types = ("ito", "stratonovich")
    noise_types = ("diagonal", "scalar", "additive")
    strong_order = 1.0
    weak_order = 1.0

    @classmethod
    def costs(cls, sde: SDE, t: Tensor | None = None, x: Tensor | None = None) -> tuple[int, int]:
        """One drift and one diffusion evaluation, plus one diffusion evaluation under autograd for
        ``∂g`` when the noise is not additive and the SDE has no analytic derivative at ``(t, x)``
        (always for scalar noise, whose directional derivative is taken by autograd)."""
        if sde.is_additive:
            return 1, 1
        analytic = (sde.noise_type == "diagonal" and t is not None and x is not None
                    and sde.diffusion_derivative(t, x) is not None)
        return 1, 1 if analytic else 2

    def step(self, t0: Tensor, t1: Tensor, dt: float, x: Tensor, dw: Tensor, u: Tensor | None) -> Tensor:
        sde = self.sde
        g = sde.diffusion(t0, x)
        y = add_noise(torch.add(x, sde.drift(t0, x), alpha=dt), g, dw, x, self.noise_type)
        if sde.is_additive:
            return y
        gdg = diffusion_times_derivative(sde, t0, x, g)
        v = dw * dw - dt if sde.sde_type == "ito" else dw * dw
        return torch.addcmul(y, gdg, v, value=0.5)
