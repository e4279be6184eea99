"""One noise operator: ``G dW``, ``G Gᵀ v``, ``Gᵀ v`` and the matrix ``G`` for every noise type.

Every place that multiplies by the diffusion — the native engine's steps, the conversions (PF-ODE,
reverse SDE), the Fokker–Planck residual and the torchsde adapter — goes through the operator
``sde.noise_op`` (:attr:`sdeflow.SDE.noise_op`), so the shape conventions of
:mod:`sdeflow.sde.base` are written once:

=============  ==========================  ===================  =============================
noise_type     ``g = diffusion(t, x)``      ``dW`` / ``v_m``     ``G`` as a matrix (B, d, m)
=============  ==========================  ===================  =============================
"diagonal"     broadcastable to ``x``      ``x.shape``          ``diag(g)``, m = d
"scalar"       broadcastable to ``x``      ``(B, 1, …, 1)``     one column ``g``, m = 1
"additive",    ``(B, *event, m)`` or        ``(B, m)``           ``g`` reshaped
"general"      ``(*event, m)`` (shared)
=============  ==========================  ===================  =============================

The operators are stateless singletons (one per noise type): the hot loops pay no allocation, and
each method takes the diffusion value ``g`` that the caller evaluated once.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["NoiseOp", "noise_op_for"]


class NoiseOp:
    """The products of one noise type's diffusion ``G`` (shapes in the module docstring).

    Attributes:
        kind: the noise type (``"additive"`` shares the general operator).
    """

    kind: str = "diagonal"

    def brownian_shape(self, x: Tensor, g: Tensor | None = None) -> tuple[int, ...]:
        """The shape of ``dW`` for a batch ``x`` (B, *event); general noise needs ``g`` for ``m``."""
        return tuple(x.shape)

    def brownian_size(self, x: Tensor, g: Tensor | None = None) -> int:
        """``m``, the number of Brownian motions per path."""
        return math.prod(x.shape[1:])

    def prod(self, g: Tensor, dw: Tensor, x: Tensor) -> Tensor:
        """``G dW``: ``dw`` of :meth:`brownian_shape`; returns a tensor broadcastable to ``x``."""
        return g * dw

    def add(self, y: Tensor, g: Tensor, dw: Tensor, x: Tensor) -> Tensor:
        """``y + G dW`` (one fused multiply-add for diagonal and scalar noise)."""
        return torch.addcmul(y, g, dw)

    def ggt(self, g: Tensor, v: Tensor, x: Tensor) -> Tensor:
        """``G Gᵀ v`` for ``v`` of ``x``'s shape; returns ``x``'s shape."""
        return (g * g) * v

    def gt(self, g: Tensor, v: Tensor, x: Tensor) -> Tensor:
        """``Gᵀ v`` for ``v`` of ``x``'s shape; returns :meth:`brownian_shape`."""
        return (g * v).expand(x.shape)

    def matrix(self, g: Tensor, x: Tensor) -> Tensor:
        """``G`` as a dense (B, d, m) tensor (d = prod(event)); costs O(B d m) memory."""
        b = x.shape[0]
        return torch.diag_embed(g.expand(x.shape).reshape(b, -1))

    def flat(self, g: Tensor, x: Tensor) -> Tensor:
        """``g`` in torchsde's layout for flat states: (B, d) diagonal, (B, d, 1) scalar, (B, d, m) else."""
        return g.expand(x.shape).reshape(x.shape[0], -1)


class _ScalarNoise(NoiseOp):
    kind = "scalar"

    def brownian_shape(self, x: Tensor, g: Tensor | None = None) -> tuple[int, ...]:
        return (x.shape[0],) + (1,) * (x.dim() - 1)

    def brownian_size(self, x: Tensor, g: Tensor | None = None) -> int:
        return 1

    def ggt(self, g: Tensor, v: Tensor, x: Tensor) -> Tensor:
        gx = g.expand(x.shape)
        return gx * self.gt(gx, v, x)

    def gt(self, g: Tensor, v: Tensor, x: Tensor) -> Tensor:
        b = x.shape[0]
        return (g * v).reshape(b, -1).sum(-1).reshape(self.brownian_shape(x))

    def matrix(self, g: Tensor, x: Tensor) -> Tensor:
        return g.expand(x.shape).reshape(x.shape[0], -1, 1)

    def flat(self, g: Tensor, x: Tensor) -> Tensor:
        return g.expand(x.shape).reshape(x.shape[0], -1, 1)


class _GeneralNoise(NoiseOp):
    kind = "general"

    def brownian_shape(self, x: Tensor, g: Tensor | None = None) -> tuple[int, ...]:
        if g is None:
            raise ValueError("the Brownian shape of general or additive noise needs the diffusion value g (for m).")
        return (x.shape[0], int(g.shape[-1]))

    def brownian_size(self, x: Tensor, g: Tensor | None = None) -> int:
        return self.brownian_shape(x, g)[1]

    def prod(self, g: Tensor, dw: Tensor, x: Tensor) -> Tensor:
        m = g.shape[-1]
        if g.dim() == x.dim() + 1:
            b = x.shape[0]
            gb = g.expand(x.shape + (m,))
            return torch.bmm(gb.reshape(b, -1, m), dw.reshape(b, m, 1)).reshape(x.shape)
        # G shared by every path: shape (*event, m).
        return (dw.reshape(-1, m) @ g.reshape(-1, m).transpose(0, 1)).reshape(x.shape)

    def add(self, y: Tensor, g: Tensor, dw: Tensor, x: Tensor) -> Tensor:
        return y + self.prod(g, dw, x)

    def ggt(self, g: Tensor, v: Tensor, x: Tensor) -> Tensor:
        gm = self.matrix(g, x)
        gtv = torch.bmm(gm.transpose(1, 2), v.reshape(x.shape[0], -1, 1))  # (B, m, 1)
        return torch.bmm(gm, gtv).reshape(x.shape)

    def gt(self, g: Tensor, v: Tensor, x: Tensor) -> Tensor:
        gm = self.matrix(g, x)
        return torch.bmm(gm.transpose(1, 2), v.reshape(x.shape[0], -1, 1)).squeeze(-1)

    def matrix(self, g: Tensor, x: Tensor) -> Tensor:
        m = g.shape[-1]
        return g.expand(x.shape + (m,)).reshape(x.shape[0], -1, m)

    def flat(self, g: Tensor, x: Tensor) -> Tensor:
        return self.matrix(g, x)


_OPS: dict[str, NoiseOp] = {"diagonal": NoiseOp(), "scalar": _ScalarNoise()}
_OPS["general"] = _OPS["additive"] = _GeneralNoise()


def noise_op_for(noise_type: str) -> NoiseOp:
    """The :class:`NoiseOp` of ``noise_type`` (``"diagonal"``, ``"scalar"``, ``"additive"``, ``"general"``)."""
    try:
        return _OPS[noise_type]
    except KeyError:
        raise ValueError(f"noise_type must be one of {tuple(_OPS)}; got {noise_type!r}.") from None
