"""Reference problems with exact answers: SDEs and their closed forms, as objects.

* :class:`DoubleWell` — ``dX = (X − X³) dt + σ dW``: no closed-form transition density, but the
  stationary density is ``exp(−2U/σ²)/Z`` with ``U = x⁴/4 − x²/2``.
* :class:`SineAdditive` — ``dX = sin(3X) dt + dW`` with ``noise_type="additive"``: the strong
  order 1.5 problem for SRA1 / torchsde's ``srk``.
* :class:`GibbsSDE` — ``dx = (−½ D ∇U + ½ ∇·D) dt + G(x) dW`` with ``D = G Gᵀ`` and any potential
  ``U`` and any state-dependent ``G`` (general or scalar noise): its probability flux vanishes for
  ``p ∝ exp(−U)``, so that is its stationary density — an exact check for the ``½ ∂_i∂_j(D_ij p)``
  term with x-dependent, non-diagonal ``D``.
* :data:`PROBLEMS` — named problems for the order checks (SDE, initial value, time span, pathwise
  exact solution where one exists).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from ..sde.base import SDE
from ..sde.geometric_brownian_motion import GeometricBrownianMotion
from ..sde.stratonovich import to_stratonovich

__all__ = ["DoubleWell", "SineAdditive", "example_gibbs", "GibbsSDE", "ReferenceProblem", "PROBLEMS", "get_problem"]


class DoubleWell(SDE):
    """``dX = (X − X³) dt + σ dW`` (1-D or elementwise in any event shape), additive diagonal noise.

    Stationary density (per coordinate): ``exp(−2U(x)/σ²)/Z``, ``U(x) = x⁴/4 − x²/2``.
    """

    noise_type = "diagonal"
    sde_type = "ito"
    additive = True

    def __init__(self, sigma: float = 0.7) -> None:
        super().__init__()
        if not sigma > 0:
            raise ValueError(f"sigma must be > 0; got {sigma}.")
        self.sigma = float(sigma)

    def drift(self, t: Tensor, x: Tensor) -> Tensor:
        return x - x * x * x

    def diffusion(self, t: Tensor, x: Tensor) -> Tensor:
        return torch.full_like(x, self.sigma)

    @staticmethod
    def potential(x: Tensor) -> Tensor:
        """``U(x) = x⁴/4 − x²/2`` elementwise."""
        x2 = x * x
        return 0.25 * x2 * x2 - 0.5 * x2

    def log_normaliser(self) -> float:
        """``log Z``, ``Z = ∫ exp(−2U/σ²) dx`` (Gauss–Legendre quadrature on [−6, 6], relative error < 1e-13)."""
        import numpy as np

        xg, wg = np.polynomial.legendre.leggauss(200)
        lo, hi = -6.0, 6.0
        x = 0.5 * (hi - lo) * xg + 0.5 * (hi + lo)
        u = 0.25 * x**4 - 0.5 * x**2
        return float(math.log(np.sum(0.5 * (hi - lo) * wg * np.exp(-2 * u / self.sigma**2))))

    def stationary_log_prob(self, x: Tensor) -> Tensor:
        """log of the normalised stationary density, summed over event dims: (B,)."""
        lp = -2 * self.potential(x) / self.sigma**2 - self.log_normaliser()
        return lp.reshape(lp.shape[0], -1).sum(-1) if lp.dim() > 1 else lp


class SineAdditive(SDE):
    """``dX = sin(k X) dt + σ dW`` on states (B, 1) with ``noise_type="additive"`` (G of shape (B, 1, 1)).

    The reference problem for strong order 1.5 of additive-noise schemes (SRA1, torchsde's ``srk``,
    which takes its additive path only for ``noise_type="additive"``). Why a sine: SRA1's h^1.5
    error term is proportional to the drift's second derivative; for a linear drift (OU) it
    vanishes and SRA1 converges with strong order 2, and for a mostly linear drift (the double
    well near its minima) the measured slope drifts from 2 towards 1.5 only at small steps.
    ``sin(3x)`` is curved everywhere, so the slope is 1.5 from h = 2^-3 on.
    """

    noise_type = "additive"
    sde_type = "ito"
    brownian_size = 1

    def __init__(self, k: float = 3.0, sigma: float = 1.0) -> None:
        super().__init__()
        self.k, self.sigma = float(k), float(sigma)

    def drift(self, t: Tensor, x: Tensor) -> Tensor:
        return torch.sin(self.k * x)

    def diffusion(self, t: Tensor, x: Tensor) -> Tensor:
        return torch.full(x.shape + (1,), self.sigma, dtype=x.dtype, device=x.device)


class GibbsSDE(SDE):
    """``dx = (−½ D ∇U + ½ ∇·D) dt + G(x) dW`` with stationary density ``∝ exp(−U)``.

    Args:
        potential: ``U(x) -> (B,)`` for states (B, d).
        noise: ``G(x)``: (B, d, m) for ``noise_type="general"`` or (B, d) for ``"scalar"``.
        noise_type: ``"general"`` or ``"scalar"``.

    ``(∇·D)_i = Σ_j ∂_j D_ij`` and ``∇U`` are computed by autograd, so any differentiable ``U`` and
    ``G`` work. The flux ``f p − ½ ∇·(D p) = (f − ½ ∇·D + ½ D ∇U) p`` vanishes for ``p = e^{−U}``.
    """

    sde_type = "ito"

    def __init__(self, potential: Callable[[Tensor], Tensor], noise: Callable[[Tensor], Tensor],
                 noise_type: str = "general") -> None:
        super().__init__()
        if noise_type not in ("general", "scalar"):
            raise ValueError(f"noise_type must be 'general' or 'scalar'; got {noise_type!r}.")
        self.noise_type = noise_type
        self.potential = potential
        self.noise = noise

    def _dmat(self, x: Tensor) -> Tensor:
        g = self.noise(x)
        if self.noise_type == "scalar":
            return g.unsqueeze(-1) * g.unsqueeze(-2)
        return g @ g.transpose(-1, -2)

    def drift(self, t: Tensor, x: Tensor) -> Tensor:
        # Differentiable in x when x requires grad (the Fokker–Planck residual takes ∇·f by autograd).
        need = x.requires_grad
        d = x.shape[-1]
        with torch.enable_grad():
            xr = x if need else x.detach().requires_grad_(True)
            D = self._dmat(xr)
            (gu,) = torch.autograd.grad(self.potential(xr).sum(), xr, retain_graph=True, create_graph=need)
            cols = []
            for i in range(d):
                div_i = torch.zeros_like(x[:, 0])
                for j in range(d):
                    (gij,) = torch.autograd.grad(D[:, i, j].sum(), xr, retain_graph=True, create_graph=need,
                                                 allow_unused=True)
                    if gij is not None:
                        div_i = div_i + gij[:, j]
                cols.append(div_i)
            div_d = torch.stack(cols, -1)
            drift = -0.5 * (D @ gu.unsqueeze(-1)).squeeze(-1) + 0.5 * div_d
        return drift if need else drift.detach()

    def diffusion(self, t: Tensor, x: Tensor) -> Tensor:
        return self.noise(x)

    def stationary_log_prob_unnormalised(self, x: Tensor) -> Tensor:
        """``−U(x)``: the stationary log-density up to a constant, (B,)."""
        return -self.potential(x)


def example_gibbs(noise_type: str = "general") -> GibbsSDE:
    """A 2-D :class:`GibbsSDE` with ``U = x₁²/2 + x₂²`` and a smooth, non-diagonal, x-dependent G."""

    def potential(x: Tensor) -> Tensor:
        return 0.5 * x[:, 0] ** 2 + x[:, 1] ** 2

    def general(x: Tensor) -> Tensor:
        x1, x2 = x[:, 0], x[:, 1]
        row1 = torch.stack([1 + 0.3 * torch.sin(x2), 0.4 * torch.cos(x1)], -1)
        row2 = torch.stack([0.3 * x1 / (1 + x1 * x1), 0.8 + 0.2 * torch.tanh(x1 * x2)], -1)
        return torch.stack([row1, row2], -2)

    def scalar(x: Tensor) -> Tensor:
        x1, x2 = x[:, 0], x[:, 1]
        return torch.stack([1 + 0.3 * torch.sin(x2), 0.6 + 0.2 * torch.cos(x1)], -1)

    return GibbsSDE(potential, general if noise_type == "general" else scalar, noise_type)


@dataclass(frozen=True)
class ReferenceProblem:
    """An SDE with an initial value, a time span and (optionally) a pathwise exact solution.

    Attributes:
        name: identifier.
        make_sde: builds the SDE.
        x0: initial value of every coordinate.
        dim: state dimension.
        t1: end time (start 0).
        exact: ``exact(x0, t, W_t) -> X_t`` or None.
        description: one line.
    """

    name: str
    make_sde: Callable[[], SDE]
    x0: float
    dim: int
    t1: float
    exact: Callable[[Tensor, float, Tensor], Tensor] | None
    description: str

    def initial(self, n_paths: int, *, dtype: torch.dtype = torch.float64,
                device: torch.device | str | None = None) -> Tensor:
        """``x0`` repeated: (n_paths, dim)."""
        return torch.full((n_paths, self.dim), self.x0, dtype=dtype, device=device)


def _gbm_exact(mu: float, sigma: float) -> Callable[[Tensor, float, Tensor], Tensor]:
    def exact(x0: Tensor, t: float, w: Tensor) -> Tensor:
        return x0 * torch.exp((mu - 0.5 * sigma**2) * t + sigma * w)

    return exact


PROBLEMS: dict[str, ReferenceProblem] = {
    p.name: p
    for p in (
        ReferenceProblem("gbm", lambda: GeometricBrownianMotion(0.5, 0.5), 1.0, 1, 1.0, _gbm_exact(0.5, 0.5),
                         "Itô GBM dX = 0.5 X dt + 0.5 X dW, x0 = 1, T = 1; exact X_T = x0 exp((μ − σ²/2)T + σW_T)"),
        ReferenceProblem("gbm_stratonovich", lambda: to_stratonovich(GeometricBrownianMotion(0.5, 0.5)), 1.0, 1,
                         1.0, _gbm_exact(0.5, 0.5),
                         "the same GBM written as a Stratonovich SDE (same pathwise solution)"),
        ReferenceProblem("gbm_weak", lambda: GeometricBrownianMotion(0.75, 0.3), 1.0, 1, 1.0, _gbm_exact(0.75, 0.3),
                         "GBM μ = 0.75, σ = 0.3 for weak order: weak error of E[X_T] large against the "
                         "control-variate noise (which scales with the strong error, ∝ σ²)"),
        ReferenceProblem("sine_additive", lambda: SineAdditive(3.0, 1.0), 0.5, 1, 1.0, None,
                         "dX = sin(3X) dt + dW (noise_type='additive'), x0 = 0.5, T = 1; fine-step reference"),
    )
}


def get_problem(name: str) -> ReferenceProblem:
    """The reference problem called ``name`` (see :data:`PROBLEMS`)."""
    if name not in PROBLEMS:
        raise ValueError(f"unknown problem {name!r}; choose one of {', '.join(PROBLEMS)}.")
    return PROBLEMS[name]
