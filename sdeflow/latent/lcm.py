r"""Latent consistency models on the digits: a guided latent teacher, latent consistency distillation, sampling.

The pipeline (docs/latent.md, "Latent consistency models"; Luo et al. 2023 for LCM, Song et al. 2023 for CD):

1. an :class:`~sdeflow.latent.Autoencoder` maps the 8×8 digits to unit-scale codes ``z`` (B, k);
2. a class-conditional latent diffusion **teacher** ``D(z, σ, c)`` (:class:`sdeflow.EDMPrecond` around an
   :class:`sdeflow.MLPNet`, σ_data = 1) is trained by :class:`sdeflow.EDMLoss` with label dropout, so that
   classifier-free guidance ``D_w = D(c) + w (D(c) − D(∅))`` (:class:`sdeflow.ClassifierFreeGuidance`)
   is available at every w;
3. :class:`LatentConsistencyDistillation` distills the *guided* PF-ODE into a consistency function
   ``f(z, t, c, w)`` that takes w as an input (``extra``), with a skipping step ``k``;
4. :class:`LatentConsistencyModel` holds the distilled student, the decoder and the chosen multistep
   τ schedules in one registered model, so one checkpoint samples images in 1, 2 or 4 steps
   (``sdeflow sample --model DIR --steps 4 --class 3 --guidance 2``); :class:`LatentDiffusionModel`
   does the same for the teacher with Heun.

:func:`train_latent_pipeline` runs all of it (:class:`LatentSpec` holds every size) and
:func:`evaluate_latent` scores it (Fréchet distance in the digits classifier's features and class
accuracy, mean ± std over sampling seeds).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn

from .._checks import make_generator
from ..consistency.function import ConsistencyFunction
from ..consistency.losses import ConsistencyDistillation, _check_solver, _col, _weight, teacher_step
from ..generative.config import Configurable, register_model
from ..generative.losses import Distance, _check_x0, _noise
from ..generative.precond import ClassifierFreeGuidance, EDMPrecond
from .autoencoder import Autoencoder

__all__ = [
    "LatentSpec",
    "LatentConsistencyDistillation",
    "LatentConsistencyModel",
    "LatentDiffusionModel",
    "LatentPipeline",
    "guided_teacher",
    "latent_teacher",
    "latent_student",
    "train_latent_teacher",
    "distill_latent",
    "choose_latent_taus",
    "train_latent_pipeline",
    "evaluate_latent",
    "class_balanced_labels",
    "save_latent_model",
    "evaluate_pipeline",
    "format_latent_evaluation",
]


# -- the guided teacher --------------------------------------------------------------------------------------
def guided_teacher(teacher: Callable[..., Tensor], null_label: int | None = None) -> ClassifierFreeGuidance:
    """``D_w(z, σ, c) = D(c) + w (D(c) − D(∅))`` with a per-example ``guidance=w`` (B,) at each call.

    A thin use of :class:`sdeflow.ClassifierFreeGuidance`: :class:`LatentConsistencyDistillation` calls it
    with ``guidance=w`` and passes a Python ``0.0`` when every w of the batch is 0, which makes exactly the
    conditional call (so ``w = 0`` *is* the conditional teacher, bit for bit).
    """
    return ClassifierFreeGuidance(teacher, guidance=0.0, null_label=null_label)  # type: ignore[arg-type]


class LatentConsistencyDistillation(ConsistencyDistillation):
    r"""Latent consistency distillation (Luo et al. 2023): CD of the *guided* PF-ODE, w an input, skip k.

    Per example: ``n`` uniform in 0..N−1−k on the ascending Karras grid ``ε = t_1 < … < t_N = T``,
    ``z ~ N(0, I)``, ``w ~ U[w_min, w_max]``, ``x_{n+k} = x0 + t_{n+k} z``, then ``x̂_n`` by ``k`` teacher
    steps of the guided PF-ODE ``dx/dt = (x − D_w(x, t, c))/t`` across ``t_{n+k} → t_{n+k−1} → … → t_n``
    (the guided denoiser at *every* sub-step), and

        loss = λ(t_n, t_{n+k}) · d(f_student(x_{n+k}, t_{n+k}, c, w), stopgrad f_target(x̂_n, t_n, c, w)).

    The student and target see ``w`` as ``extra = w[:, None]`` (their network is built with
    ``n_extra=1``). With ``k = 1`` and ``w = 0`` this is :class:`sdeflow.consistency.losses.ConsistencyDistillation`
    on the same draws: ``n`` (one ``torch.rand(B)``), then ``z``, are drawn in the same order, and
    the guided teacher at w = 0 makes the conditional teacher's call (tests/test_latent_lcm.py checks it).

    Why the sub-steps: one teacher step across k intervals (LCM's "skipping step" done as a single
    DDIM/Heun step) is a step k times longer of an ODE whose velocity, under guidance, has an extra
    ``w (D(c) − D(∅))/t`` term that changes fast at large t; a single Euler/Heun step over it overshoots,
    the target carries the error, and the student learns maps that drift off the class (the issue's
    reference collapsed to 22 % accuracy at w = 2, k = 2). k steps of the guided teacher cost k times the
    teacher evaluations and keep the target on the guided trajectory.

    Args:
        teacher: the *unguided* conditional denoiser ``D(x, σ, class_labels=...)`` with a null class
            (:class:`sdeflow.EDMPrecond` trained with label dropout); the loss wraps it in
            :func:`guided_teacher`.
        solver, n_points, eps, T, rho, distance, weighting, target, target_name, teacher_dtype: as for
            :class:`~sdeflow.consistency.losses.ConsistencyDistillation`.
        skip: k >= 1, the skipping step (intervals of the grid per pair).
        guidance: ``(w_min, w_max)``, the range w is drawn from uniformly (w_min = w_max: a fixed w).
        null_label: the teacher's null class (default: the teacher's own ``null_label``).

    Call: ``loss(student, x0, *, generator=None, n=None, noise=None, guidance=None, class_labels, **cond) -> (B,)``.
    Draw order: n, then z, then w (unless given: ``guidance`` a number or a (B,) tensor).
    """

    def __init__(self, teacher: Callable[..., Tensor], solver: str = "heun", n_points: int = 18, *,
                 skip: int = 1, guidance: tuple[float, float] = (0.0, 2.0), null_label: int | None = None,
                 eps: float = 0.002, T: float = 80.0, rho: float = 7.0, distance: Distance | None = None,  # noqa: N803
                 weighting: str | Callable[[Tensor, Tensor], Tensor] = "uniform",
                 target: Literal["ema", "student"] = "ema", target_name: str = "target",
                 teacher_dtype: torch.dtype | None = None) -> None:
        super().__init__(teacher, solver, n_points, eps=eps, T=T, rho=rho, distance=distance, weighting=weighting,
                         target=target, target_name=target_name, teacher_dtype=teacher_dtype)
        if isinstance(skip, bool) or not isinstance(skip, int) or not 1 <= skip <= n_points - 1:
            raise ValueError(f"skip must be an int in 1..n_points-1 = {n_points - 1} (intervals per pair); "
                             f"got {skip!r}.")
        if (not isinstance(guidance, (tuple, list)) or len(guidance) != 2
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                           for v in guidance) or not 0 <= guidance[0] <= guidance[1]):
            raise ValueError(f"guidance must be a range (w_min, w_max) with 0 <= w_min <= w_max; got {guidance!r}.")
        self.skip = skip
        self.guidance = (float(guidance[0]), float(guidance[1]))
        self.guided = guided_teacher(teacher, null_label)

    def __repr__(self) -> str:
        return (f"LatentConsistencyDistillation(solver={self.solver!r}, N={self.n_points}, skip={self.skip}, "
                f"guidance={self.guidance}, target={self.target!r}, distance={self.distance!r})")

    def draw_pair(self, batch: int, gen: torch.Generator | None, device: torch.device,
                  n: Tensor | int | None = None) -> Tensor:
        """Lower grid indices n (B,) in 0..N−1−k (one ``torch.rand(B)`` unless ``n`` is given)."""
        m = self.n_points - self.skip  # number of admissible pairs (n, n + k)
        if n is None:
            u = torch.rand(batch, generator=gen, device=device, dtype=torch.float64)
            return (u * m).long().clamp_max(m - 1)
        idx = torch.as_tensor(n, device=device).long().expand(batch)
        if bool((idx < 0).any()) or bool((idx > m - 1).any()):
            raise ValueError(f"n must be lower indices in 0..{m - 1} (N = {self.n_points} points, skip {self.skip}).")
        return idx

    def draw_guidance(self, batch: int, gen: torch.Generator | None, device: torch.device, dtype: torch.dtype,
                      guidance: Tensor | float | None = None) -> Tensor:
        """w (B,): ``U[w_min, w_max]`` (one ``torch.rand(B)``) unless ``guidance`` is given."""
        if guidance is not None:
            w = torch.as_tensor(guidance, dtype=dtype, device=device)
            if w.dim() == 0:
                w = w.expand(batch)
            if w.shape != (batch,) or not bool(torch.isfinite(w).all()) or bool((w < 0).any()):
                raise ValueError(f"guidance must be a number or a ({batch},) tensor of finite w >= 0.")
            return w
        lo, hi = self.guidance
        if lo == hi:
            return torch.full((batch,), lo, dtype=dtype, device=device)
        return lo + (hi - lo) * torch.rand(batch, generator=gen, device=device, dtype=torch.float64).to(dtype)

    def guided_steps(self, x: Tensor, grid: Tensor, idx: Tensor, w: Tensor, class_labels: Tensor | None) -> Tensor:
        """``k`` guided teacher steps from ``t_{n+k}`` down to ``t_n`` (per-sample levels), no gradient."""
        g = grid.to(x.device)
        wt: float | Tensor = 0.0 if not bool((w != 0).any()) else w
        for j in range(self.skip, 0, -1):
            x = teacher_step(self.guided, self.solver, x, g[idx + j], g[idx + j - 1], class_labels=class_labels,
                             guidance=wt)
        return x

    def __call__(self, student: Callable[..., Tensor], x0: Tensor, *,  # type: ignore[override]
                 generator: torch.Generator | int | None = None, n: Tensor | int | None = None,
                 noise: Tensor | None = None, guidance: Tensor | float | None = None,
                 class_labels: Tensor | None = None, **cond: Any) -> Tensor:
        """Per-example LCD loss (B,) in x0's dtype (see the class docstring)."""
        x0 = _check_x0(x0)
        if class_labels is None:
            raise ValueError("LatentConsistencyDistillation needs class_labels (B,): train on (codes, labels).")
        if "extra" in cond:
            raise ValueError("extra is the guidance input of the student here; pass guidance= instead of extra=.")
        gen = make_generator(generator, x0.device)
        grid = self.grid(self.n_points)
        idx = self.draw_pair(x0.shape[0], gen, x0.device, n)
        z = _noise(noise, x0, gen)
        w = self.draw_guidance(x0.shape[0], gen, x0.device, x0.dtype, guidance)
        g = grid.to(x0.device)
        t_lo, t_hi = g[idx], g[idx + self.skip]
        x_hi = x0 + _col(t_hi, x0) * z
        dt = self.teacher_dtype or x0.dtype
        x_lo = self.guided_steps(x_hi.to(dt), grid, idx, w.to(dt), class_labels).to(x0.dtype)
        full = {**cond, "class_labels": class_labels, "extra": w[:, None]}
        return self._pair_loss(student, x0, x_hi, t_hi, x_lo, t_lo, _weight(self.weighting, t_lo, t_hi, x0.dtype),
                               full)


