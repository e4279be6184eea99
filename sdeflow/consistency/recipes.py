"""Ready consistency-model training setups for the built-in 2-D data: student, loss, teacher, data, config.

:func:`consistency_recipe` builds one of five modes — ``cd`` (distillation), ``ct``, ``ict``, ``ect``,
``scm`` — from the presets of :mod:`sdeflow.consistency.presets` adapted to toy data (σ_data estimated
from the data, lognormal σ distributions shifted by ``ln(σ_data/0.5)`` as the score recipe does, short
runs), and :func:`evaluate_consistency` measures a trained consistency function the way the issue's
benchmark does: 1- and 2-step ΔNLL under the exact mixture with standard errors, the pathwise error of
the one-step map against the exact consistency function f* from the same ``x_T``, and the
self-consistency error. ``sdeflow train consistency`` and ``benchmarks/bench_consistency.py`` use both.

The three roles (docs/consistency.md): the recipe's ``model`` is the ``student``; the ``target`` is the
trainer's EMA copy named ``"target"`` (CD, CT) or the student itself (iCT, ECT, sCM); the ``teacher``
(``recipe.teacher``) is the exact mixture denoiser (``teacher="exact"``), a score model loaded from a
checkpoint path, or a module, and None for CT/iCT/sCT.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..generative.losses import PseudoHuber, SquaredL2
from ..generative.mixture import GaussianMixture
from ..generative.networks import MLPNet
from ..generative.precond import estimate_sigma_data
from ..generative.recipes import _check_data, toy_mixture, toy_sampler
from ..generative.training import EMA, TrainConfig
from .function import ConsistencyFunction
from .losses import (
    ConsistencyDistillation,
    ConsistencyTraining,
    ContinuousConsistency,
    EasyConsistencyTuning,
    _check_estimate,
)
from .presets import cm2023, ect2024, ict2023, scm2024

__all__ = ["CONSISTENCY_MODES", "ConsistencyRecipe", "consistency_recipe", "evaluate_consistency",
           "format_consistency_evaluation", "load_teacher", "default_taus", "self_consistency_callback"]

CONSISTENCY_MODES: tuple[str, ...] = ("cd", "ct", "ict", "ect", "scm")
_EPS, _T = 0.002, 80.0


@dataclass
class ConsistencyRecipe:
    """Everything :class:`sdeflow.Trainer` needs for a consistency run, and the roles by name.

    Attributes:
        model: the ``student`` (a :class:`ConsistencyFunction` around an :class:`MLPNet`).
        loss: the consistency loss (binds its ``target`` from the trainer's EMA copies).
        data: ``sample(n, generator)``.
        config: the training config (EMA copies ``"target"`` where the target is an EMA, and ``"ema"``,
            the copy that is evaluated and sampled).
        teacher: the frozen denoiser (distillation) or None.
        metadata: facts saved with the checkpoints.
        mixture: the exact mixture of the data set (gmm8, ring) or None.
    """

    model: ConsistencyFunction
    loss: Callable[..., Tensor]
    data: Callable[[int, torch.Generator], Tensor]
    config: TrainConfig
    teacher: Callable[..., Tensor] | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    mixture: GaussianMixture | None = None


def load_teacher(teacher: object, data: str) -> tuple[Callable[..., Tensor] | None, str]:
    """The teacher denoiser and its description: ``"exact"`` (the data's mixture), a checkpoint path, a module, None."""
    if teacher is None or teacher == "none":
        return None, "none"
    if teacher == "exact":
        mixture = toy_mixture(data)
        if mixture is None:
            raise ValueError(f"teacher='exact' needs a Gaussian-mixture data set (gmm8, ring); {data!r} has no exact "
                             f"denoiser: pass the path of a score model trained by `sdeflow train score`.")
        return mixture.as_denoiser(), "exact"
    if isinstance(teacher, (str, Path)):
        from ..generative.checkpoint import load_model

        model = load_model(teacher)
        if isinstance(model, ConsistencyFunction):
            raise ValueError(f"teacher {str(teacher)!r} is a consistency model; a teacher is a score model (a "
                             f"denoiser), e.g. from `sdeflow train score`.")
        return model.eval().requires_grad_(False), str(teacher)
    if callable(teacher):
        if isinstance(teacher, nn.Module):
            teacher.eval().requires_grad_(False)
        return teacher, type(teacher).__name__  # type: ignore[return-value]
    raise TypeError(f"teacher must be 'exact', a checkpoint path, a denoiser module/callable or None; got "
                    f"{type(teacher).__name__}.")


def consistency_recipe(
    mode: str = "cd",
    data: str = "gmm8",
    teacher: object = "default",
    *,
    iters: int = 20_000,
    batch_size: int = 512,
    lr: float | None = None,
    seed: int = 0,
    device: str = "cpu",
    hidden: int = 128,
    depth: int = 3,
    emb_dim: int = 64,
    solver: str = "heun",
    n_points: int | None = None,
    target_beta: float | None = None,
    distance: str | None = None,
    eval_beta: float = 0.99,
    time_budget: float | None = None,
    progress: bool = False,
    checkpoint_every: int = 0,
    network: Mapping[str, Any] | None = None,
    estimate: str = "x0",
) -> ConsistencyRecipe:
    """The consistency-model setup ``mode`` for toy data set ``data``.

    Args:
        mode: ``"cd"`` (distillation: :func:`presets.cm2023` CD with the teacher step ``solver``),
            ``"ct"`` (:func:`presets.cm2023` CT: N(k), μ(k)), ``"ict"`` (:func:`presets.ict2023`),
            ``"ect"`` (:func:`presets.ect2024`: the student starts from the teacher's network, which must be
            a trained ``EDMPrecond``), ``"scm"`` (:func:`presets.scm2024`: sCD with a teacher, sCT with
            ``teacher=None``; a TrigFlow student).
        data: a built-in data set (``gmm8``, ``ring``, ``moons``, ``swissroll``, ``checkerboard``).
        teacher: ``"exact"`` (the data's exact mixture denoiser), a checkpoint path (a score model, via
            :func:`sdeflow.load_model`), a denoiser module, or None. ``"default"``: ``"exact"`` for cd/scm,
            None for ct/ict; ect needs a trained score model.
        iters, batch_size, lr, seed, device, time_budget, progress, checkpoint_every: the run. Adam with
            2% warm-up and a cosine decay to 1% of ``lr``, gradient clipping at 1. ``lr`` None: 4e-3 for
            cd, 2e-4 for scm, 3e-4 for ect, 1e-3 for ct and ict (at 4e-3 CT and iCT did not train in 1500-step probes:
            1-step ΔNLL 154 and 186, the one-step map stuck near the origin; iCT at 1e-3: 3.2. sCD with the
            exact teacher, 8000 steps: lr 5e-5, 2e-4, 5e-4, 1e-3 gave 4.1, 2.0, 2.7 and 186 — at 1e-3 the
            one-step map collapses to the data mean after about 5000 steps. ECT from a 6000-step score model,
            5000 steps: lr 1e-4, 3e-4, 1e-3 gave 3.2, 2.2 and 12.3). CD on 8 gaussians (exact Heun
            teacher, N = 18, 3000 steps of batch 512, MLP 3×128, shared machine): lr 2e-3, 4e-3, 8e-3 gave
            1-step ΔNLL 0.62, 0.45, 0.42 (pathwise 0.153, 0.131, 0.130); 8000 steps at 4e-3: 0.25 ± 0.02,
            pathwise 0.093.
        hidden, depth, emb_dim, network: the :class:`MLPNet` (``network`` overrides its arguments). Width
            128 (not the reference's 256): about twice the steps per second on 2-D data.
        solver, n_points: the CD teacher step (also the step of ct/ict with ``estimate="stf"``; with "x0" every
            step gives x0 + t z) and the grid size (for ct/ict: the curriculum's final size, s₁ = n_points − 1;
            the presets' s₁ = 150 and 1280 are sized for 800k and 400k iterations: in 1500-step runs CT
            with s₁ = 150 left the one-step map at the data mean, 1-step ΔNLL ≈ 160).
            Default: the preset's N = 18 for CD; on 8 gaussians
            N = 10 and N = 25 gave 1-step ΔNLL 0.88 and 0.58 against 0.62 for N = 18 at lr 2e-3 / 4e-3).
        target_beta: the target EMA rate μ. cd: default the preset's 0.95. ict/ect: None (default) keeps the
            presets' θ⁻ = stopgrad(θ) (``target="student"``); a number gives them an EMA target of that rate
            (on 8 gaussians, 5000 steps, STF estimate: the student target left the one-step map at the data
            mean, 1-step ΔNLL 167, against 1.25 with μ = 0.95). ct follows μ(k); scm has no target copy.
        distance: ``"l2"`` (squared L2) or ``"huber"`` (pseudo-Huber with c = 0.00054·√d, elementwise=False);
            default: the mode's preset (L2 for cd/ct, pseudo-Huber for ict/ect; sCM's loss is L2).
        estimate: the teacher-free velocity estimate of ct, ict, ect and sCT (:data:`ESTIMATES`): ``"x0"``
            (default, the published losses' one-sample estimate) or ``"stf"`` (the batch as a reference set,
            :func:`sdeflow.consistency.losses.ode_velocity`). On 8 gaussians (5000 steps, N = 18, EMA target
            0.95, lr 4e-3) ``"stf"`` took the 1-step ΔNLL from 24.8 to 2.0 (docs/consistency.md).
        eval_beta: the rate of the EMA copy ``"ema"`` that is evaluated and sampled (0.99: in the 3000-step
            runs above a 0.999 copy was 5–15% worse in ΔNLL than the student itself, still lagging).
    """
    if mode not in CONSISTENCY_MODES:
        raise ValueError(f"mode must be one of {', '.join(CONSISTENCY_MODES)}; got {mode!r}.")
    name = _check_data(data)
    if teacher == "default":
        teacher = "exact" if mode in ("cd", "scm") else None
    if mode in ("ct", "ict") and teacher is not None:
        raise ValueError(f"mode {mode!r} trains without a teacher; pass teacher=None (or use mode='cd').")
    _check_estimate(estimate)
    if estimate != "x0" and (mode == "cd" or (mode == "scm" and teacher is not None)):
        raise ValueError(f"estimate={estimate!r} replaces the teacher of the teacher-free modes (ct, ict, ect, "
                         f"scm with teacher=None); mode {mode!r} with a teacher uses the teacher's velocity.")
    if target_beta is not None and not (isinstance(target_beta, (int, float)) and 0 <= target_beta < 1):
        raise ValueError(f"target_beta must be None or a rate in [0, 1); got {target_beta!r}.")
    if target_beta is not None and mode in ("ct", "scm"):
        raise ValueError(f"target_beta does not apply to mode {mode!r} (ct's target follows the CM paper's μ(k); "
                         f"sCM has no target copy); leave it None.")
    if mode == "cd" and teacher is None:
        raise ValueError("mode 'cd' needs a teacher: 'exact' (mixture data) or a score-model checkpoint path.")
    teacher_fn, teacher_desc = load_teacher(teacher, name)
    sample = toy_sampler(name)
    reference = sample(100_000, torch.Generator().manual_seed(10_000 + seed))
    sigma_data = estimate_sigma_data(reference)
    shift = math.log(sigma_data / 0.5)
    d = int(reference[0].numel())
    if distance not in (None, "l2", "huber"):
        raise ValueError(f"distance must be None, 'l2' or 'huber'; got {distance!r}.")

    def dist(default: str):
        kind = distance or default
        return SquaredL2() if kind == "l2" else PseudoHuber(ict2023().huber_c(d))

    if lr is None:
        lr = {"cd": 4e-3, "scm": 2e-4, "ect": 3e-4}.get(mode, 1e-3)
    net_args = {"hidden": hidden, "depth": depth, "emb_dim": emb_dim, "seed": seed, **dict(network or {})}
    parameterization = "trigflow" if mode == "scm" else "cm"
    if mode == "ect":
        inner = getattr(teacher_fn, "net", None)
        if not isinstance(inner, nn.Module):
            raise ValueError("mode 'ect' fine-tunes a trained score model: pass teacher=PATH of an EDM score model "
                             "(`sdeflow train score --sde edm`) or an EDMPrecond; its network initialises the student.")
        net = copy.deepcopy(inner).requires_grad_(True).train()
        sigma_data = float(getattr(teacher_fn, "sigma_data", sigma_data))
    else:
        net = MLPNet(d, **net_args)
    student = ConsistencyFunction(net, sigma_data=sigma_data, eps=_EPS, T=_T, parameterization=parameterization)
    emas = [EMA("ema", beta=eval_beta, warmup=1.0)]
    meta: dict[str, Any] = {"task": "consistency", "mode": mode, "data": name, "sigma_data": sigma_data,
                            "teacher": teacher_desc}
    loss: Callable[..., Tensor]
    free_target = "student"  # ict/ect: the presets' stopgrad(θ), or an EMA target when target_beta is given
    if mode in ("ict", "ect") and target_beta is not None:
        free_target = "ema"
        emas.append(EMA("target", beta=float(target_beta)))
    if mode == "cd":
        p = cm2023()
        n = p.cd_n_points if n_points is None else n_points
        mu = p.cd_target_ema if target_beta is None else target_beta
        loss = ConsistencyDistillation(teacher_fn, solver=solver, n_points=n, eps=_EPS, T=_T, rho=p.rho,
                                       distance=dist("l2"), weighting="uniform", target="ema",
                                       teacher_dtype=torch.float64 if teacher_desc == "exact" else None)
        emas.append(EMA("target", beta=mu))
        meta["loss"] = {"kind": "cd", "solver": solver, "n_points": n, "target_beta": mu,
                        "distance": distance or "l2"}
    elif mode == "ct":
        p = cm2023()
        s1 = p.ct_s1 if n_points is None else max(p.ct_s0, n_points - 1)
        loss = ConsistencyTraining("cm", s0=p.ct_s0, s1=s1, mu0=p.ct_mu0, eps=_EPS, T=_T, rho=p.rho,
                                   distance=dist("l2"), target="ema", estimate=estimate,  # type: ignore[arg-type]
                                   solver=solver)
        emas.append(EMA("target", beta=p.ct_mu0))  # the rate is μ(k) from loss.ema_beta
        meta["loss"] = {"kind": "ct", "s0": p.ct_s0, "s1": s1, "mu0": p.ct_mu0, "estimate": estimate,
                        "solver": solver if estimate == "stf" else None}
    elif mode == "ict":
        p = ict2023()
        s1 = p.s1 if n_points is None else max(p.s0, n_points - 1)
        loss = ConsistencyTraining("ict", s0=p.s0, s1=s1, eps=_EPS, T=_T, rho=p.rho,
                                   distance=(PseudoHuber(p.huber_c(d), elementwise=p.huber_elementwise)
                                             if distance in (None, "huber") else SquaredL2()),
                                   weighting="inverse_gap", target=free_target, sigma_sampling="lognormal",
                                   P_mean=p.P_mean + shift, P_std=p.P_std, estimate=estimate,  # type: ignore[arg-type]
                                   solver=solver)
        meta["loss"] = {"kind": "ict", "s0": p.s0, "s1": s1, "c": p.huber_c(d), "P_mean": p.P_mean + shift,
                        "estimate": estimate, "target_beta": target_beta,
                        "solver": solver if estimate == "stf" else None}
    elif mode == "ect":
        p = ect2024()
        loss = EasyConsistencyTuning(P_mean=p.P_mean + shift, P_std=p.P_std, q=p.q, k=p.k, b=p.b, stages=p.stages,
                                     eps=_EPS, T=_T, distance=dist("huber"), target=free_target,
                                     estimate=estimate)  # type: ignore[arg-type]
        meta["loss"] = {"kind": "ect", "q": p.q, "k": p.k, "b": p.b, "stages": p.stages, "P_mean": p.P_mean + shift,
                        "estimate": estimate, "target_beta": target_beta}
    else:
        p = scm2024()
        loss = ContinuousConsistency(teacher_fn, sigma_data=sigma_data, P_mean=p.P_mean + shift, P_std=p.P_std,
                                     tangent_c=p.tangent_c, warmup=max(1, int(p.warmup_fraction * iters)),
                                     eps=_EPS, T=_T, estimate=estimate)  # type: ignore[arg-type]
        meta["loss"] = {"kind": "scd" if teacher_fn is not None else "sct", "P_mean": p.P_mean + shift,
                        "tangent_c": p.tangent_c, "estimate": estimate}
    config = TrainConfig(iters=iters, batch_size=batch_size, lr=lr, warmup=max(1, iters // 50), decay="cosine",
                         min_lr_ratio=0.01, grad_clip=1.0, ema=tuple(emas), seed=seed, device=device,
                         progress=progress, time_budget=time_budget, log_every=max(1, min(500, iters // 20)),
                         checkpoint_every=checkpoint_every)
    return ConsistencyRecipe(model=student, loss=loss, data=sample, config=config, teacher=teacher_fn,
                             metadata=meta, mixture=toy_mixture(name))


def self_consistency_callback(mixture: GaussianMixture, *, n: int = 256, weights: str = "ema",
                              seed: int = 0) -> Callable[[Any, int], dict]:
    """A :class:`sdeflow.Trainer` callback logging :func:`sdeflow.consistency.self_consistency_error` of a copy.

    ``fn(trainer, step) -> {"self_consistency": mean error vs f* over 18 levels, "one_step_error": at T}``
    for the EMA copy ``weights`` (or the model, ``weights="model"``); the exact trajectories are cached, so a
    call costs 18 batched evaluations of ``n`` points. The CM paper notes its losses do not track progress;
    this does (docs/consistency.md).
    """
    from .exact import self_consistency_error

    def callback(trainer: Any, step: int) -> dict:
        model = trainer.model if weights == "model" else trainer.ema[weights]
        res = self_consistency_error(model, mixture=mixture, n=n, eps=_EPS, T=_T, generator=seed)
        return {"self_consistency": res.mean_error, "one_step_error": res.one_step_error}

    return callback


def _samples(model: Callable[..., Tensor], x_T: Tensor, taus: list[float], seed: int) -> Tensor:
    """``sample_consistency`` from ``x_T`` in the model's dtype; float64 result."""
    from ..generative.evaluation import model_device, model_dtype
    from .sampling import sample_consistency

    dtype = model_dtype(model, torch.float32)
    res = sample_consistency(model, x_T.to(device=model_device(model), dtype=dtype), taus, generator=seed + 1,
                             eps=_EPS)
    return res.x.to(device="cpu", dtype=torch.float64)


def default_taus(model: Callable[..., Tensor], data: str, *, seed: int = 0, n: int = 4096) -> list[float]:
    """``[T, τ]`` for 2-step sampling: :func:`sdeflow.consistency.search_taus` on ΔNLL (mixture data) or on the
    energy distance to held-out data (the others), on a batch of its own seed (not the evaluation's)."""
    from .sampling import search_taus

    name = _check_data(data)
    mixture = toy_mixture(name)
    if mixture is not None:
        return list(search_taus(model, mixture, 2, n=n, T=_T, eps=_EPS, generator=10_000 + seed).taus)
    from ..verify.stats import energy_test

    ref = toy_sampler(name, torch.float64)(1000, torch.Generator().manual_seed(30_000 + seed))

    def metric(x: Tensor) -> float:
        return energy_test(x.to(torch.float64), ref, n_permutations=2, generator=0, max_points=1000)[0]

    return list(search_taus(model, metric, 2, n=2000, T=_T, eps=_EPS, generator=10_000 + seed,
                            event_shape=(2,), iterations=8).taus)


def evaluate_consistency(
    model: Callable[..., Tensor],
    data: str,
    *,
    n_samples: int = 20_000,
    seed: int = 0,
    taus: list[float] | None = None,
    pathwise_points: int = 4096,
    self_consistency: bool = True,
) -> dict[str, Any]:
    """The evaluation table of a consistency function ``model(x, σ)`` trained on toy data ``data`` (a dict).

    ``x_T = 80·z`` from ``torch.Generator().manual_seed(seed)`` in float64 (the convention of
    ``benchmarks/bench_samplers.py``); sampling by :func:`sdeflow.consistency.sample_consistency`.
    Mixtures: 1- and 2-step ΔNLL under the exact density with standard errors; ``pathwise``: RMS of the
    one-step map ``f(x_T, T)`` against the exact ``f*(x_T, T)`` (:func:`exact_consistency_function`) on the
    first ``pathwise_points`` starting points; the self-consistency error by σ level
    (:func:`sdeflow.consistency.self_consistency_error`, exact trajectories). Other data: energy distances
    to held-out data with permutation p-values, 1- and 2-step. ``taus`` (``[T, τ]``) default to
    :func:`default_taus`.
    """
    from ..generative.metrics import mixture_sample_quality, pathwise_rms

    name = _check_data(data)
    mixture = toy_mixture(name)
    taus = list(taus) if taus is not None else default_taus(model, name, seed=seed)
    x_T = _T * torch.randn(n_samples, 2, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    x1 = _samples(model, x_T, [_T], seed)
    x2 = _samples(model, x_T, taus, seed)
    out: dict[str, Any] = {"data": name, "n_samples": n_samples, "taus": taus}
    if mixture is not None:
        from .exact import exact_consistency_function, self_consistency_error

        q1, q2 = mixture_sample_quality(mixture, x1), mixture_sample_quality(mixture, x2)
        out.update(delta_nll_1=q1.delta_nll, delta_nll_1_se=q1.delta_nll_se, delta_nll_2=q2.delta_nll,
                   delta_nll_2_se=q2.delta_nll_se)
        m = min(pathwise_points, n_samples)
        f_star = exact_consistency_function(mixture, eps=_EPS)
        out["pathwise"] = pathwise_rms(x1[:m], f_star(x_T[:m], torch.full((m,), _T, dtype=torch.float64)))
        if self_consistency:
            sc = self_consistency_error(model, mixture=mixture, n=512, eps=_EPS, T=_T, generator=seed)
            out["self_consistency"] = sc.as_dict()
        return out
    from ..verify.stats import energy_test

    held_out = toy_sampler(name, torch.float64)(n_samples, torch.Generator().manual_seed(20_000 + seed))
    for k, xs in (("1", x1), ("2", x2)):
        stat, p = energy_test(xs, held_out, generator=seed, max_points=2000)
        out[f"energy_{k}"], out[f"energy_{k}_p"] = stat, p
    return out


def format_consistency_evaluation(ev: Mapping[str, Any]) -> str:
    """A text table of :func:`evaluate_consistency`'s result."""
    taus = ", ".join(f"{t:.4g}" for t in ev["taus"])
    lines = [f"evaluation on {ev['data']} ({ev['n_samples']} samples; 2-step τ = [{taus}])"]
    if "delta_nll_1" in ev:
        lines.append(f"  ΔNLL 1-step            {ev['delta_nll_1']:.4f} ± {ev['delta_nll_1_se']:.4f} nats")
        lines.append(f"  ΔNLL 2-step            {ev['delta_nll_2']:.4f} ± {ev['delta_nll_2_se']:.4f} nats")
        lines.append(f"  pathwise RMS to f*     {ev['pathwise']:.4f}  (one-step map, same x_T)")
        sc = ev.get("self_consistency")
        if sc:
            lines.append(f"  self-consistency error vs f*: mean over levels {sc['mean_error']:.4f}, "
                         f"at T {sc['one_step_error']:.4f} ({sc['n']} exact trajectories)")
            lines.append("    sigma      to end     adjacent   vs f*")
            for r in sc["rows"]:
                adj = "-" if r["adjacent"] is None else f"{r['adjacent']:.4g}"
                ex = "-" if r["exact"] is None else f"{r['exact']:.4g}"
                lines.append(f"    {r['sigma']:<10.4g} {r['to_end']:<10.4g} {adj:<10} {ex}")
    else:
        for k in ("1", "2"):
            lines.append(f"  energy distance {k}-step   {ev[f'energy_{k}']:.5f}  "
                         f"(permutation p = {ev[f'energy_{k}_p']:.3g})")
    return "\n".join(lines)
