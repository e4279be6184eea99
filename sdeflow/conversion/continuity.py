"""The continuity-equation residual of a density under a deterministic flow.

A density ``p_t`` is carried by ``dx/dt = v(t, x)`` iff ``∂_t p + ∇·(p v) = 0``. Divided by ``p``:
``r = ∂_t log p + ∇·v + v·∇log p = 0``. For the probability-flow ODE of an SDE and the SDE's own
marginals this is the theorem behind the PF-ODE (the same ``p_t`` also solves the SDE's
Fokker–Planck equation, :func:`sdeflow.fokker_planck.fokker_planck_residual`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from .._checks import check_state
from ..calculus import divergence

__all__ = ["ContinuityResidual", "continuity_residual"]


@dataclass
class ContinuityResidual:
    """``r = ∂_t log p + ∇·v + v·∇log p`` at a batch of points, with its three terms (each (B,)).

    ``scale`` is the sum of the terms' absolute values; ``relative = |r| / scale``.
    """

    residual: Tensor
    dt_log_p: Tensor
    div_v: Tensor
    v_dot_score: Tensor

    @property
    def scale(self) -> Tensor:
        return self.dt_log_p.abs() + self.div_v.abs() + self.v_dot_score.abs()

    @property
    def relative(self) -> Tensor:
        s = self.scale
        return torch.where(s > 0, self.residual.abs() / s.clamp_min(torch.finfo(s.dtype).tiny), self.residual.abs())

    def max_relative(self) -> float:
        return float(self.relative.max())


def continuity_residual(
    velocity: Callable[[Tensor, Tensor], Tensor],
    log_prob: Callable[[Tensor, Tensor], Tensor],
    t: Tensor | float,
    x: Tensor,
    *,
    method: str = "auto",
    n_probes: int = 16,
    generator: torch.Generator | int | None = None,
) -> ContinuityResidual:
    """Evaluate the continuity residual of ``log_prob`` under ``velocity`` by autograd.

    Args:
        velocity: ``v(t, x)`` (e.g. a :class:`ProbabilityFlowODE`), ``t`` a (B,) tensor here.
        log_prob: ``log p(t, x) -> (B,)``, ``t`` (B,) (differentiated for ∂_t), as for
            :func:`sdeflow.fokker_planck.fokker_planck_residual`.
        t: a time or one per point (B,).
        x: points (B, *event).
        method, n_probes, generator: how ``∇·v`` is computed (:func:`sdeflow.divergence`): exact up to
            16 dimensions with ``"auto"``, else ``n_probes`` Hutchinson probes from ``generator``.
    """
    x = check_state(x, "x")
    b = x.shape[0]
    tt = torch.as_tensor(t, dtype=x.dtype, device=x.device)
    tt = tt.expand(b) if tt.dim() == 0 else tt
    if tt.shape != (b,):
        raise ValueError(f"t must be a scalar or one time per point, shape ({b},); got {tuple(tt.shape)}.")
    with torch.enable_grad():
        tr = tt.detach().clone().requires_grad_(True)
        xr = x.detach().clone().requires_grad_(True)
        lp = log_prob(tr, xr)
        if not isinstance(lp, Tensor) or lp.shape != (b,):
            raise ValueError(f"log_prob(t, x) must return a tensor of shape ({b},).")
        dt_lp, score = torch.autograd.grad(lp.sum(), (tr, xr), allow_unused=True)
        dt_lp = torch.zeros_like(tr) if dt_lp is None else dt_lp
        score = torch.zeros_like(xr) if score is None else score
        v, div = divergence(lambda z: velocity(tr.detach(), z), x.detach(), method=method, n_probes=n_probes,
                            generator=generator)
    vs = (v.detach() * score).reshape(b, -1).sum(-1)
    return ContinuityResidual(residual=dt_lp + div + vs, dt_log_p=dt_lp.detach(), div_v=div.detach(),
                              v_dot_score=vs.detach())
