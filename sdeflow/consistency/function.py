"""The consistency function ``f(x, t)`` and the three roles of consistency-model training.

A consistency function maps every point ``x_t`` of a probability-flow ODE trajectory to the
trajectory's end ``x_ε`` (docs/concepts.md §6, docs/consistency.md). It is parameterized so that the
boundary condition ``f(x, ε) = x`` holds exactly for any network ``F``:

    ``f(x, t) = c_skip(t) x + c_out(t) F(c_in(t) x, c_noise(t), class_labels, extra)``

with ``c_skip(ε) = 1`` and ``c_out(ε) = 0`` (:class:`ConsistencyFunction`, :func:`consistency_coefficients`).
Every parameterization takes ``x`` and ``t`` in the EDM convention: ``x_t = x_0 + t n``, ``n ~ N(0, I)``,
``t = σ`` (the :class:`sdeflow.EDMSDE` state and time; PF-ODE ``dx/dt = (x − D(x, t))/t``).

The three roles (the names used throughout :mod:`sdeflow.consistency` and its docs):

* ``student`` — the :class:`ConsistencyFunction` being trained (gradients flow through it).
* ``target`` — a stop-gradient copy evaluated at the lower noise level of a pair: an EMA of the
  student (CD, CT; Song et al. 2023) or the student itself under ``torch.no_grad()`` (iCT, ECT, sCM;
  ``target=None`` in :class:`ConsistencyRoles`). It is never trained directly.
* ``teacher`` — a frozen score model, as a *denoiser* ``D(x, σ, **kwargs)`` (the samplers' convention,
  e.g. :meth:`sdeflow.GaussianMixture.as_denoiser` or a trained :class:`sdeflow.EDMPrecond`), whose
  PF-ODE step gives the distillation pair (CD); ``None`` for consistency training without a teacher
  (CT, iCT). A consistency function is not a teacher.

:class:`ConsistencyRoles` holds the three and checks that they fit together.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ..generative.config import register_model
from ..generative.precond import _bcast, _check_state, _sigma_vector, _upcast, _Wrapper, edm_coefficients

__all__ = [
    "PARAMETERIZATIONS",
    "ConsistencyFunction",
    "ConsistencyRoles",
    "consistency_coefficients",
    "edm_to_trigflow_time",
    "trigflow_to_edm_time",
]

#: The parameterizations of :class:`ConsistencyFunction` (see :func:`consistency_coefficients`).
PARAMETERIZATIONS: tuple[str, ...] = ("cm", "ctm", "trigflow")


def edm_to_trigflow_time(t: Tensor | float, sigma_data: float) -> Tensor | float:
    """TrigFlow time ``s = arctan(t/σ_d)`` ∈ [0, π/2) of the EDM noise level ``t`` (Lu & Song 2024).

    The states are related by ``x_s = cos(s) x_t``: ``x_t = x_0 + t n`` gives
    ``cos(s) x_t = cos(s) x_0 + sin(s) σ_d n`` (TrigFlow's ``x_s = cos(s) x_0 + sin(s) z``, ``z ~ N(0, σ_d² I)``).
    """
    if isinstance(t, Tensor):
        return torch.atan(t / sigma_data)
    return math.atan(t / sigma_data)


def trigflow_to_edm_time(s: Tensor | float, sigma_data: float) -> Tensor | float:
    """The EDM noise level ``t = σ_d tan(s)`` of the TrigFlow time ``s`` ∈ [0, π/2).

    The inverse of :func:`edm_to_trigflow_time`.
    """
    if isinstance(s, Tensor):
        return sigma_data * torch.tan(s)
    return sigma_data * math.tan(s)


def _check_parameterization(value: object) -> str:
    if value not in PARAMETERIZATIONS:
        raise ValueError(f"parameterization must be one of {PARAMETERIZATIONS}; got {value!r}.")
    return value  # type: ignore[return-value]


def _check_number(name: str, value: object, *, minimum: float, strict: bool) -> float:
    ok = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value) and \
        (value > minimum if strict else value >= minimum)
    if not ok:
        raise ValueError(f"{name} must be a finite number {'>' if strict else '>='} {minimum:g}; got {value!r}.")
    return float(value)


def consistency_coefficients(t: Tensor, sigma_data: float, eps: float, parameterization: str = "cm"
                             ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(c_skip, c_out, c_in, c_noise)`` of ``f = c_skip x + c_out F(c_in x, c_noise)`` at EDM times ``t``.

    ``t`` is a floating tensor of any shape (values >= 0); the coefficients have its shape and dtype.
    Times below ``eps`` are treated as ``eps`` (``f = x`` there). Every parameterization gives
    ``c_skip = 1`` and ``c_out = 0`` *bitwise* where ``t == eps`` in ``t``'s dtype (the arithmetic below is
    arranged so), hence ``f(x, ε) = x`` exactly for any finite network output.

    * ``"cm"`` — Song et al. 2023 (Consistency Models), Appendix C:
      ``c_skip = σ_d²/((t − ε)² + σ_d²)``, ``c_out = σ_d (t − ε)/√(σ_d² + t²)``, ``c_in = 1/√(t² + σ_d²)``,
      ``c_noise = ¼ ln t`` (EDM's input scaling and noise conditioning, Karras et al. 2022 Table 1;
      the CM paper's code conditions on a rescaled ``ln t`` too). With ``ε = 0`` it is EDM's denoiser.
    * ``"ctm"`` — Kim et al. 2023 (Consistency Trajectory Models): ``G(x_t, t, s) = (s/t) x_t + (1 − s/t) g(x_t, t, s)``
      with ``g`` an EDM-preconditioned denoiser; the consistency function is ``G(·, t, ε)``:
      ``f = (ε/t) x + (1 − ε/t) (c_skip^EDM x + c_out^EDM F)``, i.e.
      ``c_skip = (σ_d² + ε t)/(t² + σ_d²)``, ``c_out = σ_d (t − ε)/√(σ_d² + t²)`` (the same ``c_out`` as
      ``"cm"``; ``c_skip`` has ``t²``, not ``(t − ε)²``, in its denominator), ``c_in``, ``c_noise`` as EDM.
      What ``F`` predicts is then EDM's denoiser target: ``(1 − ε/t)``-interpolation toward an x̂_0. CTM's
      network also takes the end time ``s``; here ``s = ε`` is fixed, so ``F`` does not see it.
    * ``"trigflow"`` — Lu & Song 2024 (sCM). TrigFlow time ``s = arctan(t/σ_d)``, state ``x_s = cos(s) x_t``,
      and the TrigFlow DDIM map from ``s`` to ``s_ε = arctan(ε/σ_d)``:
      ``x_{s_ε} = cos(s − s_ε) x_s − sin(s − s_ε) σ_d F(x_s/σ_d, c_noise(s))``, converted back to EDM units
      by ``1/cos(s_ε)``: ``c_skip = cos(s − s_ε) cos(s)/cos(s_ε)``, ``c_out = −σ_d sin(s − s_ε)/cos(s_ε)``,
      ``c_in = cos(s)/σ_d = 1/√(t² + σ_d²)``, ``c_noise = s`` (sCM conditions on the TrigFlow time itself).
      With ``ε = 0`` this is sCM's ``f = cos(s) x_s − sin(s) σ_d F`` exactly, and also EDM's denoiser
      with ``F → −F`` and ``c_noise = arctan(t/σ_d)`` (``c_skip = σ_d²/(t² + σ_d²)``, ``c_out = −σ_d t/√(t² + σ_d²)``).
      The offset ``s − s_ε`` is the boundary treatment (sCM itself sets ε = 0). Expanding the cosines,
      ``c_skip = cos²s + sin s cos s tan s_ε = (σ_d² + ε t)/(t² + σ_d²)`` and
      ``c_out = −σ_d (sin s − cos s tan s_ε) = −σ_d (t − ε)/√(t² + σ_d²)``: for every ε, TrigFlow is CTM's
      parameterization with ``F → −F`` (and ``c_noise = s``). Both are the DDIM (first-order PF-ODE) step
      from ``t`` to ``ε`` with the x̂_0 prediction ``D`` of the network, ``f = D + (ε/t)(x − D)``
      (EDM form ``D = c_skip^EDM x + c_out^EDM F``; TrigFlow form ``D = cos(s) x_s − sin(s) σ_d F``).
      ``"cm"`` differs from them at first order in ε (its ``c_skip`` has ``(t − ε)²``) and is not such a step.

    Args:
        t: EDM noise levels (any shape), floating point.
        sigma_data: σ_d > 0.
        eps: ε >= 0, the boundary time.
        parameterization: one of :data:`PARAMETERIZATIONS`.
    """
    if not isinstance(t, Tensor) or not t.is_floating_point():
        got = t.dtype if isinstance(t, Tensor) else type(t).__name__
        raise TypeError(f"t must be a floating-point tensor; got {got}.")
    parameterization = _check_parameterization(parameterization)
    sigma_data = _check_number("sigma_data", sigma_data, minimum=0.0, strict=True)
    eps = _check_number("eps", eps, minimum=0.0, strict=False)
    eps_t = torch.full_like(t, eps)  # ε rounded to t's dtype, so t == ε there gives a zero offset
    t = torch.maximum(t, eps_t)
    sd2 = torch.full_like(t, sigma_data * sigma_data)
    if parameterization == "trigflow":
        s = torch.atan(t / sigma_data)
        s_eps = torch.atan(eps_t / sigma_data)
        delta = s - s_eps  # exactly 0 at t == ε
        cos_s = torch.cos(s)
        cos_eps = torch.cos(s_eps)
        c_skip = torch.cos(delta) * cos_s / cos_eps  # cos(0) = 1 and cos_s == cos_eps: exactly 1
        c_out = -sigma_data * torch.sin(delta) / cos_eps
        c_in = torch.rsqrt(t * t + sd2)
        return c_skip, c_out, c_in, s
    _, _, c_in, c_noise = edm_coefficients(t, sigma_data)
    off = t - eps_t
    c_out = sigma_data * off * c_in  # σ_d (t − ε)/√(t² + σ_d²), exactly 0 at t == ε
    if parameterization == "cm":
        c_skip = sd2 / (off * off + sd2)
    else:  # ctm: (σ_d² + ε t)/(t² + σ_d²); numerator and denominator are the same float at t == ε
        c_skip = (sd2 + eps_t * t) / (t * t + sd2)
    return c_skip, c_out, c_in, c_noise


@register_model("consistency_function")
class ConsistencyFunction(_Wrapper):
    """A consistency function ``f(x, t) = c_skip(t) x + c_out(t) F(c_in(t) x, c_noise(t), class_labels, extra)``.

    ``f(x, ε) = x`` exactly (bitwise, for any network output) for every parameterization: the
    coefficients give ``c_skip(ε) = 1``, ``c_out(ε) = 0`` exactly (:func:`consistency_coefficients`), and
    rows with ``t <= ε`` return ``x`` itself (signed zeros kept, a non-finite network output there
    ignored). ``x`` and ``t`` are EDM state and noise level for every parameterization (``"trigflow"``
    converts to its own time and state inside). This is the only consistency parameterization in
    sdeflow; the ``student`` of :class:`ConsistencyRoles`.

    It is *not* a denoiser for the PF-ODE samplers (its output is the trajectory's end, not
    ``E[x_0 | x_t]``); sample with :func:`sdeflow.consistency.sample_consistency`.

    Args:
        net: the raw network ``F(x, c_noise, class_labels=None, extra=None)`` (:class:`sdeflow.MLPNet`,
            :class:`sdeflow.UNet`). It may run in bf16/fp16: its output is cast to ``x``'s dtype before the
            skip connection. A guidance scale (latent consistency) goes in as ``extra`` (``n_extra=1``).
        sigma_data: σ_d, the data's std (0.5 for images in [−1, 1]; :func:`sdeflow.estimate_sigma_data`).
        eps: ε >= 0, the boundary noise level where ``f(x, ε) = x`` (0.002 in the CM paper).
        T: the largest noise level, > ε (80 in the CM paper): where one-step sampling starts.
        parameterization: ``"cm"`` (Song et al. 2023), ``"ctm"`` (Kim et al. 2023) or ``"trigflow"``
            (Lu & Song 2024); see :func:`consistency_coefficients` for the formulas and sources.

    ``forward(x, t, class_labels=None, extra=None)``: ``x`` (B, *event) floating point, ``t`` a scalar or
    (B,) (>= 0; values below ε act as ε) -> (B, *event) in ``x``'s dtype. ``t`` is rounded to ``x``'s dtype
    first, so a ``t`` equal to ε in that dtype gives ``f = x`` bitwise.
    """

    def __init__(self, net: nn.Module, sigma_data: float = 0.5, eps: float = 0.002, T: float = 80.0,  # noqa: N803
                 parameterization: str = "cm") -> None:
        super().__init__()
        if not isinstance(net, nn.Module):
            raise TypeError(f"net must be an nn.Module F(x, c_noise, class_labels, extra); got {type(net).__name__}.")
        if isinstance(net, ConsistencyFunction):
            raise TypeError("net must be a raw network F(x, c_noise, ...), not another ConsistencyFunction.")
        sigma_data = _check_number("sigma_data", sigma_data, minimum=0.0, strict=True)
        eps = _check_number("eps", eps, minimum=0.0, strict=False)
        T = _check_number("T", T, minimum=eps, strict=True)  # noqa: N806
        parameterization = _check_parameterization(parameterization)
        self._record(net, "net", sigma_data=sigma_data, eps=eps, T=T, parameterization=parameterization)
        self.net = net
        self.sigma_data = sigma_data
        self.eps = eps
        self.T = T
        self.parameterization = parameterization

    def _inner(self) -> object:
        return self.net

    def coefficients(self, t: Tensor | float) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``(c_skip, c_out, c_in, c_noise)`` at EDM times ``t`` (a (B,) tensor, or a scalar: float64, shape ())."""
        tt = torch.as_tensor(t, dtype=t.dtype if isinstance(t, Tensor) and t.is_floating_point() else torch.float64)
        _check_times(tt, "t")
        return consistency_coefficients(tt, self.sigma_data, self.eps, self.parameterization)

    def forward(self, x: Tensor, t: Tensor | float, class_labels: Tensor | None = None,
                extra: Tensor | None = None) -> Tensor:
        """``f(x, t)`` for ``x`` (B, *event) and ``t`` (B,) or a scalar; returns ``x``'s shape and dtype."""
        x = _check_state(x)
        if not torch.compiler.is_compiling() and not bool(torch.isfinite(x).all()):
            raise ValueError("x must be finite: a consistency function maps finite states (check the sampler's "
                             "per-sample status, SampleResult.status, for the sample that diverged).")
        tv = _time_vector(t, x)
        c_skip, c_out, c_in, c_noise = consistency_coefficients(tv, self.sigma_data, self.eps, self.parameterization)
        out = self.net(_bcast(c_in, x) * x, c_noise, class_labels=class_labels, extra=extra)
        f = _bcast(c_skip, x) * x + _bcast(c_out, x) * _upcast(out, x, "net")
        # c_skip(ε) = 1 and c_out(ε) = 0 already give f = x at ε; the select also keeps a −0.0 in x and
        # ignores a non-finite network output there (0·inf), so f(x, ε) = x holds bit for bit.
        return torch.where(_bcast(tv <= self.eps, x), x, f)

    def example_inputs(self, batch: int = 1) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """``((x, t), kwargs)`` for one call, with ``t = T``."""
        (x, _), kwargs = super().example_inputs(batch)
        return (x, torch.full((x.shape[0],), self.T, device=x.device)), kwargs

    def extra_repr(self) -> str:
        return (f"parameterization={self.parameterization!r}, sigma_data={self.sigma_data:g}, eps={self.eps:g}, "
                f"T={self.T:g}")


def _check_times(t: Tensor, name: str) -> None:
    if not torch.compiler.is_compiling() and bool(((t < 0) | torch.isnan(t)).any()):
        raise ValueError(f"{name} must be >= 0 and not NaN (an EDM noise level; values below eps act as eps).")


def _time_vector(t: object, x: Tensor, name: str = "t") -> Tensor:
    """``t`` as (B,) in x's dtype/device, checked like every noise level of the package (precond)."""
    return _sigma_vector(t, x, name)


@dataclass(frozen=True)
class ConsistencyRoles:
    """The three roles of consistency-model training, by name (see the module docstring).

    Attributes:
        student: the :class:`ConsistencyFunction` being trained.
        target: the stop-gradient copy evaluated at the pair's lower noise level: an EMA copy of the
            student (a :class:`ConsistencyFunction` of the same parameterization, σ_d, ε and T), or
            ``None`` for the student itself (iCT/ECT/sCM). :meth:`target_fn` evaluates it without gradients.
        teacher: a frozen denoiser ``D(x, σ, **kwargs)`` whose PF-ODE step gives the pair (distillation),
            or ``None`` (consistency training). Its parameters should not require gradients.
    """

    student: ConsistencyFunction
    target: ConsistencyFunction | None = None
    teacher: Callable[..., Tensor] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.student, ConsistencyFunction):
            raise TypeError(f"student must be a ConsistencyFunction; got {type(self.student).__name__}.")
        if self.target is not None:
            if not isinstance(self.target, ConsistencyFunction):
                raise TypeError(f"target must be a ConsistencyFunction (an EMA copy of the student) or None (the "
                                f"student itself under stop-gradient); got {type(self.target).__name__}.")
            a, b = self.student, self.target
            mine = (a.parameterization, a.sigma_data, a.eps, a.T)
            theirs = (b.parameterization, b.sigma_data, b.eps, b.T)
            if mine != theirs:
                raise ValueError(f"target must share the student's (parameterization, sigma_data, eps, T) = {mine}; "
                                 f"got {theirs}. Make it with copy.deepcopy(student) (an EMA copy).")
        if self.teacher is not None:
            if isinstance(self.teacher, ConsistencyFunction):
                raise TypeError("teacher must be a denoiser D(x, sigma) of a score model (e.g. an EDMPrecond or "
                                "GaussianMixture.as_denoiser()), not a ConsistencyFunction: the target role is the "
                                "stop-gradient consistency function.")
            if not callable(self.teacher):
                raise TypeError(f"teacher must be a denoiser callable as D(x, sigma, **kwargs) or None; got "
                                f"{type(self.teacher).__name__}.")

    @property
    def has_teacher(self) -> bool:
        """Whether this is distillation (a teacher) rather than consistency training."""
        return self.teacher is not None

    def target_fn(self) -> ConsistencyFunction:
        """The module evaluated as the target: ``target``, or the student itself when ``target`` is None.

        Call it under ``torch.no_grad()`` (or ``.detach()`` its output): the target is stop-gradient.
        """
        return self.student if self.target is None else self.target

    def target_eval(self, x: Tensor, t: Tensor | float, **kwargs: Any) -> Tensor:
        """The target's ``f(x, t, **kwargs)`` under ``torch.no_grad()`` (a stop-gradient value)."""
        with torch.no_grad():
            return self.target_fn()(x, t, **kwargs)
