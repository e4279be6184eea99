"""The generator ``L``, its adjoint ``L*`` and the Fokker–Planck residual of a density, by autograd.

For ``dx = f dt + G dW`` (Itô) with ``D = G Gᵀ``:

* generator (backward Kolmogorov): ``L φ = f·∇φ + ½ tr(D ∇²φ)``;
* adjoint (Fokker–Planck): ``L* p = −∇·(f p) + ½ Σ_ij ∂_i ∂_j (D_ij p)``, and ``∂p/∂t = L* p``.

Scale-free form. Dividing by ``p`` and writing ``s = ∇ log p``, ``H = ∇² log p``,
``c_j = Σ_i ∂_i D_ij``:

    (L* p)/p = −∇·f − f·s + ½ Σ_ij ∂_i∂_j D_ij + c·s + ½ tr(D H) + ½ sᵀ D s,

so the residual ``r = ∂_t log p − (L* p)/p`` involves only ``log p`` (no under- or overflow in the
tails) and is dimensionless per unit time. Each of the seven terms is returned; their absolute sum
is the natural scale, and ``|r| / scale`` is a relative error that is ~1e-15 in float64 for an
exact density and O(1) for a wrong one.

Derivatives. Up to :data:`EXACT_MAX_DIM` dimensions every term is exact (one backward pass per
coordinate for ``∇·f`` and ``tr(D H)``; ``d²`` passes for the divergence terms of a general
x-dependent ``G``). Above it, traces are estimated with Rademacher probes (Hutchinson):
``∇·f ≈ εᵀ J_f ε``, ``tr(D H) ≈ (Gε)ᵀ H (Gε)``, ``c·s ≈ εᵀ J_{D s̄} ε`` (``s̄`` held fixed) and
``Σ ∂_i∂_j D_ij ≈ Σ_kl ε_k η_l ∂_k ∂_l (εᵀ D η)``, all unbiased, ``n_samples`` probes averaged.
Terms that are exactly zero by structure (``c`` for additive noise) are skipped.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from .._checks import check_state, make_generator
from ..calculus import EXACT_MAX_DIM, choose_trace_method, divergence, draw_probes
from ..sde.base import SDE, as_sde
from ..sde.stratonovich import to_ito

__all__ = ["EXACT_MAX_DIM", "FPResidual", "fokker_planck_residual", "apply_adjoint", "apply_generator"]

TERMS = ("dt_log_p", "div_f", "f_dot_s", "half_div_c", "c_dot_s", "half_tr_DH", "half_sDs")


@dataclass
class FPResidual:
    """The Fokker–Planck residual ``∂_t log p − (L* p)/p`` at a batch of points.

    Attributes:
        residual: (B,) the residual.
        scale: (B,) the sum of the absolute values of the terms (see :data:`TERMS`).
        terms: the individual terms, each (B,): ``dt_log_p`` (∂_t log p), ``div_f`` (∇·f),
            ``f_dot_s`` (f·∇log p), ``half_div_c`` (½ Σ ∂_i∂_j D_ij), ``c_dot_s`` (Σ ∂_i D_ij s_j),
            ``half_tr_DH`` (½ tr(D ∇² log p)), ``half_sDs`` (½ sᵀ D s).
        method: ``"exact"`` or ``"hutchinson"``.
    """

    residual: Tensor
    scale: Tensor
    terms: dict[str, Tensor] = field(default_factory=dict)
    method: str = "exact"

    @property
    def relative(self) -> Tensor:
        """``|residual| / scale`` per point, (B,) (0 where the scale is 0)."""
        scale = self.scale
        return torch.where(scale > 0, self.residual.abs() / scale.clamp_min(torch.finfo(scale.dtype).tiny),
                           self.residual.abs())

    def max_relative(self) -> float:
        """The largest relative residual over the batch."""
        return float(self.relative.max())


# -- helpers -----------------------------------------------------------------------------------------
def _ito(sde: object) -> SDE:
    sde = as_sde(sde)
    if sde.sde_type == "stratonovich" and not sde.is_additive:
        return to_ito(sde)
    return sde


def _times(t: Tensor | float, batch: int, like: Tensor) -> tuple[Tensor, Tensor]:
    """(t for the SDE: 0-dim or (B,), t per point (B,) for ∂_t log p)."""
    tt = torch.as_tensor(t, dtype=like.dtype, device=like.device)
    if tt.dim() == 0:
        return tt, tt.expand(batch)
    if tt.shape != (batch,):
        raise ValueError(f"t must be a scalar or one time per point, shape ({batch},); got {tuple(tt.shape)}.")
    return tt, tt


def _grad(out: Tensor, inp: Tensor, *, create: bool = True) -> Tensor:
    if not out.requires_grad:  # the output does not depend on the input
        return torch.zeros_like(inp)
    (g,) = torch.autograd.grad(out, inp, retain_graph=True, create_graph=create, allow_unused=True)
    return torch.zeros_like(inp) if g is None else g


class _Noise:
    """``D = G Gᵀ`` matrix-free for states flattened to (B, d): the SDE's noise operator at one point set."""

    def __init__(self, sde: SDE, t: Tensor, xf: Tensor, event: tuple[int, ...]) -> None:
        self.op = sde.noise_op
        self.kind = sde.noise_type
        self.b, self.d = xf.shape
        self.x = xf.reshape((self.b,) + event)
        self.g = sde.diffusion(t, self.x)
        self.brownian_shape = self.op.brownian_shape(self.x, self.g)
        self._matrix: Tensor | None = None

    @property
    def matrix(self) -> Tensor:
        """G as (B, d, m), built once."""
        if self._matrix is None:
            self._matrix = self.op.matrix(self.g, self.x)
        return self._matrix

    def Dv(self, v: Tensor) -> Tensor:
        """``D v`` for v (B, d)."""
        return self.op.ggt(self.g, v.reshape(self.x.shape), self.x).reshape(self.b, self.d)

    def Gv(self, eps: Tensor) -> Tensor:
        """``G ε`` for a Brownian-space vector ε of :attr:`brownian_shape`, as (B, d)."""
        return self.op.prod(self.g, eps, self.x).expand(self.x.shape).reshape(self.b, self.d)

    def columns(self) -> list[Tensor]:
        """The columns of G, each (B, d) (diagonal noise: g_i e_i)."""
        return [self.matrix[..., k] for k in range(self.matrix.shape[-1])]

    def entry(self, i: int, j: int) -> Tensor:
        """``D_ij`` (B,)."""
        return (self.matrix[:, i, :] * self.matrix[:, j, :]).sum(-1)


