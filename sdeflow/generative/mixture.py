"""Gaussian-mixture data with exact marginals, scores and denoisers under linear SDEs.

If ``x_0 ~ Σ_k w_k N(μ_k, Σ_k)`` and ``x_t = α x_0 + σ ε`` (any diffusion SDE), then
``x_t ~ Σ_k w_k N(α μ_k, α² Σ_k + σ² I)``: the density ``p_t``, the score ``∇log p_t`` and the ideal
denoiser ``E[x_0 | x_t]`` are closed-form (docs/concepts.md §5). Every covariance is
diagonalised once, ``Σ_k = U_k diag(λ_k) U_kᵀ``, so ``α² Σ_k + σ² I = U_k diag(α² λ_k + σ²) U_kᵀ``
for any ``(α, σ)`` at no further factorisation cost; one time per path (B,) is as cheap as one for all.
All methods are differentiable in ``x`` and ``t`` (autograd gives ``∂_t p_t`` and Hessians).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from .._checks import make_generator
from ..sde._gaussian import DiffusionSDE, GaussianMarginals

__all__ = ["GaussianMixture"]

_LOG_2PI = math.log(2 * math.pi)


def _as_float64(value: object, name: str) -> Tensor:
    if isinstance(value, Tensor):
        t = value.detach().to("cpu", torch.float64)
    else:
        try:
            t = torch.as_tensor(value, dtype=torch.float64)
        except (TypeError, ValueError, RuntimeError) as err:
            raise TypeError(
                f"{name} must be a tensor or nested sequence of numbers; got {type(value).__name__}."
            ) from err
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} must be finite.")
    return t


class GaussianMixture(nn.Module):
    """``Σ_k w_k N(μ_k, Σ_k)`` in ``d`` dimensions, with its exact diffused marginals.

    Args:
        weights: (K,) positive mixture weights (normalised to sum to one).
        means: (K, d) component means.
        covs: component covariances: (K, d, d) symmetric positive definite, (K, d) diagonal
            variances, (K,) isotropic variances, or a single number (one isotropic variance).

    The parameters are float64 buffers (they move with ``.to(device)``); computations run in the
    input's dtype. States are ``(B, d)``.

    Time arguments: ``t=None`` means the data distribution itself; otherwise ``t`` is a float, a
    0-dim tensor or one time per path (B,), and ``sde`` a :class:`sdeflow.DiffusionSDE` (uses
    ``marginal_scale`` and ``marginal_std``) or a Gaussian-marginal SDE whose mean is affine in
    ``x_0`` with one scale for all coordinates (Ornstein–Uhlenbeck, Brownian motion).
    """

    def __init__(self, weights: object, means: object, covs: object) -> None:
        super().__init__()
        w = _as_float64(weights, "weights")
        mu = _as_float64(means, "means")
        if mu.dim() != 2:
            raise ValueError(f"means must have shape (K, d); got {tuple(mu.shape)}.")
        k, d = mu.shape
        if w.shape != (k,):
            raise ValueError(f"weights must have shape (K,) = ({k},) to match means; got {tuple(w.shape)}.")
        if bool((w <= 0).any()):
            raise ValueError("weights must be > 0; drop components with zero weight.")
        c = _as_float64(covs, "covs")
        if c.dim() == 0:
            c = c * torch.eye(d, dtype=torch.float64).expand(k, d, d)
        elif c.shape == (k,):
            c = c[:, None, None] * torch.eye(d, dtype=torch.float64)
        elif c.shape == (k, d):
            c = torch.diag_embed(c)
        elif c.shape != (k, d, d):
            raise ValueError(
                f"covs must have shape (K, d, d), (K, d), (K,) or be a number, with K={k}, d={d}; got {tuple(c.shape)}."
            )
        if not torch.allclose(c, c.transpose(-1, -2), rtol=1e-10, atol=1e-12):
            raise ValueError("covs must be symmetric matrices.")
        diagonal = bool(torch.equal(c, torch.diag_embed(torch.diagonal(c, dim1=-2, dim2=-1))))
        if diagonal:  # axis-aligned components: no rotation needed (and a faster path below)
            evals = torch.diagonal(c, dim1=-2, dim2=-1).clone()
            evecs = torch.eye(d, dtype=torch.float64).repeat(k, 1, 1)
        else:
            evals, evecs = torch.linalg.eigh(c)
        self._diagonal = diagonal
        if bool((evals <= 0).any()):
            raise ValueError("covs must be positive definite (every eigenvalue > 0).")
        self.register_buffer("weights", w / w.sum())
        self.register_buffer("means", mu)
        self.register_buffer("covs", c)
        self.register_buffer("_evals", evals)  # (K, d)
        self.register_buffer("_evecs", evecs)  # (K, d, d), columns are eigenvectors
        self._cache: dict[tuple, tuple[Tensor, ...]] = {}

    # -- basic properties ----------------------------------------------------------------------------
    @property
    def dim(self) -> int:
        """The dimension d."""
        return int(self.means.shape[1])

    @property
    def n_components(self) -> int:
        """The number of components K."""
        return int(self.means.shape[0])

    def extra_repr(self) -> str:
        return f"n_components={self.n_components}, dim={self.dim}"

    def _params(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        src = (self.weights, self.means, self._evals, self._evecs)
        if torch.compiler.is_compiling():  # inside a compiled graph the conversions fuse; no cache
            conv = tuple(t.to(dtype=x.dtype, device=x.device) for t in src)
            return (torch.log(conv[0]),) + conv[1:]
        key = (x.dtype, x.device)
        stamp = tuple((id(t), t._version) for t in src)
        hit = self._cache.get(key)
        if hit is None or hit[0] != stamp:
            conv = tuple(t.to(dtype=x.dtype, device=x.device) for t in src)
            hit = (stamp, (torch.log(conv[0]),) + conv[1:])
            self._cache[key] = hit
        return hit[1]  # type: ignore[return-value]

    def _check_x(self, x: object) -> Tensor:
        if not isinstance(x, Tensor):
            raise TypeError(f"x must be a torch.Tensor of shape (B, {self.dim}); got {type(x).__name__}.")
        if not torch.is_floating_point(x):
            raise TypeError(f"x must be a floating-point tensor; got dtype {x.dtype}.")
        if x.dim() != 2 or x.shape[1] != self.dim:
            raise ValueError(f"x must have shape (B, {self.dim}) for this {self.dim}-D mixture; got {tuple(x.shape)}.")
        return x

    # -- the diffused marginal -----------------------------------------------------------------------
    def _coefficients(self, x: Tensor, t: Tensor | float | None, sde: object) -> tuple[Tensor, Tensor, Tensor | None]:
        """(α, σ, shift) broadcastable against (B, K, d) tensors: x_t = α x_0 + shift + σ ε."""
        one = torch.ones((), dtype=x.dtype, device=x.device)
        if t is None:
            if sde is not None:
                raise ValueError("sde was given without t; pass t as well (t=None means the data distribution).")
            return one, torch.zeros((), dtype=x.dtype, device=x.device), None
        tt = torch.as_tensor(t, dtype=x.dtype, device=x.device)
        if tt.dim() == 1:
            if tt.shape[0] != x.shape[0]:
                raise ValueError(f"t must be a scalar or have shape ({x.shape[0]},); got {tuple(tt.shape)}.")
            view = (-1, 1, 1)
        elif tt.dim() == 0:
            view = ()
        else:
            raise ValueError(f"t must be a scalar or have shape ({x.shape[0]},); got {tuple(tt.shape)}.")
        if isinstance(sde, DiffusionSDE):
            a = torch.as_tensor(sde.marginal_scale(tt)).to(x.dtype).expand(tt.shape)
            s = torch.as_tensor(sde.marginal_std(tt)).to(x.dtype).expand(tt.shape)
            return a.reshape(view), s.reshape(view), None
        if isinstance(sde, GaussianMarginals):
            ref = torch.zeros((tt.shape[0] if tt.dim() else 1, self.dim), dtype=x.dtype, device=x.device)
            shift = sde.marginal_mean(tt, ref)
            scale = sde.marginal_mean(tt, ref + 1) - shift
            if not torch.allclose(scale, scale[..., :1].expand_as(scale), rtol=1e-12, atol=0):
                raise ValueError("the SDE scales the coordinates of x_0 differently; GaussianMixture needs one scale.")
            s = torch.as_tensor(sde.marginal_std(tt)).to(x.dtype)
            if s.dim() > tt.dim():
                raise ValueError("the SDE's marginal std differs between coordinates; GaussianMixture needs one std.")
            s = s.expand(tt.shape).reshape(view)
            a = scale[..., 0]
            if tt.dim() == 0:
                return a.reshape(()), s, shift.reshape(1, 1, self.dim)
            return a.reshape(view), s, shift.reshape(-1, 1, self.dim)
        raise TypeError(
            f"sde must be a sdeflow.DiffusionSDE or a Gaussian-marginal SDE (OrnsteinUhlenbeck, BrownianMotion); "
            f"got {type(sde).__name__}."
        )

    def _parts(self, x: Tensor, t: Tensor | float | None, sde: object) -> tuple[Tensor, ...]:
        x = self._check_x(x)
        a, s, shift = self._coefficients(x, t, sde)
        return self._parts_at(x, a, s, shift)

    def _parts_at(self, x: Tensor, a: Tensor, s: Tensor, shift: Tensor | None) -> tuple[Tensor, ...]:
        """logits (B, K), y = Uᵀ(x − α μ − shift) (B, K, d), variances α²λ + σ² (·, K, d), α, λ, U."""
        logw, mu, lam, u = self._params(x)
        centre = a * mu  # (K, d) or (B, K, d)
        if shift is not None:
            centre = centre + shift
        diff = x[:, None, :] - centre  # (B, K, d)
        y = diff if self._diagonal else torch.einsum("bkd,kde->bke", diff, u)  # coordinates in the eigenbasis
        var = a * a * lam + s * s  # (K, d) or (B, K, d)
        quad = _sum_last(y * y / var)  # (B, K)
        logdet = _sum_last(torch.log(var))  # (K,) or (B, K)
        logits = logw - 0.5 * quad - 0.5 * logdet - 0.5 * self.dim * _LOG_2PI
        return logits, y, var, a, lam, u

    def _rotate(self, u: Tensor, y: Tensor) -> Tensor:
        """``U_k y_k`` for y (B, K, d): back from each component's eigenbasis."""
        return y if self._diagonal else torch.einsum("kde,bke->bkd", u, y)

    def log_prob(self, x: Tensor, t: Tensor | float | None = None, sde: object = None) -> Tensor:
        """``log p_t(x)``, shape (B,)."""
        logits = self._parts(x, t, sde)[0]
        return torch.logsumexp(logits, dim=-1)

    def responsibilities(self, x: Tensor, t: Tensor | float | None = None, sde: object = None) -> Tensor:
        """Posterior component probabilities ``P(k | x_t = x)``, shape (B, K)."""
        return _softmax_last(self._parts(x, t, sde)[0])

    def score(self, x: Tensor, t: Tensor | float | None = None, sde: object = None) -> Tensor:
        """``∇_x log p_t(x)``, shape (B, d)."""
        logits, y, var, _, _, u = self._parts(x, t, sde)
        r = _softmax_last(logits)  # (B, K)
        comp = self._rotate(u, y / var)  # C_k^{-1} (x − α μ_k)
        return -_mix(r, comp)

    def denoiser(self, x: Tensor, t: Tensor | float, sde: object) -> Tensor:
        """The ideal denoiser ``E[x_0 | x_t = x]``, shape (B, d)."""
        if t is None:
            raise ValueError("denoiser needs a time t and an sde.")
        logits, y, var, a, lam, u = self._parts(x, t, sde)
        r = _softmax_last(logits)
        _, mu, _, _ = self._params(x)
        # E[x_0 | x_t, k] = μ_k + α Σ_k C_k^{-1} (x − α μ_k − shift) = μ_k + α U (λ / var · y)
        comp = mu + self._rotate(u, a * lam / var * y)
        return _mix(r, comp)

    def denoiser_sigma(self, x: Tensor, sigma: Tensor | float) -> Tensor:
        """The EDM denoiser ``D(x, σ) = E[x_0 | x_0 + σ n = x]`` (B, d); ``sigma`` a scalar or (B,)."""
        x = self._check_x(x)
        sig = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
        if sig.dim() == 1 and sig.shape[0] == x.shape[0]:
            sig = sig.reshape(-1, 1, 1)
        elif sig.dim() != 0:
            raise ValueError(f"sigma must be a scalar or have shape ({x.shape[0]},); got {tuple(sig.shape)}.")
        logits, y, var, _, lam, u = self._parts_at(x, torch.ones_like(sig), sig, None)
        r = _softmax_last(logits)
        mu = self._params(x)[1]
        comp = mu + self._rotate(u, lam / var * y)
        return _mix(r, comp)

    # -- callables for the solvers -------------------------------------------------------------------
    def score_fn(self, sde: object) -> Callable[[Tensor, Tensor], Tensor]:
        """The exact score as a function ``s(x, t)`` under ``sde`` (for probability_flow / reverse_sde)."""
        _check_sde(sde)

        def score(x: Tensor, t: Tensor) -> Tensor:
            return self.score(x, t, sde)

        return score

    def log_prob_fn(self, sde: object) -> Callable[[Tensor, Tensor], Tensor]:
        """``log p_t(x)`` as a function ``(t, x) -> (B,)`` under ``sde``.

        Time first, as :func:`sdeflow.fokker_planck.fokker_planck_residual` and
        :func:`sdeflow.continuity_residual` expect.
        """
        _check_sde(sde)

        def log_prob(t: Tensor, x: Tensor) -> Tensor:
            return self.log_prob(x, t, sde)

        return log_prob

    def as_denoiser(self) -> Callable[[Tensor, Tensor], Tensor]:
        """The exact EDM denoiser ``D(x, σ)`` as a function, the ``model`` argument of the samplers."""

        def denoiser(x: Tensor, sigma: Tensor) -> Tensor:
            return self.denoiser_sigma(x, sigma)

        return denoiser

    # -- sampling ------------------------------------------------------------------------------------
    def sample(
        self,
        n: int,
        *,
        generator: torch.Generator | int | None = None,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
        return_components: bool = False,
    ) -> Tensor | tuple[Tensor, Tensor]:
        """Draw ``n`` samples, shape (n, d) (and their component indices (n,) if ``return_components``)."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be a positive int; got {n!r}.")
        device = torch.device(device) if device is not None else self.means.device
        gen = make_generator(generator, device)
        w = self.weights.to(device)
        comp = torch.multinomial(w, n, replacement=True, generator=gen)
        z = torch.randn((n, self.dim), generator=gen, device=device, dtype=torch.float64)
        lam = self._evals.to(device)[comp]  # (n, d)
        u = self._evecs.to(device)[comp]  # (n, d, d)
        x = self.means.to(device)[comp] + torch.einsum("nde,ne->nd", u, lam.sqrt() * z)
        x = x.to(dtype)
        return (x, comp) if return_components else x

    def expected_log_prob(
        self, n: int = 200_000, *, generator: torch.Generator | int | None = 0
    ) -> tuple[float, float]:
        """Monte Carlo estimate of ``E_data[log p(x)]`` (minus the entropy) and its standard error, float64."""
        x = self.sample(n, generator=generator, dtype=torch.float64)
        lp = self.log_prob(x)
        return float(lp.mean()), float(lp.std() / math.sqrt(n))


# Reductions over a short last dimension (d or K) are slow as .sum(-1) on CPU; a matmul is not.
def _sum_last(v: Tensor) -> Tensor:
    return (v @ v.new_ones(v.shape[-1], 1)).squeeze(-1)


def _softmax_last(logits: Tensor) -> Tensor:
    e = torch.exp(logits - logits.amax(-1, keepdim=True))
    return e / (e @ e.new_ones(e.shape[-1], 1))


def _mix(r: Tensor, comp: Tensor) -> Tensor:
    """``Σ_k r_k comp_k`` for r (B, K) and comp (B, K, d)."""
    return torch.bmm(r.unsqueeze(1), comp.expand(r.shape[0], -1, -1)).squeeze(1)


def _check_sde(sde: object) -> None:
    if not isinstance(sde, (DiffusionSDE, GaussianMarginals)):
        raise TypeError(
            f"sde must be a sdeflow.DiffusionSDE or a Gaussian-marginal SDE (OrnsteinUhlenbeck, BrownianMotion); "
            f"got {type(sde).__name__}."
        )
