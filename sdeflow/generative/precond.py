"""Preconditioning and guidance: wrappers that turn a raw network into a sampler denoiser ``D(x, σ)``.

Every wrapper here is a denoiser in the samplers' convention (:mod:`sdeflow.generative.samplers`):
``D(x, sigma, **model_kwargs)`` with ``x`` (B, *event) on the rescaled state ``x̃ = x_0 + σ n``
(docs/concepts.md §4), ``sigma`` (B,) or a scalar, returning the clean-data estimate of ``x``'s
shape. The conditioning (``class_labels``, ``extra``) arrives as keyword arguments, so
``sample_heun(D, x, sigmas, model_kwargs={"class_labels": y})`` passes labels through.

* :class:`EDMPrecond` — ``D = c_skip x + c_out F(c_in x, c_noise)`` (Karras et al. 2022). (The
  consistency-function form with ``f(x, ε) = x`` is :class:`sdeflow.consistency.ConsistencyFunction`.)
* :class:`SDEPrecond` — a raw network trained on a VP / sub-VP / VE / EDM SDE in its own time
  variable, as ``model(x_t, t)`` of prediction score/ε/x0/v (:meth:`SDEPrecond.raw_model`, what its
  losses train), turned into ``D`` by :func:`sdeflow.denoiser_from_model`.
* :class:`ClassifierFreeGuidance` / :func:`guided` — ``D_w = D(c) + w (D(c) − D(∅))``.

All are registered models (:mod:`sdeflow.generative.config`): their config holds the wrapped
network's config, so a checkpoint rebuilds the whole denoiser.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from ..conversion.parameterization import PREDICTIONS, denoiser_from_model
from ..sde import EDMSDE, VESDE, VPSDE, SubVPSDE
from .config import Configurable, register_model

__all__ = [
    "SDES",
    "EDMPrecond",
    "SDEPrecond",
    "ClassifierFreeGuidance",
    "guided",
    "edm_coefficients",
    "estimate_sigma_data",
    "scale_from_guidance",
    "guidance_from_scale",
]

#: The SDEs :class:`SDEPrecond` builds by name (its config stores the name and the constructor arguments).
SDES: dict[str, type] = {"vp": VPSDE, "subvp": SubVPSDE, "ve": VESDE, "edm": EDMSDE}


# -- shared helpers ---------------------------------------------------------------------------------
def _sigma_vector(sigma: object, x: Tensor, name: str = "sigma") -> Tensor:
    """``sigma`` as (B,) in x's dtype/device; checks shape (always) and values (>= 0, not NaN; eager only)."""
    if isinstance(sigma, bool) or not isinstance(sigma, (Tensor, int, float)):
        raise TypeError(f"{name} must be a number or a tensor of shape ({x.shape[0]},); got {type(sigma).__name__}.")
    sig = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
    if sig.dim() == 0:
        sig = sig.expand(x.shape[0])
    elif sig.shape != (x.shape[0],):
        raise ValueError(f"{name} must be a scalar or have shape ({x.shape[0]},) (one noise level per example); "
                         f"got {tuple(sig.shape)}.")
    if not torch.compiler.is_compiling() and bool(((sig < 0) | torch.isnan(sig)).any()):
        raise ValueError(f"{name} must be >= 0 and not NaN (a noise level).")
    return sig


def _check_state(x: object) -> Tensor:
    if not isinstance(x, Tensor) or not x.is_floating_point() or x.dim() < 1:
        raise TypeError(f"x must be a floating-point tensor of shape (B, *event); got "
                        f"{x.dtype if isinstance(x, Tensor) else type(x).__name__}.")
    return x


def _bcast(v: Tensor, x: Tensor) -> Tensor:
    return v.reshape((-1,) + (1,) * (x.dim() - 1))


def _upcast(out: object, x: Tensor, who: str) -> Tensor:
    if not isinstance(out, Tensor):
        raise TypeError(f"{who} must return a tensor; it returned {type(out).__name__}.")
    if out.shape != x.shape:
        raise ValueError(f"{who} returned shape {tuple(out.shape)} for x of shape {tuple(x.shape)}; it must "
                         f"return x's shape.")
    return out.to(x.dtype) if out.dtype != x.dtype else out  # a bf16/fp16 network: float32 arithmetic after


