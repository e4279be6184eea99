"""The native fixed-step engine's method interface.

Each method is one class in one file, with a ``step()`` and its properties declared on the class:
strong and weak order, the calculus (Itô / Stratonovich) and noise types it handles, whether it
needs additive noise or the space-time integral of the Brownian path, and how many drift and
diffusion evaluations one step costs. :func:`check_method` checks support once, before solving.
"""

from __future__ import annotations

from typing import ClassVar

from torch import Tensor

from ...sde.base import SDE
from ...sde.noise_op import noise_op_for

__all__ = ["NativeSDEMethod", "NativeODEMethod", "noise_product", "add_noise"]


def noise_product(g: Tensor, dw: Tensor, x: Tensor, noise_type: str) -> Tensor:
    """``G dW`` with the shapes of :mod:`sdeflow.sde.base`: the SDE's noise operator's ``prod``."""
    return noise_op_for(noise_type).prod(g, dw, x)


def add_noise(y: Tensor, g: Tensor, dw: Tensor, x: Tensor, noise_type: str) -> Tensor:
    """``y + G dW`` (a fused multiply-add for diagonal and scalar noise): the noise operator's ``add``."""
    return noise_op_for(noise_type).add(y, g, dw, x)


class NativeSDEMethod:
    """Base class of the native SDE methods.

    Class attributes (declared by each method):
        name: the name used in ``simulate(method=...)``.
        sde_types: calculi the method integrates; an additive-noise SDE is accepted by either
            calculus, since Itô and Stratonovich coincide there.
        noise_types: noise types handled.
        requires_additive: only for SDEs whose diffusion does not depend on x.
        needs_space_time: ``step`` uses ``U = ∫ (W_s − W_t0) ds`` as well as ``dW``.
        strong_order / weak_order: orders of convergence for the noise the method handles;
            ``strong_order_additive`` overrides the strong order for additive noise,
            ``strong_order_general`` for general (non-commutative) noise.
        drift_evals / diffusion_evals: evaluations per step; :meth:`costs` reads them (a method
            whose cost depends on the SDE overrides it, as Milstein does).
    """

    name: ClassVar[str]
    sde_types: ClassVar[tuple[str, ...]] = ("ito",)
    noise_types: ClassVar[tuple[str, ...]] = ("diagonal", "scalar", "additive", "general")
    requires_additive: ClassVar[bool] = False
    needs_space_time: ClassVar[bool] = False
    strong_order: ClassVar[float]
    strong_order_additive: ClassVar[float | None] = None
    strong_order_general: ClassVar[float | None] = None
    weak_order: ClassVar[float]
    drift_evals: ClassVar[int] = 1
    diffusion_evals: ClassVar[int] = 1

    def __init__(self, sde: SDE) -> None:
        self.sde = sde
        self.noise_type = sde.noise_type
        self.noise_op = sde.noise_op

    @classmethod
    def unsupported_reason(cls, sde: SDE) -> str | None:
        """``None`` if this method can integrate ``sde``, else a short reason."""
        if sde.noise_type not in cls.noise_types:
            return f"noise_type={sde.noise_type!r} (handles {', '.join(cls.noise_types)})"
        if cls.requires_additive and not sde.is_additive:
            return "state-dependent noise (needs additive noise: a diffusion independent of x)"
        if sde.sde_type not in cls.sde_types and not sde.is_additive:
            return f"sde_type={sde.sde_type!r} (integrates {', '.join(cls.sde_types)})"
        return None

    @classmethod
    def costs(cls, sde: SDE, t: Tensor | None = None, x: Tensor | None = None) -> tuple[int, int]:
        """Drift and diffusion evaluations of one step on ``sde``.

        ``(t, x)`` is a point where the SDE may be probed (e.g. whether it provides an analytic
        derivative); ``None`` when unknown. ``simulate`` reports ``steps`` times these in its stats.
        """
        return cls.drift_evals, cls.diffusion_evals

    @classmethod
    def declared_strong_order(cls, sde: SDE) -> float:
        """The strong order this method has on ``sde``'s kind of noise."""
        if sde.is_additive and cls.strong_order_additive is not None:
            return cls.strong_order_additive
        if sde.noise_type == "general" and cls.strong_order_general is not None:
            return cls.strong_order_general
        return cls.strong_order

    def step(self, t0: Tensor, t1: Tensor, dt: float, x: Tensor, dw: Tensor, u: Tensor | None) -> Tensor:
        """Advance ``x`` (B, *event) from ``t0`` to ``t1 = t0 + dt`` with increment ``dw`` (and ``u``)."""
        raise NotImplementedError


class NativeODEMethod:
    """Base class of the native fixed-step ODE methods (``order`` and evaluations per step declared)."""

    name: ClassVar[str]
    order: ClassVar[int]
    evals: ClassVar[int]

    def __init__(self, func) -> None:  # noqa: ANN001 (any callable f(t, x))
        self.func = func

    def step(self, t0: Tensor, t1: Tensor, dt: float, x: Tensor) -> Tensor:
        """Advance ``x`` from ``t0`` to ``t1 = t0 + dt`` (dt may be negative)."""
        raise NotImplementedError
