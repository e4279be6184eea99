"""Weights of the exponential integrators in ``λ = −log σ`` (DPM-Solver++, UniPC, 3M).

Over a step ``h = λ_{i+1} − λ_i`` the PF-ODE ``dx/dλ = D − x`` has the exact solution
``x_{i+1} = e^{−h} x_i + ∫_0^h e^{τ−h} D(λ_i + τ) dτ``; replacing D by a polynomial in τ leaves
the integrals ``I_k = ∫_0^h e^{τ−h} τ^k dτ``.
"""

from __future__ import annotations

import math

__all__ = ["exponential_weights"]


def exponential_weights(h: float, k_max: int = 2) -> tuple[float, ...]:
    """``I_k = ∫_0^h e^{τ−h} τ^k dτ`` for k = 0..k_max (float64).

    The recursion ``I_k = h^k − k I_{k−1}`` (integration by parts) cancels for small h, where the
    series ``I_k = Σ_j (−1)^j k! h^{k+1+j} / (k+1+j)!`` is used instead.
    """
    if not h > 0 or not math.isfinite(h):
        raise ValueError(f"step h must be finite and > 0; got {h}.")
    out = []
    if h < 0.5:
        for k in range(k_max + 1):
            term = h ** (k + 1) / (k + 1)  # j = 0: k! h^{k+1} / (k+1)!
            total = 0.0
            for j in range(40):
                total += term
                term *= -h / (k + 2 + j)
            out.append(total)
        return tuple(out)
    prev = -math.expm1(-h)
    out.append(prev)
    for k in range(1, k_max + 1):
        prev = h**k - k * prev
        out.append(prev)
    return tuple(out)
