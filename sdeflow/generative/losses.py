"""Training losses for score / denoiser models: small callables returning one value per example.

Two losses and the pieces they share:

* :class:`DenoisingScoreMatching` — denoising score matching (Vincent 2011; Song et al. 2021) for a
  model ``model(x_t, t, **cond)`` that predicts the score, ε, x0 or v on a
  :class:`sdeflow.DiffusionSDE` (VP, sub-VP, VE, EDM, ...), with the weightings ``"simple"``
  (Ho et al. 2020), ``"sigma2"`` (Song et al. 2021) and ``"likelihood"`` (Song, Durkan et al. 2021),
  or any ``λ(t)``; optional importance sampling of t for the likelihood weighting.
* :class:`EDMLoss` — the loss of Karras et al. (2022) for a denoiser ``D(x, σ, **cond)``, with
  lognormal noise levels (:class:`LogNormalSigma`) and :meth:`EDMLoss.for_data` to scale them to the data.
* Distances (:class:`SquaredL2`, :class:`PseudoHuber`), the per-example reduction over event
  dimensions, and label dropout for classifier-free guidance (:func:`drop_labels`), used by both.

Every loss returns a tensor of shape (B,): the batch reduction (usually a mean) is the caller's.
Every random draw comes from the ``generator`` argument (a ``torch.Generator`` or an int seed), in
a documented order, and each draw can be replaced by an explicit tensor (``t=``, ``noise=``,
``sigma=``), so Monte Carlo checks and consistency-model code can fix them. The arithmetic runs in
``x0``'s dtype (float32 at least: 16-bit data is promoted), and a bf16 network's output is cast to
it first, so the loss stays float32 under bf16 autocast. Theory: docs/concepts.md §1 and §4.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from .._checks import check_state, make_generator
from ..conversion.parameterization import PREDICTIONS
from ..sde._gaussian import DiffusionSDE
from .precond import SDEPrecond, estimate_sigma_data

__all__ = [
    "DSM_WEIGHTINGS",
    "Distance",
    "SquaredL2",
    "PseudoHuber",
    "drop_labels",
    "LogNormalSigma",
    "DenoisingScoreMatching",
    "EDMLoss",
    "stable_target",
]

DSM_WEIGHTINGS: tuple[str, ...] = ("simple", "sigma2", "likelihood")

Distance = Callable[[Tensor, Tensor], Tensor]
"""A distance ``d(pred, target) -> (B,)`` between two tensors of shape (B, *event)."""


# -- distances -------------------------------------------------------------------------------------
def _flat(v: Tensor) -> Tensor:
    return v.reshape(v.shape[0], -1)


@dataclass(frozen=True)
class SquaredL2:
    """``‖pred − target‖²`` per example: summed (``reduction="sum"``) or averaged (``"mean"``) over event dims.

    The sum is the default of every loss here (and what the closed forms of tests/test_losses.py
    use): it makes the minimal DSM/EDM loss of d-dimensional Gaussian data proportional to ``d``.
    ``"mean"`` divides by the number of event coordinates (the elementwise MSE of Ho et al. 2020).
    """

    reduction: str = "sum"

    def __post_init__(self) -> None:
        if self.reduction not in ("sum", "mean"):
            raise ValueError(f"reduction must be 'sum' or 'mean' (over event dimensions); got {self.reduction!r}.")

    def __call__(self, pred: Tensor, target: Tensor) -> Tensor:
        sq = _flat(pred - target).square()
        return sq.sum(-1) if self.reduction == "sum" else sq.mean(-1)


@dataclass(frozen=True)
class PseudoHuber:
    """The pseudo-Huber distance ``sqrt(‖pred − target‖² + c²) − c`` per example (Song & Dhariwal 2023).

    ``elementwise=False`` (the default, as in improved consistency training) applies it to the
    per-example norm over all event coordinates; ``elementwise=True`` applies it to each coordinate
    and sums. Song & Dhariwal take ``c = 0.00054 √d`` for d-dimensional images. Quadratic
    (≈ ‖·‖²/(2c)) for small errors, linear for large ones.
    """

    c: float
    elementwise: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.c, bool) or not isinstance(self.c, (int, float)) or not math.isfinite(self.c) or self.c <= 0:
            raise ValueError(f"c must be a finite number > 0, e.g. 0.00054 * sqrt(d); got {self.c!r}.")

    def __call__(self, pred: Tensor, target: Tensor) -> Tensor:
        sq = _flat(pred - target).square()
        if not self.elementwise:
            sq = sq.sum(-1)
        # sqrt(q + c²) − c written as q / (sqrt(q + c²) + c): no cancellation when q ≪ c² (large c)
        out = sq / (torch.sqrt(sq + self.c * self.c) + self.c)
        return out.sum(-1) if self.elementwise else out


def _check_distance(distance: object) -> Distance:
    if not callable(distance):
        raise TypeError(
            f"distance must be callable as distance(pred, target) -> (B,), e.g. SquaredL2() or PseudoHuber(c); "
            f"got {type(distance).__name__}."
        )
    return distance  # type: ignore[return-value]


def _apply_distance(distance: Distance, pred: Tensor, target: Tensor) -> Tensor:
    out = distance(pred, target)
    if not isinstance(out, Tensor) or out.shape != (pred.shape[0],):
        got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise ValueError(f"distance(pred, target) must return one value per example, shape ({pred.shape[0]},); "
                         f"got {got}.")
    return out


# -- label dropout (classifier-free guidance training) ---------------------------------------------
def drop_labels(
    class_labels: Tensor, p: float, null_label: int, generator: torch.Generator | int | None = None
) -> Tensor:
    """Replace each class label by ``null_label`` with probability ``p``, independently (Ho & Salimans 2022).

    Training a conditional model on labels dropped this way also trains the unconditional model
    ``D(x, σ, ∅)`` that classifier-free guidance needs; sdeflow's networks use the class value
    ``num_classes`` as the null class ∅.

    Args:
        class_labels: integer labels, shape (B,).
        p: the dropout probability, in [0, 1].
        null_label: the label of the null class (e.g. ``num_classes``).
        generator: a ``torch.Generator`` (on the labels' device) or an int seed. One ``torch.rand(B)``
            draw is taken from it (also when ``p`` is 0 or 1, so the stream advances the same way).

    Returns:
        A new tensor of shape (B,) and the labels' dtype; ``class_labels`` is not modified.
    """
    if not isinstance(class_labels, Tensor):
        raise TypeError(
            f"class_labels must be an integer torch.Tensor of shape (B,); got {type(class_labels).__name__}."
        )
    if class_labels.is_floating_point() or class_labels.is_complex() or class_labels.dtype == torch.bool:
        raise TypeError(
            f"class_labels must hold integer class indices (e.g. torch.long); got dtype {class_labels.dtype}."
        )
    if class_labels.dim() != 1:
        raise ValueError(f"class_labels must have shape (B,); got {tuple(class_labels.shape)}.")
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= float(p) <= 1.0:
        raise ValueError(f"p (the label dropout probability) must be a number in [0, 1]; got {p!r}.")
    if isinstance(null_label, bool) or not isinstance(null_label, int):
        raise TypeError(f"null_label must be an int (the null class, e.g. num_classes); got {null_label!r}.")
    gen = make_generator(generator, class_labels.device)
    u = torch.rand(class_labels.shape, generator=gen, device=class_labels.device)
    return torch.where(u < float(p), torch.full_like(class_labels, null_label), class_labels)


def _check_label_dropout(p: object, null_label: object, label_key: object) -> float:
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= float(p) <= 1.0:
        raise ValueError(f"label_dropout must be a probability in [0, 1]; got {p!r}.")
    if float(p) > 0 and (isinstance(null_label, bool) or not isinstance(null_label, int)):
        raise ValueError(
            f"label_dropout={p} needs null_label, the int label of the null class (sdeflow's networks use "
            f"num_classes); got {null_label!r}."
        )
    if not isinstance(label_key, str):
        raise TypeError(f"label_key must be a str (the keyword the model takes labels as); got {label_key!r}.")
    return float(p)


def _dropped(cond: dict[str, Any], p: float, null_label: int | None, key: str,
             gen: torch.Generator | None) -> dict[str, Any]:
    if p == 0.0:
        return cond
    labels = cond.get(key)
    if labels is None:
        raise ValueError(
            f"this loss has label_dropout={p} but was called without {key}=...; pass the class labels as "
            f"{key}=labels or build the loss with label_dropout=0."
        )
    return {**cond, key: drop_labels(labels, p, null_label, gen)}  # type: ignore[arg-type]


# -- shared checks -----------------------------------------------------------------------------------
def _check_model_kwargs(model_kwargs: object) -> dict[str, Any]:
    if model_kwargs is None:
        return {}
    if not isinstance(model_kwargs, Mapping) or not all(isinstance(k, str) for k in model_kwargs):
        raise TypeError(f"model_kwargs must be a dict of keyword arguments for every model call (e.g. "
                        f"{{'raw': True}}); got {model_kwargs!r}.")
    return dict(model_kwargs)


def _check_x0(x0: object) -> Tensor:
    """x0 checked; 16-bit data is promoted to float32 so the loss arithmetic never runs in 16 bits."""
    x0 = check_state(x0, "x0")
    if x0.dim() < 2:
        raise ValueError(
            f"x0 must have shape (B, *event) with at least one event dimension; got {tuple(x0.shape)}. "
            f"For scalar data use x0.reshape(-1, 1)."
        )
    return x0.float() if x0.dtype in (torch.float16, torch.bfloat16) else x0


def _per_example(value: Tensor | None, x0: Tensor, name: str) -> Tensor | None:
    """An explicit (B,) tensor (``t`` or ``sigma``) in x0's dtype/device, checked to be finite and > 0."""
    if value is None:
        return None
    if isinstance(value, Tensor):
        v = value.to(device=x0.device, dtype=x0.dtype)
    else:
        v = torch.tensor(float(value), device=x0.device, dtype=x0.dtype)
    if v.dim() == 0:
        v = v.expand(x0.shape[0])
    if v.shape != (x0.shape[0],):
        raise ValueError(f"{name} must be a scalar or have one value per example, shape ({x0.shape[0]},); "
                         f"got {tuple(v.shape)}.")
    if not bool(torch.isfinite(v).all()) or not bool((v > 0).all()):
        raise ValueError(f"{name} must be finite and > 0 (σ = 0 is the clean data, where the loss is undefined).")
    return v


def _noise(noise: Tensor | None, x0: Tensor, gen: torch.Generator | None) -> Tensor:
    if noise is None:
        return torch.randn(x0.shape, generator=gen, device=x0.device, dtype=x0.dtype)
    if not isinstance(noise, Tensor) or noise.shape != x0.shape:
        got = tuple(noise.shape) if isinstance(noise, Tensor) else type(noise).__name__
        raise ValueError(f"noise must be a tensor of x0's shape {tuple(x0.shape)}; got {got}.")
    return noise.to(dtype=x0.dtype, device=x0.device)


def _output(out: object, x0: Tensor, what: str) -> Tensor:
    if not isinstance(out, Tensor):
        raise TypeError(f"{what} must return a torch.Tensor; it returned {type(out).__name__}.")
    if out.shape != x0.shape:
        raise ValueError(f"{what} returned shape {tuple(out.shape)} for x0 of shape {tuple(x0.shape)}; "
                         f"the prediction must have the state's shape.")
    return out.to(x0.dtype) if out.dtype != x0.dtype else out  # bf16 networks: loss arithmetic in x0's dtype


def _col(v: Tensor, x: Tensor) -> Tensor:
    return v.reshape((-1,) + (1,) * (x.dim() - 1))


def _finite_number(value: object, name: str, *, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(float(value)):
        raise ValueError(f"{name} must be a finite number; got {value!r}.")
    if positive and float(value) <= 0:
        raise ValueError(f"{name} must be > 0; got {value!r}.")
    return float(value)


# -- denoising score matching --------------------------------------------------------------------------
class DenoisingScoreMatching:
    r"""Denoising score matching on a diffusion SDE, for a model predicting the score, ε, x0 or v.

    One call draws ``t ~ U[t_min, t_max]`` (or from the importance proposal, below) and
    ``ε ~ N(0, I)``, forms ``x_t = α(t) x0 + σ(t) ε`` (``α = sde.marginal_scale``,
    ``σ = sde.marginal_std``: the SDE's own scaling, as the model sees it) and returns, per example,

        loss = λ(t) · ‖s_θ(x_t, t) − ∇log p(x_t | x0)‖²,   ∇log p(x_t | x0) = −ε/σ,

    where ``s_θ`` is the model's output converted to a score by
    :func:`sdeflow.convert_prediction`. It is computed in the prediction's own space as
    ``w(t) · ‖pred − target‖²`` (no division by small σ), with the target and the factor
    ``c = ‖Δscore‖² / ‖Δpred‖²`` (the exact Jacobian of the conversion at fixed x_t):

    ==========  =====================  ========================================
    prediction  target                 c(t)
    ==========  =====================  ========================================
    ``score``   ``−ε/σ``               ``1``
    ``eps``     ``ε``                  ``1/σ²``
    ``x0``      ``x0``                 ``α²/σ⁴``
    ``v``       ``α ε − σ x0``         ``α² / (σ² (α² + σ²)²)``
    ==========  =====================  ========================================

    and ``w = λ c``. The weightings:

    * ``"sigma2"``: ``λ = σ(t)²`` (Song et al. 2021: λ ∝ 1/E‖∇log p(x_t | x0)‖² = σ²), σ the
      marginal std. Then ``λ‖Δs‖² = ‖ε̂ − ε‖²`` *exactly*, the ε-loss; in the other spaces
      ``w = σ²`` (score), ``1`` (eps), ``α²/σ²`` = SNR(t) (x0), ``α²/(α² + σ²)²`` (v; ``α²`` on VP).
      In the EDM noise level ``σ̃ = σ/α`` (docs/concepts.md §4) the same weight reads ``λ = α² σ̃²``:
      weighting by ``σ̃²`` instead would give ``‖ε̂ − ε‖²/α²``.
    * ``"likelihood"``: ``λ = g(t)²`` (Song, Durkan, Murray & Ermon 2021, "Maximum likelihood
      training of score-based diffusion models"): ``½ (t_max − t_min) E[loss]`` plus a θ-independent
      constant bounds the negative log-likelihood of the model's reverse SDE (up to the truncation
      of the time range at t_min). In the
      prediction spaces ``w = g²`` (score), ``g²/σ²`` (eps), ``g² α²/σ⁴`` (x0),
      ``g² α²/(σ² (α² + σ²)²)`` (v). ``g`` is ``sde.diffusion(t, x_t)``, which must be one number per
      example (true for VP, sub-VP, VE, EDM); for other SDEs pass a callable weighting.
    * ``"simple"``: ``w = 1``, the plain squared error of the prediction target — Ho et al.'s
      (2020) ``L_simple = ‖ε̂ − ε‖²`` for eps (identical to ``"sigma2"`` there), the plain x0 / v /
      score regression for the others; in score space ``λ = 1/c``.
    * a callable ``weighting(t) -> λ(t)``, (B,) → (B,): any score-space weight.

    ``importance="likelihood"`` draws t from ``q(t) ∝ g(t)²/σ(t)²`` instead of uniformly and
    multiplies each value by ``p(t)/q(t)`` (p the uniform density), so ``E[loss]`` is unchanged but
    the likelihood-weighted ε-loss has bounded variance (the variance reduction of Song, Durkan et
    al. 2021). It is valid with any weighting. For every
    linear SDE ``g²/σ² = d/dt log σ̃²(t)``, so ``q`` is uniform in ``log σ̃`` and is drawn through
    ``sde.time_at_noise_level``; ``p/q = (log σ̃²(t_max) − log σ̃²(t_min)) σ² / ((t_max − t_min) g²)``.

    Args:
        sde: the :class:`sdeflow.DiffusionSDE` the model is trained on.
        prediction: what the model outputs: ``"score"``, ``"eps"``, ``"x0"`` or ``"v"``.
        weighting: ``"simple"``, ``"sigma2"``, ``"likelihood"`` or a callable λ(t) (see above).
        t_min, t_max: the time range; default ``sde.eps`` and ``sde.T``. Need ``0 < t_min < t_max``.
        importance: ``None`` or ``"likelihood"`` (see above).
        distance: ``distance(pred, target) -> (B,)``; default :class:`SquaredL2` (sum over event
            dims). The weight ``w(t)`` multiplies its value. With another distance the score-space
            reading above holds only for squared L2.
        label_dropout, null_label, label_key: classifier-free guidance training: each
            ``cond[label_key]`` is replaced by ``null_label`` with probability ``label_dropout``
            (:func:`drop_labels`).
        model_kwargs: fixed keywords for every model call, before the call's ``cond`` (e.g.
            ``{"raw": True}`` for an SDEPrecond: see :meth:`for_precond`).

    Call: ``loss(model, x0, *, generator=None, t=None, noise=None, **cond) -> (B,)`` (see :meth:`__call__`).
    Its pieces are public for tests and for losses built on top (consistency models):
    :meth:`sample_time`, :meth:`perturb` (x_t and the target) and :meth:`time_weight` (w(t)).
    """

    def __init__(
        self,
        sde: DiffusionSDE,
        prediction: str = "eps",
        weighting: str | Callable[[Tensor], Tensor] = "simple",
        *,
        t_min: float | None = None,
        t_max: float | None = None,
        importance: str | None = None,
        distance: Distance | None = None,
        label_dropout: float = 0.0,
        null_label: int | None = None,
        label_key: str = "class_labels",
        model_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        if not isinstance(sde, DiffusionSDE):
            raise TypeError(
                f"sde must be a sdeflow.DiffusionSDE (VPSDE, SubVPSDE, VESDE, EDMSDE, ...); got {type(sde).__name__}."
            )
        if prediction not in PREDICTIONS:
            raise ValueError(f"prediction must be one of {PREDICTIONS}; got {prediction!r}.")
        if not callable(weighting) and weighting not in DSM_WEIGHTINGS:
            raise ValueError(f"weighting must be one of {DSM_WEIGHTINGS} or a callable λ(t); got {weighting!r}.")
        if importance not in (None, "likelihood"):
            raise ValueError(f"importance must be None or 'likelihood'; got {importance!r}.")
        t_min = float(sde.eps) if t_min is None else _finite_number(t_min, "t_min")
        t_max = float(sde.T) if t_max is None else _finite_number(t_max, "t_max")
        if not 0.0 < t_min < t_max:
            raise ValueError(f"need 0 < t_min < t_max; got t_min={t_min}, t_max={t_max} "
                             f"(σ(0) = 0 is the clean data, where the score target is undefined).")
        self.sde = sde
        self.prediction = prediction
        self.weighting = weighting
        self.t_min, self.t_max = t_min, t_max
        self.importance = importance
        self.distance = _check_distance(SquaredL2() if distance is None else distance)
        self.label_dropout = _check_label_dropout(label_dropout, null_label, label_key)
        self.null_label, self.label_key = null_label, label_key
        self.model_kwargs = _check_model_kwargs(model_kwargs)

    @classmethod
    def for_precond(cls, model: SDEPrecond, weighting: str | Callable[[Tensor], Tensor] = "simple",
                    **kwargs: Any) -> DenoisingScoreMatching:
        """The DSM loss of an :class:`sdeflow.generative.precond.SDEPrecond`: its SDE and prediction type.

        The loss then calls ``model(x_t, t, raw=True, **cond)`` — the preconditioner's raw model
        through its ``forward``, so DDP and ``torch.compile`` wrappers see every training call.
        ``kwargs`` (t_min, importance, label_dropout, ...) go to the constructor.
        """
        if not isinstance(model, SDEPrecond):
            raise TypeError(f"model must be a sdeflow SDEPrecond; got {type(model).__name__}. For another model "
                            f"build DenoisingScoreMatching(sde, prediction, ...) directly.")
        extra = dict(kwargs.pop("model_kwargs", None) or {})
        return cls(model.sde, model.prediction, weighting, model_kwargs={**extra, "raw": True}, **kwargs)

    def __repr__(self) -> str:
        w = self.weighting if isinstance(self.weighting, str) else getattr(self.weighting, "__name__", "callable")
        return (f"DenoisingScoreMatching({type(self.sde).__name__}, prediction={self.prediction!r}, weighting={w!r}, "
                f"t=[{self.t_min:g}, {self.t_max:g}], importance={self.importance!r})")

    # -- pieces (public so tests and consistency code can reuse them) ---------------------------------
    def _log_sigma2_range(self, ref: Tensor) -> tuple[Tensor, Tensor]:
        ends = torch.tensor([self.t_min, self.t_max], dtype=ref.dtype, device=ref.device)
        lo, hi = 2 * torch.log(self.sde.noise_level(ends))
        return lo, hi

    def sample_time(self, n: int, *, generator: torch.Generator | int | None = None,
                    device: torch.device | str | None = None, dtype: torch.dtype = torch.float32) -> Tensor:
        """Draw n times (n,): one ``torch.rand(n)`` from ``generator``, mapped to U[t_min, t_max] or to q(t)."""
        device = torch.device(device) if device is not None else torch.device("cpu")
        gen = make_generator(generator, device)
        u = torch.rand(n, generator=gen, device=device, dtype=dtype)
        if self.importance is None:
            return self.t_min + (self.t_max - self.t_min) * u
        lo, hi = self._log_sigma2_range(u)
        t = self.sde.time_at_noise_level(torch.exp(0.5 * (lo + (hi - lo) * u))).to(dtype)
        return t.clamp(self.t_min, self.t_max)

    def _g2(self, t: Tensor, x: Tensor) -> Tensor:
        g = torch.as_tensor(self.sde.diffusion(t, x)).to(x.dtype)
        if g.numel() == 1:
            return g.reshape(()).square().expand(t.shape)
        if g.dim() >= 1 and g.shape[0] == x.shape[0] and g.numel() == x.shape[0]:
            return g.reshape(-1).square()
        raise ValueError(
            f"the likelihood weighting needs one diffusion coefficient g(t) per example, but "
            f"{type(self.sde).__name__}.diffusion returned shape {tuple(g.shape)} for a state of shape "
            f"{tuple(x.shape)}; pass weighting=callable λ(t) instead."
        )

    def _scale_std(self, t: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        a = self.sde.marginal_scale(t).to(dtype).expand(t.shape)
        return a, self.sde.marginal_std(t).to(dtype).expand(t.shape)

    def time_weight(self, t: Tensor, x: Tensor) -> Tensor:
        """``w(t)``, (B,): the weight of ``‖pred − target‖²`` in the prediction's space (incl. p/q).

        ``x`` is the noisy state x_t (B, *event): it sets the dtype and is the argument of ``g``.
        """
        return self._weight(t, x, *self._scale_std(t, x.dtype))

    def _weight(self, t: Tensor, x: Tensor, a: Tensor, s: Tensor) -> Tensor:
        if self.weighting == "simple":
            w = torch.ones_like(s)
        else:
            # σ² c(t) per prediction, so w = (λ/σ²) · σ² c stays accurate at small σ.
            if self.prediction == "score":
                s2c = s * s
            elif self.prediction == "eps":
                s2c = torch.ones_like(s)
            elif self.prediction == "x0":
                s2c = (a / s).square()
            else:
                s2c = (a / (a * a + s * s)).square()
            if self.weighting == "sigma2":
                w = s2c
            elif self.weighting == "likelihood":
                w = self._g2(t, x) / (s * s) * s2c
            else:
                lam = torch.as_tensor(self.weighting(t))
                if lam.shape != t.shape:
                    raise ValueError(f"weighting(t) must return one λ per example, shape {tuple(t.shape)}; "
                                     f"got {tuple(lam.shape)}.")
                w = lam.to(x.dtype) / (s * s) * s2c
        if self.importance is not None:
            lo, hi = self._log_sigma2_range(t)
            w = w * ((hi - lo) / (self.t_max - self.t_min)) * (s * s) / self._g2(t, x)
        return w

    def perturb(self, x0: Tensor, t: Tensor, noise: Tensor) -> tuple[Tensor, Tensor]:
        """``(x_t, target)`` for times ``t`` (B,) and noise ``noise`` (x0's shape)."""
        return self._perturb(x0, noise, *self._scale_std(t, x0.dtype))

    def _perturb(self, x0: Tensor, noise: Tensor, a: Tensor, s: Tensor) -> tuple[Tensor, Tensor]:
        a, s = _col(a, x0), _col(s, x0)
        xt = a * x0 + s * noise
        if self.prediction == "score":
            return xt, -noise / s
        if self.prediction == "eps":
            return xt, noise
        if self.prediction == "x0":
            return xt, x0
        return xt, a * noise - s * x0

    def __call__(
        self,
        model: Callable[..., Tensor],
        x0: Tensor,
        *,
        generator: torch.Generator | int | None = None,
        t: Tensor | float | None = None,
        noise: Tensor | None = None,
        **cond: Any,
    ) -> Tensor:
        """Per-example loss, shape (B,), in ``x0``'s dtype.

        Args:
            model: ``model(x_t, t, **cond)`` with ``x_t`` of x0's shape and ``t`` (B,), returning the
                prediction (x0's shape; a low-precision output is cast to x0's dtype).
            x0: clean data, (B, *event), floating.
            generator: ``torch.Generator`` (on x0's device) or int seed. Draw order: t (one
                ``torch.rand(B)``, unless ``t`` is given), then ε (``torch.randn`` of x0's shape,
                unless ``noise`` is given), then the label dropout (one ``torch.rand(B)``, if enabled).
            t: times to use instead of drawing them, scalar or (B,), > 0. They count as draws from
                the loss's time distribution: with ``importance`` set they get the weight p/q.
            noise: ε to use instead of drawing it, x0's shape.
            **cond: conditioning passed to the model (class labels, a guidance scale, ...).
        """
        x0 = _check_x0(x0)
        if not callable(model):
            raise TypeError(f"model must be callable as model(x_t, t, **cond); got {type(model).__name__}.")
        gen = make_generator(generator, x0.device)
        tv = _per_example(t, x0, "t")
        if tv is None:
            tv = self.sample_time(x0.shape[0], generator=gen, device=x0.device, dtype=x0.dtype)
        eps = _noise(noise, x0, gen)
        cond = _dropped(cond, self.label_dropout, self.null_label, self.label_key, gen)
        a, s = self._scale_std(tv, x0.dtype)
        xt, target = self._perturb(x0, eps, a, s)
        pred = _output(model(xt, tv, **self.model_kwargs, **cond), x0, "model(x_t, t)")
        return self._weight(tv, xt, a, s) * _apply_distance(self.distance, pred, target)


# -- the EDM loss ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LogNormalSigma:
    """Noise levels ``σ = exp(P_mean + P_std · n)``, ``n ~ N(0, 1)`` (Karras et al. 2022, Table 1).

    EDM's defaults ``P_mean = −1.2, P_std = 1.2`` are tuned for images with σ_data = 0.5;
    :meth:`scaled` moves the distribution to data of another scale.
    """

    P_mean: float = -1.2
    P_std: float = 1.2

    def __post_init__(self) -> None:
        _finite_number(self.P_mean, "P_mean")
        _finite_number(self.P_std, "P_std", positive=True)

    def sample(self, n: int, *, generator: torch.Generator | int | None = None,
               device: torch.device | str | None = None, dtype: torch.dtype = torch.float32) -> Tensor:
        """Draw n noise levels (n,): one ``torch.randn(n)`` from ``generator``."""
        device = torch.device(device) if device is not None else torch.device("cpu")
        gen = make_generator(generator, device)
        z = torch.randn(n, generator=gen, device=device, dtype=dtype)
        return torch.exp(self.P_mean + self.P_std * z)

    def scaled(self, factor: float) -> LogNormalSigma:
        """The distribution of ``factor · σ``: ``P_mean + ln(factor)``, same ``P_std``."""
        return LogNormalSigma(self.P_mean + math.log(_finite_number(factor, "factor", positive=True)), self.P_std)


class EDMLoss:
    r"""The EDM training loss (Karras, Aittala, Aila & Laine 2022, eq. 2 with Table 1's choices).

    Per example: ``σ ~ exp(N(P_mean, P_std²))``, ``ε ~ N(0, I)``, ``x = x0 + σ ε`` and

        loss = λ(σ) · ‖D(x, σ, **cond) − x0‖²,   λ(σ) = (σ² + σ_d²) / (σ σ_d)²,

    with ``‖·‖²`` summed over event dimensions (:class:`SquaredL2`; another ``distance`` replaces it).
    λ makes the effective target of a network under EDM preconditioning (``c_out = σσ_d/√(σ² + σ_d²)``,
    docs/concepts.md §4) have unit weight: ``λ c_out² = 1``. For Gaussian data ``N(m, s² I)`` in d
    dimensions the optimal denoiser is ``D*(x, σ) = m + s²/(s² + σ²) (x − m)`` and the minimal
    value at σ is ``λ(σ) d s² σ² / (s² + σ²)`` — exactly ``d`` for every σ when ``s = σ_d``.

    Args:
        P_mean, P_std: the lognormal σ distribution (:class:`LogNormalSigma`); ``P_std > 0``.
        sigma_data: σ_d > 0 in λ; use the same value as the preconditioning's.
        distance, label_dropout, null_label, label_key, model_kwargs: as in :class:`DenoisingScoreMatching`.
        target: ``"x0"`` (default: the clean example itself, the plain EDM loss) or ``"stf"``, the
            stable target field of Xu, Liu, Tian, Tong & Jaakkola (2023): the regression target of
            example i is the posterior mean of ``x0`` given ``x_i`` over the *batch* as a reference
            set, ``Σ_j w_ij x0_j`` with ``w_ij ∝ exp(−‖x_i − x0_j‖²/(2σ_i²))`` (j over the batch,
            with the same class label when labels are given; a dropped label uses every example).
            At small σ the weight sits on ``x0_i`` itself (the plain target); at large σ the average
            over the batch removes most of the target's variance, where the plain target is
            dominated by noise. The minimiser differs from the plain one by an O(1/B) bias (consistent
            as the batch grows), so the closed-form minima of the tests hold for ``target="x0"``.

    :meth:`for_data` builds the loss for a data set's scale. Call:
    ``loss(denoiser, x0, *, generator=None, sigma=None, noise=None, **cond) -> (B,)``.
    """

    def __init__(
        self,
        P_mean: float = -1.2,
        P_std: float = 1.2,
        sigma_data: float = 0.5,
        *,
        distance: Distance | None = None,
        label_dropout: float = 0.0,
        null_label: int | None = None,
        label_key: str = "class_labels",
        model_kwargs: Mapping[str, Any] | None = None,
        target: str = "x0",
    ) -> None:
        if target not in ("x0", "stf"):
            raise ValueError(f"target must be 'x0' (the plain EDM loss) or 'stf' (stable target field); "
                             f"got {target!r}.")
        self.target = target
        self.sigma_sampler = LogNormalSigma(P_mean, P_std)
        self.sigma_data = _finite_number(sigma_data, "sigma_data", positive=True)
        self.distance = _check_distance(SquaredL2() if distance is None else distance)
        self.label_dropout = _check_label_dropout(label_dropout, null_label, label_key)
        self.null_label, self.label_key = null_label, label_key
        self.model_kwargs = _check_model_kwargs(model_kwargs)

    @property
    def P_mean(self) -> float:
        return self.sigma_sampler.P_mean

    @property
    def P_std(self) -> float:
        return self.sigma_sampler.P_std

    def __repr__(self) -> str:
        return f"EDMLoss(P_mean={self.P_mean:.4g}, P_std={self.P_std:.4g}, sigma_data={self.sigma_data:.4g})"

    @classmethod
    def for_data(
        cls,
        x: Tensor,
        *,
        P_mean: float = -1.2,
        P_std: float = 1.2,
        reference_sigma_data: float = 0.5,
        sigma_data: float | None = None,
        **kwargs: Any,
    ) -> EDMLoss:
        """The EDM loss scaled to data ``x`` (N, *event): σ_d estimated, the σ distribution shifted.

        ``sigma_data`` defaults to :func:`sdeflow.generative.precond.estimate_sigma_data` ``(x)`` (the
        pooled std, the estimator EDMPrecond's σ_data uses), and the lognormal mean becomes
        ``P_mean + ln(σ_d / reference_sigma_data)``: EDM's ``P_mean = −1.2`` is tuned for
        ``σ_d = 0.5``, and moving it with the data's scale keeps the noise levels where the model
        has to learn in the same place relative to the data (σ/σ_d has the same distribution).
        On 8 gaussians (σ_d ≈ 2.83, ln(σ_d/0.5) ≈ 1.73) this shift took the Heun-35 ΔNLL of a
        reference run from 44 to 11 (issue 10). ``P_std`` is unchanged (widen it to visit large σ
        more often). ``kwargs`` go to the constructor.
        """
        sd = estimate_sigma_data(x) if sigma_data is None else _finite_number(sigma_data, "sigma_data", positive=True)
        ref = _finite_number(reference_sigma_data, "reference_sigma_data", positive=True)
        shifted = LogNormalSigma(P_mean, P_std).scaled(sd / ref)
        return cls(shifted.P_mean, shifted.P_std, sd, **kwargs)

    def weight(self, sigma: Tensor) -> Tensor:
        """λ(σ) = (σ² + σ_d²)/(σ σ_d)², same shape as ``sigma``."""
        sd2 = self.sigma_data**2
        return (sigma * sigma + sd2) / (sigma * sigma * sd2)

    def __call__(
        self,
        denoiser: Callable[..., Tensor],
        x0: Tensor,
        *,
        generator: torch.Generator | int | None = None,
        sigma: Tensor | float | None = None,
        noise: Tensor | None = None,
        **cond: Any,
    ) -> Tensor:
        """Per-example loss, shape (B,), in ``x0``'s dtype.

        Args:
            denoiser: ``denoiser(x, sigma, **cond)`` with ``x`` of x0's shape and ``sigma`` (B,),
                returning the estimate of x0 (e.g. an EDM-preconditioned network); a low-precision
                output is cast to x0's dtype.
            x0: clean data, (B, *event), floating.
            generator: ``torch.Generator`` (on x0's device) or int seed. Draw order: σ (one
                ``torch.randn(B)``, unless ``sigma`` is given), then ε (unless ``noise`` is given),
                then the label dropout (one ``torch.rand(B)``, if enabled).
            sigma: noise levels to use instead of drawing them, scalar or (B,), > 0.
            noise: ε to use instead of drawing it, x0's shape.
            **cond: conditioning passed to the denoiser.
        """
        x0 = _check_x0(x0)
        if not callable(denoiser):
            raise TypeError(f"denoiser must be callable as denoiser(x, sigma, **cond); got {type(denoiser).__name__}.")
        gen = make_generator(generator, x0.device)
        sig = _per_example(sigma, x0, "sigma")
        if sig is None:
            sig = self.sigma_sampler.sample(x0.shape[0], generator=gen, device=x0.device, dtype=x0.dtype)
        eps = _noise(noise, x0, gen)
        cond = _dropped(cond, self.label_dropout, self.null_label, self.label_key, gen)
        x = x0 + _col(sig, x0) * eps
        pred = _output(denoiser(x, sig, **self.model_kwargs, **cond), x0, "denoiser(x, sigma)")
        target = x0 if self.target == "x0" else stable_target(x, sig, x0, cond.get(self.label_key), self.null_label)
        return self.weight(sig) * _apply_distance(self.distance, pred, target)


def stable_target(x: Tensor, sigma: Tensor, x0: Tensor, class_labels: Tensor | None = None,
                  null_label: int | None = None) -> Tensor:
    """The stable-target-field regression target (Xu et al. 2023) with the batch as the reference set.

    Args:
        x: noisy examples ``x0 + σ ε``, (B, *event).
        sigma: their noise levels, (B,).
        x0: the clean batch, (B, *event): the reference set.
        class_labels: (B,) labels; references then share example i's label, except where i's label is
            ``null_label`` (dropped), which uses the whole batch.
        null_label: the null class.

    Returns:
        ``Σ_j softmax_j(−‖x_i − x0_j‖²/(2σ_i²)) x0_j``, (B, *event), no gradient.
    """
    with torch.no_grad():
        b = x0.shape[0]
        xf, rf = x.reshape(b, -1).to(torch.float64), x0.reshape(b, -1).to(torch.float64)
        d2 = torch.cdist(xf, rf).square()  # (B, B): ‖x_i − x0_j‖²
        logits = -d2 / (2 * sigma.to(torch.float64).reshape(b, 1).square())
        if class_labels is not None:
            same = class_labels.reshape(b, 1) == class_labels.reshape(1, b)
            if null_label is not None:
                same = same | (class_labels.reshape(b, 1) == null_label)
            logits = logits.masked_fill(~same, float("-inf"))
        w = torch.softmax(logits, dim=1)
        return (w @ rf).to(x0.dtype).reshape(x0.shape)

