r"""Consistency distillation and training losses: one value per example, three named roles.

Every loss here is called as ``loss(student, x0, *, generator=None, **cond) -> (B,)`` — the
:class:`sdeflow.Trainer` convention — and involves up to three models, named the same way in the code,
the docs (docs/consistency.md, "Training") and the checkpoints:

* ``student`` — the consistency function being trained, ``f_θ(x, σ, **cond)`` on the EDM-scaled state
  ``x = x0 + σ z`` (a :class:`sdeflow.consistency.ConsistencyFunction`, or any module with
  ``f(x, ε) = x``); the argument of the call.
* ``target`` — the stop-gradient copy ``f_θ⁻`` the student is regressed onto: an EMA copy of the
  student kept by the trainer (``target="ema"``: ``trainer.ema["target"]``, found by :meth:`bind`; its
  rate μ or μ(k) is set through :meth:`ema_beta`) or the student itself under ``torch.no_grad``
  (``target="student"``, improved CT's θ⁻ = stopgrad(θ)).
* ``teacher`` — a frozen denoiser ``D(x, σ, **cond)`` whose PF-ODE ``dx/dσ = (x − D)/σ`` is followed
  for one deterministic step (distillation only): the exact mixture denoiser
  ``mixture.as_denoiser()``, a model from :func:`sdeflow.load_model`, or any such callable.

The losses (docs/concepts.md §6 for the theory):

* :class:`ConsistencyDistillation` (CD, Song et al. 2023, Algorithm 2): ``n`` drawn per example,
  ``x_{n+1} = x0 + t_{n+1} z``, one teacher step (Euler, Heun or DPM-Solver++(2M) from
  :mod:`sdeflow.generative.samplers.steps`, per-sample σ) to ``x̂_n``, and
  ``λ(t_n, t_{n+1}) · d(f_student(x_{n+1}, t_{n+1}), f_target(x̂_n, t_n))``.
* :class:`ConsistencyTraining` (CT, Song et al. 2023, Algorithm 3; improved CT, Song & Dhariwal
  2023): no teacher, the same ``z`` at both points, ``x_n = x0 + t_n z``; the grid size follows
  ``N(k)`` (:func:`~sdeflow.consistency.schedules.cm_num_steps` or the doubling curriculum
  :func:`~sdeflow.consistency.schedules.ict_num_steps`), the intervals are drawn uniformly or from the
  discretised lognormal.
* :class:`EasyConsistencyTuning` (ECT, Geng et al. 2024): continuous ``t`` (lognormal), the second
  point ``r = t(1 − n(t)/q^s)`` moving towards ``t`` stage by stage; start the student from a trained
  score model's network.
* :class:`ContinuousConsistency` (sCM, Lu & Song 2024): the continuous-time limit, the tangent
  ``df_θ⁻/dt`` along the PF-ODE computed with ``torch.func.jvp``, normalised, with sCM's warm-up of the
  network's time-derivative term; sCD with a teacher, sCT without.

Random draws come from ``generator`` in the order each docstring states; every draw can be fixed by an
explicit argument (``n=``, ``noise=``, ``sigma=``) so tests can pin them. Distances
(:class:`sdeflow.generative.losses.SquaredL2`, :class:`~sdeflow.generative.losses.PseudoHuber`) are the
training layer's, shared with the score losses.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Literal

import torch
from torch import Tensor, nn

from .._checks import make_generator
from ..generative.losses import (
    Distance,
    LogNormalSigma,
    SquaredL2,
    _apply_distance,
    _check_distance,
    _check_x0,
    _noise,
    _output,
    stable_target,
)
from ..generative.samplers.steps import dpmpp_2m_step, euler_step, heun_step
from .schedules import (
    cm_ema_rate,
    cm_num_steps,
    ect_ratio,
    ect_stage,
    ict_num_steps,
    karras_grid,
    linear_warmup,
    lognormal_index_weights,
)

__all__ = ["ESTIMATES", "TEACHER_SOLVERS", "WEIGHTINGS", "ConsistencyDistillation", "ConsistencyTraining",
           "EasyConsistencyTuning", "ContinuousConsistency", "teacher_step"]

#: One deterministic PF-ODE step of the teacher, by name (the sampler step primitives, per-sample σ).
TEACHER_SOLVERS: tuple[str, ...] = ("euler", "heun", "dpmpp_2m")
#: Named weightings λ(t_n, t_{n+1}) of the discrete losses.
WEIGHTINGS: tuple[str, ...] = ("uniform", "inverse_gap")

#: How a teacher-free loss estimates the PF-ODE velocity at ``x = x0 + σ z``: ``"x0"`` (the one-sample
#: estimate ``z``, the published CT/ECT/sCT) or ``"stf"`` (the batch as a reference set, :func:`ode_velocity`).
ESTIMATES: tuple[str, ...] = ("x0", "stf")

Weighting = str | Callable[[Tensor, Tensor], Tensor]


def _check_solver(solver: object) -> str:
    if solver not in TEACHER_SOLVERS:
        raise ValueError(f"solver must be one of {TEACHER_SOLVERS}; got {solver!r}.")
    return str(solver)


def _check_estimate(estimate: object) -> str:
    if estimate not in ESTIMATES:
        raise ValueError(f"estimate must be 'x0' (the one-sample estimate, the published losses) or 'stf' (the batch "
                         f"as a reference set); got {estimate!r}.")
    return str(estimate)


def _batch_denoiser(x0: Tensor, cond: dict[str, Any] | None) -> Callable[..., Tensor]:
    """``D(x, σ)``: the posterior mean of x0 given x over the batch ``x0`` (same class when labelled)."""
    labels = (cond or {}).get("class_labels")

    def denoiser(x: Tensor, sigma: Tensor, **_: Any) -> Tensor:
        return stable_target(x, sigma, x0, class_labels=labels if isinstance(labels, Tensor) else None)

    return denoiser


def ode_velocity(estimate: str, x: Tensor, sigma: Tensor, x0: Tensor, z: Tensor,
                 cond: dict[str, Any] | None = None) -> Tensor:
    r"""A teacher-free estimate of the PF-ODE velocity ``dx/dσ = (x − E[x0 | x])/σ`` at ``x = x0 + σ z``.

    ``estimate="x0"``: ``E[x0 | x]`` replaced by the example's own ``x0``, so the velocity is ``z`` — the
    one-sample estimate of consistency training (Song et al. 2023, Algorithm 3), unbiased given ``x`` but
    with a variance that dominates at large σ. ``estimate="stf"``: ``E[x0 | x]`` estimated with the batch
    as a reference set, :func:`sdeflow.generative.losses.stable_target` (Xu et al. 2023's stable target
    field, the estimate the score losses' ``target="stf"`` use): ``Σ_j w_j x0_j``,
    ``w_j ∝ exp(−‖x − x0_j‖²/(2σ²))``, with labels kept apart when ``cond`` holds ``class_labels``. At
    small σ the weight sits on the example itself and the two estimates agree; at large σ the batch
    average removes most of the variance, at an O(1/B) bias (docs/consistency.md, "Teacher-free estimates").

    Args:
        estimate: ``"x0"`` or ``"stf"`` (:data:`ESTIMATES`).
        x: the noisy batch ``x0 + σ z``, (B, *event).
        sigma: (B,) noise levels.
        x0, z: the clean batch and its noise, (B, *event).
        cond: the loss's conditioning; its ``class_labels`` (B,) restrict the reference set.

    Returns:
        The velocity, (B, *event), no gradient.
    """
    if estimate == "x0":
        return z
    _check_estimate(estimate)
    return (x - _batch_denoiser(x0, cond)(x, sigma)) / _col(sigma, x)


def teacher_step(teacher: Callable[..., Tensor], solver: str, x: Tensor, sigma: Tensor, sigma_next: Tensor,
                 **cond: Any) -> Tensor:
    """One deterministic teacher step of the PF-ODE from ``sigma`` to ``sigma_next`` ((B,) each), no gradient.

    ``solver``: ``"euler"`` (order 1, one evaluation), ``"heun"`` (order 2, two evaluations),
    ``"dpmpp_2m"`` (its first step is first order: exponential-integrator Euler in ``λ = −log σ``; one
    evaluation). Returns the state at ``sigma_next`` (x's shape and dtype).
    """
    step = {"euler": euler_step, "heun": heun_step, "dpmpp_2m": dpmpp_2m_step}.get(solver)
    if step is None:
        raise ValueError(f"solver must be one of {TEACHER_SOLVERS}; got {solver!r}.")
    with torch.no_grad():
        out, _ = step(teacher, x, sigma, sigma_next, **cond)
    return out


def _col(v: Tensor, x: Tensor) -> Tensor:
    return v.to(x.dtype).reshape((-1,) + (1,) * (x.dim() - 1))


def _check_weighting(weighting: object) -> Weighting:
    if isinstance(weighting, str):
        if weighting not in WEIGHTINGS:
            raise ValueError(f"weighting must be one of {WEIGHTINGS} or a callable λ(t_n, t_next) -> (B,); "
                             f"got {weighting!r}.")
        return weighting
    if not callable(weighting):
        raise TypeError(f"weighting must be a name {WEIGHTINGS} or a callable; got {type(weighting).__name__}.")
    return weighting  # type: ignore[return-value]


def _weight(weighting: Weighting, t_lo: Tensor, t_hi: Tensor, dtype: torch.dtype) -> Tensor:
    if weighting == "uniform":
        return torch.ones(t_lo.shape, dtype=dtype, device=t_lo.device)
    if weighting == "inverse_gap":
        return (1.0 / (t_hi - t_lo)).to(dtype)
    lam = torch.as_tensor(weighting(t_lo, t_hi))  # type: ignore[operator]
    if lam.shape != t_lo.shape:
        raise ValueError(f"weighting(t_n, t_next) must return one λ per example, shape {tuple(t_lo.shape)}; "
                         f"got {tuple(lam.shape)}.")
    return lam.to(dtype)


def _lower_point(estimate: str, x0: Tensor, z: Tensor, x_hi: Tensor, t_hi: Tensor, t_lo: Tensor,
                 cond: dict[str, Any], solver: str = "euler") -> Tensor:
    """The teacher-free lower point: ``x0 + t_lo z`` (``"x0"``, what every solver step gives for the constant
    denoiser ``x0``), or one ``solver`` step of the PF-ODE with the batch-reference denoiser (``"stf"``)."""
    if estimate == "x0":
        return x0 + _col(t_lo, x0) * z
    return teacher_step(_batch_denoiser(x0, cond), solver, x_hi, t_hi.to(x0.dtype), t_lo.to(x0.dtype))


def _check_range(eps: object, T: object) -> tuple[float, float]:
    for name, v in (("eps", eps), ("T", T)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or not v > 0:
            raise ValueError(f"{name} must be a finite number > 0; got {v!r}.")
    if not eps < T:  # type: ignore[operator]
        raise ValueError(f"eps must be < T; got eps={eps!r}, T={T!r}.")
    return float(eps), float(T)  # type: ignore[arg-type]


class _ConsistencyLoss:
    """The parts every consistency loss shares: the target role, the trainer binding, the distance."""

    target_name: str = "target"

    def __init__(self, *, distance: Distance | None, target: Literal["ema", "student"], target_name: str,
                 iters: int | None) -> None:
        self.distance = _check_distance(SquaredL2() if distance is None else distance)
        if target not in ("ema", "student"):
            raise ValueError(f"target must be 'ema' (an EMA copy kept by the trainer) or 'student' (the student "
                             f"under stop-gradient); got {target!r}.")
        if not isinstance(target_name, str) or not target_name:
            raise ValueError(f"target_name must be a non-empty string (the EMA copy's name); got {target_name!r}.")
        if iters is not None and (isinstance(iters, bool) or not isinstance(iters, int) or iters < 1):
            raise ValueError(f"iters must be None (the trainer's config.iters) or an int >= 1; got {iters!r}.")
        self.target, self.target_name, self.iters = target, target_name, iters
        self.target_model: nn.Module | None = None
        self._trainer: Any = None

    # -- the trainer protocol -------------------------------------------------------------------------
    def bind(self, trainer: Any) -> None:
        """Called once by :class:`sdeflow.Trainer`: take the ``target`` EMA copy and the step/iteration count."""
        self._trainer = trainer
        if self.iters is None:
            self.iters = int(trainer.config.iters)
        if self.target == "ema":
            if self.target_name not in trainer.ema:
                raise ValueError(
                    f"this loss has target='ema' but the trainer keeps no EMA copy named {self.target_name!r}; add "
                    f"EMA({self.target_name!r}, beta=...) to TrainConfig(ema=...) or use target='student'.")
            self.target_model = trainer.ema[self.target_name]

    def ema_beta(self, name: str, step: int) -> float | None:
        """The target copy's rate at ``step`` (None: the copy's own :class:`sdeflow.EMA` rule)."""
        return None

    def current_step(self, step: int | None) -> int:
        if step is not None:
            if isinstance(step, bool) or not isinstance(step, int) or step < 0:
                raise ValueError(f"step must be an int >= 0; got {step!r}.")
            return step
        return int(self._trainer.step) if self._trainer is not None else 0

    def _total(self) -> int:
        if self.iters is None:
            raise ValueError("this loss follows a schedule over the run: pass iters= (the run length) or bind it "
                             "to a Trainer (which supplies config.iters).")
        return self.iters

    def _target_fn(self, student: Callable[..., Tensor]) -> Callable[..., Tensor]:
        if self.target == "student":
            return student
        if self.target_model is None:
            raise ValueError("target='ema' needs the target EMA copy: bind the loss to a Trainer (it does so itself) "
                             "or call loss.set_target(module).")
        return self.target_model

    def set_target(self, module: nn.Module) -> None:
        """Use ``module`` as the ``target`` (outside a Trainer, e.g. in tests)."""
        if not callable(module):
            raise TypeError(f"the target must be callable as f(x, sigma, **cond); got {type(module).__name__}.")
        self.target_model = module

    def _pair_loss(self, student: Callable[..., Tensor], x0: Tensor, x_hi: Tensor, t_hi: Tensor, x_lo: Tensor,
                   t_lo: Tensor, weight: Tensor, cond: dict[str, Any]) -> Tensor:
        pred = _output(student(x_hi, t_hi.to(x0.dtype), **cond), x0, "student(x, sigma)")
        target = self._target_fn(student)
        with torch.no_grad():
            tgt = _output(target(x_lo, t_lo.to(x0.dtype), **cond), x0, "target(x, sigma)").detach()
        return weight * _apply_distance(self.distance, pred, tgt)


class _Discrete(_ConsistencyLoss):
    """Grid, interval sampling and weighting of the discrete-time losses (CD, CT)."""

    def __init__(self, *, eps: float, T: float, rho: float, sigma_sampling: str, P_mean: float, P_std: float,
                 weighting: Weighting, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.eps, self.T = _check_range(eps, T)
        self.rho = float(rho)
        if sigma_sampling not in ("uniform", "lognormal"):
            raise ValueError(f"sigma_sampling must be 'uniform' (n ~ U{{0..N−2}}) or 'lognormal' (improved CT's "
                             f"discretised lognormal); got {sigma_sampling!r}.")
        self.sigma_sampling = sigma_sampling
        LogNormalSigma(P_mean, P_std)  # checks
        self.P_mean, self.P_std = float(P_mean), float(P_std)
        self.weighting = _check_weighting(weighting)
        self._grids: dict[int, Tensor] = {}

    def grid(self, n_points: int) -> Tensor:
        """The ascending Karras grid of ``n_points`` levels (float64, cached per size)."""
        g = self._grids.get(n_points)
        if g is None:
            g = self._grids[n_points] = karras_grid(n_points, self.eps, self.T, self.rho)
        return g

    def draw_index(self, grid: Tensor, batch: int, gen: torch.Generator | None, device: torch.device) -> Tensor:
        """Interval indices n (B,) in 0..N−2: one ``torch.rand(B)`` mapped uniformly or by the lognormal weights."""
        u = torch.rand(batch, generator=gen, device=device, dtype=torch.float64)
        m = grid.numel() - 1
        if self.sigma_sampling == "uniform":
            return (u * m).long().clamp_max(m - 1)
        cdf = lognormal_index_weights(grid, self.P_mean, self.P_std).cumsum(0).to(device)
        return torch.searchsorted(cdf, u, right=True).clamp_max(m - 1)

    def _levels(self, grid: Tensor, x0: Tensor, n: Tensor | None, gen: torch.Generator | None) -> tuple[Tensor, Tensor]:
        if n is None:
            idx = self.draw_index(grid, x0.shape[0], gen, x0.device)
        else:
            idx = torch.as_tensor(n, device=x0.device).long().expand(x0.shape[0])
            if bool((idx < 0).any()) or bool((idx > grid.numel() - 2).any()):
                raise ValueError(f"n must be interval indices in 0..{grid.numel() - 2} (N = {grid.numel()} points).")
        g = grid.to(x0.device)
        return g[idx], g[idx + 1]


class ConsistencyDistillation(_Discrete):
    r"""Consistency distillation (Song et al. 2023, Algorithm 2) with a frozen ``teacher``.

    Per example: an interval ``n`` of the ascending Karras grid ``ε = t_1 < … < t_N = T`` (uniform over
    0..N−2, or improved CT's discretised lognormal), ``z ~ N(0, I)``, ``x_{n+1} = x0 + t_{n+1} z``,
    ``x̂_n`` = one ``solver`` step of the teacher's PF-ODE from ``t_{n+1}`` to ``t_n``, and

        loss = λ(t_n, t_{n+1}) · d(f_student(x_{n+1}, t_{n+1}), stopgrad f_target(x̂_n, t_n)).

    Args:
        teacher: a denoiser ``D(x, σ, **cond)`` (``mixture.as_denoiser()``, ``sdeflow.load_model(path)``).
        solver: the teacher step, ``"euler"``, ``"heun"`` or ``"dpmpp_2m"`` (:data:`TEACHER_SOLVERS`).
        n_points: N, the grid size (18 in the CM paper's CIFAR-10 CD).
        eps, T, rho: the grid's ends and Karras exponent (0.002, 80, 7).
        distance: ``SquaredL2()`` (default, summed over event dims) or ``PseudoHuber(c)``.
        weighting: ``"uniform"`` (λ = 1), ``"inverse_gap"`` (λ = 1/(t_{n+1} − t_n)) or ``λ(t_n, t_{n+1})``.
        target: ``"ema"`` (the trainer's EMA copy ``target_name``; CM's μ = 0.95) or ``"student"``.
        sigma_sampling, P_mean, P_std: how n is drawn (``"uniform"`` or ``"lognormal"``).
        teacher_dtype: run the teacher step in this dtype (e.g. float64 for the exact mixture teacher);
            None: the data's dtype.

    Call: ``loss(student, x0, *, generator=None, n=None, noise=None, **cond) -> (B,)``. Draw order: n
    (one ``torch.rand(B)``, unless ``n`` is given), then z (unless ``noise`` is given).
    """

    def __init__(self, teacher: Callable[..., Tensor], solver: str = "heun", n_points: int = 18, *,
                 eps: float = 0.002, T: float = 80.0, rho: float = 7.0, distance: Distance | None = None,
                 weighting: Weighting = "uniform", target: Literal["ema", "student"] = "ema",
                 target_name: str = "target", sigma_sampling: str = "uniform", P_mean: float = -1.1,
                 P_std: float = 2.0, teacher_dtype: torch.dtype | None = None) -> None:
        super().__init__(eps=eps, T=T, rho=rho, sigma_sampling=sigma_sampling, P_mean=P_mean, P_std=P_std,
                         weighting=weighting, distance=distance, target=target, target_name=target_name, iters=None)
        if not callable(teacher):
            raise TypeError(f"teacher must be a denoiser D(x, sigma, **cond) (e.g. mixture.as_denoiser() or "
                            f"sdeflow.load_model(path)); got {type(teacher).__name__}.")
        _check_solver(solver)
        if isinstance(n_points, bool) or not isinstance(n_points, int) or n_points < 2:
            raise ValueError(f"n_points must be an int >= 2 (grid size N); got {n_points!r}.")
        if isinstance(teacher, nn.Module):
            teacher.requires_grad_(False)
        self.teacher, self.solver, self.n_points, self.teacher_dtype = teacher, solver, n_points, teacher_dtype

    def __repr__(self) -> str:
        return (f"ConsistencyDistillation(solver={self.solver!r}, N={self.n_points}, target={self.target!r}, "
                f"weighting={self.weighting!r}, distance={self.distance!r})")

    def __call__(self, student: Callable[..., Tensor], x0: Tensor, *, generator: torch.Generator | int | None = None,
                 n: Tensor | int | None = None, noise: Tensor | None = None, **cond: Any) -> Tensor:
        """Per-example CD loss (B,) in x0's dtype (see the class docstring)."""
        x0 = _check_x0(x0)
        gen = make_generator(generator, x0.device)
        t_lo, t_hi = self._levels(self.grid(self.n_points), x0, n, gen)
        z = _noise(noise, x0, gen)
        x_hi = x0 + _col(t_hi, x0) * z
        dt = self.teacher_dtype or x0.dtype
        x_lo = teacher_step(self.teacher, self.solver, x_hi.to(dt), t_hi, t_lo, **cond).to(x0.dtype)
        return self._pair_loss(student, x0, x_hi, t_hi, x_lo, t_lo, _weight(self.weighting, t_lo, t_hi, x0.dtype),
                               cond)


class ConsistencyTraining(_Discrete):
    r"""Consistency training without a teacher (Song et al. 2023, Algorithm 3; improved CT, Song & Dhariwal 2023).

    As :class:`ConsistencyDistillation` with the teacher step replaced by the same noise at the lower
    level, ``x_n = x0 + t_n z`` (the one-sample estimate of the score, docs/concepts.md §6), and the grid
    size following the step k of a run of K = ``iters`` steps:

    * ``steps="cm"``: ``N(k)`` of the CM paper (:func:`cm_num_steps`, s₀, s₁), and with ``target="ema"``
      the target rate ``μ(k) = exp(s₀ ln μ₀ / N(k))`` through :meth:`ema_beta`;
    * ``steps="ict"``: the doubling curriculum (:func:`ict_num_steps`, s₀ = 10, s₁ = 1280);
    * ``steps=N`` (an int): a fixed grid.

    improved CT is ``ConsistencyTraining(steps="ict", sigma_sampling="lognormal", weighting="inverse_gap",
    distance=PseudoHuber(0.00054·√d), target="student")`` (:func:`sdeflow.consistency.presets.ict2023`).

    ``estimate``: ``"x0"`` (default, the published loss: ``x_n = x0 + t_n z``, the step of the PF-ODE from
    ``x_{n+1}`` whose denoiser is the example's own ``x0`` — every solver gives it exactly) or ``"stf"``:
    one ``solver`` step (:func:`teacher_step`: ``"euler"``, ``"heun"``, ``"dpmpp_2m"``) of the PF-ODE whose
    denoiser is the batch-reference estimate of :func:`ode_velocity` — CD with the batch as its teacher,
    still without a trained model: a variance reduction, sdeflow's option, not a published CT setting.

    Call: ``loss(student, x0, *, generator=None, step=None, n=None, noise=None, **cond) -> (B,)``; ``step``
    defaults to the bound trainer's step. Draw order: n, then z.
    """

    def __init__(self, steps: Literal["cm", "ict"] | int = "cm", *, s0: int | None = None, s1: int | None = None,
                 mu0: float = 0.9, iters: int | None = None, eps: float = 0.002, T: float = 80.0, rho: float = 7.0,
                 distance: Distance | None = None, weighting: Weighting = "uniform",
                 target: Literal["ema", "student"] = "ema", target_name: str = "target",
                 sigma_sampling: str = "uniform", P_mean: float = -1.1, P_std: float = 2.0,
                 estimate: Literal["x0", "stf"] = "x0", solver: str = "euler") -> None:
        super().__init__(eps=eps, T=T, rho=rho, sigma_sampling=sigma_sampling, P_mean=P_mean, P_std=P_std,
                         weighting=weighting, distance=distance, target=target, target_name=target_name, iters=iters)
        self.estimate = _check_estimate(estimate)
        self.solver = _check_solver(solver)
        if isinstance(steps, str):
            if steps not in ("cm", "ict"):
                raise ValueError(f"steps must be 'cm', 'ict' or an int grid size >= 2; got {steps!r}.")
            d0, d1 = (2, 150) if steps == "cm" else (10, 1280)
            self.s0, self.s1 = (d0 if s0 is None else s0), (d1 if s1 is None else s1)
            cm_num_steps(0, 1, self.s0, self.s1)  # checks s0, s1
        elif isinstance(steps, bool) or not isinstance(steps, int) or steps < 2:
            raise ValueError(f"steps must be 'cm', 'ict' or an int grid size >= 2; got {steps!r}.")
        else:
            self.s0 = self.s1 = steps - 1
        if not (isinstance(mu0, (int, float)) and 0 < mu0 < 1):
            raise ValueError(f"mu0 must be in (0, 1); got {mu0!r}.")
        self.steps, self.mu0 = steps, float(mu0)

    def __repr__(self) -> str:
        return (f"ConsistencyTraining(steps={self.steps!r}, s0={self.s0}, s1={self.s1}, target={self.target!r}, "
                f"sigma_sampling={self.sigma_sampling!r}, weighting={self.weighting!r}, distance={self.distance!r}, "
                f"estimate={self.estimate!r}, solver={self.solver!r})")

    def num_points(self, step: int) -> int:
        """The grid size N at ``step`` (number of points, intervals + 1)."""
        if isinstance(self.steps, int):
            return self.steps
        fn = cm_num_steps if self.steps == "cm" else ict_num_steps
        return fn(min(step, self._total()), self._total(), self.s0, self.s1)

    def ema_beta(self, name: str, step: int) -> float | None:
        """μ(k) for the target copy with ``steps="cm"`` (None otherwise: the EMA spec's own rate)."""
        if name != self.target_name or self.target != "ema" or self.steps != "cm":
            return None
        return cm_ema_rate(min(step, self._total()), self._total(), self.s0, self.s1, self.mu0)

    def __call__(self, student: Callable[..., Tensor], x0: Tensor, *, generator: torch.Generator | int | None = None,
                 step: int | None = None, n: Tensor | int | None = None, noise: Tensor | None = None,
                 **cond: Any) -> Tensor:
        """Per-example CT loss (B,) in x0's dtype (see the class docstring)."""
        x0 = _check_x0(x0)
        gen = make_generator(generator, x0.device)
        grid = self.grid(self.num_points(self.current_step(step)))
        t_lo, t_hi = self._levels(grid, x0, n, gen)
        z = _noise(noise, x0, gen)
        x_hi = x0 + _col(t_hi, x0) * z
        x_lo = _lower_point(self.estimate, x0, z, x_hi, t_hi, t_lo, cond, self.solver)
        return self._pair_loss(student, x0, x_hi, t_hi, x_lo, t_lo, _weight(self.weighting, t_lo, t_hi, x0.dtype),
                               cond)


class EasyConsistencyTuning(_ConsistencyLoss):
    r"""Easy consistency tuning (ECT, Geng et al. 2024): continuous-time CT fine-tuned from a score model.

    Per example ``t = exp(P_mean + P_std·n)``, ``n ~ N(0, 1)``, clamped to (ε, T]; the second point
    ``r = t(1 − n(t)/q^s)``, ``n(t) = 1 + k·sigmoid(−b t)``, at stage ``s = ⌊step·stages/K⌋``
    (:func:`~sdeflow.consistency.schedules.ect_ratio`, clamped to r ≥ ε); the same noise z at both points, and

        loss = 1/(t − r) · d(f_student(x0 + t z, t), stopgrad f_target(x0 + r z, r)).

    Stage 0 is the denoising objective (r = ε, where f(x, ε) = x), so a student initialised from a score
    model's network (``consistency_recipe(mode="ect")`` does it) starts close to its optimum, and each
    stage halves Δt = t − r (q = 2) towards the continuous-time limit.

    ``estimate``: ``"x0"`` (default, ECT's ``x0 + r z``) or ``"stf"`` (an Euler step from ``x0 + t z`` to
    ``r`` with the batch-reference velocity of :func:`ode_velocity`), as in :class:`ConsistencyTraining`.

    Call: ``loss(student, x0, *, generator=None, step=None, sigma=None, noise=None, **cond) -> (B,)``.
    Draw order: t (one ``torch.randn(B)``, unless ``sigma`` is given), then z.
    """

    def __init__(self, *, P_mean: float = -1.1, P_std: float = 2.0, q: float = 2.0, k: float = 8.0, b: float = 1.0,
                 stages: int = 8, iters: int | None = None, eps: float = 0.002, T: float = 80.0,
                 distance: Distance | None = None, weighting: Weighting = "inverse_gap",
                 target: Literal["ema", "student"] = "student", target_name: str = "target",
                 estimate: Literal["x0", "stf"] = "x0") -> None:
        super().__init__(distance=distance, target=target, target_name=target_name, iters=iters)
        self.estimate = _check_estimate(estimate)
        self.sigma_sampler = LogNormalSigma(P_mean, P_std)
        self.eps, self.T = _check_range(eps, T)
        ect_ratio(torch.ones(1), 0, q=q, k=k, b=b, eps=self.eps)  # checks q, k, b
        if isinstance(stages, bool) or not isinstance(stages, int) or stages < 1:
            raise ValueError(f"stages must be an int >= 1; got {stages!r}.")
        self.q, self.k, self.b, self.stages = float(q), float(k), float(b), stages
        self.weighting = _check_weighting(weighting)

    def __repr__(self) -> str:
        return (f"EasyConsistencyTuning(P_mean={self.sigma_sampler.P_mean:.4g}, P_std={self.sigma_sampler.P_std:.4g}, "
                f"q={self.q:g}, k={self.k:g}, b={self.b:g}, stages={self.stages}, distance={self.distance!r})")

    def stage(self, step: int) -> int:
        """The stage s at ``step``."""
        return ect_stage(min(step, self._total()), self._total(), self.stages)

    def __call__(self, student: Callable[..., Tensor], x0: Tensor, *, generator: torch.Generator | int | None = None,
                 step: int | None = None, sigma: Tensor | None = None, noise: Tensor | None = None,
                 **cond: Any) -> Tensor:
        """Per-example ECT loss (B,) in x0's dtype (see the class docstring)."""
        x0 = _check_x0(x0)
        gen = make_generator(generator, x0.device)
        if sigma is None:
            t = self.sigma_sampler.sample(x0.shape[0], generator=gen, device=x0.device, dtype=torch.float64)
        else:
            t = torch.as_tensor(sigma, dtype=torch.float64, device=x0.device).expand(x0.shape[0])
        t = t.clamp(self.eps * (1 + 1e-3), self.T)
        r = ect_ratio(t, self.stage(self.current_step(step)), q=self.q, k=self.k, b=self.b, eps=self.eps)
        z = _noise(noise, x0, gen)
        x_hi = x0 + _col(t, x0) * z
        return self._pair_loss(student, x0, x_hi, t, _lower_point(self.estimate, x0, z, x_hi, t, r, cond), r,
                               _weight(self.weighting, r, t, x0.dtype), cond)


class ContinuousConsistency(_ConsistencyLoss):
    r"""Continuous-time consistency models (sCM, Lu & Song 2024): sCD with a ``teacher``, sCT without.

    Per example ``σ = exp(P_mean + P_std·n)`` (sCM's ``t = arctan(σ/σ_d)`` with ``σ_d tan t`` lognormal),
    ``x = x0 + σ z``, the PF-ODE velocity ``v = dx/dσ`` — ``(x − D_teacher(x, σ))/σ`` (sCD) or ``z`` (sCT,
    the one-sample estimate) — and the tangent of the target along it in TrigFlow time
    (``dσ/dt = (σ² + σ_d²)/σ_d``),

        T = dσ/dt · [∂_x f⁻ · v + ∂_σ f⁻] = dσ/dt · jvp(f⁻, (x, σ), (v, 1)),

    computed with ``torch.func.jvp`` through the target (the student under stop-gradient). sCM's two
    stabilisers: the network's own time-derivative term ``c_out ∂F/∂t`` enters multiplied by the warm-up
    factor ``r = min(1, k/warmup)`` (sCM's r also scales the ``d(cos t)/dt · x_t`` part of the TrigFlow
    derivative; here only the network's term), and sCM's tangent ``g = cos t · T`` is normalised,
    ``ĝ = g / (‖g‖ + c)`` (c = 0.1). The loss is sCM's network-space objective ``‖F_θ − F_θ⁻ − ĝ‖²``
    written for any student's output: with ``κ = σ_d sin t = σ σ_d / √(σ² + σ_d²)`` (``|c_out|`` of the
    TrigFlow form, so ``F_θ − F_θ⁻ = −(f_θ − f⁻)/κ`` there),

        loss = ‖f_student(x, σ) − stopgrad(f⁻(x, σ) − κ ĝ)‖² / κ²,

    equal to sCM's loss for a TrigFlow student and, at θ = θ⁻, of gradient ``(2/κ) ∇_θ f · ĝ``: the
    continuous-time limit of the discrete CD/CT gradient ``∇_θ f · (f(x_{n+1}) − f(x̂_n)) / Δt``, weighted by
    ``cos t / κ = 1/σ`` in TrigFlow time (docs/consistency.md). sCM's learned adaptive weighting
    ``e^{w(t)}/D · loss − w(t)`` is not implemented (a ``weighting(σ) -> (B,)`` multiplies the loss).

    The student must be a :class:`sdeflow.consistency.ConsistencyFunction` with
    ``parameterization="trigflow"`` (``require_trigflow=False`` accepts any student with ``coefficients``)
    and must support ``torch.func.jvp`` (no in-place ops on inputs).

    ``estimate`` (sCT only): the velocity ``z`` (``"x0"``, the published sCT) or the batch-reference
    velocity of :func:`ode_velocity` (``"stf"``).

    Call: ``loss(student, x0, *, generator=None, step=None, sigma=None, noise=None, **cond) -> (B,)``.
    Draw order: σ (one ``torch.randn(B)``), then z.
    """

    def __init__(self, teacher: Callable[..., Tensor] | None = None, *, sigma_data: float = 0.5,
                 P_mean: float = -1.0, P_std: float = 1.4, tangent_c: float = 0.1, warmup: int = 10_000,
                 eps: float = 0.002, T: float = 80.0, weighting: Callable[[Tensor], Tensor] | None = None,
                 require_trigflow: bool = True, estimate: Literal["x0", "stf"] = "x0") -> None:
        super().__init__(distance=None, target="student", target_name="target", iters=None)
        self.estimate = _check_estimate(estimate)
        if teacher is not None and estimate != "x0":
            raise ValueError("estimate='stf' replaces the teacher of sCT (teacher=None); with a teacher (sCD) the "
                             "velocity is the teacher's: leave estimate='x0'.")
        if teacher is not None and not callable(teacher):
            raise TypeError(f"teacher must be None (sCT) or a denoiser D(x, sigma, **cond); "
                            f"got {type(teacher).__name__}.")
        if isinstance(teacher, nn.Module):
            teacher.requires_grad_(False)
        self.teacher = teacher
        self.sigma_sampler = LogNormalSigma(P_mean, P_std)
        if not (isinstance(sigma_data, (int, float)) and math.isfinite(sigma_data) and sigma_data > 0):
            raise ValueError(f"sigma_data must be a finite number > 0; got {sigma_data!r}.")
        if not (isinstance(tangent_c, (int, float)) and tangent_c >= 0):
            raise ValueError(f"tangent_c must be >= 0 (0: no normalisation); got {tangent_c!r}.")
        if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
            raise ValueError(f"warmup must be an int >= 0 (steps of tangent warm-up); got {warmup!r}.")
        if weighting is not None and not callable(weighting):
            raise TypeError("weighting must be None or a callable weighting(sigma) -> (B,).")
        self.sigma_data, self.tangent_c, self.warmup = float(sigma_data), float(tangent_c), warmup
        self.eps, self.T = _check_range(eps, T)
        self.weighting_fn, self.require_trigflow = weighting, bool(require_trigflow)

    def __repr__(self) -> str:
        kind = "sCD" if self.teacher is not None else "sCT"
        return (f"ContinuousConsistency({kind}, P_mean={self.sigma_sampler.P_mean:.4g}, "
                f"P_std={self.sigma_sampler.P_std:.4g}, tangent_c={self.tangent_c:g}, warmup={self.warmup})")

    def _coefficients(self, student: Any) -> Callable[[Tensor], tuple[Tensor, Tensor]]:
        base = getattr(student, "module", student)  # DDP
        base = getattr(base, "_orig_mod", base)  # torch.compile
        if self.require_trigflow and getattr(base, "parameterization", None) != "trigflow":
            raise ValueError("sCM needs a TrigFlow student: build it as ConsistencyFunction(net, sigma_data, "
                             "parameterization='trigflow') (or pass require_trigflow=False).")
        coeff = getattr(base, "coefficients", None)
        if not callable(coeff):
            raise TypeError(f"the student must expose coefficients(sigma) -> (c_skip, c_out, ...) (a "
                            f"ConsistencyFunction); got {type(base).__name__}.")

        def fn(s: Tensor) -> tuple[Tensor, Tensor]:
            out = coeff(s)
            return out[0], out[1]

        return fn

    def __call__(self, student: Callable[..., Tensor], x0: Tensor, *, generator: torch.Generator | int | None = None,
                 step: int | None = None, sigma: Tensor | None = None, noise: Tensor | None = None,
                 **cond: Any) -> Tensor:
        """Per-example sCM loss (B,) in x0's dtype (see the class docstring)."""
        x0 = _check_x0(x0)
        coeff = self._coefficients(student)
        gen = make_generator(generator, x0.device)
        if sigma is None:
            s = self.sigma_sampler.sample(x0.shape[0], generator=gen, device=x0.device, dtype=x0.dtype)
        else:
            s = torch.as_tensor(sigma, dtype=x0.dtype, device=x0.device).expand(x0.shape[0])
        s = s.clamp(2 * self.eps, self.T)  # c_out(ε) = 0: keep the network term's split well defined
        z = _noise(noise, x0, gen)
        x = x0 + _col(s, x0) * z
        with torch.no_grad():
            if self.teacher is not None:
                v = (x - teacher_step_denoise(self.teacher, x, s, cond)) / _col(s, x)
            else:
                v = ode_velocity(self.estimate, x, s, x0, z, cond)
        r = linear_warmup(self.current_step(step), self.warmup)

        def f_target(xx: Tensor, ss: Tensor) -> Tensor:
            return student(xx, ss, **cond)

        with torch.no_grad():
            f_val, df = torch.func.jvp(f_target, (x, s), (v, torch.ones_like(s)))
            if r < 1.0:
                (c_skip, c_out), (dc_skip, dc_out) = torch.func.jvp(coeff, (s,), (torch.ones_like(s),))
                cs, co, dcs, dco = (_col(c, x) for c in (c_skip, c_out, dc_skip, dc_out))
                net = (f_val - cs * x) / co  # F, the network's output
                # df = dcs·x + cs·v + dco·F + co·dF; the warm-up scales the network-derivative term co·dF
                network_term = df - dcs * x - cs * v - dco * net
                df = df - (1.0 - r) * network_term
            sd2 = self.sigma_data**2
            root = torch.sqrt(s * s + sd2)
            # sCM's g = cos t · df/dt, with df/dt = dσ/dt · df/dσ = (σ² + σ_d²)/σ_d · df/dσ and cos t = σ_d/√(σ² + σ_d²)
            g = _col(root, x) * df
            if self.tangent_c > 0:
                norm = g.reshape(x.shape[0], -1).norm(dim=1)
                g = g / _col(norm + self.tangent_c, x)
            kappa = s * self.sigma_data / root  # σ_d sin t
            tgt = (f_val - _col(kappa, x) * g).detach()
        pred = _output(student(x, s, **cond), x0, "student(x, sigma)")
        w = torch.ones_like(s) if self.weighting_fn is None else torch.as_tensor(self.weighting_fn(s)).to(x0.dtype)
        return w * (pred - tgt).reshape(x.shape[0], -1).square().sum(-1) / (kappa * kappa)


def teacher_step_denoise(teacher: Callable[..., Tensor], x: Tensor, sigma: Tensor, cond: dict[str, Any]) -> Tensor:
    """The teacher's denoised estimate ``D(x, σ, **cond)`` in x's shape and dtype (no gradient)."""
    with torch.no_grad():
        out = teacher(x, sigma, **cond)
    if not isinstance(out, Tensor) or out.shape != x.shape:
        raise ValueError(f"teacher(x, sigma) must return a tensor of x's shape {tuple(x.shape)}.")
    return out.to(x.dtype)