class _Wrapper(Configurable, nn.Module):
    """Records its config when every nested model is registered; otherwise it works but cannot be saved."""

    def _record(self, inner: object, inner_name: str, **kwargs: Any) -> None:
        if isinstance(inner, Configurable):
            self.record_config(**{inner_name: inner}, **kwargs)
        else:
            object.__setattr__(self, "_unsaveable", (inner_name, type(inner).__name__))

    def get_config(self) -> dict[str, Any]:
        why = self.__dict__.get("_unsaveable")
        if why is not None:
            raise TypeError(f"this {type(self).__name__} wraps {why[0]}={why[1]}, which is not a registered model "
                            f"(sdeflow.generative.config.register_model); it works, but it cannot be saved.")
        return super().get_config()

    def _inner(self) -> object:
        raise NotImplementedError

    @property
    def num_classes(self) -> int:
        """The wrapped network's number of classes (0 if it has none)."""
        return int(getattr(self._inner(), "num_classes", 0))

    @property
    def null_label(self) -> int | None:
        """The wrapped network's null class ∅ (None if it does not say)."""
        return getattr(self._inner(), "null_label", None)

    @property
    def n_extra(self) -> int:
        """The wrapped network's number of extra scalar inputs."""
        return int(getattr(self._inner(), "n_extra", 0))

    def example_inputs(self, batch: int = 1) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """``((x, sigma), kwargs)`` for one call (from the wrapped network's ``example_inputs``)."""
        make = getattr(self._inner(), "example_inputs", None)
        if make is None:
            raise ValueError("the wrapped model has no example_inputs(batch); pass inputs to model_summary.")
        (x, *_), kwargs = make(batch)
        return (x, torch.ones(x.shape[0], device=x.device)), kwargs


# -- EDM -------------------------------------------------------------------------------------------
def edm_coefficients(sigma: Tensor, sigma_data: float) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """EDM's ``(c_skip, c_out, c_in, c_noise)`` at noise levels ``sigma`` (any shape, >= 0).

    ``c_skip = σ_d²/(σ² + σ_d²)``, ``c_out = σ σ_d/√(σ² + σ_d²)``, ``c_in = 1/√(σ² + σ_d²)``,
    ``c_noise = ¼ ln σ`` (Karras et al. 2022, Table 1; docs/concepts.md §4). At σ = 0, ``c_noise`` is
    ``¼ ln`` of the dtype's smallest normal number (finite), so ``D(x, 0) = x`` exactly.
    """
    sd2 = torch.full_like(sigma, sigma_data * sigma_data)  # tensor / tensor: a correctly rounded quotient
    s2 = sigma * sigma
    rnorm = torch.rsqrt(s2 + sd2)
    c_skip = sd2 / (s2 + sd2)  # exactly 1 at σ = 0 (a Python scalar / tensor would multiply by a reciprocal)
    c_out = sigma * sigma_data * rnorm
    c_in = rnorm
    c_noise = 0.25 * torch.log(sigma.clamp_min(torch.finfo(sigma.dtype).tiny))
    return c_skip, c_out, c_in, c_noise


def estimate_sigma_data(x: Tensor) -> float:
    """σ_data for :class:`EDMPrecond`: the standard deviation of the data over all coordinates.

    The population std (``correction=0``) of every element of ``x`` pooled together, i.e. about the one
    overall mean, computed in float64. (8 gaussians of radius 4, std 0.2: ``√(16/2 + 0.04) = 2.835``.)
    EDM's preconditioning treats the data as roughly centred with this per-coordinate scale.

    Args:
        x: training data (N, *event) (any shape with at least two elements), finite.
    """
    if not isinstance(x, Tensor) or not x.is_floating_point():
        raise TypeError(f"x must be a floating-point tensor of data; got "
                        f"{x.dtype if isinstance(x, Tensor) else type(x).__name__}.")
    if x.numel() < 2:
        raise ValueError(f"x must hold at least two numbers to estimate a std; got shape {tuple(x.shape)}.")
    v = x.detach().to(torch.float64)
    if not bool(torch.isfinite(v).all()):
        raise ValueError("x must be finite (no NaN or inf) to estimate sigma_data.")
    std = float(v.std(correction=0))
    if not std > 0:
        raise ValueError("x has zero spread (every value equal); sigma_data must be > 0, pass it explicitly.")
    return std