# -- the models ------------------------------------------------------------------------------------------------
def _check_w(guidance: object, batch: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    w = torch.as_tensor(guidance, dtype=dtype, device=device)
    if w.dim() == 0:
        w = w.expand(batch)
    if w.shape != (batch,) or not bool(torch.isfinite(w).all()) or bool((w < 0).any()):
        raise ValueError(f"guidance must be a number or a ({batch},) tensor of finite w >= 0; got {guidance!r}.")
    return w


def _check_labels(class_labels: object, num_classes: int) -> Tensor:
    if not isinstance(class_labels, Tensor) or class_labels.dim() != 1 or class_labels.is_floating_point():
        raise TypeError("class_labels must be a (B,) integer tensor of digit classes.")
    if class_labels.numel() == 0 or bool((class_labels < 0).any()) or bool((class_labels >= num_classes).any()):
        raise ValueError(f"class_labels must be in 0..{num_classes - 1} (B >= 1).")
    return class_labels.long()


def _generator(generator: torch.Generator | int | None, device: torch.device) -> torch.Generator | None:
    return make_generator(generator, device)


@register_model("latent_consistency")
class LatentConsistencyModel(Configurable, nn.Module):
    """A distilled latent consistency model and its decoder: class labels and w -> images (B, 1, 8, 8).

    Args:
        student: the :class:`sdeflow.consistency.ConsistencyFunction` ``f(z, t, class_labels, extra=w)``
            (its network built with ``n_extra=1``).
        decoder: the latent space (:class:`~sdeflow.latent.Autoencoder` or :class:`~sdeflow.latent.PCALatent`)
            whose ``decode(z)`` maps codes (B, k) to images.
        taus: multistep schedules by step count, ``{"2": [T, τ_2], "4": [T, τ_2, τ_3, τ_4]}`` (JSON keys are
            strings); a missing count uses the Karras grid of ``steps + 1`` levels without its last.

    :meth:`generate` is the sampling entry point (``sdeflow sample`` calls it); :meth:`sample_latent`
    returns the codes. Saved and rebuilt whole by :func:`save_latent_model` / :func:`sdeflow.load_model`.
    """

    def __init__(self, student: ConsistencyFunction, decoder: nn.Module,
                 taus: Mapping[str, Sequence[float]] | None = None) -> None:
        super().__init__()
        if not isinstance(student, ConsistencyFunction):
            raise TypeError(f"student must be a ConsistencyFunction; got {type(student).__name__}.")
        if not callable(getattr(decoder, "decode", None)):
            raise TypeError(f"decoder must have decode(z) (an Autoencoder or PCALatent); got {type(decoder).__name__}.")
        clean: dict[str, list[float]] = {}
        for key, value in dict(taus or {}).items():
            tv = [float(v) for v in value]
            decreasing = all(b < a for a, b in zip(tv[:-1], tv[1:], strict=True))
            if str(key) != str(len(tv)) or not tv or not decreasing or tv[-1] <= student.eps:
                raise ValueError(f"taus[{key!r}] must list {key} strictly decreasing levels > eps; got {value!r}.")
            clean[str(key)] = tv
        self.record_config(student=student, decoder=decoder, taus=clean)
        self.student, self.decoder, self.taus = student, decoder, clean

    @property
    def num_classes(self) -> int:
        """Number of digit classes the student is conditioned on."""
        return int(self.student.net.num_classes)

    @property
    def latent_dim(self) -> int:
        return int(math.prod(self.student.net.event_shape))

    @property
    def event_shape(self) -> tuple[int, ...]:
        """The decoded images' shape (1, 8, 8)."""
        return tuple(self.decoder.event_shape)

    def schedule(self, steps: int) -> list[float]:
        """``[T, τ_2, ...]`` for ``steps``-step sampling (the stored search result, else a Karras grid)."""
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ValueError(f"steps must be an int >= 1; got {steps!r}.")
        if steps == 1:
            return [float(self.student.T)]
        if str(steps) in self.taus:
            return list(self.taus[str(steps)])
        from ..generative.schedules import karras_sigmas

        lo = max(float(self.student.eps) * 2, 1e-3)
        return karras_sigmas(steps + 1, lo, float(self.student.T), append_zero=False)[:steps].tolist()

    def sample_latent(self, class_labels: Tensor, *, guidance: float | Tensor = 0.0, steps: int = 1,
                      taus: Sequence[float] | None = None, generator: torch.Generator | int | None = None,
                      x_T: Tensor | None = None) -> Tensor:  # noqa: N803
        """Codes (B, k) for ``class_labels`` (B,) at guidance ``w`` in ``steps`` steps (or the given ``taus``)."""
        from ..consistency.sampling import sample_consistency

        p = next(self.student.parameters())
        labels = _check_labels(class_labels, self.num_classes).to(p.device)
        b = labels.shape[0]
        w = _check_w(guidance, b, p.device, p.dtype)
        tv = list(taus) if taus is not None else self.schedule(steps)
        gen = _generator(generator, p.device)
        if x_T is None:
            x_T = tv[0] * torch.randn((b, self.latent_dim), generator=gen, device=p.device, dtype=p.dtype)  # noqa: N806
        with torch.no_grad():
            res = sample_consistency(self.student, x_T, tv, generator=gen,
                                     model_kwargs={"class_labels": labels, "extra": w[:, None]})
        return res.x

    def generate(self, class_labels: Tensor, *, guidance: float | Tensor = 0.0, steps: int = 1,
                 generator: torch.Generator | int | None = None, x_T: Tensor | None = None) -> Tensor:  # noqa: N803
        """Images (B, 1, 8, 8) on the [−1, 1] scale: :meth:`sample_latent` then ``decoder.decode``."""
        z = self.sample_latent(class_labels, guidance=guidance, steps=steps, generator=generator, x_T=x_T)
        with torch.no_grad():
            return self.decoder.decode(z)

    def forward(self, class_labels: Tensor, guidance: float | Tensor = 0.0, steps: int = 1) -> Tensor:
        """Same as :meth:`generate` (with the global RNG)."""
        return self.generate(class_labels, guidance=guidance, steps=steps)


@register_model("latent_diffusion")
class LatentDiffusionModel(Configurable, nn.Module):
    """The latent teacher and its decoder: Heun sampling of the guided latent PF-ODE, decoded to images.

    Args:
        teacher: the conditional denoiser ``D(z, σ, class_labels)`` (an :class:`sdeflow.EDMPrecond`).
        decoder: the latent space with ``decode(z)``.
        sigma_min, sigma_max: the Karras schedule's ends (0.002, 80).
    """

    def __init__(self, teacher: nn.Module, decoder: nn.Module, sigma_min: float = 0.002,
                 sigma_max: float = 80.0) -> None:
        super().__init__()
        if not callable(getattr(decoder, "decode", None)):
            raise TypeError(f"decoder must have decode(z); got {type(decoder).__name__}.")
        self.record_config(teacher=teacher, decoder=decoder, sigma_min=sigma_min, sigma_max=sigma_max)
        self.teacher, self.decoder = teacher, decoder
        self.sigma_min, self.sigma_max = float(sigma_min), float(sigma_max)

    @property
    def num_classes(self) -> int:
        return int(self.teacher.net.num_classes)

    @property
    def latent_dim(self) -> int:
        return int(math.prod(self.teacher.net.event_shape))

    @property
    def event_shape(self) -> tuple[int, ...]:
        return tuple(self.decoder.event_shape)

    def sample_latent(self, class_labels: Tensor, *, guidance: float | Tensor = 0.0, steps: int = 18,
                      generator: torch.Generator | int | None = None, x_T: Tensor | None = None) -> Tensor:  # noqa: N803
        """Codes (B, k) by Heun on ``steps`` Karras levels (``2·steps − 1`` NFE: 18 levels = Heun-35)."""
        from ..generative.samplers import sample_heun
        from ..generative.schedules import karras_sigmas

        p = next(self.teacher.parameters())
        labels = _check_labels(class_labels, self.num_classes).to(p.device)
        b = labels.shape[0]
        w = _check_w(guidance, b, p.device, p.dtype)
        gen = _generator(generator, p.device)
        if x_T is None:
            x_T = self.sigma_max * torch.randn((b, self.latent_dim), generator=gen, device=p.device,  # noqa: N806
                                               dtype=p.dtype)
        den = guided_teacher(self.teacher)
        wt: float | Tensor = 0.0 if not bool((w != 0).any()) else w
        with torch.no_grad():
            return sample_heun(den, x_T, karras_sigmas(steps, self.sigma_min, self.sigma_max),
                               model_kwargs={"class_labels": labels, "guidance": wt}).x

    def generate(self, class_labels: Tensor, *, guidance: float | Tensor = 0.0, steps: int = 18,
                 generator: torch.Generator | int | None = None, x_T: Tensor | None = None) -> Tensor:  # noqa: N803
        """Images (B, 1, 8, 8): :meth:`sample_latent` then ``decoder.decode``."""
        z = self.sample_latent(class_labels, guidance=guidance, steps=steps, generator=generator, x_T=x_T)
        with torch.no_grad():
            return self.decoder.decode(z)

    def forward(self, class_labels: Tensor, guidance: float | Tensor = 0.0, steps: int = 18) -> Tensor:
        return self.generate(class_labels, guidance=guidance, steps=steps)


def save_latent_model(model: nn.Module, folder: str | os.PathLike, *, metadata: Mapping[str, Any] | None = None
                      ) -> Path:
    """Write a :class:`LatentConsistencyModel` / :class:`LatentDiffusionModel` as one checkpoint in ``folder``."""
    from .autoencoder import save_latent

    return save_latent(model, folder, metadata=dict(metadata or {}))


# -- the recipe ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LatentSpec:
    """Every size of :func:`train_latent_pipeline` (defaults: the benchmark's run).

    Attributes:
        latent_dim, ae_iters: the autoencoder (:func:`~sdeflow.latent.train_autoencoder`).
        hidden, depth, emb_dim: the teacher's and the student's :class:`sdeflow.MLPNet`.
        teacher_iters, teacher_batch, teacher_lr, label_dropout: the teacher's :class:`sdeflow.EDMLoss` run.
        lcd_iters, lcd_batch, lcd_lr: the distillation run.
        n_points, skip, solver, w_min, w_max: :class:`LatentConsistencyDistillation`.
        target_beta, eval_beta: the target EMA rate μ and the rate of the ``"ema"`` copy that is sampled.
        extra_scale: the student's w-embedding frequency scale (cycles per unit of w).
        init_from_teacher: start the student's network from the teacher's (LCM does), w input at zero.
        seed: seeds every run.
    """

    latent_dim: int = 12
    ae_iters: int = 3000
    hidden: int = 256
    depth: int = 3
    emb_dim: int = 64
    teacher_iters: int = 6000
    teacher_batch: int = 256
    teacher_lr: float = 2e-3
    label_dropout: float = 0.1
    lcd_iters: int = 3000
    lcd_batch: int = 256
    lcd_lr: float = 1e-3
    n_points: int = 18
    skip: int = 4
    solver: str = "heun"
    w_min: float = 0.0
    w_max: float = 2.0
    target_beta: float = 0.95
    eval_beta: float = 0.999
    extra_scale: float = 0.25
    init_from_teacher: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("latent_dim", "ae_iters", "hidden", "depth", "emb_dim", "teacher_iters", "teacher_batch",
                     "lcd_iters", "lcd_batch", "n_points", "skip"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be an int >= 1; got {v!r}.")
        _check_solver(self.solver)
        if not 0 <= self.w_min <= self.w_max:
            raise ValueError(f"need 0 <= w_min <= w_max; got {self.w_min}, {self.w_max}.")
        if not 0 <= self.label_dropout < 1:
            raise ValueError(f"label_dropout must be in [0, 1); got {self.label_dropout!r}.")

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def latent_teacher(spec: LatentSpec, num_classes: int = 10) -> EDMPrecond:
    """A fresh teacher ``EDMPrecond(MLPNet(latent_dim, num_classes=10), sigma_data=1)`` (unit-scale codes)."""
    from ..generative.networks import MLPNet

    net = MLPNet(spec.latent_dim, hidden=spec.hidden, depth=spec.depth, emb_dim=spec.emb_dim,
                 num_classes=num_classes, seed=spec.seed)
    return EDMPrecond(net, sigma_data=1.0)


def latent_student(spec: LatentSpec, teacher: EDMPrecond | None = None, num_classes: int = 10) -> ConsistencyFunction:
    """The student ``ConsistencyFunction(MLPNet(..., n_extra=1))``; from the teacher's weights if given.

    With a ``teacher`` (and ``spec.init_from_teacher``) every shared weight is copied and the w embedding's
    output projection is zeroed, so the untrained student is ``c_skip x + c_out F_teacher``: the
    conditional teacher's one-step denoiser, ignoring w.
    """
    from ..generative.networks import MLPNet

    net = MLPNet(spec.latent_dim, hidden=spec.hidden, depth=spec.depth, emb_dim=spec.emb_dim,
                 num_classes=num_classes, n_extra=1, extra_scale=spec.extra_scale, seed=spec.seed + 1)
    if teacher is not None and spec.init_from_teacher:
        missing, unexpected = net.load_state_dict(teacher.net.state_dict(), strict=False)
        if unexpected or not all(k.startswith("cond.extra_") for k in missing):
            raise ValueError(f"the teacher's network does not match the student's (missing {missing}, "
                             f"unexpected {unexpected}); build both from the same LatentSpec.")
        with torch.no_grad():
            net.cond.extra_proj.weight.zero_()
            net.cond.extra_proj.bias.zero_()
    return ConsistencyFunction(net, sigma_data=1.0, eps=0.002, T=80.0)


def train_latent_teacher(codes: Tensor, labels: Tensor, spec: LatentSpec, *, out_dir: str | os.PathLike | None = None,
                         progress: bool = False, metadata: Mapping[str, Any] | None = None
                         ) -> tuple[EDMPrecond, Any]:
    """Train the class-conditional latent teacher on ``codes`` (N, k) and ``labels`` (N,) with label dropout.

    :class:`sdeflow.EDMLoss` (σ_data = 1, P_mean −1.2, P_std 1.2) with ``label_dropout`` to the null class
    (so classifier-free guidance works), Adam with cosine decay, EMA 0.999 (the copy returned).
    Returns ``(teacher, result)``.
    """
    from ..generative.losses import EDMLoss
    from ..generative.training import EMA, TrainConfig, Trainer

    model = latent_teacher(spec)
    nc = model.net.num_classes
    loss = EDMLoss(sigma_data=1.0, label_dropout=spec.label_dropout, null_label=nc)
    config = TrainConfig(iters=spec.teacher_iters, batch_size=spec.teacher_batch, lr=spec.teacher_lr, warmup=100,
                         decay="cosine", ema=(EMA("ema", beta=0.999, warmup=1.0),), seed=spec.seed,
                         log_every=max(1, spec.teacher_iters // 10), progress=progress, keep=1)
    trainer = Trainer(model, loss, (codes, labels), config, out_dir=out_dir,
                      metadata={"data": "digits-latent", "role": "latent teacher", **dict(metadata or {})})
    result = trainer.fit()
    teacher = trainer.ema["ema"].eval().requires_grad_(False)
    return teacher, result  # type: ignore[return-value]


def distill_latent(teacher: EDMPrecond, codes: Tensor, labels: Tensor, spec: LatentSpec, *,
                   out_dir: str | os.PathLike | None = None, progress: bool = False,
                   metadata: Mapping[str, Any] | None = None) -> tuple[ConsistencyFunction, Any]:
    """Latent consistency distillation of ``teacher`` on ``codes``/``labels``; returns ``(student EMA, result)``.

    The loss is :class:`LatentConsistencyDistillation` (``spec.n_points``, ``spec.skip``, w ~ U[w_min, w_max],
    Heun teacher sub-steps), the target an EMA copy at μ = ``target_beta``, the returned copy the ``"ema"``
    one at ``eval_beta``.
    """
    from ..generative.training import EMA, TrainConfig, Trainer

    student = latent_student(spec, teacher)
    loss = LatentConsistencyDistillation(teacher, spec.solver, spec.n_points, skip=spec.skip,
                                         guidance=(spec.w_min, spec.w_max))
    config = TrainConfig(iters=spec.lcd_iters, batch_size=spec.lcd_batch, lr=spec.lcd_lr, warmup=100,
                         decay="cosine", seed=spec.seed + 1, log_every=max(1, spec.lcd_iters // 10),
                         ema=(EMA("ema", beta=spec.eval_beta, warmup=1.0), EMA("target", beta=spec.target_beta)),
                         progress=progress, keep=1)
    trainer = Trainer(student, loss, (codes, labels), config, out_dir=out_dir,
                      metadata={"data": "digits-latent", "role": "latent consistency student", **dict(metadata or {})})
    result = trainer.fit()
    return trainer.ema["ema"].eval().requires_grad_(False), result  # type: ignore[return-value]


def class_balanced_labels(n: int, num_classes: int = 10) -> Tensor:
    """``n`` labels cycling through the classes (``arange(n) % num_classes``)."""
    return torch.arange(n) % num_classes


def choose_latent_taus(model: LatentConsistencyModel, steps: Sequence[int] = (2, 4), *, guidance: float = 1.0,
                       n: int = 1000, seed: int = 0, scan: int = 9, iterations: int = 10) -> dict[str, list[float]]:
    """Search the multistep τ for each step count on the digits FD (:func:`sdeflow.consistency.search_taus`).

    The metric is the Fréchet distance of the decoded samples to the training images (class-balanced
    labels, at ``guidance``), on one fixed batch (common random numbers); the 4-step search extends the
    2-step one greedily. Evaluate on other seeds than ``seed``.
    """
    from ..consistency.sampling import search_taus
    from .metrics import digits_fd

    p = next(model.student.parameters())
    labels = class_balanced_labels(n, model.num_classes).to(p.device)
    w = torch.full((n, 1), float(guidance), device=p.device, dtype=p.dtype)

    def metric(z: Tensor) -> float:
        with torch.no_grad():
            return digits_fd(model.decoder.decode(z))

    out: dict[str, list[float]] = {}
    for k in sorted(set(int(s) for s in steps)):
        if k < 2:
            continue
        found = search_taus(model.student, metric, k, n=n, generator=seed, scan=scan, iterations=iterations,
                            model_kwargs={"class_labels": labels, "extra": w}, event_shape=(model.latent_dim,))
        out[str(k)] = [float(t) for t in found.taus]
    return out


@dataclass
class LatentPipeline:
    """What :func:`train_latent_pipeline` returns: the models, their checkpoints and the training times."""

    spec: LatentSpec
    autoencoder: Autoencoder
    teacher: EDMPrecond
    student: ConsistencyFunction
    model: LatentConsistencyModel
    diffusion: LatentDiffusionModel
    seconds: dict[str, float] = field(default_factory=dict)
    paths: dict[str, Path] = field(default_factory=dict)

    @property
    def train_seconds(self) -> float:
        """Autoencoder + teacher + distillation training time (s)."""
        return sum(self.seconds[k] for k in ("autoencoder", "teacher", "distillation"))


def train_latent_pipeline(spec: LatentSpec | None = None, *, out_dir: str | os.PathLike | None = None,
                          progress: bool = False, say: Callable[[str], None] | None = None,
                          tau_guidance: float = 1.0, tau_steps: Sequence[int] = (2, 4)) -> LatentPipeline:
    """Autoencoder → latent teacher → latent consistency distillation → τ search, on the digits' training split.

    With ``out_dir``: ``autoencoder/``, ``teacher/`` and ``student/`` hold the trainers' checkpoints,
    ``model/`` the :class:`LatentConsistencyModel` (student + decoder + τ; ``sdeflow sample --model
    out_dir/model``) and ``diffusion/`` the :class:`LatentDiffusionModel` (teacher + decoder).
    """
    from ..generative.training import TrainConfig
    from .autoencoder import train_autoencoder
    from .data import load_digits_split

    spec = spec if spec is not None else LatentSpec()
    say = say or (lambda _msg: None)
    root = Path(out_dir) if out_dir is not None else None
    split = load_digits_split()
    seconds: dict[str, float] = {}
    ae_cfg = TrainConfig(iters=spec.ae_iters, batch_size=128, lr=2e-3, warmup=50, decay="cosine", seed=spec.seed,
                         log_every=max(1, spec.ae_iters // 10), progress=progress, keep=1)
    ae, res = train_autoencoder(split.train_x, latent_dim=spec.latent_dim, config=ae_cfg, init_seed=spec.seed,
                                out_dir=None if root is None else root / "autoencoder")
    seconds["autoencoder"] = res.seconds
    say(f"    autoencoder to {spec.latent_dim} dims: {res.steps} steps in {res.seconds:.1f} s")
    with torch.no_grad():
        codes = ae.encode(split.train_x)
    labels = split.train_y
    teacher, res = train_latent_teacher(codes, labels, spec, out_dir=None if root is None else root / "teacher",
                                        progress=progress)
    seconds["teacher"] = res.seconds
    say(f"    latent teacher (EDM, label dropout {spec.label_dropout:g}): {res.steps} steps in {res.seconds:.1f} s")
    student, res = distill_latent(teacher, codes, labels, spec, out_dir=None if root is None else root / "student",
                                  progress=progress)
    seconds["distillation"] = res.seconds
    say(f"    latent consistency distillation (N {spec.n_points}, k {spec.skip}, w ~ U[{spec.w_min:g}, "
        f"{spec.w_max:g}]): {res.steps} steps in {res.seconds:.1f} s")
    tick = time.perf_counter()
    model = LatentConsistencyModel(student, ae)
    taus = choose_latent_taus(model, tau_steps, guidance=tau_guidance) if tau_steps else {}
    model = LatentConsistencyModel(student, ae, taus=taus).eval()
    seconds["tau_search"] = time.perf_counter() - tick
    say(f"    τ search on the digits FD (w = {tau_guidance:g}): " +
        "; ".join(f"{k} steps [{', '.join(f'{t:.3g}' for t in v)}]" for k, v in taus.items()) +
        f" in {seconds['tau_search']:.1f} s")
    diffusion = LatentDiffusionModel(teacher, ae).eval()
    paths: dict[str, Path] = {}
    if root is not None:
        meta = {"data": "digits", "spec": spec.to_json(), "train_seconds": seconds}
        paths["model"] = save_latent_model(model, root / "model", metadata=meta)
        paths["diffusion"] = save_latent_model(diffusion, root / "diffusion", metadata=meta)
    return LatentPipeline(spec, ae, teacher, student, model, diffusion, seconds, paths)


# -- evaluation ------------------------------------------------------------------------------------------------
def evaluate_latent(sampler: Callable[[Tensor, torch.Generator], Tensor], *, seeds: Sequence[int] = (0, 1, 2, 3, 4),
                    n: int = 359, labels: Tensor | None = None, reference: str = "train") -> dict[str, Any]:
    """FD (against ``reference``, ``n`` samples) and class accuracy of ``sampler(labels, generator)``, over seeds.

    ``sampler`` returns images (n, 1, 8, 8) for ``labels`` (n,); each seed gives it a fresh
    ``torch.Generator().manual_seed(seed)``. ``labels`` default: the held-out split's labels (359, its
    class counts) when ``n = 359``, else class-balanced. Returns ``{"fd": SeedStat, "accuracy": SeedStat}``.
    """
    from .data import load_digits_split
    from .metrics import digits_metrics, over_seeds

    if labels is None:
        labels = load_digits_split().test_y if n == 359 else class_balanced_labels(n)

    def one(seed: int) -> dict[str, float]:
        x = sampler(labels, torch.Generator().manual_seed(seed))
        return digits_metrics(x, labels, reference=reference)

    return over_seeds(one, seeds=tuple(seeds))


def evaluate_pipeline(pipe: LatentPipeline, *, guidance: float = 1.0, steps: Sequence[int] = (1, 2, 4),
                      seeds: Sequence[int] = (100, 101, 102, 103, 104), teacher_steps: int = 18) -> dict[str, Any]:
    """FD and accuracy (:func:`evaluate_latent`) of the teacher's Heun (``2·teacher_steps − 1`` NFE) and of the
    LCM at ``steps``, at one guidance ``w``, from the same x_T per seed; plus the floor.

    Returns ``{"guidance", "floor", "rows": [{"sampler", "nfe", "fd", "accuracy"}, ...]}`` with
    :class:`~sdeflow.latent.SeedStat` values.
    """
    from .metrics import digits_fd_floor

    nfe = 2 * teacher_steps - 1
    rows = [{"sampler": f"teacher Heun-{nfe}", "nfe": nfe, **evaluate_latent(
        lambda y, g: pipe.diffusion.generate(y, guidance=guidance, steps=teacher_steps, generator=g), seeds=seeds)}]
    for s in steps:
        rows.append({"sampler": f"LCM {s}-step", "nfe": s, **evaluate_latent(
            lambda y, g, s=s: pipe.model.generate(y, guidance=guidance, steps=s, generator=g), seeds=seeds)})
    return {"guidance": guidance, "floor": digits_fd_floor(), "seeds": list(seeds), "rows": rows}


def format_latent_evaluation(ev: Mapping[str, Any]) -> str:
    """The table of :func:`evaluate_pipeline` as text (FD mean ± std, ratio to the teacher, accuracy)."""
    rows = ev["rows"]
    t = rows[0]["fd"].mean
    lines = [f"evaluation at guidance w = {ev['guidance']:g}: FD of 359 decoded samples (held-out labels) against the "
             f"training images, mean ± std over seeds {ev['seeds']}; floor FD(held-out, train) {ev['floor']:.3g}",
             f"{'sampler':<18} {'NFE':>4} {'FD':>16} {'× teacher':>10} {'accuracy %':>11}"]
    for r in rows:
        lines.append(f"{r['sampler']:<18} {r['nfe']:>4} {str(r['fd']):>16} {r['fd'].mean / t:>10.3f} "
                     f"{100 * r['accuracy'].mean:>11.1f}")
    return "\n".join(lines)
