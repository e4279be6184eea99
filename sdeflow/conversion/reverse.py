"""The reverse-time SDE (Anderson 1982; Song et al. 2021; docs/concepts.md §3).

``dx = [f − ∇·(G Gᵀ) − G Gᵀ ∇log p_t] dt + G dw̄``, integrated from ``T`` down to ``eps``. The
wrapper is written in the forward time ``t``; run it with decreasing times,
``simulate(reverse_sde(sde, score), x_T, [T, eps], dt=...)``: the solver front door flips time
internally (:class:`sdeflow.sde.base.TimeFlipped`), the one mechanism every backend shares. For a
raw ``torchsde.sdeint`` call use :meth:`ReverseSDE.in_reversed_time`, whose time ``s = −t`` increases.
"""

from __future__ import annotations

from torch import Tensor

from ..sde.base import SDE, TimeFlipped
from .probability_flow import ScoreCorrected, ScoreFunction

__all__ = ["ReverseSDE", "reverse_sde"]


class ReverseSDE(ScoreCorrected):
    """The reverse-time SDE of ``sde`` with the score ``score(x, t)``; integrate it with decreasing times.

    Args:
        sde: the forward SDE (Stratonovich SDEs with state-dependent noise are converted to Itô).
        score: ``score(x, t)``, ``x`` (B, *event), ``t`` (B,), returning ``x``'s shape.
        T, eps: the time interval (default: the SDE's own for a :class:`sdeflow.DiffusionSDE`).

    ``noise_type``, ``additive`` and the diffusion are the forward SDE's; ``sde_type`` is Itô.
    """

    sde_type = "ito"

    def __init__(self, sde: object, score: ScoreFunction, *, T: float | None = None, eps: float | None = None) -> None:
        super().__init__(sde, score, T=T, eps=eps)
        self.noise_type = self.sde.noise_type
        self.additive = self.sde.is_additive
        self.brownian_size = self.sde.brownian_size
        self.event_shape = self.sde.event_shape

    def drift(self, t: Tensor, x: Tensor) -> Tensor:
        """``f − ∇·(G Gᵀ) − G Gᵀ s`` at forward time ``t``."""
        return self.score_corrected_drift(t, x, 1.0)

    def diffusion(self, t: Tensor, x: Tensor) -> Tensor:
        return self.sde.diffusion(t, x)

    def diffusion_derivative(self, t: Tensor, x: Tensor) -> Tensor | None:
        return self.sde.diffusion_derivative(t, x)

    def in_reversed_time(self) -> SDE:
        """This SDE in the time ``s = −t`` (increasing while ``t`` decreases), for raw torchsde calls.

        ``torchsde.sdeint(rev.in_reversed_time(), x_T, -ts)`` with ``ts`` decreasing from ``T``.
        """
        return TimeFlipped(self)

    def extra_repr(self) -> str:
        return f"noise_type={self.noise_type!r}, T={self.T}, eps={self.eps}"


def reverse_sde(sde: object, score: ScoreFunction, *, T: float | None = None, eps: float | None = None) -> ReverseSDE:
    """The reverse-time SDE of ``sde`` with the score ``score(x, t)``: see :class:`ReverseSDE`.

    Example::

        rev = sf.reverse_sde(vp, mixture.score_fn(vp))
        x_0 = sf.simulate(rev, x_T, [vp.T, vp.eps], dt=1e-3, generator=0).final
    """
    return ReverseSDE(sde, score, T=T, eps=eps)
