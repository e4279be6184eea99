"""The probability-flow ODE of an SDE (Song et al. 2021; docs/concepts.md §3).

``dx/dt = f(t, x) − ½ ∇·[G Gᵀ](t, x) − ½ G Gᵀ ∇log p_t(x)`` carries the same marginals ``p_t`` as
``dx = f dt + G dW``. The wrapper speaks every backend's protocol: ``forward(t, x)`` for
:func:`sdeflow.solve_ode` / torchdiffeq, and the :class:`sdeflow.SDE` protocol with zero diffusion
(``drift``/``diffusion``, ``f``/``g``, ``noise_type``, ``sde_type``) for :func:`sdeflow.simulate`
and torchsde. Time runs in the SDE's own variable; pass decreasing times (``[T, eps]``) to sample,
increasing ones (``[eps, T]``) to encode.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from torch import Tensor, nn

from ..sde._gaussian import DiffusionSDE
from ..sde.base import SDE, as_sde
from ..sde.stratonovich import to_ito
from ._ops import call_score, ggt_divergence, ggt_times

__all__ = ["ProbabilityFlowODE", "probability_flow", "ScoreFunction"]

ScoreFunction = Callable[[Tensor, Tensor], Tensor]


def _ito(sde: object) -> SDE:
    sde = as_sde(sde)
    if sde.sde_type == "stratonovich" and not sde.is_additive:
        return to_ito(sde)
    return sde


def _check_score(score: object) -> None:
    if not callable(score):
        raise TypeError(
            f"score must be callable as score(x, t) -> tensor of x's shape (x: (B, *event), t: (B,)); "
            f"got {type(score).__name__}. For a Gaussian mixture use mixture.score_fn(sde)."
        )


def _times(sde: SDE, T: float | None, eps: float | None) -> tuple[float | None, float | None]:
    if isinstance(sde, DiffusionSDE):
        T = sde.T if T is None else T
        eps = sde.eps if eps is None else eps
    for name, v in (("T", T), ("eps", eps)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)):
            raise ValueError(f"{name} must be a finite number (the converted equation's time interval); got {v!r}.")
    if T is not None and eps is not None and not 0 <= eps < T:
        raise ValueError(f"need 0 <= eps < T; got eps={eps}, T={T}.")
    return (None if T is None else float(T)), (None if eps is None else float(eps))


class ScoreCorrected(SDE):
    """Base of the converted equations: holds the Itô form of ``sde``, a score and the interval [eps, T]."""

    def __init__(self, sde: object, score: ScoreFunction, *, T: float | None = None, eps: float | None = None) -> None:
        super().__init__()
        _check_score(score)
        self.sde = _ito(sde)
        if isinstance(score, nn.Module):
            self.score = score
        else:
            self._score_plain = score
        self.T, self.eps = _times(self.sde, T, eps)

    @property
    def score_fn(self) -> ScoreFunction:
        """The score function ``s(x, t)``."""
        return self.score if "score" in self._modules else self._score_plain

    def score_corrected_drift(self, t: Tensor, x: Tensor, weight: float) -> Tensor:
        """``f − weight (∇·(G Gᵀ) + G Gᵀ s)``: weight ½ is the PF-ODE, 1 the reverse-time SDE."""
        sde = self.sde
        s = call_score(self.score_fn, x, t)
        g = sde.diffusion(t, x)
        out = sde.drift(t, x) - weight * ggt_times(sde, t, x, s, g)
        if not sde.is_additive:
            out = out - weight * ggt_divergence(sde, t, x)
        return out


class ProbabilityFlowODE(ScoreCorrected):
    """``dx/dt = f − ½ ∇·(G Gᵀ) − ½ G Gᵀ s(x, t)`` for an SDE and a score ``s ≈ ∇log p_t``.

    Args:
        sde: the forward SDE (any :class:`sdeflow.SDE` or torchsde-style object; a Stratonovich SDE
            with state-dependent noise is converted to Itô first).
        score: ``score(x, t)`` with ``x`` of shape (B, *event) and ``t`` of shape (B,), returning
            ``x``'s shape. An ``nn.Module`` is registered, so its parameters move with ``.to()`` and
            receive gradients through ``solve_ode(..., adjoint=True)``.
        T, eps: the time interval (default: the SDE's own for a :class:`sdeflow.DiffusionSDE`).

    As an :class:`sdeflow.SDE` it has ``noise_type="diagonal"``, ``additive=True`` and zero
    diffusion, so ``simulate`` integrates it (Euler–Maruyama then is the Euler method).
    """

    noise_type = "diagonal"
    sde_type = "ito"
    additive = True

    def velocity(self, t: Tensor, x: Tensor) -> Tensor:
        """The vector field at ``(t, x)``; ``t`` a scalar (0-dim) or one time per path (B,)."""
        return self.score_corrected_drift(t, x, 0.5)

    def forward(self, t: Tensor, x: Tensor) -> Tensor:
        """``velocity(t, x)``: the torchdiffeq / :func:`sdeflow.solve_ode` protocol."""
        return self.velocity(t, x)

    def drift(self, t: Tensor, x: Tensor) -> Tensor:
        return self.velocity(t, x)

    def diffusion(self, t: Tensor, x: Tensor) -> Tensor:
        return x.new_zeros(())

    def extra_repr(self) -> str:
        return f"T={self.T}, eps={self.eps}"


def probability_flow(
    sde: object, score: ScoreFunction, *, T: float | None = None, eps: float | None = None
) -> ProbabilityFlowODE:
    """The probability-flow ODE of ``sde`` with the score ``score(x, t)``: see :class:`ProbabilityFlowODE`.

    Example (sampling with the exact score of a Gaussian mixture)::

        vp = sf.VPSDE()
        pf = sf.probability_flow(vp, mixture.score_fn(vp))
        x_T = vp.prior_sample((1000, 2), generator=0, dtype=torch.float64)
        x_0 = sf.solve_ode(pf, x_T, [vp.T, vp.eps]).final
    """
    return ProbabilityFlowODE(sde, score, T=T, eps=eps)
