"""Noise sources for the samplers' ``noise_sampler`` argument: a Brownian tree over the noise level.

A ``noise_sampler(sigma, sigma_next) -> Tensor`` returns standard normal noise of the state's shape for
the step from ``sigma`` to ``sigma_next`` (see :class:`sdeflow.SamplerRun`). :class:`BrownianTreeNoise`
returns the normalised increment ``(W(σ_i) − W(σ_{i+1})) / sqrt(σ_i − σ_{i+1})`` of one Brownian path
``W`` over σ, fixed by its seed(s): a run with more steps refines the same path, so Euler–Maruyama
samples converge pathwise as the schedule is refined (a fixed-seed generator gives unrelated paths), and
with per-sample seeds each sample's path is its own.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["BrownianTreeNoise"]


class BrownianTreeNoise:
    """A ``noise_sampler`` drawing the Brownian increments of one fixed path over ``[sigma_min, sigma_max]``.

    Args:
        x: a state of the run's shape (B, *event), dtype and device (only these are read).
        sigma_min, sigma_max: the range of levels queried (the schedule's smallest positive level and
            its first; Heun's churn raises σ above σ_i, so widen ``sigma_max`` for it).
        seed: an int (one path of the batch's shape) or B ints (sample b's path from seed b alone: the
            first k samples of a batch equal a batch of k with the same seeds).
        tol: the tree's resolution in σ (queries are exact to it).

    Built on ``torchsde.BrownianInterval`` with dyadic (halfway) splits, so increments are consistent
    whatever the queried grid; about a millisecond per query and tree, on the host for CPU states.
    The zero-length intervals of the predictor–corrector's Langevin steps have no increment: use a
    generator for ``sample_pc``.
    """

    def __init__(self, x: Tensor, sigma_min: float, sigma_max: float, *, seed: int | Sequence[int] | Tensor = 0,
                 tol: float = 1e-6) -> None:
        from torchsde import BrownianInterval

        if not isinstance(x, Tensor) or x.dim() < 1:
            raise TypeError("x must be a tensor of the run's state shape (B, *event).")
        if not (0 <= sigma_min < sigma_max) or not math.isfinite(sigma_max):
            raise ValueError(f"need 0 <= sigma_min < sigma_max < inf; got sigma_min={sigma_min}, "
                             f"sigma_max={sigma_max}.")
        if not tol > 0:
            raise ValueError(f"tol must be > 0; got {tol!r}.")
        if isinstance(seed, Tensor):
            seed = seed.tolist()
        per_sample = not isinstance(seed, int)
        if isinstance(seed, bool) or (per_sample and (not isinstance(seed, Sequence)
                                                      or not all(isinstance(s, int) for s in seed))):
            raise TypeError(f"seed must be an int or a sequence of B ints; got {seed!r}.")
        if per_sample and len(seed) != x.shape[0]:
            raise ValueError(f"seed has {len(seed)} per-sample seeds for a batch of {x.shape[0]}.")
        self.sigma_min, self.sigma_max = float(sigma_min), float(sigma_max)
        self.shape, self.dtype, self.device = tuple(x.shape), x.dtype, x.device
        size = tuple(x.shape[1:]) if per_sample else tuple(x.shape)
        seeds = list(seed) if per_sample else [seed]
        kw = {"t0": self.sigma_min, "t1": self.sigma_max, "size": size, "dtype": torch.float64,
              "device": x.device, "halfway_tree": True, "tol": tol}
        self._trees = [BrownianInterval(entropy=s, **kw) for s in seeds]
        self._per_sample = per_sample

    def __call__(self, sigma: float, sigma_next: float) -> Tensor:
        """``(W(max) − W(min)) / sqrt(|σ − σ_next|)`` of the run's shape: standard normal."""
        if sigma is None or sigma_next is None:
            raise ValueError("BrownianTreeNoise needs the step's interval: noise_sampler(sigma, sigma_next).")
        lo, hi = sorted((float(sigma), float(sigma_next)))
        if not hi > lo:
            raise ValueError(f"BrownianTreeNoise has no increment over a zero-length interval (sigma = sigma_next = "
                             f"{lo}); the predictor-corrector's Langevin steps need a generator instead.")
        if lo < self.sigma_min - 1e-12 or hi > self.sigma_max * (1 + 1e-12):
            raise ValueError(f"interval [{lo}, {hi}] leaves the tree's range [{self.sigma_min}, {self.sigma_max}]; "
                             f"build it with the schedule's range (wider for Heun's churn).")
        lo, hi = max(lo, self.sigma_min), min(hi, self.sigma_max)
        if self._per_sample:
            w = torch.stack([tree(lo, hi) for tree in self._trees])
        else:
            w = self._trees[0](lo, hi)
        return (w / math.sqrt(hi - lo)).to(self.dtype)
