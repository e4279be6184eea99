"""Itô ↔ Stratonovich conversion as wrapper SDEs.

The same process solves ``dx = f dt + G dW`` (Itô) and ``dx = (f − ½ c) dt + G ∘ dW`` (Stratonovich),
with the correction ``c_i = Σ_{j,k} G_{jk} ∂_j G_{ik}``: ``g ∂g/∂x`` for diagonal noise, zero for
additive noise, and one Jacobian–vector product per Brownian dimension for general noise.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .base import SDE, as_sde, diffusion_times_derivative

__all__ = ["to_stratonovich", "to_ito", "ConvertedSDE", "ito_stratonovich_correction"]


def ito_stratonovich_correction(sde: SDE, t: Tensor, x: Tensor) -> Tensor:
    """``c_i = Σ_{j,k} G_{jk} ∂_j G_{ik}`` at ``(t, x)``, shape of ``x``."""
    if sde.is_additive:
        return torch.zeros_like(x)
    if sde.noise_type in ("diagonal", "scalar"):
        return diffusion_times_derivative(sde, t, x)
    with torch.enable_grad():
        xr = x.detach().requires_grad_(True)
        G = sde.diffusion(t, xr)
        G = G.expand(x.shape + (G.shape[-1],))
        out = torch.zeros_like(x)
        if not G.requires_grad:  # G does not depend on x
            return out
        for k in range(G.shape[-1]):
            col = G[..., k]
            u = torch.zeros_like(col, requires_grad=True)
            (jtu,) = torch.autograd.grad(col, xr, grad_outputs=u, create_graph=True, retain_graph=True,
                                         allow_unused=True)
            if jtu is None:
                continue
            (jv,) = torch.autograd.grad(jtu, u, grad_outputs=col.detach(), retain_graph=True, allow_unused=True)
            if jv is not None:
                out = out + jv
    return out


class ConvertedSDE(SDE):
    """``base`` rewritten in the other calculus: drift ``f ± ½ c``, same diffusion and noise type."""

    def __init__(self, base: object, target: str) -> None:
        super().__init__()
        self.base = as_sde(base)
        if target not in ("ito", "stratonovich"):
            raise ValueError(f"target must be 'ito' or 'stratonovich', got {target!r}.")
        if self.base.sde_type == target:
            raise ValueError(f"the SDE is already {target}; no conversion needed.")
        self.sde_type = target
        self.noise_type = self.base.noise_type
        self.additive = self.base.is_additive
        self.brownian_size = self.base.brownian_size
        self._sign = -0.5 if target == "stratonovich" else 0.5

    def drift(self, t: Tensor, x: Tensor) -> Tensor:
        f = self.base.drift(t, x)
        if self.base.is_additive:
            return f
        return f + self._sign * ito_stratonovich_correction(self.base, t, x)

    def diffusion(self, t: Tensor, x: Tensor) -> Tensor:
        return self.base.diffusion(t, x)

    def diffusion_derivative(self, t: Tensor, x: Tensor) -> Tensor | None:
        return self.base.diffusion_derivative(t, x)


def to_stratonovich(sde: object) -> SDE:
    """The Stratonovich SDE with the same solution as the Itô ``sde``."""
    return ConvertedSDE(sde, "stratonovich")


def to_ito(sde: object) -> SDE:
    """The Itô SDE with the same solution as the Stratonovich ``sde``."""
    return ConvertedSDE(sde, "ito")
