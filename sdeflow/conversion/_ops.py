"""Products and divergences of the diffusion matrix ``G Gᵀ`` for every noise type.

Shapes follow :mod:`sdeflow.sde.base`: a state ``x`` is ``(B, *event)``; ``diffusion(t, x)`` is
broadcastable to ``x`` for diagonal and scalar noise, ``(B, *event, m)`` or ``(*event, m)`` for
additive and general noise.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from ..sde.base import SDE, diffusion_times_derivative

__all__ = ["ggt_times", "ggt_divergence", "call_score", "time_vector"]


def time_vector(t: Tensor | float, x: Tensor) -> Tensor:
    """``t`` as a tensor of shape (B,) in ``x``'s dtype and device (a scalar is repeated)."""
    t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
    if t.dim() == 0:
        return t.expand(x.shape[0])
    if t.dim() == 1 and t.shape[0] == x.shape[0]:
        return t
    raise ValueError(
        f"t must be a scalar or have one time per batch element, shape ({x.shape[0]},); got shape {tuple(t.shape)}."
    )


def call_score(score: Callable[[Tensor, Tensor], Tensor], x: Tensor, t: Tensor | float) -> Tensor:
    """Evaluate ``score(x, t)`` with ``t`` of shape (B,) and check that it returns ``x``'s shape."""
    s = score(x, time_vector(t, x))
    if not isinstance(s, Tensor):
        raise TypeError(f"score(x, t) must return a torch.Tensor; it returned {type(s).__name__}.")
    if s.shape != x.shape:
        raise ValueError(
            f"score(x, t) returned shape {tuple(s.shape)} for a state of shape {tuple(x.shape)}; "
            f"a score is a gradient of log p_t with respect to x and has the state's shape."
        )
    return s


def ggt_times(sde: SDE, t: Tensor, x: Tensor, v: Tensor, g: Tensor | None = None) -> Tensor:
    """``G Gᵀ v`` at ``(t, x)`` for ``v`` of ``x``'s shape (the SDE's noise operator); returns ``x``'s shape."""
    if g is None:
        g = sde.diffusion(t, x)
    return sde.noise_op.ggt(g, v, x)


def ggt_divergence(sde: SDE, t: Tensor, x: Tensor) -> Tensor:
    """Row-wise divergence ``(∇·G Gᵀ)_i = Σ_j ∂_j (G Gᵀ)_ij`` at ``(t, x)``, shape of ``x``.

    Zero for additive noise (every standard diffusion SDE). Diagonal noise: ``2 g_i ∂_i g_i``
    (the SDE's own ``diffusion_derivative`` or one autograd pass). Scalar and general noise: one
    Jacobian–vector product per state coordinate (cost grows with the state dimension d).
    Differentiable (graph kept) when gradients are enabled and ``x`` requires grad.
    """
    if sde.is_additive:
        return torch.zeros_like(x)
    if sde.noise_type == "diagonal":
        return 2.0 * diffusion_times_derivative(sde, t, x)
    keep = torch.is_grad_enabled() and x.requires_grad
    b = x.shape[0]
    with torch.enable_grad():
        xr = x if keep else x.detach().requires_grad_(True)
        gm = sde.noise_op.matrix(sde.diffusion(t, xr), xr)  # (B, d, m)
        if not gm.requires_grad:  # G does not depend on x after all
            return torch.zeros_like(x)
        d = gm.shape[1]
        out = torch.zeros(b, d, dtype=x.dtype, device=x.device)
        for j in range(d):
            col = (gm * gm[:, j : j + 1, :]).sum(-1)  # (G Gᵀ)_{:, j}, shape (B, d)
            u = torch.zeros_like(col, requires_grad=True)
            (vjp,) = torch.autograd.grad(col, xr, grad_outputs=u, create_graph=True, retain_graph=True,
                                         allow_unused=True)
            if vjp is None:
                continue
            e_j = torch.zeros_like(vjp).reshape(b, d)
            e_j[:, j] = 1.0
            (jvp,) = torch.autograd.grad(vjp, u, grad_outputs=e_j.reshape(vjp.shape), create_graph=keep,
                                         retain_graph=True, allow_unused=True)
            if jvp is not None:
                out = out + jvp
    return out.reshape(x.shape)
