"""What every sampler shares: the signature, the result, and the step loop.

Every sampler is ``sample_x(model, x, schedule, *, generator=None, callback=None, progress=False,
**options) -> SampleResult`` where

* ``model`` is a denoiser ``D(x, σ)``: ``x`` (B, *event) at noise level ``σ`` (a (B,) tensor),
  returning the estimate of the clean data, ``x``'s shape (the k-diffusion / EDM convention;
  :func:`sdeflow.denoiser_from_model` adapts a score, ε- or v-prediction model of any diffusion SDE,
  :meth:`sdeflow.GaussianMixture.as_denoiser` is the exact one);
* ``x`` is the starting state at ``schedule[0]``, e.g. ``schedule[0] * randn`` (:func:`initial_noise`);
* ``schedule`` is a strictly decreasing tensor of noise levels, normally ending in 0
  (:mod:`sdeflow.generative.schedules`).

:class:`SamplerRun` is the loop helper the built-in samplers use, and the one to write your own
with (docs/samplers.md, examples/custom_sampler.py): it validates the inputs, counts network
evaluations (NFE), draws noise from the generator, and drives the callback and the progress bar.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
from torch import Tensor

from ..._checks import check_same_device, check_state, make_generator
from ..._compile import call_compiled, warn_compile_failure
from ..schedules import check_schedule

__all__ = ["SampleResult", "SamplerRun", "Denoiser", "Callback", "initial_noise"]

Denoiser = Callable[[Tensor, Tensor], Tensor]
Callback = Callable[[dict], None]


@dataclass
class SampleResult:
    """The output of a sampler.

    Attributes:
        x: the samples, shape (B, *event).
        nfe: network (denoiser) evaluations used.
        steps: sampler steps taken (intervals of the schedule).
        sigmas: the schedule used (float64, CPU).
        sampler: the sampler's name.
        wall_time: seconds spent.
        info: sampler-specific extras (e.g. the adaptive solver's accepted steps).
    """

    x: Tensor
    nfe: int
    steps: int
    sigmas: Tensor
    sampler: str
    wall_time: float = 0.0
    info: dict = field(default_factory=dict)

    def __repr__(self) -> str:
        return (f"SampleResult(x: {tuple(self.x.shape)} {self.x.dtype}, sampler={self.sampler!r}, "
                f"nfe={self.nfe}, steps={self.steps})")


def initial_noise(
    shape: tuple[int, ...] | torch.Size,
    schedule: Tensor,
    *,
    generator: torch.Generator | int | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> Tensor:
    """``schedule[0] * N(0, I)`` of the given shape (B, *event): the usual starting state."""
    sig = check_schedule(schedule)
    device = torch.device(device) if device is not None else torch.device("cpu")
    gen = make_generator(generator, device)
    return float(sig[0]) * torch.randn(tuple(shape), generator=gen, dtype=dtype, device=device)


class SamplerRun:
    """One sampling run: checked inputs, the NFE counter, noise, callback and progress.

    Args:
        name: the sampler's name (progress bar, result).
        model: the denoiser ``D(x, σ)``.
        x: starting state (B, *event) at ``schedule[0]``.
        schedule: strictly decreasing noise levels (a trailing 0 allowed).
        generator, callback, progress: as in every sampler's signature.
        compile: run the denoiser through ``torch.compile`` (one fused graph per input shape; on CUDA
            this removes most per-op launches of a small network). The first call pays the compile
            time, reported in ``SampleResult.info["compile_time"]``; if compilation fails the run
            warns once and continues eagerly. The model must be traceable: pure tensor code, no
            host synchronisation (``float(tensor)``, data-dependent Python branches) in its forward.

    Usage::

        run = SamplerRun("my_sampler", model, x, schedule, generator=generator, callback=callback,
                         progress=progress)
        for i, sigma, sigma_next in run.steps():
            denoised = run.denoise(x, sigma)
            x = ...                               # your update, sigma -> sigma_next
            run.report(i, x, sigma, sigma_next, denoised)
        return run.result(x)

    ``sigma`` and ``sigma_next`` are Python floats (float64), so step coefficients cost nothing and
    keep full precision whatever the state's dtype.
    """

    def __init__(
        self,
        name: str,
        model: Denoiser,
        x: Tensor,
        schedule: Tensor,
        *,
        generator: torch.Generator | int | None = None,
        callback: Callback | None = None,
        progress: bool = False,
        compile: bool = False,
    ) -> None:
        if not isinstance(compile, bool):
            raise TypeError(f"compile must be True or False; got {compile!r}.")
        if not callable(model):
            raise TypeError(
                f"model must be a denoiser callable as model(x, sigma) -> tensor of x's shape; "
                f"got {type(model).__name__}."
            )
        if callback is not None and not callable(callback):
            raise TypeError(
                f"callback must be callable as callback(info: dict) or None; got {type(callback).__name__}."
            )
        self.name = name
        self.model = model
        self.compile_time = 0.0
        self._compiled = _compiled_denoiser(model) if compile else None
        self.x0 = check_state(x, "x")
        check_same_device(model, x, name="model")
        self.sigmas = check_schedule(schedule)
        self.sigma_values: list[float] = self.sigmas.tolist()
        self.generator = make_generator(generator, x.device)
        self.callback = callback
        self.nfe = 0
        self._checked = False
        self._tick = time.perf_counter()
        self._bar = None
        if progress:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=self.n_steps, desc=name, unit="step", mininterval=0.5)

    @property
    def n_steps(self) -> int:
        """Number of steps: intervals of the schedule."""
        return len(self.sigma_values) - 1

    def steps(self) -> Iterator[tuple[int, float, float]]:
        """Yield ``(i, sigma_i, sigma_{i+1})`` for every step."""
        for i in range(self.n_steps):
            yield i, self.sigma_values[i], self.sigma_values[i + 1]

    def denoise(self, x: Tensor, sigma: float | Tensor) -> Tensor:
        """``model(x, σ)`` with ``σ`` broadcast to (B,); counts one evaluation."""
        sig = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
        if sig.dim() == 0:
            sig = sig.expand(x.shape[0])
        if self._compiled is not None:
            out = self._call_compiled(x, sig)
        else:
            out = self.model(x, sig)
        self.nfe += 1
        if not self._checked:
            if not isinstance(out, Tensor):
                raise TypeError(f"model(x, sigma) must return a torch.Tensor; it returned {type(out).__name__}.")
            if out.shape != x.shape:
                raise ValueError(
                    f"model(x, sigma) returned shape {tuple(out.shape)} for x of shape {tuple(x.shape)}; a denoiser "
                    f"returns the clean-data estimate with x's shape. For a score model use "
                    f"sdeflow.denoiser_from_model(model, sde, prediction='score')."
                )
            if out.dtype != x.dtype:
                raise TypeError(f"model(x, sigma) returned dtype {out.dtype} for x of dtype {x.dtype}.")
            self._checked = True
        return out

    def _call_compiled(self, x: Tensor, sig: Tensor) -> Tensor:
        try:
            out, secs = call_compiled(self._compiled, (tuple(x.shape), x.dtype, str(x.device)), x, sig)
        except Exception as err:  # compilation unavailable or the model is not traceable: go on eagerly
            warn_compile_failure("the denoiser", err, "sampling continues with the eager model.", stacklevel=4)
            self._compiled = None
            return self.model(x, sig)
        self.compile_time += secs
        return out

    def randn_like(self, x: Tensor) -> Tensor:
        """Standard normal noise of ``x``'s shape from the run's generator."""
        return torch.randn(x.shape, generator=self.generator, dtype=x.dtype, device=x.device)

    def report(self, i: int, x: Tensor, sigma: float, sigma_next: float, denoised: Tensor | None = None) -> None:
        """Call the callback with ``{"i", "x", "sigma", "sigma_next", "denoised", "nfe"}`` and advance the bar."""
        if self.callback is not None:
            self.callback({"i": i, "x": x, "sigma": sigma, "sigma_next": sigma_next, "denoised": denoised,
                           "nfe": self.nfe})
        if self._bar is not None:
            self._bar.update(1)

    def result(self, x: Tensor, steps: int | None = None, **info: object) -> SampleResult:
        """Close the progress bar and package the samples."""
        if self._bar is not None:
            self._bar.close()
        if x.device.type == "cuda":
            torch.cuda.synchronize(x.device)
        if self._compiled is not None or self.compile_time:
            info = {"compile_time": self.compile_time, **info}
        return SampleResult(x=x, nfe=self.nfe, steps=self.n_steps if steps is None else steps, sigmas=self.sigmas,
                            sampler=self.name, wall_time=time.perf_counter() - self._tick - self.compile_time,
                            info=dict(info))


def _compiled_denoiser(model: Denoiser) -> Callable[[Tensor, Tensor], Tensor]:
    """``torch.compile(model)``, cached on the model object so later runs reuse the graphs."""
    try:
        fn = model.__dict__.get("_sdeflow_compiled")
    except AttributeError:  # objects without a __dict__ are compiled afresh each run
        fn = None
    if fn is None:
        fn = torch.compile(model, dynamic=False)
        try:
            model.__dict__["_sdeflow_compiled"] = fn
        except AttributeError:
            pass
    return fn


def check_nonneg(name: str, value: object) -> float:
    """A finite number >= 0 (sampler options)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0 or value == float("inf"):
        raise ValueError(f"{name} must be a finite number >= 0; got {value!r}.")
    return float(value)