def _rademacher(shape: tuple[int, ...], like: Tensor, gen: torch.Generator | None) -> Tensor:
    return draw_probes(shape, 1, like=like, generator=gen)[0]


def _check_n_samples(n_samples: object) -> int:
    if isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples < 1:
        raise ValueError(f"n_samples must be a positive int; got {n_samples!r}.")
    return n_samples


# -- the terms ---------------------------------------------------------------------------------------------
def _adjoint_terms(
    sde: SDE,
    log_prob: Callable[[Tensor, Tensor], Tensor],
    t: Tensor | float,
    x: Tensor,
    *,
    method: str,
    n_samples: int,
    generator: torch.Generator | int | None,
    need_dt: bool,
) -> tuple[dict[str, Tensor], str]:
    x = check_state(x, "x")
    sde = _ito(sde)
    b = x.shape[0]
    event = tuple(x.shape[1:])
    d = int(x[0].numel())
    method = choose_trace_method(method, d)
    n_samples = _check_n_samples(n_samples)
    gen = make_generator(generator, x.device)
    t_sde, t_pts = _times(t, b, x)
    terms: dict[str, Tensor] = {}
    with torch.enable_grad():
        xf = x.detach().reshape(b, d).clone().requires_grad_(True)
        tp = t_pts.detach().clone().requires_grad_(need_dt)
        lp = log_prob(tp, xf.reshape(x.shape))
        if not isinstance(lp, Tensor) or lp.shape != (b,):
            raise ValueError(f"log_prob(t, x) must return a tensor of shape ({b},); got "
                             f"{tuple(lp.shape) if isinstance(lp, Tensor) else type(lp).__name__}.")
        if need_dt:
            (dlp,) = torch.autograd.grad(lp.sum(), tp, retain_graph=True, allow_unused=True)
            terms["dt_log_p"] = torch.zeros_like(lp) if dlp is None else dlp.detach()
        s = _grad(lp.sum(), xf)  # (B, d), with graph for Hessian-vector products
        f = sde.drift(t_sde, xf.reshape(x.shape)).expand(x.shape).reshape(b, d)
        noise = _Noise(sde, t_sde, xf, event)
        sd = s.detach()
        terms["f_dot_s"] = (f.detach() * sd).sum(-1)
        terms["half_sDs"] = 0.5 * (sd * noise.Dv(sd).detach()).sum(-1)

        def hvp(v: Tensor) -> Tensor:
            return _grad((s * v).sum(), xf, create=False)

        if method == "exact":
            terms["div_f"] = divergence(lambda z: sde.drift(t_sde, z.reshape(x.shape)).expand(x.shape).reshape(b, d),
                                        xf, method="exact")[1]
            tr = torch.zeros(b, dtype=x.dtype, device=x.device)
            for col in noise.columns():
                c = col.detach()
                tr = tr + (c * hvp(c)).sum(-1)
            terms["half_tr_DH"] = 0.5 * tr
        else:
            div_f = torch.zeros(b, dtype=x.dtype, device=x.device)
            tr = torch.zeros(b, dtype=x.dtype, device=x.device)
            for _ in range(n_samples):
                eps = _rademacher((b, d), x, gen)
                div_f = div_f + (_grad((f * eps).sum(), xf, create=False) * eps).sum(-1)
                v = noise.Gv(_rademacher(noise.brownian_shape, x, gen)).detach()
                tr = tr + (v * hvp(v)).sum(-1)
            terms["div_f"] = div_f / n_samples
            terms["half_tr_DH"] = 0.5 * tr / n_samples

        if sde.is_additive:
            zero = torch.zeros(b, dtype=x.dtype, device=x.device)
            terms["c_dot_s"], terms["half_div_c"] = zero, zero.clone()
        elif method == "exact":
            c = [torch.zeros(b, dtype=x.dtype, device=x.device) for _ in range(d)]
            for i in range(d):
                for j in range(d):
                    if noise.kind == "diagonal" and i != j:
                        continue
                    dij = noise.entry(i, j)
                    if dij.requires_grad:
                        c[j] = c[j] + _grad(dij.sum(), xf)[:, i]
            terms["c_dot_s"] = sum(cj.detach() * sd[:, j] for j, cj in enumerate(c))
            div_c = torch.zeros(b, dtype=x.dtype, device=x.device)
            for j in range(d):
                if c[j].requires_grad:
                    div_c = div_c + _grad(c[j].sum(), xf, create=False)[:, j]
            terms["half_div_c"] = 0.5 * div_c
        else:
            cs = torch.zeros(b, dtype=x.dtype, device=x.device)
            dc = torch.zeros(b, dtype=x.dtype, device=x.device)
            for _ in range(n_samples):
                eps = _rademacher((b, d), x, gen)
                eta = _rademacher((b, d), x, gen)
                u = noise.Dv(sd)
                cs = cs + (_grad((u * eps).sum(), xf, create=False) * eps).sum(-1)
                phi = (eps * noise.Dv(eta)).sum(-1)
                g1 = _grad(phi.sum(), xf)
                dc = dc + (_grad((g1 * eps).sum(), xf, create=False) * eta).sum(-1)
            terms["c_dot_s"] = cs / n_samples
            terms["half_div_c"] = 0.5 * dc / n_samples
    return {k: v.detach() for k, v in terms.items()}, method