@register_model("edm_precond")
class EDMPrecond(_Wrapper):
    """EDM preconditioning: ``D(x, σ) = c_skip(σ) x + c_out(σ) F(c_in(σ) x, c_noise(σ), labels, extra)``.

    Coefficients as in :func:`edm_coefficients` (Karras et al. 2022). With these, the network's target
    ``(x_0 − c_skip x)/c_out`` has unit variance at every σ for data of std σ_data.

    Args:
        net: the raw network ``F(x, c_noise, class_labels=None, extra=None)`` (e.g. :class:`MLPNet`,
            :class:`UNet`). It may run in bf16/fp16 (cast weights or autocast): its output is cast to
            ``x``'s dtype before the skip connection.
        sigma_data: the data's std (0.5 for images in [−1, 1]; :func:`estimate_sigma_data` from data).

    ``forward(x, sigma, class_labels=None, extra=None)``: ``x`` (B, *event), ``sigma`` (B,) or a scalar
    (>= 0; ``D(x, 0) = x``) -> (B, *event).

    A subclass changes the parameterization by overriding :meth:`coefficients` alone; ``forward`` and
    the conditioning stay the same.
    """

    def __init__(self, net: nn.Module, sigma_data: float = 0.5) -> None:
        super().__init__()
        if not isinstance(net, nn.Module):
            raise TypeError(f"net must be an nn.Module F(x, c_noise, class_labels, extra); got {type(net).__name__}.")
        if isinstance(sigma_data, bool) or not isinstance(sigma_data, (int, float)) or \
                not 0 < sigma_data < math.inf:
            raise ValueError(f"sigma_data must be a finite number > 0 (the data's std; see estimate_sigma_data); "
                             f"got {sigma_data!r}.")
        self._record(net, "net", sigma_data=float(sigma_data))
        self.net = net
        self.sigma_data = float(sigma_data)

    def _inner(self) -> object:
        return self.net

    def coefficients(self, sigma: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``(c_skip, c_out, c_in, c_noise)`` at ``sigma`` for this σ_data (:func:`edm_coefficients`)."""
        return edm_coefficients(sigma, self.sigma_data)

    def forward(self, x: Tensor, sigma: Tensor | float, class_labels: Tensor | None = None,
                extra: Tensor | None = None) -> Tensor:
        """``D(x, σ)`` for ``x`` (B, *event) and ``sigma`` (B,) or a scalar; returns ``x``'s shape and dtype."""
        x = _check_state(x)
        sig = _sigma_vector(sigma, x)
        c_skip, c_out, c_in, c_noise = self.coefficients(sig)
        f = self.net(_bcast(c_in, x) * x, c_noise, class_labels=class_labels, extra=extra)
        return _bcast(c_skip, x) * x + _bcast(c_out, x) * _upcast(f, x, "net")

    def extra_repr(self) -> str:
        return f"sigma_data={self.sigma_data:g}"


# -- a network in an SDE's own time ------------------------------------------------------------------
@register_model("sde_precond")
class SDEPrecond(_Wrapper):
    """A raw network trained on a diffusion SDE in its own time variable, as a sampler denoiser.

    The raw model is ``raw_model(x_t, t, class_labels, extra) = F(c_in(t) x_t, c_noise(t), ...)`` (a
    prediction of kind ``prediction`` at the SDE's state ``x_t = α(t) x_0 + σ(t) ε``); ``forward`` is
    ``denoiser_from_model(raw_model, sde, prediction=prediction)`` (:class:`sdeflow.SDEDenoiser`: the
    time ``t`` at the noise level, the state rescaled by ``α``, the prediction converted to x̂_0).

    Args:
        net: the raw network ``F(x, c_noise, class_labels=None, extra=None)``.
        sde: ``"vp"``, ``"subvp"``, ``"ve"`` or ``"edm"`` (:data:`SDES`), built as ``SDES[sde](**sde_args)``.
        sde_args: the SDE's constructor arguments (numbers), e.g. ``{"beta_max": 20.0}``.
        prediction: what F predicts: ``"eps"``, ``"score"``, ``"x0"`` or ``"v"``.
        time_scale: the noise conditioning. ``None`` (default): ``c_noise = t`` for VP/sub-VP/VE
            (t ∈ [0, T], a range the default Fourier embedding of :class:`MLPNet` resolves) and
            ``c_noise = ¼ ln t`` for the EDM SDE (t = σ there; the same as :class:`EDMPrecond`). A number
            ``s``: ``c_noise = s·t`` for every SDE (``s = 999`` with ``embedding="sinusoidal"`` is the
            DDPM / score_sde VP convention).
        sigma_data: None (default): F sees ``x_t`` as it is. A number σ_d: F sees
            ``x_t / √(α² σ_d² + σ²)`` (unit variance for data of std σ_d; useful for VE, whose states
            reach σ_max). Either way the raw model is a function of ``(x_t, t)``.

    Attributes:
        sde: the :class:`sdeflow.DiffusionSDE`.
        prediction: the prediction kind.
    """

    def __init__(self, net: nn.Module, sde: str = "vp", sde_args: dict[str, Any] | None = None,
                 prediction: str = "eps", time_scale: float | None = None,
                 sigma_data: float | None = None) -> None:
        super().__init__()
        if not isinstance(net, nn.Module):
            raise TypeError(f"net must be an nn.Module F(x, c_noise, class_labels, extra); got {type(net).__name__}.")
        if sde not in SDES:
            raise ValueError(f"sde must be one of {tuple(SDES)}; got {sde!r}.")
        sde_args = {} if sde_args is None else sde_args
        if not isinstance(sde_args, dict):
            raise TypeError(f"sde_args must be a dict of the SDE's constructor arguments; got "
                            f"{type(sde_args).__name__}.")
        if prediction not in PREDICTIONS:
            raise ValueError(f"prediction must be one of {PREDICTIONS}; got {prediction!r}.")
        for name, value in (("time_scale", time_scale), ("sigma_data", sigma_data)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                      or not 0 < value < math.inf):
                raise ValueError(f"{name} must be None or a finite number > 0; got {value!r}.")
        try:
            built = SDES[sde](**sde_args)
        except TypeError as err:
            raise TypeError(f"sde_args {sde_args!r} do not fit {SDES[sde].__name__}: {err}") from err
        self._record(net, "net", sde=sde, sde_args=dict(sde_args), prediction=prediction, time_scale=time_scale,
                     sigma_data=sigma_data)
        self.net = net
        self.sde = built
        self.sde_name = sde
        self.prediction = prediction
        self.time_scale = None if time_scale is None else float(time_scale)
        self.sigma_data = None if sigma_data is None else float(sigma_data)
        # The conversion adapter, kept out of the module tree (it shares self.sde and calls self.raw_model).
        object.__setattr__(self, "_denoiser", denoiser_from_model(self.raw_model, built, prediction=prediction))

    def _inner(self) -> object:
        return self.net

    def c_noise(self, t: Tensor) -> Tensor:
        """The network's noise conditioning at times ``t`` (see ``time_scale``)."""
        if self.time_scale is not None:
            return self.time_scale * t
        if self.sde_name == "edm":
            return 0.25 * torch.log(t.clamp_min(torch.finfo(t.dtype).tiny))
        return t

    def raw_model(self, x_t: Tensor, t: Tensor | float, class_labels: Tensor | None = None,
                  extra: Tensor | None = None) -> Tensor:
        """The prediction (kind ``self.prediction``) at the SDE's state ``x_t`` (B, *event), time ``t`` (B,) or scalar.

        This is the ``model(x_t, t, **cond)`` the losses of that prediction type train; returns ``x_t``'s
        shape and dtype.
        """
        x_t = _check_state(x_t)
        tv = _sigma_vector(t, x_t, "t")
        xin = x_t
        if self.sigma_data is not None:
            a = torch.as_tensor(self.sde.marginal_scale(tv), dtype=x_t.dtype, device=x_t.device).expand(tv.shape)
            s = torch.as_tensor(self.sde.marginal_std(tv), dtype=x_t.dtype, device=x_t.device).expand(tv.shape)
            xin = _bcast(torch.rsqrt(a * a * self.sigma_data ** 2 + s * s), x_t) * x_t
        f = self.net(xin, self.c_noise(tv), class_labels=class_labels, extra=extra)
        return _upcast(f, x_t, "net")

    def forward(self, x: Tensor, sigma: Tensor | float, class_labels: Tensor | None = None,
                extra: Tensor | None = None, *, raw: bool = False) -> Tensor:
        """``D(x̃, σ̃)`` for ``x`` (B, *event) and ``sigma`` (B,) or a scalar (> 0); returns ``x``'s shape.

        ``raw=True`` calls :meth:`raw_model` instead (``x`` is then the SDE's state ``x_t`` and ``sigma``
        the time ``t``): the losses train it through ``forward``, so DDP and ``torch.compile`` wrappers see
        every training call.
        """
        if raw:
            return self.raw_model(x, sigma, class_labels=class_labels, extra=extra)
        return self._denoiser(_check_state(x), sigma, class_labels=class_labels, extra=extra)

    def extra_repr(self) -> str:
        return f"sde={self.sde_name!r}, prediction={self.prediction!r}, time_scale={self.time_scale}"


# -- classifier-free guidance ------------------------------------------------------------------------
def scale_from_guidance(w: float | Tensor) -> float | Tensor:
    """``s = 1 + w``: the scale of ``D(∅) + s (D(c) − D(∅))`` equal to ``D(c) + w (D(c) − D(∅))``."""
    return 1 + w


def guidance_from_scale(s: float | Tensor) -> float | Tensor:
    """``w = s − 1``: the inverse of :func:`scale_from_guidance`."""
    return s - 1


def _check_guidance(w: object, batch: int) -> float | Tensor:
    if isinstance(w, Tensor):
        if not w.is_floating_point() or (w.dim() != 0 and w.shape != (batch,)):
            raise ValueError(f"guidance must be a float or a floating-point tensor of shape ({batch},) (one w per "
                             f"example); got dtype {w.dtype}, shape {tuple(w.shape)}.")
        if not torch.compiler.is_compiling() and not bool(torch.isfinite(w).all()):
            raise ValueError("guidance must be finite.")
        return w
    if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w):
        raise ValueError(f"guidance must be a finite number or a (B,) tensor; got {w!r}.")
    return float(w)


