"""Linear SDE with additive noise: ``dx = (A x + b) dt + G dW`` with constant ``A``, ``b``, ``G``.

The marginals are Gaussian with closed forms for *any* drift matrix ``A`` (stable, singular or
unstable), computed with Van Loan's block matrix exponentials:

* mean: ``exp([[A, b], [0, 0]] t)`` holds ``e^{At}`` and ``∫_0^t e^{As} ds b`` in its first row,
  so ``m(t) = e^{At} x0 + ∫_0^t e^{As} ds b``;
* covariance: with ``Q = G Gᵀ`` and ``M = [[-A, Q], [0, Aᵀ]] t``, ``exp(M) = [[·, F12], [0, F22]]``
  and ``Σ(t) = ∫_0^t e^{As} Q e^{Aᵀs} ds = F22ᵀ F12`` (Van Loan 1978).

When ``A`` is stable the stationary covariance solves the Lyapunov equation ``A Σ + Σ Aᵀ + Q = 0``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .._checks import make_generator
from ._gaussian import params_like
from .base import SDE

__all__ = ["LinearSDE"]

_LOG_2PI = math.log(2 * math.pi)


def _as_matrix(value: object, name: str) -> Tensor:
    t = torch.as_tensor(value, dtype=torch.float64) if not isinstance(value, Tensor) else value.detach()
    t = t.to(torch.float64)
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} must be finite; got {value}.")
    return t


class LinearSDE(SDE):
    """``dx = (A x + b) dt + G dW`` on states of shape ``(B, d)``, with exact Gaussian marginals.

    Args:
        A: drift matrix, shape ``(d, d)`` (any matrix; need not be stable).
        b: drift offset, shape ``(d,)``; default zero.
        G: the noise. A matrix of shape ``(d, m)`` gives ``noise_type="additive"`` with ``m``
            Brownian motions; a vector of shape ``(d,)`` (or a number, repeated) gives diagonal
            noise ``G = diag(g)`` (``noise_type="diagonal"`` with ``additive=True``, the fast path).

    Both calculi agree for additive noise; ``sde_type`` is ``"ito"``.

    Closed forms (``t`` a float, 0-dim tensor or one time per path ``(B,)``):
    :meth:`marginal_mean` ``(B, d)``, :meth:`marginal_cov` ``(d, d)`` or ``(B, d, d)``,
    :meth:`marginal_log_prob` ``(B,)``, :meth:`sample_marginal` ``(B, d)``,
    :meth:`stationary_cov` (stable ``A`` only).

    Example:
        A rotating, stable 2-D OU process ``dx = −[[1, −1], [1, 1]] x dt + 0.7 dW``::

            sde = LinearSDE(A=-torch.tensor([[1.0, -1.0], [1.0, 1.0]]), G=0.7 * torch.ones(2))
    """

    sde_type = "ito"
    additive = True

    def __init__(self, A: Tensor | list, b: Tensor | list | None = None, G: Tensor | list | float = 1.0) -> None:
        super().__init__()
        A = _as_matrix(A, "A")
        if A.dim() != 2 or A.shape[0] != A.shape[1] or A.shape[0] == 0:
            raise ValueError(f"A must be a square (d, d) matrix; got shape {tuple(A.shape)}.")
        d = A.shape[0]
        b = torch.zeros(d, dtype=torch.float64) if b is None else _as_matrix(b, "b")
        if b.shape != (d,):
            raise ValueError(f"b must have shape ({d},) to match A of shape {tuple(A.shape)}; got {tuple(b.shape)}.")
        G = _as_matrix(G, "G")
        if G.dim() == 0:
            G = G.expand(d).clone()
        if G.dim() == 1:
            if G.shape[0] != d:
                raise ValueError(f"G as a vector (diagonal noise) must have shape ({d},); got {tuple(G.shape)}.")
            self.noise_type = "diagonal"
            self.brownian_size = d
            gmat = torch.diag(G)
        elif G.dim() == 2:
            if G.shape[0] != d:
                raise ValueError(f"G as a matrix must have shape ({d}, m); got {tuple(G.shape)}.")
            self.noise_type = "additive"
            self.brownian_size = int(G.shape[1])
            gmat = G
        else:
            raise ValueError(f"G must be a number, a vector (d,) or a matrix (d, m); got shape {tuple(G.shape)}.")
        self.dim = d
        self.register_buffer("A", A.clone())
        self.register_buffer("b", b.clone())
        self.register_buffer("G", G.clone())
        self.register_buffer("Q", gmat @ gmat.T)

    # -- the equation -------------------------------------------------------------------------
    def _check_x(self, x: Tensor) -> None:
        if x.dim() != 2 or x.shape[-1] != self.dim:
            raise ValueError(f"LinearSDE states must have shape (B, {self.dim}); got {tuple(x.shape)}.")

    def drift(self, t: Tensor, x: Tensor) -> Tensor:
        self._check_x(x)
        A, b = params_like(self, x, "A", "b")
        return torch.addmm(b, x, A.T)

    def diffusion(self, t: Tensor, x: Tensor) -> Tensor:
        return params_like(self, x, "G")[0]

    # -- closed forms -------------------------------------------------------------------------
    def _times(self, t: Tensor | float) -> Tensor:
        t = torch.as_tensor(t, dtype=torch.float64, device=self.A.device)
        if t.dim() > 1:
            raise ValueError(f"t must be a scalar or one time per path (B,); got shape {tuple(t.shape)}.")
        return t.to(torch.float64)

    def _blocks(self, t: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``e^{At}``, ``∫_0^t e^{As} ds b`` and ``Σ(t)`` for times ``t`` (0-dim or (B,)), batched."""
        d = self.dim
        tt = t.reshape(-1, 1, 1)
        n = tt.shape[0]
        A, b, Q = self.A, self.b, self.Q
        m1 = torch.zeros(n, d + 1, d + 1, dtype=torch.float64, device=A.device)
        m1[:, :d, :d] = A
        m1[:, :d, d] = b
        e1 = torch.linalg.matrix_exp(m1 * tt)
        m2 = torch.zeros(n, 2 * d, 2 * d, dtype=torch.float64, device=A.device)
        m2[:, :d, :d] = -A
        m2[:, :d, d:] = Q
        m2[:, d:, d:] = A.T
        e2 = torch.linalg.matrix_exp(m2 * tt)
        cov = e2[:, d:, d:].transpose(-1, -2) @ e2[:, :d, d:]
        cov = 0.5 * (cov + cov.transpose(-1, -2))
        shape = t.shape
        return (e1[:, :d, :d].reshape(shape + (d, d)), e1[:, :d, d].reshape(shape + (d,)),
                cov.reshape(shape + (d, d)))

    def transition_matrix(self, t: Tensor | float) -> Tensor:
        """``e^{At}``: shape (d, d), or (B, d, d) for one time per path."""
        return self._blocks(self._times(t))[0]

    def marginal_mean(self, t: Tensor | float, x0: Tensor) -> Tensor:
        """``E[x_t | x_0] = e^{At} x0 + ∫_0^t e^{As} ds b``; ``x0`` (B, d), returns (B, d) in x0's dtype."""
        self._check_x(x0)
        phi, c, _ = self._blocks(self._times(t))
        x = x0.to(torch.float64)
        mean = (phi @ x.unsqueeze(-1)).squeeze(-1) if phi.dim() == 3 else x @ phi.T
        return (mean + c).to(x0.dtype)

    def marginal_cov(self, t: Tensor | float) -> Tensor:
        """``Cov[x_t | x_0] = ∫_0^t e^{As} G Gᵀ e^{Aᵀs} ds`` (float64): (d, d), or (B, d, d) for times (B,)."""
        return self._blocks(self._times(t))[2]

    def marginal_std(self, t: Tensor | float) -> Tensor:
        """Per-coordinate standard deviations, the square roots of ``diag(marginal_cov(t))``: (d,) or (B, d)."""
        return torch.sqrt(torch.diagonal(self.marginal_cov(t), dim1=-2, dim2=-1))

    def _chol(self, cov: Tensor) -> Tensor:
        chol, info = torch.linalg.cholesky_ex(cov)
        if bool((info != 0).any()):
            raise ValueError(
                "the marginal covariance is singular at this t (t = 0, or noise that does not reach every "
                "coordinate), so the marginal has no density; use t > 0 or a G of full row rank."
            )
        return chol

    def marginal_log_prob(self, x: Tensor, t: Tensor | float, x0: Tensor) -> Tensor:
        """``log N(x; mean(t, x0), Σ(t))`` for ``x``, ``x0`` of shape (B, d); returns (B,) in x's dtype."""
        self._check_x(x)
        mean = self.marginal_mean(t, x0).to(torch.float64)
        chol = self._chol(self.marginal_cov(t))
        diff = (x.to(torch.float64) - mean).unsqueeze(-1)
        if chol.dim() == 2:
            chol_b = chol.expand(diff.shape[0], self.dim, self.dim)
        else:
            chol_b = chol
        z = torch.linalg.solve_triangular(chol_b, diff, upper=False).squeeze(-1)
        logdet = 2 * torch.log(torch.diagonal(chol_b, dim1=-2, dim2=-1)).sum(-1)
        lp = -0.5 * (z * z).sum(-1) - 0.5 * logdet - 0.5 * self.dim * _LOG_2PI
        return lp.to(x.dtype)

    def sample_marginal(
        self, x0: Tensor, t: Tensor | float, *, generator: torch.Generator | int | None = None
    ) -> Tensor:
        """Exact draw of ``x_t`` given ``x_0`` (B, d); returns (B, d) in x0's dtype."""
        self._check_x(x0)
        gen = make_generator(generator, x0.device)
        z = torch.randn(x0.shape, generator=gen, device=x0.device, dtype=torch.float64)
        chol = self._chol(self.marginal_cov(t)).to(x0.device)
        noise = (chol @ z.unsqueeze(-1)).squeeze(-1) if chol.dim() == 3 else z @ chol.T
        return (self.marginal_mean(t, x0).to(torch.float64) + noise).to(x0.dtype)

    def propagate_gaussian(self, mean0: Tensor, cov0: Tensor, t: Tensor | float) -> tuple[Tensor, Tensor]:
        """The law of ``x_t`` when ``x_0 ~ N(mean0, cov0)``: ``N(e^{At} mean0 + c(t), e^{At} cov0 e^{Aᵀt} + Σ(t))``.

        ``mean0`` (d,), ``cov0`` (d, d); ``t`` a number or 0-dim tensor. Returns float64 (d,), (d, d).
        """
        mean0 = torch.as_tensor(mean0, dtype=torch.float64, device=self.A.device).reshape(-1)
        cov0 = torch.as_tensor(cov0, dtype=torch.float64, device=self.A.device)
        if mean0.shape != (self.dim,) or cov0.shape != (self.dim, self.dim):
            raise ValueError(f"mean0 must have shape ({self.dim},) and cov0 ({self.dim}, {self.dim}); got "
                             f"{tuple(mean0.shape)} and {tuple(cov0.shape)}.")
        tt = self._times(t)
        if tt.dim() != 0:
            raise ValueError("propagate_gaussian takes a single time t.")
        phi, c, cov = self._blocks(tt)
        out = phi @ cov0 @ phi.T + cov
        return phi @ mean0 + c, 0.5 * (out + out.T)

    def is_stable(self) -> bool:
        """True when every eigenvalue of ``A`` has a negative real part."""
        return bool((torch.linalg.eigvals(self.A).real < 0).all())

    def stationary_mean(self) -> Tensor:
        """``−A⁻¹ b`` (stable ``A`` only), shape (d,)."""
        if not self.is_stable():
            raise ValueError("A is not stable (an eigenvalue has real part >= 0), so there is no stationary law.")
        return -torch.linalg.solve(self.A, self.b)

    def stationary_cov(self) -> Tensor:
        """The solution of ``A Σ + Σ Aᵀ + G Gᵀ = 0`` (stable ``A`` only), shape (d, d), float64."""
        if not self.is_stable():
            raise ValueError("A is not stable (an eigenvalue has real part >= 0), so there is no stationary law.")
        from scipy.linalg import solve_continuous_lyapunov

        a = self.A.cpu().numpy()
        sol = solve_continuous_lyapunov(a, -self.Q.cpu().numpy())
        sol = 0.5 * (sol + sol.T)
        return torch.as_tensor(sol, dtype=torch.float64, device=self.A.device)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, noise_type={self.noise_type!r}"