def apply_adjoint(
    sde: object,
    log_prob: Callable[[Tensor, Tensor], Tensor],
    t: Tensor | float,
    x: Tensor,
    *,
    method: str = "auto",
    n_samples: int = 16,
    generator: torch.Generator | int | None = None,
) -> Tensor:
    """``(L* p)(x) / p(x)`` at points ``x`` (B, *event) for the density ``p = exp(log_prob(t, ·))``.

    ``log_prob(t, x)`` takes times (B,) and points of ``x``'s shape and returns (B,). Returns (B,).
    """
    terms, _ = _adjoint_terms(as_sde(sde), log_prob, t, x, method=method, n_samples=n_samples,
                              generator=generator, need_dt=False)
    return (-terms["div_f"] - terms["f_dot_s"] + terms["half_div_c"] + terms["c_dot_s"]
            + terms["half_tr_DH"] + terms["half_sDs"])


def fokker_planck_residual(
    sde: object,
    log_prob: Callable[[Tensor, Tensor], Tensor],
    t: Tensor | float,
    x: Tensor,
    *,
    method: str = "auto",
    n_samples: int = 16,
    generator: torch.Generator | int | None = None,
) -> FPResidual:
    """The residual ``∂_t log p − (L* p)/p`` of a time-dependent density under ``sde``'s Fokker–Planck equation.

    Args:
        sde: any SDE (every noise type; Stratonovich SDEs are converted to Itô form).
        log_prob: ``log_prob(t, x) -> (B,)`` with ``t`` of shape (B,) (differentiated for ∂_t) and
            ``x`` of shape (B, *event). E.g. ``lambda t, x: sde.marginal_log_prob(x, t, x0)``.
        t: a time (scalar) or one per point (B,). The SDE's drift and diffusion receive it as given.
        x: points (B, *event) where the residual is evaluated.
        method: ``"exact"`` (autograd, one pass per coordinate), ``"hutchinson"`` (``n_samples``
            Rademacher probes) or ``"auto"`` (exact up to :data:`EXACT_MAX_DIM` dimensions).
        n_samples: probes for ``"hutchinson"``.
        generator: ``torch.Generator`` or int seed for the probes.

    Returns:
        :class:`FPResidual` with ``residual`` (B,), ``scale`` (B,), the terms, and ``relative``.
    """
    terms, used = _adjoint_terms(as_sde(sde), log_prob, t, x, method=method, n_samples=n_samples,
                                 generator=generator, need_dt=True)
    adj = (-terms["div_f"] - terms["f_dot_s"] + terms["half_div_c"] + terms["c_dot_s"]
           + terms["half_tr_DH"] + terms["half_sDs"])
    residual = terms["dt_log_p"] - adj
    scale = sum(v.abs() for v in terms.values())
    return FPResidual(residual=residual, scale=scale, terms=terms, method=used)


