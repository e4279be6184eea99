"""A Brownian path sampled once on a fine uniform grid and queried on any coarser aligned grid.

Convergence-order measurements run a solver at several step sizes on the *same* Brownian path
(and a fine reference solution on it too). ``torchsde.BrownianInterval`` does this for arbitrary
query times but costs about a millisecond per query for thousands of paths; on a uniform dyadic
hierarchy the whole path can be drawn up front instead: fine increments ``ΔW_k ~ N(0, h)`` and
space-time Lévy areas ``H_k ~ N(0, h/12)`` (independent of ``ΔW_k``), accumulated into

    W(t_k)  and  I(t_k) = ∫_{t_0}^{t_k} W_s ds,   with  I(t_{k+1}) − I(t_k) = W(t_k) h + h (ΔW_k/2 + H_k).

Any aligned coarse query ``[a, b]`` is then exact and consistent with the fine one:
``W_b − W_a`` and ``U = ∫_a^b (W_s − W_a) ds = I(b) − I(a) − W(a)(b − a)``.

The class implements torchsde's ``BaseBrownian`` interface, so it can be passed as ``bm`` to both
:func:`sdeflow.simulate` backends (and to ``torchsde.sdeint``); ``levy_area_approximation`` is
``"space-time"`` (what SRA1 / ``srk`` need).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torchsde import BaseBrownian

from .._checks import make_generator

__all__ = ["NestedBrownianPath"]


class NestedBrownianPath(BaseBrownian):
    """Brownian motion of shape ``size = (B, m)`` on ``[t0, t1]``, resolved to ``n_fine`` equal steps.

    Args:
        t0, t1: the time interval.
        size: ``(B, m)``: paths and Brownian dimensions.
        n_fine: number of fine steps; queries must fall on the fine grid (to 1e-9 of a fine step).
        dtype, device: of the increments.
        generator: ``torch.Generator`` or int seed.

    Calling ``path(ta, tb)`` returns ``W(tb) − W(ta)`` of shape ``size``; ``return_U=True`` also
    returns ``U = ∫_ta^tb (W_s − W_ta) ds``. Memory: two float tensors of ``(n_fine + 1) · B · m``.
    """

    def __init__(
        self,
        t0: float,
        t1: float,
        size: tuple[int, int],
        *,
        n_fine: int,
        dtype: torch.dtype = torch.float64,
        device: torch.device | str | None = None,
        generator: torch.Generator | int | None = None,
    ) -> None:
        if not t1 > t0:
            raise ValueError(f"need t1 > t0; got t0={t0}, t1={t1}.")
        if isinstance(n_fine, bool) or not isinstance(n_fine, int) or n_fine < 1:
            raise ValueError(f"n_fine must be a positive int; got {n_fine!r}.")
        if len(size) != 2:
            raise ValueError(f"size must be (batch, brownian_dim); got {size!r}.")
        device = torch.device(device) if device is not None else torch.device("cpu")
        gen = make_generator(generator, device)
        self._t0, self._t1 = float(t0), float(t1)
        self._n = n_fine
        self._h = (self._t1 - self._t0) / n_fine
        self._size = (int(size[0]), int(size[1]))
        self._dtype, self._device = dtype, device
        sd = math.sqrt(self._h)
        dw = torch.randn((n_fine,) + self._size, generator=gen, dtype=dtype, device=device) * sd
        hh = torch.randn((n_fine,) + self._size, generator=gen, dtype=dtype, device=device) * (sd / math.sqrt(12.0))
        w = torch.zeros((n_fine + 1,) + self._size, dtype=dtype, device=device)
        torch.cumsum(dw, 0, out=w[1:])
        inc_i = w[:-1] * self._h + self._h * (0.5 * dw + hh)
        integral = torch.zeros_like(w)
        torch.cumsum(inc_i, 0, out=integral[1:])
        self._w, self._i = w, integral

    # -- torchsde's BaseBrownian interface ----------------------------------------------------
    @property
    def dtype(self) -> torch.dtype:
        return self._dtype

    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def shape(self) -> torch.Size:
        return torch.Size(self._size)

    @property
    def levy_area_approximation(self) -> str:
        return "space-time"

    @property
    def fine_dt(self) -> float:
        """The fine step ``(t1 − t0) / n_fine``."""
        return self._h

    def _index(self, t: object) -> int:
        tf = float(t)
        k = (tf - self._t0) / self._h
        ki = round(k)
        if abs(k - ki) > 1e-6 or not 0 <= ki <= self._n:
            raise ValueError(
                f"NestedBrownianPath was queried at t={tf!r}, which is not on its fine grid "
                f"(t0={self._t0}, step {self._h}, {self._n} steps); use step sizes that divide the fine grid."
            )
        return ki

    def __call__(self, ta: object, tb: object | None = None, return_U: bool = False,  # noqa: N803 (torchsde)
                 return_A: bool = False) -> Tensor | tuple[Tensor, Tensor]:  # noqa: N803
        if return_A:
            raise ValueError("NestedBrownianPath provides the space-time integral U but not the Lévy area A; "
                             "use torchsde.BrownianInterval(levy_area_approximation='foster') for log_ode.")
        if tb is None:
            ia, ib = 0, self._index(ta)
        else:
            ia, ib = self._index(ta), self._index(tb)
        w = self._w[ib] - self._w[ia]
        if not return_U:
            return w
        u = self._i[ib] - self._i[ia] - self._w[ia] * ((ib - ia) * self._h)
        return w, u

    def value(self, t: float) -> Tensor:
        """``W(t) − W(t0)``, shape ``size``."""
        return self._w[self._index(t)]

    def __repr__(self) -> str:
        return (f"NestedBrownianPath(t0={self._t0}, t1={self._t1}, size={self._size}, n_fine={self._n}, "
                f"dtype={self._dtype}, device={self._device})")
