"""Model outputs and the conversions between them, in one place.

For a diffusion SDE with ``x_t = α(t) x_0 + σ(t) ε`` (``α = sde.marginal_scale(t)``,
``σ = sde.marginal_std(t)``) a network may predict

============  =====================================================================
``"score"``   ``s = ∇log p_t(x_t) = −ε̂ / σ = (α x̂_0 − x_t) / σ²``
``"x0"``      the denoised data ``x̂_0 = E[x_0 | x_t]`` (a "denoiser")
``"eps"``     the noise ``ε̂ = (x_t − α x̂_0) / σ``
``"v"``       ``v̂ = α ε̂ − σ x̂_0`` (Salimans & Ho 2022; with ``α² + σ² = 1`` for VP)
============  =====================================================================

:func:`convert_prediction` maps any of them to any other at given ``(x_t, t)``: it recovers the
pair ``(x̂_0, ε̂)`` from the source (``x_t = α x̂_0 + σ ε̂`` fixes the second from the first) and
forms the target from that pair.

Samplers work in the k-diffusion / EDM convention: a denoiser ``D(x̃, σ̃)`` on the rescaled state
``x̃ = x_t / α`` at the noise level ``σ̃ = σ / α``, where every linear SDE becomes
``x̃ = x_0 + σ̃ ε`` and the probability-flow ODE becomes ``dx̃/dσ̃ = (x̃ − D(x̃, σ̃)) / σ̃``
(Karras et al. 2022, eq. 4). :class:`SDEDenoiser` turns a model of any kind trained on any
:class:`sdeflow.DiffusionSDE` into that ``D``; :class:`DenoiserModel` goes the other way.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from ..sde._gaussian import DiffusionSDE
from ._ops import time_vector

__all__ = [
    "PREDICTIONS",
    "convert_prediction",
    "noise_level",
    "time_at_noise_level",
    "SDEDenoiser",
    "DenoiserModel",
    "denoiser_from_model",
    "model_from_denoiser",
    "score_from_denoiser",
]

PREDICTIONS: tuple[str, ...] = ("score", "x0", "eps", "v")


def _check_kind(kind: object, name: str) -> str:
    if kind not in PREDICTIONS:
        raise ValueError(f"{name} must be one of {PREDICTIONS}; got {kind!r}.")
    return kind  # type: ignore[return-value]


def _check_diffusion_sde(sde: object) -> DiffusionSDE:
    if not isinstance(sde, DiffusionSDE):
        raise TypeError(
            f"sde must be a sdeflow.DiffusionSDE (VPSDE, SubVPSDE, VESDE, EDMSDE or a subclass with "
            f"marginal_scale and marginal_std); got {type(sde).__name__}."
        )
    return sde


def _scale_std(sde: DiffusionSDE, t: Tensor | float, x: Tensor) -> tuple[Tensor, Tensor]:
    tv = time_vector(t, x)
    shape = (-1,) + (1,) * (x.dim() - 1)
    alpha = torch.as_tensor(sde.marginal_scale(tv), dtype=x.dtype, device=x.device).expand(tv.shape)
    sigma = torch.as_tensor(sde.marginal_std(tv), dtype=x.dtype, device=x.device).expand(tv.shape)
    return alpha.reshape(shape), sigma.reshape(shape)


def convert_prediction(
    pred: Tensor, x: Tensor, t: Tensor | float, sde: DiffusionSDE, *, source: str, target: str
) -> Tensor:
    """Convert a model output ``pred`` at the noisy state ``x`` (time ``t``) from ``source`` to ``target``.

    Args:
        pred: the model output, shape of ``x``.
        x: the noisy state ``x_t`` in the SDE's own scaling, shape (B, *event).
        t: a scalar or one time per path (B,); must be > 0 (``σ(t) > 0``) for score/eps targets.
        sde: a :class:`sdeflow.DiffusionSDE`.
        source, target: one of ``"score"``, ``"x0"``, ``"eps"``, ``"v"``.

    Returns:
        The prediction of kind ``target``, shape of ``x``.
    """
    sde = _check_diffusion_sde(sde)
    _check_kind(source, "source")
    _check_kind(target, "target")
    if pred.shape != x.shape:
        raise ValueError(f"pred has shape {tuple(pred.shape)} but x has shape {tuple(x.shape)}; they must match.")
    if source == target:
        return pred
    a, s = _scale_std(sde, t, x)
    if not bool((s > 0).all()):
        raise ValueError(
            "t must be > 0 where σ(t) > 0: at σ(t) = 0 (the clean data) the noise and the score are undefined; "
            "use t >= sde.eps."
        )
    if source == "score":
        eps = -s * pred
        x0 = (x + s * s * pred) / a
    elif source == "x0":
        x0 = pred
        eps = (x - a * pred) / s
    elif source == "eps":
        eps = pred
        x0 = (x - s * pred) / a
    else:  # v
        norm = a * a + s * s
        x0 = (a * x - s * pred) / norm
        eps = (s * x + a * pred) / norm
    if target == "x0":
        return x0
    if target == "eps":
        return eps
    if target == "score":
        return -eps / s
    return a * eps - s * x0


def noise_level(sde: DiffusionSDE, t: Tensor | float) -> Tensor:
    """The EDM noise level ``σ̃(t) = σ(t) / α(t)`` of a diffusion SDE (same shape as ``t``).

    The same as ``sde.noise_level(t)`` (:meth:`sdeflow.DiffusionSDE.noise_level`), with the SDE checked.
    """
    return _check_diffusion_sde(sde).noise_level(t)


def time_at_noise_level(sde: DiffusionSDE, sigma: Tensor | float) -> Tensor:
    """The time ``t`` with ``σ̃(t) = sigma`` (inverse of :func:`noise_level`), same shape as ``sigma``.

    ``sde.time_at_noise_level(sigma)`` (:meth:`sdeflow.DiffusionSDE.time_at_noise_level`) with the
    inputs checked: closed forms for :class:`sdeflow.EDMSDE` (``t = σ̃``), :class:`sdeflow.VESDE`,
    :class:`sdeflow.VPSDE` (``B(t) = log(1 + σ̃²)``) and :class:`sdeflow.SubVPSDE`
    (``B(t) = 2 asinh(σ̃ / 2)``); other diffusion SDEs inherit a vectorised bisection on ``[0, T]``
    (σ̃ must increase with t), accurate to float64's resolution.
    """
    sde = _check_diffusion_sde(sde)
    sig = torch.as_tensor(sigma)
    if bool((sig < 0).any()) or bool(torch.isnan(sig).any()):
        raise ValueError("sigma must be >= 0 (a noise level) and not NaN.")
    return sde.time_at_noise_level(sig)


class SDEDenoiser(nn.Module):
    """A sampler denoiser ``D(x̃, σ̃)`` from a model ``model(x_t, t)`` trained on a diffusion SDE.

    ``D(x̃, σ̃) = x̂_0`` at ``t = time_at_noise_level(sde, σ̃)`` and ``x_t = α(t) x̃``, with the
    model's output converted from ``prediction`` by :func:`convert_prediction`.

    Args:
        model: ``model(x, t)`` with ``x`` (B, *event) and ``t`` (B,), returning ``x``'s shape.
        sde: the :class:`sdeflow.DiffusionSDE` the model belongs to.
        prediction: what the model outputs: ``"score"``, ``"x0"``, ``"eps"`` or ``"v"``.
    """

    def __init__(self, model: Callable[[Tensor, Tensor], Tensor], sde: DiffusionSDE, *,
                 prediction: str = "score") -> None:
        super().__init__()
        if not callable(model):
            raise TypeError(f"model must be callable as model(x, t); got {type(model).__name__}.")
        self.sde = _check_diffusion_sde(sde)
        self.prediction = _check_kind(prediction, "prediction")
        if isinstance(model, nn.Module):
            self.model = model
        else:
            self._plain = model

    @property
    def model_fn(self) -> Callable[[Tensor, Tensor], Tensor]:
        return self.model if "model" in self._modules else self._plain

    def forward(self, x: Tensor, sigma: Tensor | float, **model_kwargs: object) -> Tensor:
        """``D(x̃, σ̃)`` for ``x`` (B, *event) and ``sigma`` a scalar or (B,); returns ``x``'s shape.

        ``model_kwargs`` (class labels, a guidance scale, ...) reach ``model(x_t, t, **model_kwargs)`` unchanged.
        """
        sig = time_vector(sigma, x)
        if bool((sig <= 0).any()):
            raise ValueError("sigma must be > 0; the denoiser is not evaluated at the clean data (σ = 0).")
        t = self.sde.time_at_noise_level(sig).to(x.dtype)
        a, _ = _scale_std(self.sde, t, x)
        xt = a * x
        pred = self.model_fn(xt, t, **model_kwargs)
        if isinstance(pred, Tensor) and pred.dtype != x.dtype and pred.is_floating_point():
            pred = pred.to(x.dtype)  # a bf16/fp16 network: the conversion runs in the state's dtype
        return convert_prediction(pred, xt, t, self.sde, source=self.prediction, target="x0")


class DenoiserModel(nn.Module):
    """A model ``f(x_t, t)`` of kind ``prediction`` on a diffusion SDE, from a denoiser ``D(x̃, σ̃)``.

    The inverse adapter of :class:`SDEDenoiser`; with ``prediction="score"`` it is a score function
    for :func:`sdeflow.probability_flow`, :func:`sdeflow.reverse_sde` and :func:`sdeflow.log_likelihood`.
    """

    def __init__(self, denoiser: Callable[[Tensor, Tensor], Tensor], sde: DiffusionSDE, *,
                 prediction: str = "score") -> None:
        super().__init__()
        if not callable(denoiser):
            raise TypeError(f"denoiser must be callable as denoiser(x, sigma); got {type(denoiser).__name__}.")
        self.sde = _check_diffusion_sde(sde)
        self.prediction = _check_kind(prediction, "prediction")
        if isinstance(denoiser, nn.Module):
            self.denoiser = denoiser
        else:
            self._plain = denoiser

    @property
    def denoiser_fn(self) -> Callable[[Tensor, Tensor], Tensor]:
        return self.denoiser if "denoiser" in self._modules else self._plain

    def forward(self, x: Tensor, t: Tensor | float, **model_kwargs: object) -> Tensor:
        """The prediction at ``x_t = x`` (B, *event), time ``t`` (scalar or (B,)); ``model_kwargs`` go to D."""
        tv = time_vector(t, x)
        a, s = _scale_std(self.sde, tv, x)
        sig = (s / a).reshape(-1)
        x0 = self.denoiser_fn(x / a, sig, **model_kwargs)
        return convert_prediction(x0, x, tv, self.sde, source="x0", target=self.prediction)


def denoiser_from_model(model: Callable[[Tensor, Tensor], Tensor], sde: DiffusionSDE, *,
                        prediction: str = "score") -> SDEDenoiser:
    """``D(x̃, σ̃)`` for the samplers from ``model(x_t, t)`` of kind ``prediction``: see :class:`SDEDenoiser`."""
    return SDEDenoiser(model, sde, prediction=prediction)


def model_from_denoiser(denoiser: Callable[[Tensor, Tensor], Tensor], sde: DiffusionSDE, *,
                        prediction: str = "score") -> DenoiserModel:
    """``f(x_t, t)`` of kind ``prediction`` from a denoiser ``D(x̃, σ̃)``: see :class:`DenoiserModel`."""
    return DenoiserModel(denoiser, sde, prediction=prediction)


def score_from_denoiser(denoiser: Callable[[Tensor, Tensor], Tensor], sde: DiffusionSDE) -> DenoiserModel:
    """The score ``s(x_t, t) = (α D(x_t/α, σ/α) − x_t) / σ²`` of a denoiser on ``sde``."""
    return DenoiserModel(denoiser, sde, prediction="score")

