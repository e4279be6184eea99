"""The SDE protocol: ``dx = f(t, x) dt + G(t, x) dW``.

Shapes. A state has shape ``(B, *event_shape)``: a batch dimension and any event shape (vectors,
images). The diffusion's shape depends on ``noise_type``:

=============  ==========================================  ===============================
noise_type     ``diffusion(t, x)`` returns                 Brownian increment ``dW``
=============  ==========================================  ===============================
"diagonal"     broadcastable to ``x.shape`` (G = diag(g))  ``x.shape``
"scalar"       broadcastable to ``x.shape`` (one column)   ``(B,)`` broadcast over events
"additive"     ``(B, *event_shape, m)``, independent of x  ``(B, m)``
"general"      ``(B, *event_shape, m)``                    ``(B, m)``
=============  ==========================================  ===============================

``drift(t, x)`` returns a tensor broadcastable to ``x.shape`` (normally exactly that shape).
``t`` is a 0-dim tensor inside the solvers; the closed-form helpers also accept one time per path.

An SDE whose diffusion does not depend on ``x`` but has diagonal shape (OU, VP, VE, ...) keeps
``noise_type="diagonal"`` for speed and sets ``additive = True``, which makes the additive-noise
methods (SRA1) applicable to it.

Every :class:`SDE` also speaks torchsde's protocol (``f``, ``g``, ``noise_type``, ``sde_type``) for
2-D states, so it can be handed to ``torchsde.sdeint`` directly; conversely :func:`as_sde` wraps any
torchsde-style object so every sdeflow entry point accepts it.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .noise_op import NoiseOp, noise_op_for

__all__ = ["SDE", "NOISE_TYPES", "SDE_TYPES", "as_sde", "ProtocolSDE"]

NOISE_TYPES: tuple[str, ...] = ("diagonal", "scalar", "additive", "general")
SDE_TYPES: tuple[str, ...] = ("ito", "stratonovich")


class SDE(nn.Module):
    """Base class for an SDE ``dx = drift(t, x) dt + diffusion(t, x) dW``.

    Subclasses set ``noise_type`` and ``sde_type`` (class attributes or in ``__init__``) and
    implement :meth:`drift` and :meth:`diffusion`. Parameters and buffers move with ``.to()``.

    Attributes:
        noise_type: one of ``"diagonal"``, ``"scalar"``, ``"additive"``, ``"general"``.
        sde_type: ``"ito"`` or ``"stratonovich"``.
        additive: True when the diffusion does not depend on ``x`` (implied by ``noise_type="additive"``).
        brownian_size: ``m`` for additive/general noise when known in advance (else inferred).
        elementwise_affine: True when, element by element, the drift is ``a(t) x + b(t)`` and the
            (diagonal) diffusion ``c(t) x + e(t)``; it lets ``simulate(compile="triton")`` run the
            whole trajectory in one GPU kernel. A wrong claim is caught by a probe, not trusted.
        event_shape: used only by the torchsde-protocol methods ``f``/``g`` to reshape flat 2-D
            states ``(B, prod(event_shape))``; ``None`` means the states are already ``(B, d)``.
    """

    noise_type: str = "diagonal"
    sde_type: str = "ito"
    additive: bool = False
    elementwise_affine: bool = False
    brownian_size: int | None = None
    event_shape: tuple[int, ...] | None = None

    _constant_names: frozenset[str] = frozenset()  # buffers that keep their dtype (sdeflow.sde._gaussian.as_param)

    def _apply(self, fn, recurse: bool = True):  # noqa: ANN001, ANN202 (torch's signature)
        # Constants follow the module's device but keep their dtype: set them aside so that
        # ``.to(torch.bfloat16)`` never rounds them, then move them where ``fn`` sends tensors.
        consts = {n: self._buffers.pop(n) for n in self._constant_names if self._buffers.get(n) is not None}
        try:
            out = super()._apply(fn, recurse)
        finally:
            for n, c in consts.items():
                self._buffers[n] = c.to(fn(c.new_zeros(())).device)
        return out

    # -- the equation -------------------------------------------------------------------------
    def drift(self, t: Tensor, x: Tensor) -> Tensor:
        """Drift ``f(t, x)``; ``x`` of shape (B, *event_shape), returns the same shape."""
        raise NotImplementedError(f"{type(self).__name__} must implement drift(t, x)")

    def diffusion(self, t: Tensor, x: Tensor) -> Tensor:
        """Diffusion ``G(t, x)``; shape as in the module docstring for this ``noise_type``."""
        raise NotImplementedError(f"{type(self).__name__} must implement diffusion(t, x)")

    def diffusion_derivative(self, t: Tensor, x: Tensor) -> Tensor | None:
        """``∂g_i/∂x_i`` for diagonal or scalar noise (shape of ``x``), or ``None`` to use autograd.

        Used by Milstein and by the Itô–Stratonovich conversion. Override it when it is cheap to
        write down; the default returns ``None`` and the solvers differentiate ``diffusion``.
        """
        return None

    @property
    def noise_op(self) -> NoiseOp:
        """The products of this SDE's diffusion (``G dW``, ``G Gᵀ v``, ``Gᵀ v``, the matrix, the Brownian
        shape) for its ``noise_type``: :class:`sdeflow.sde.noise_op.NoiseOp`, used by every solver,
        conversion and Fokker–Planck check."""
        return noise_op_for(self.noise_type)

    @property
    def is_additive(self) -> bool:
        """True when G does not depend on the state."""
        return self.noise_type == "additive" or bool(self.additive)

    # -- torchsde protocol (2-D states) -------------------------------------------------------
    def _unflat(self, y: Tensor) -> Tensor:
        if self.event_shape is None:
            return y
        return y.reshape((y.shape[0],) + tuple(self.event_shape))

    def f(self, t: Tensor, y: Tensor) -> Tensor:
        """torchsde drift on flat states ``(B, d)``."""
        x = self._unflat(y)
        return self.drift(t, x).to(y.dtype).expand(x.shape).reshape(y.shape)

    def g(self, t: Tensor, y: Tensor) -> Tensor:
        """torchsde diffusion on flat states: ``(B, d)`` diagonal, ``(B, d, 1)`` scalar, ``(B, d, m)`` else."""
        x = self._unflat(y)
        return self.noise_op.flat(self.diffusion(t, x).to(y.dtype), x)

    def extra_repr(self) -> str:
        return f"noise_type={self.noise_type!r}, sde_type={self.sde_type!r}"


class ProtocolSDE(SDE):
    """Wraps an object with torchsde's protocol (``f``, ``g``, ``noise_type``, ``sde_type``).

    States are 2-D ``(B, d)``, as torchsde requires. For scalar noise torchsde's ``g`` returns
    ``(B, d, 1)``; it is squeezed to sdeflow's ``(B, d)`` convention.
    """

    def __init__(self, obj: object) -> None:
        super().__init__()
        for attr in ("f", "g", "noise_type", "sde_type"):
            if not hasattr(obj, attr):
                raise TypeError(
                    f"sde must be an sdeflow.SDE or follow torchsde's protocol (methods f(t, y) and g(t, y), "
                    f"attributes noise_type and sde_type); the object of type {type(obj).__name__} has no {attr!r}."
                )
        if obj.noise_type not in NOISE_TYPES:
            raise ValueError(f"sde.noise_type must be one of {NOISE_TYPES}; got {obj.noise_type!r}.")
        if obj.sde_type not in SDE_TYPES:
            raise ValueError(f"sde.sde_type must be one of {SDE_TYPES}; got {obj.sde_type!r}.")
        if isinstance(obj, nn.Module):
            self.inner = obj
        else:
            self._inner_plain = obj
        self.noise_type = obj.noise_type
        self.sde_type = obj.sde_type

    @property
    def _obj(self) -> object:
        return self.inner if "inner" in self._modules else self._inner_plain

    def drift(self, t: Tensor, x: Tensor) -> Tensor:
        return self._obj.f(t, x)

    def diffusion(self, t: Tensor, x: Tensor) -> Tensor:
        g = self._obj.g(t, x)
        if self.noise_type == "scalar" and g.dim() == x.dim() + 1:
            g = g.squeeze(-1)
        return g


def as_sde(sde: object) -> SDE:
    """Return ``sde`` itself if it is an :class:`SDE`, else wrap a torchsde-protocol object."""
    if isinstance(sde, type):
        raise TypeError(f"sde must be an SDE instance, not the class {sde.__name__}; create one first, e.g. "
                        f"{sde.__name__}() (with its parameters).")
    if isinstance(sde, SDE):
        if sde.noise_type not in NOISE_TYPES:
            raise ValueError(f"sde.noise_type must be one of {NOISE_TYPES}; got {sde.noise_type!r}.")
        if sde.sde_type not in SDE_TYPES:
            raise ValueError(f"sde.sde_type must be one of {SDE_TYPES}; got {sde.sde_type!r}.")
        return sde
    return ProtocolSDE(sde)


class TimeFlipped(SDE):
    """The same SDE in reversed time ``s = -t``: drift ``-f(-s, x)``, diffusion ``G(-s, x)``.

    Integrating this forward in ``s`` is integrating the original backward in ``t`` (decreasing
    ``ts``). The Brownian motion of the flipped equation is ``W̃(s) = W(-s)`` (shifted to start at 0,
    again a Brownian motion): its increment over a step is the user's ``W(t_next) − W(t)`` with
    ``t_next < t`` (:class:`sdeflow.solve.noise.ReflectedBrownian` applies it to a given ``bm``).
    Internal: the solver front doors apply it, users pass decreasing ``ts``.
    """

    def __init__(self, base: SDE) -> None:
        super().__init__()
        self.base = base
        self.noise_type = base.noise_type
        self.sde_type = base.sde_type
        self.additive = base.is_additive
        self.elementwise_affine = bool(getattr(base, "elementwise_affine", False))
        self.brownian_size = base.brownian_size

    def drift(self, t: Tensor, x: Tensor) -> Tensor:
        return -self.base.drift(-t, x)

    def diffusion(self, t: Tensor, x: Tensor) -> Tensor:
        return self.base.diffusion(-t, x)

    def diffusion_derivative(self, t: Tensor, x: Tensor) -> Tensor | None:
        return self.base.diffusion_derivative(-t, x)


def diffusion_times_derivative(sde: SDE, t: Tensor, x: Tensor, g: Tensor | None = None) -> Tensor:
    """``g_i ∂g_i/∂x_i`` for diagonal or scalar noise, by the SDE's own derivative or autograd.

    For scalar noise this is ``Σ_j g_j ∂g_i/∂x_j`` (the derivative along the single column).
    Returns a tensor of ``x``'s shape; zero for additive noise.
    """
    if sde.is_additive:
        return torch.zeros_like(x)
    if sde.noise_type == "diagonal":
        dg = sde.diffusion_derivative(t, x)
        if dg is not None:
            if g is None:
                g = sde.diffusion(t, x)
            return g * dg
        with torch.enable_grad():
            xr = x.detach().requires_grad_(True) if not x.requires_grad else x
            gr = sde.diffusion(t, xr).expand(x.shape)
            if not gr.requires_grad:  # G does not depend on x
                return torch.zeros_like(x)
            (vjp,) = torch.autograd.grad(gr, xr, grad_outputs=gr.detach(), create_graph=torch.is_grad_enabled()
                                         and x.requires_grad, allow_unused=True)
        return torch.zeros_like(x) if vjp is None else vjp
    if sde.noise_type == "scalar":
        # Directional derivative of the single column g along itself: (∂g/∂x) g, by forward-over-reverse.
        with torch.enable_grad():
            xr = x.detach().requires_grad_(True)
            gr = sde.diffusion(t, xr).expand(x.shape)
            if not gr.requires_grad:
                return torch.zeros_like(x)
            u = torch.zeros_like(gr, requires_grad=True)
            (jtu,) = torch.autograd.grad(gr, xr, grad_outputs=u, create_graph=True, allow_unused=True)
            if jtu is None:
                return torch.zeros_like(x)
            (jv,) = torch.autograd.grad(jtu, u, grad_outputs=gr.detach(), allow_unused=True)
        return torch.zeros_like(x) if jv is None else jv
    raise ValueError(
        f"g·∂g is defined here for diagonal and scalar noise only; this SDE has noise_type={sde.noise_type!r}."
    )