@register_model("cfg")
class ClassifierFreeGuidance(_Wrapper):
    """Classifier-free guidance: ``D_w(x, σ, c) = D(x, σ, c) + w (D(x, σ, c) − D(x, σ, ∅))``.

    Ho & Salimans' form: ``w = 0`` is the plain conditional model, ``w = −1`` the unconditional one.
    The other common convention writes ``D(∅) + s (D(c) − D(∅))``; the two agree for ``s = 1 + w``
    (:func:`scale_from_guidance`, :func:`guidance_from_scale`) — published latent-consistency code
    mixes the two, so check which one a quoted scale means (an "s = 8" is w = 7). Because the state
    ``x`` is shared, the same combination of denoisers is the same combination of ε-predictions
    (``ε = (x − D)/σ``) and of scores: guidance in any of these parameterizations agrees.

    The two terms are one batched call of size 2B: ``x``, a (B,) ``sigma`` and every tensor keyword
    argument whose first dimension is B (e.g. ``extra``) are repeated; the labels are ``[c, ∅]``. With a
    Python ``w == 0`` only the conditional call is made (exactly the conditional denoiser); with
    ``class_labels=None`` the result is ``D(x, σ, ∅)``.

    Args:
        denoiser: a denoiser ``D(x, sigma, class_labels=..., **kwargs)`` (e.g. :class:`EDMPrecond`).
        guidance: the default ``w`` (a float); override per call with ``guidance=`` (a float or a (B,)
            tensor: one w per example, as a latent-consistency teacher needs).
        null_label: the label of ∅; None takes the denoiser's ``null_label`` (its network's ``num_classes``).
    """

    def __init__(self, denoiser: nn.Module, guidance: float = 0.0, null_label: int | None = None) -> None:
        super().__init__()
        if not callable(denoiser):
            raise TypeError(f"denoiser must be callable as D(x, sigma, class_labels=...); got "
                            f"{type(denoiser).__name__}.")
        if not isinstance(guidance, Tensor):
            guidance = _check_guidance(guidance, 0)
        else:
            raise TypeError("guidance in the constructor is a float (it is saved in the config); pass per-example "
                            "tensors per call, D(x, sigma, class_labels=y, guidance=w).")
        resolved = null_label if null_label is not None else getattr(denoiser, "null_label", None)
        if isinstance(resolved, bool) or not isinstance(resolved, int) or resolved < 0:
            raise ValueError(f"null_label must be the integer label of the null class ∅ (a network's num_classes); "
                             f"got {resolved!r}" + ("" if null_label is not None else
                                                    " (the denoiser does not say; pass null_label=...)") + ".")
        self._record(denoiser, "denoiser", guidance=guidance, null_label=null_label)
        if isinstance(denoiser, nn.Module):
            self.denoiser = denoiser
        else:
            object.__setattr__(self, "_plain", denoiser)
        self.guidance = guidance
        self._null = resolved

    def _inner(self) -> object:
        return self.denoiser if "denoiser" in self._modules else self.__dict__["_plain"]

    @property
    def null_label(self) -> int:
        """The label of the null class ∅ used for the unconditional term."""
        return self._null

    def forward(self, x: Tensor, sigma: Tensor | float, class_labels: Tensor | None = None, *,
                guidance: float | Tensor | None = None, **kwargs: Any) -> Tensor:
        """``D_w(x, σ, c)``: ``x`` (B, *event), ``sigma`` (B,) or scalar, ``class_labels`` (B,) or None.

        ``guidance`` overrides the default ``w`` for this call (a float or a (B,) tensor); other keyword
        arguments (``extra``, ...) go to the denoiser.
        """
        x = _check_state(x)
        b = x.shape[0]
        w = self.guidance if guidance is None else _check_guidance(guidance, b)
        inner = self._inner()
        if class_labels is None:
            return _upcast(inner(x, sigma, class_labels=None, **kwargs), x, "denoiser")
        if not isinstance(class_labels, Tensor) or class_labels.shape != (b,):
            got = tuple(class_labels.shape) if isinstance(class_labels, Tensor) else type(class_labels).__name__
            raise ValueError(f"class_labels must be a (B,) = ({b},) integer tensor or None; got {got}.")
        if isinstance(w, float) and w == 0.0:
            return _upcast(inner(x, sigma, class_labels=class_labels, **kwargs), x, "denoiser")

        def twice(v: object) -> object:
            if isinstance(v, Tensor) and v.dim() >= 1 and v.shape[0] == b:
                return torch.cat([v, v])
            return v

        labels = torch.cat([class_labels, torch.full_like(class_labels, self._null)])
        both = inner(torch.cat([x, x]), twice(sigma), class_labels=labels, **{k: twice(v) for k, v in kwargs.items()})
        if not isinstance(both, Tensor) or both.shape != (2 * b, *x.shape[1:]):
            raise ValueError(f"denoiser returned {tuple(both.shape) if isinstance(both, Tensor) else type(both)} for "
                             f"a doubled batch of shape {(2 * b, *x.shape[1:])}.")
        both = both.to(x.dtype) if both.dtype != x.dtype else both
        cond, uncond = both[:b], both[b:]
        wv = _bcast(w.to(x.dtype), x) if isinstance(w, Tensor) else w
        return cond + wv * (cond - uncond)

    def extra_repr(self) -> str:
        return f"guidance={self.guidance:g}, null_label={self._null}"


def guided(denoiser: nn.Module, w: float, *, null_label: int | None = None) -> ClassifierFreeGuidance:
    """``D_w = D(c) + w (D(c) − D(∅))`` as a denoiser: :class:`ClassifierFreeGuidance` with default ``w``."""
    return ClassifierFreeGuidance(denoiser, guidance=w, null_label=null_label)
