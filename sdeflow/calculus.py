"""Divergences of vector fields by autograd: exact traces or Hutchinson's estimator, one rule everywhere.

:func:`divergence` serves the PF-ODE likelihood (:func:`sdeflow.log_likelihood`), the continuity
residual and the Fokker–Planck residual (:func:`sdeflow.fokker_planck_residual`). With
``method="auto"`` it takes the exact trace — one vector–Jacobian product per state coordinate —
up to :data:`EXACT_MAX_DIM` coordinates and Hutchinson's unbiased estimate ``E[zᵀ (∂v/∂x) z]`` above,
where an exact trace would cost d products per evaluation (64 for an 8×8 image).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from ._checks import make_generator

__all__ = ["EXACT_MAX_DIM", "TRACE_METHODS", "divergence", "choose_trace_method", "draw_probes"]

#: Up to this many state dimensions ``method="auto"`` computes traces exactly; above it, by Hutchinson probes.
EXACT_MAX_DIM = 16
TRACE_METHODS: tuple[str, ...] = ("auto", "exact", "hutchinson")
PROBES: tuple[str, ...] = ("rademacher", "gaussian")


def choose_trace_method(method: object, d: int, *, name: str = "method") -> str:
    """``"exact"`` or ``"hutchinson"`` for ``d`` coordinates (``"auto"``: exact up to :data:`EXACT_MAX_DIM`)."""
    if method not in TRACE_METHODS:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, TRACE_METHODS))}; got {method!r}.")
    if method == "auto":
        return "exact" if d <= EXACT_MAX_DIM else "hutchinson"
    return str(method)


def draw_probes(
    shape: tuple[int, ...],
    n: int,
    *,
    like: Tensor,
    kind: str = "rademacher",
    generator: torch.Generator | int | None = None,
    name: str = "n_probes",
) -> Tensor:
    """``n`` probe vectors of ``shape`` for Hutchinson's estimator, stacked to (n, *shape).

    ``kind="rademacher"`` (±1 entries: the smallest variance for a given trace) or ``"gaussian"``;
    dtype and device of ``like``; drawn from ``generator`` (a ``torch.Generator`` or int seed).
    ``name`` is the caller's argument for ``n`` in error messages.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"{name} (Hutchinson probes per point) must be a positive int; got {n!r}.")
    if kind not in PROBES:
        raise ValueError(f"probe must be 'rademacher' or 'gaussian'; got {kind!r}.")
    gen = make_generator(generator, like.device)
    full = (n,) + tuple(shape)
    if kind == "gaussian":
        return torch.randn(full, generator=gen, dtype=like.dtype, device=like.device)
    r = torch.randint(0, 2, full, generator=gen, device=like.device)
    return (2 * r - 1).to(like.dtype)


def divergence(
    func: Callable[[Tensor], Tensor],
    x: Tensor,
    *,
    method: str = "auto",
    probes: Tensor | None = None,
    n_probes: int = 1,
    probe: str = "rademacher",
    generator: torch.Generator | int | None = None,
    create_graph: bool = False,
) -> tuple[Tensor, Tensor]:
    """``(func(x), ∇·func(x))`` for a field ``func`` mapping (B, *event) to the same shape.

    Args:
        func: the vector field; evaluated once, differentiated by autograd.
        x: points (B, *event). If ``x`` requires grad, the graph is built on it (with ``create_graph``).
        method: ``"exact"`` (the trace of the Jacobian: d vector–Jacobian products), ``"hutchinson"``
            (``E[zᵀ J z]`` over probes z) or ``"auto"`` (exact up to :data:`EXACT_MAX_DIM` coordinates).
            Passing ``probes`` implies Hutchinson.
        probes: fixed probes (P, B, *event) (e.g. held along an ODE trajectory, which keeps a
            likelihood estimate unbiased); otherwise ``n_probes`` of kind ``probe`` are drawn from
            ``generator``.
        create_graph: keep the graph of the divergence (to differentiate it further).

    Returns:
        ``func(x)`` of shape (B, *event) and the divergence (B,).
    """
    b = x.shape[0]
    d = x[0].numel()
    if probes is not None:
        if method not in ("auto", "hutchinson"):
            raise ValueError(f"probes are Hutchinson probes; pass method='hutchinson' (or 'auto'), not {method!r}.")
        if tuple(probes.shape[1:]) != tuple(x.shape):
            raise ValueError(f"probes must have shape (P, {', '.join(map(str, x.shape))}); got {tuple(probes.shape)}.")
        used = "hutchinson"
    else:
        used = choose_trace_method(method, d)
        if used == "hutchinson":
            probes = draw_probes(tuple(x.shape), n_probes, like=x, kind=probe, generator=generator)
    with torch.enable_grad():
        xr = x if x.requires_grad else x.detach().requires_grad_(True)
        out = func(xr)
        div = torch.zeros(b, dtype=x.dtype, device=x.device)
        if not out.requires_grad:  # the field does not depend on x
            return out, div
        if used == "exact":
            flat = out.reshape(b, d)
            for j in range(d):
                (g,) = torch.autograd.grad(flat[:, j].sum(), xr, retain_graph=True, create_graph=create_graph,
                                           allow_unused=True)
                if g is not None:
                    div = div + g.reshape(b, d)[:, j]
        else:
            for z in probes:
                (g,) = torch.autograd.grad(out, xr, grad_outputs=z, retain_graph=True, create_graph=create_graph,
                                           allow_unused=True)
                if g is not None:
                    div = div + (g * z).reshape(b, -1).sum(-1)
            div = div / probes.shape[0]
    return out, div