def apply_generator(
    sde: object,
    fn: Callable[[Tensor], Tensor],
    t: Tensor | float,
    x: Tensor,
    *,
    method: str = "auto",
    n_samples: int = 16,
    generator: torch.Generator | int | None = None,
) -> Tensor:
    """``(L φ)(x) = f·∇φ + ½ tr(D ∇²φ)`` for a test function ``fn(x) -> (B,)``; returns (B,).

    ``E[φ(x_{t+h}) | x_t = x] = φ(x) + h (Lφ)(x) + O(h²)``, so this is what a weak-order check
    compares against.
    """
    x = check_state(x, "x")
    sde = _ito(sde)
    b = x.shape[0]
    event = tuple(x.shape[1:])
    d = int(x[0].numel())
    method = choose_trace_method(method, d)
    n_samples = _check_n_samples(n_samples)
    gen = make_generator(generator, x.device)
    t_sde, _ = _times(t, b, x)
    with torch.enable_grad():
        xf = x.detach().reshape(b, d).clone().requires_grad_(True)
        val = fn(xf.reshape(x.shape))
        if not isinstance(val, Tensor) or val.shape != (b,):
            raise ValueError(f"fn(x) must return a tensor of shape ({b},).")
        grad = _grad(val.sum(), xf)
        with torch.no_grad():
            f = sde.drift(t_sde, xf.reshape(x.shape)).expand(x.shape).reshape(b, d)
        noise = _Noise(sde, t_sde, xf.detach(), event)
        out = (f * grad.detach()).sum(-1)
        if method == "exact":
            cols = [c.detach() for c in noise.columns()]
            probes = [(c, 1.0) for c in cols]
        else:
            probes = []
            for _ in range(n_samples):
                eps = _rademacher(noise.brownian_shape, x, gen)
                probes.append((noise.Gv(eps).detach(), 1.0 / n_samples))
        for v, w in probes:
            out = out + 0.5 * w * (v * _grad((grad * v).sum(), xf, create=False)).sum(-1)
    return out.detach()
