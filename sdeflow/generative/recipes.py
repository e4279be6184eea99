"""Ready training setups for the built-in data: the network, preconditioning, loss, data and config together.

``sdeflow train score`` and ``benchmarks/bench_training.py`` use :func:`score_recipe`; a user can take
the pieces it returns and change any of them. Data names: ``gmm8`` (8 gaussians, radius 4, std 0.2),
``ring`` (16 gaussians on a ring), ``moons``, ``swissroll``, ``checkerboard`` (all 2-D). The first two
are Gaussian mixtures, so a trained model is judged against their exact denoiser
(:mod:`sdeflow.generative.evaluation`); the others by an energy-distance test against held-out data.

Defaults follow the data, not image recipes: σ_data is estimated from the data, and the lognormal σ
distribution of the EDM loss is shifted by ``ln(σ_data / 0.5)`` (EDM's ``P_mean = −1.2`` is tuned for
images with σ_data = 0.5; see docs/training.md for the measured effect).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from .losses import DenoisingScoreMatching, EDMLoss
from .mixture import GaussianMixture
from .networks import MLPNet
from .precond import EDMPrecond, SDEPrecond, estimate_sigma_data
from .toy_data import TOY_DATA, eight_gaussians, ring_of_gaussians
from .training import EMA, TrainConfig

__all__ = ["TOY_DATASETS", "Recipe", "score_recipe", "toy_sampler", "toy_mixture", "evaluate_toy_model",
           "format_evaluation", "SCORE_SDES"]

#: CLI names of the built-in 2-D data sets -> keys of :data:`sdeflow.TOY_DATA`.
TOY_DATASETS: dict[str, str] = {"gmm8": "eight_gaussians", "ring": "ring", "moons": "two_moons",
                                "swissroll": "swiss_roll", "checkerboard": "checkerboard"}
_MIXTURES: dict[str, Callable[[], GaussianMixture]] = {"gmm8": eight_gaussians, "ring": ring_of_gaussians}
SCORE_SDES: tuple[str, ...] = ("edm", "vp", "subvp", "ve")


def _check_data(name: object) -> str:
    if name not in TOY_DATASETS:
        raise ValueError(f"data must be one of {', '.join(TOY_DATASETS)}; got {name!r}.")
    return str(name)


def toy_mixture(name: str) -> GaussianMixture | None:
    """The exact mixture behind data set ``name`` (``gmm8``, ``ring``), or None for the others."""
    make = _MIXTURES.get(_check_data(name))
    return make() if make is not None else None


def toy_sampler(name: str, dtype: torch.dtype = torch.float32) -> Callable[[int, torch.Generator], Tensor]:
    """``sample(n, generator) -> (n, 2)``: fresh draws of data set ``name`` (the trainer's data function)."""
    key = TOY_DATASETS[_check_data(name)]
    fn = TOY_DATA[key]

    def sample(n: int, generator: torch.Generator | None = None) -> Tensor:
        return fn(n, generator=generator, dtype=dtype)

    return sample


@dataclass
class Recipe:
    """Everything :class:`sdeflow.Trainer` needs, built for one data set and SDE.

    Attributes:
        model: the trainable denoiser (``EDMPrecond`` or ``SDEPrecond`` around an ``MLPNet``).
        loss: the per-example loss.
        data: ``sample(n, generator)``.
        config: the training config.
        metadata: facts saved with the checkpoints (data set, SDE, σ_data, loss settings).
        mixture: the exact mixture when the data set is one (for evaluation), else None.
    """

    model: nn.Module
    loss: Callable[..., Tensor]
    data: Callable[[int, torch.Generator], Tensor]
    config: TrainConfig
    metadata: dict[str, Any] = field(default_factory=dict)
    mixture: GaussianMixture | None = None


def score_recipe(
    data: str = "gmm8",
    sde: str = "edm",
    *,
    iters: int = 20_000,
    batch_size: int = 1024,
    lr: float = 2e-3,
    seed: int = 0,
    device: str = "cpu",
    hidden: int = 256,
    depth: int = 2,
    emb_dim: int = 64,
    sigma_scaled: bool = True,
    P_mean: float = -1.2,
    P_std: float = 1.2,
    ema_beta: float = 0.999,
    target: str = "stf",
    time_budget: float | None = None,
    progress: bool = False,
    checkpoint_every: int = 0,
    network: Mapping[str, Any] | None = None,
) -> Recipe:
    """The score-model setup for toy data set ``data`` on the diffusion SDE ``sde``.

    ``sde="edm"``: ``EDMPrecond(MLPNet)`` with the EDM loss; σ_data is estimated from 100,000 data
    draws, and with ``sigma_scaled`` the lognormal mean is ``P_mean + ln(σ_data/0.5)``. ``target="stf"``
    (default) regresses on the stable target field (:func:`sdeflow.generative.losses.stable_target`:
    the posterior mean over the batch), which halved the denoiser error at σ = 1–5 against the plain
    target (``"x0"``) at the same 3,000 steps on 8 gaussians (Heun-35 ΔNLL 0.093 vs 0.108, pathwise
    0.134 vs 0.183; see benchmarks/RESULTS.md, "bench_training").
    ``"vp"``, ``"subvp"``, ``"ve"``: ``SDEPrecond(MLPNet, sde, prediction="eps")`` trained by denoising
    score matching with the ε-loss (``weighting="simple"``). Adam with ``lr``, 2% warm-up and a cosine
    decay to 1%, gradient clipping at 1, an EMA copy with rate ``ema_beta``. The network is seeded by
    ``seed`` (so the same seed gives the same weights); ``network`` overrides :class:`MLPNet` arguments.
    """
    name = _check_data(data)
    if sde not in SCORE_SDES:
        raise ValueError(f"sde must be one of {', '.join(SCORE_SDES)}; got {sde!r}.")
    sample = toy_sampler(name)
    reference = sample(100_000, torch.Generator().manual_seed(10_000 + seed))
    sigma_data = estimate_sigma_data(reference)
    net_args = {"hidden": hidden, "depth": depth, "emb_dim": emb_dim, "seed": seed, **dict(network or {})}
    net = MLPNet(2, **net_args)
    meta: dict[str, Any] = {"task": "score", "data": name, "sde": sde, "sigma_data": sigma_data}
    if sde == "edm":
        model: nn.Module = EDMPrecond(net, sigma_data=sigma_data)
        shift = math.log(sigma_data / 0.5) if sigma_scaled else 0.0
        loss: Callable[..., Tensor] = EDMLoss(P_mean=P_mean + shift, P_std=P_std, sigma_data=sigma_data,
                                              target=target)
        meta["loss"] = {"kind": "edm", "P_mean": P_mean + shift, "P_std": P_std, "target": target}
    else:
        model = SDEPrecond(net, sde=sde, prediction="eps", sigma_data=sigma_data)
        loss = DenoisingScoreMatching.for_precond(model, weighting="simple")
        meta["loss"] = {"kind": "dsm", "prediction": "eps", "weighting": "simple"}
    config = TrainConfig(iters=iters, batch_size=batch_size, lr=lr, warmup=max(1, iters // 50), decay="cosine",
                         min_lr_ratio=0.01, grad_clip=1.0, ema=(EMA("ema", beta=ema_beta, warmup=1.0),),
                         seed=seed, device=device, progress=progress, time_budget=time_budget,
                         log_every=max(1, min(500, iters // 20)), checkpoint_every=checkpoint_every)
    return Recipe(model=model, loss=loss, data=sample, config=config, metadata=meta, mixture=toy_mixture(name))


def evaluate_toy_model(
    model: Callable[..., Tensor],
    data: str,
    *,
    n_samples: int = 20_000,
    seed: int = 0,
    sampler: str = "heun",
    steps: int = 18,
    nll_points: int = 256,
) -> dict[str, Any]:
    """The evaluation table of a score model trained on toy data set ``data`` (as a dict of numbers).

    Mixtures (``gmm8``, ``ring``): :func:`sdeflow.generative.evaluation.sampler_error` (ΔNLL and
    pathwise error against the exact denoiser from the same ``x_T``), :func:`score_error` by σ and
    :func:`nll_gap`. Other data: the energy distance between ``n_samples`` model samples (capped at
    2,000 points for the test) and held-out data, with its permutation p-value.
    """
    from ..verify.stats import energy_test
    from .evaluation import model_device, model_dtype, nll_gap, sampler_error, score_error
    from .samplers import SAMPLERS
    from .schedules import karras_sigmas

    name = _check_data(data)
    mixture = toy_mixture(name)
    out: dict[str, Any] = {"data": name, "sampler": sampler, "steps": steps, "n_samples": n_samples}
    if mixture is not None:
        se = sampler_error(model, mixture, sampler=sampler, steps=steps, n=n_samples, seed=seed)
        out.update(delta_nll=se.delta_nll, delta_nll_se=se.delta_nll_se, exact_delta_nll=se.exact_delta_nll,
                   exact_delta_nll_se=se.exact_delta_nll_se, pathwise=se.pathwise, nfe=se.nfe)
        out["score_error"] = score_error(model, mixture, n=2048, generator=seed).rows()
        if nll_points:
            gap = nll_gap(model, mixture, n=nll_points, generator=seed)
            out.update(nll_gap=gap.gap, nll_gap_se=gap.gap_se, exact_nll_gap=gap.exact_gap)
        return out
    sigmas = karras_sigmas(steps, 0.002, 80.0)
    dtype = model_dtype(model, torch.float32)
    x_T = 80.0 * torch.randn(n_samples, 2, generator=torch.Generator().manual_seed(seed), dtype=dtype)
    res = SAMPLERS[sampler](model, x_T.to(model_device(model)), sigmas, generator=seed + 1)
    held_out = toy_sampler(name, torch.float64)(n_samples, torch.Generator().manual_seed(20_000 + seed))
    stat, p = energy_test(res.x.to(device="cpu", dtype=torch.float64), held_out, generator=seed, max_points=2000)
    out.update(energy_distance=stat, energy_p_value=p, nfe=res.nfe)
    return out


def format_evaluation(ev: Mapping[str, Any]) -> str:
    """A text table of :func:`evaluate_toy_model`'s result."""
    lines = [f"evaluation on {ev['data']} ({ev['sampler']}, {ev['steps']} steps, {ev.get('nfe', '?')} NFE, "
             f"{ev['n_samples']} samples)"]
    if "delta_nll" in ev:
        lines.append(f"  ΔNLL (model)        {ev['delta_nll']:.4f} ± {ev['delta_nll_se']:.4f} nats")
        lines.append(f"  ΔNLL (exact D*)     {ev['exact_delta_nll']:.4f} ± {ev['exact_delta_nll_se']:.4f} nats")
        lines.append(f"  pathwise RMS to D*  {ev['pathwise']:.4f}")
        if "nll_gap" in ev:
            lines.append(f"  NLL gap (PF-ODE)    {ev['nll_gap']:.4f} ± {ev['nll_gap_se']:.4f} nats "
                         f"(exact score through the same solve: {ev['exact_nll_gap']:.2e})")
        lines.append("  score error by σ:   sigma    denoiser RMS   rel. score err")
        for row in ev["score_error"]:
            lines.append(f"                      {row['sigma']:<8.3g} {row['rms']:<14.4g} {row['relative']:.4g}")
    else:
        lines.append(f"  energy distance to held-out data  {ev['energy_distance']:.5f}  "
                     f"(permutation p = {ev['energy_p_value']:.3g})")
    return "\n".join(lines)
