"""What every sampler shares: the signature, the result, and the step loop.

Every sampler is ``sample_x(model, x, schedule, *, generator=None, callback=None, progress=False,
compile=False, model_kwargs=None, noise_sampler=None, enable_grad=False, **options) -> SampleResult``
where

* ``model`` is a denoiser ``D(x, σ, **model_kwargs)``: ``x`` (B, *event) at noise level ``σ`` (a (B,)
  tensor), returning the estimate of the clean data, ``x``'s shape (the k-diffusion / EDM convention;
  :func:`sdeflow.denoiser_from_model` adapts a score, ε- or v-prediction model of any diffusion SDE,
  :meth:`sdeflow.GaussianMixture.as_denoiser` is the exact one);
* ``x`` is the starting state at ``schedule[0]``, e.g. ``schedule[0] * randn`` (:func:`initial_noise`);
* ``schedule`` is a strictly decreasing tensor of noise levels, normally ending in 0
  (:mod:`sdeflow.generative.schedules`).

:class:`SamplerRun` is the loop helper the built-in samplers use, and the one to write your own
with (docs/samplers.md, examples/custom_sampler.py): it validates the inputs, counts network
evaluations (NFE), passes the conditioning (``model_kwargs``) to every network call, casts a
low-precision network output to the state's dtype, draws noise (one generator, per-sample generators
or a ``noise_sampler``), and drives the callback and the progress bar. Sampling builds no autograd
graph unless ``enable_grad=True``.
"""

from __future__ import annotations

import contextlib
import time
import warnings
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from ..._cache import object_cache
from ..._checks import check_same_device, check_state, make_generator
from ..._compile import call_compiled, warn_compile_failure
from ...solve.solution import STATUS_ABORTED, STATUS_OK, path_status
from ..schedules import check_schedule

__all__ = [
    "SampleResult", "SamplingError", "sample_status", "check_on_failure", "SamplerRun", "Denoiser",
    "Callback", "NoiseSampler", "GeneratorLike", "initial_noise", "per_sample_randn",
]

Denoiser = Callable[..., Tensor]
Callback = Callable[[dict], None]
#: ``noise_sampler(sigma, sigma_next) -> Tensor``: standard normal noise of the state's shape for the step
#: from ``sigma`` to ``sigma_next`` (Python floats).
NoiseSampler = Callable[[float, float], Tensor]
#: One generator or seed for the batch, or one per sample (a sequence of generators/seeds, a (B,) int tensor).
GeneratorLike = torch.Generator | int | Sequence[torch.Generator | int] | Tensor | None


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
        status: per-sample status, shape (B,), int8, as :attr:`sdeflow.Solution.status`: 0 = ok,
            1 = the sample holds a NaN or infinite value, 2 = the adaptive solver gave up on it
            (:func:`sample_adaptive`). Computed from ``x`` when not given.
    """

    x: Tensor
    nfe: int
    steps: int
    sigmas: Tensor
    sampler: str
    wall_time: float = 0.0
    info: dict = field(default_factory=dict)
    status: Tensor = field(default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.status is None:
            self.status = sample_status(self.x)

    @property
    def ok(self) -> Tensor:
        """Boolean mask of the samples that are finite, shape (B,)."""
        return self.status == STATUS_OK

    def __repr__(self) -> str:
        n_bad = int(self.status.sum()) if isinstance(self.status, Tensor) else 0
        bad = f", non-finite={n_bad}" if n_bad else ""
        return (f"SampleResult(x: {tuple(self.x.shape)} {self.x.dtype}, sampler={self.sampler!r}, "
                f"nfe={self.nfe}, steps={self.steps}{bad})")


def sample_status(x: Tensor) -> Tensor:
    """Per-sample status of samples ``x`` (B, *event): int8, 1 where a sample holds a NaN or inf, else 0.

    The same rule as :attr:`sdeflow.Solution.status` (one saved state per sample).
    """
    if not isinstance(x, Tensor) or x.dim() == 0:
        raise ValueError(f"x must be a tensor of samples with a batch dimension (B, *event); got "
                         f"{tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__}.")
    return path_status(x.unsqueeze(0))


ON_FAILURE = ("return", "raise")


class SamplingError(RuntimeError):
    """A sampler produced NaN or infinite samples and was called with ``on_failure="raise"``.

    ``result`` holds the :class:`SampleResult` (its ``status`` says which samples failed).
    """

    def __init__(self, message: str, result: SampleResult) -> None:
        super().__init__(message)
        self.result = result


def check_on_failure(on_failure: object) -> str:
    """``on_failure`` must be ``"return"`` or ``"raise"`` (the solvers' and samplers' one convention)."""
    if on_failure not in ON_FAILURE:
        raise ValueError(f"on_failure must be 'return' (warn and return the samples with their status) or "
                         f"'raise'; got {on_failure!r}.")
    return str(on_failure)


def report_failures(result: SampleResult, on_failure: str, stacklevel: int = 3) -> SampleResult:
    """Warn (``on_failure="return"``) or raise :class:`SamplingError` when some samples are not finite."""
    bad = result.status != STATUS_OK
    n_bad = int(bad.sum())
    if n_bad:
        which = torch.nonzero(bad).flatten()[:8].tolist()
        more = ", ..." if n_bad > 8 else ""
        n_aborted = int((result.status == STATUS_ABORTED).sum())
        aborted = f", the adaptive solver gave up on {n_aborted} of them" if n_aborted else ""
        msg = (f"{result.sampler}: {n_bad} of {result.status.shape[0]} samples are NaN or infinite (samples "
               f"{which}{more}{aborted}; see SampleResult.status: 0 ok, 1 non-finite, 2 aborted). Check the "
               f"model's output at small and large noise levels, use more steps or a deterministic sampler "
               f"(heun, dpmpp_2m)")
        if on_failure == "raise":
            raise SamplingError(msg + "; on_failure='return' returns the finite samples with their status.",
                                result)
        warnings.warn(msg + ".", RuntimeWarning, stacklevel=stacklevel)
    return result


def _per_sample_generators(generator: object, batch: int, device: torch.device) -> list[torch.Generator] | None:
    """Per-sample generators from a sequence of generators/seeds or a (B,) integer tensor; None otherwise."""
    if generator is None or isinstance(generator, (int, torch.Generator)):
        return None
    if isinstance(generator, Tensor):
        if generator.dim() != 1 or generator.dtype.is_floating_point or generator.dtype.is_complex \
                or generator.dtype == torch.bool:
            raise TypeError(f"generator as a tensor must be a 1-D integer tensor of per-sample seeds; got "
                            f"dtype {generator.dtype}, shape {tuple(generator.shape)}.")
        items: list = generator.tolist()
    elif isinstance(generator, Sequence) and not isinstance(generator, (str, bytes)):
        items = list(generator)
    else:
        return None  # make_generator reports the type error
    if len(items) != batch:
        raise ValueError(f"generator has {len(items)} per-sample seeds/generators for a batch of {batch}; pass "
                         f"one per sample (or a single seed/generator for the whole batch).")
    return [make_generator(g, device) for g in items]


def per_sample_randn(
    generators: Sequence[torch.Generator], event_shape: tuple[int, ...] | torch.Size, *,
    dtype: torch.dtype = torch.float32, device: torch.device | str | None = None,
) -> Tensor:
    """Standard normal noise of shape (B, *event_shape), sample b drawn from ``generators[b]`` alone.

    Sample b's noise depends only on its own generator, so a batch's first k samples equal a batch of k
    with the same generators. Costs one ``torch.randn`` call per sample.
    """
    device = torch.device(device) if device is not None else torch.device("cpu")
    return torch.stack([torch.randn(tuple(event_shape), generator=g, dtype=dtype, device=device)
                        for g in generators])


def initial_noise(
    shape: tuple[int, ...] | torch.Size,
    schedule: Tensor,
    *,
    generator: GeneratorLike = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> Tensor:
    """``schedule[0] * N(0, I)`` of the given shape (B, *event): the usual starting state.

    ``generator`` is one generator/seed for the batch, or one per sample (a list of generators/seeds or
    a (B,) integer tensor of seeds; see :class:`SamplerRun`), making every sample reproducible on its own.
    """
    sig = check_schedule(schedule)
    device = torch.device(device) if device is not None else torch.device("cpu")
    shape = tuple(shape)
    gens = _per_sample_generators(generator, shape[0] if shape else 0, device)
    if gens is not None:
        return float(sig[0]) * per_sample_randn(gens, shape[1:], dtype=dtype, device=device)
    gen = make_generator(generator, device)
    return float(sig[0]) * torch.randn(shape, generator=gen, dtype=dtype, device=device)


def _kwargs_signature(kwargs: Mapping[str, object]) -> tuple:
    """What of ``model_kwargs`` makes torch.compile build a new graph: tensor shapes/dtypes, other values."""
    out = []
    for key, val in kwargs.items():
        if isinstance(val, Tensor):
            out.append((key, tuple(val.shape), val.dtype))
        else:
            try:
                hash(val)
                out.append((key, val))
            except TypeError:
                out.append((key, repr(val)))
    return tuple(out)


class SamplerRun:
    """One sampling run: checked inputs, the NFE counter, conditioning, noise, callback and progress.

    Args:
        name: the sampler's name (progress bar, result).
        model: the denoiser ``D(x, σ, **model_kwargs)``.
        x: starting state (B, *event) at ``schedule[0]``.
        schedule: strictly decreasing noise levels (a trailing 0 allowed).
        generator: the noise source. An int seed or a ``torch.Generator`` draws the whole batch's noise
            from one stream (as always: the same seed gives the same samples). A sequence of B
            generators/seeds, or a (B,) integer tensor of seeds, draws sample b's noise from its own
            generator only, so a batch's first k samples equal a batch of k with the same seeds (one
            ``randn`` call per sample and draw: for moderate batches).
        callback, progress: as in every sampler's signature.
        compile: run the denoiser through ``torch.compile`` (one fused graph per input shape; on CUDA
            this removes most per-op launches of a small network). The first call pays the compile
            time, reported in ``SampleResult.info["compile_time"]``; if compilation fails the run
            warns once and continues eagerly. The model must be traceable: pure tensor code, no
            host synchronisation (``float(tensor)``, data-dependent Python branches) in its forward.
            The compiled function is cached per model outside the model (the model object is not
            modified, so ``copy.deepcopy(model)`` keeps working).
        model_kwargs: extra keyword arguments for every network call, ``model(x, σ, **model_kwargs)``,
            passed unchanged (class labels, a guidance scale, ...). Tensors in it keep their batch
            dimension; the samplers never slice them.
        noise_sampler: ``noise_sampler(sigma, sigma_next) -> Tensor`` of the state's shape, standard
            normal noise for the step from ``sigma`` to ``sigma_next`` (Python floats); replaces
            ``generator`` (pass only one). The built-in samplers pass the step's interval: the reverse-SDE
            step ``(σ_i, σ_{i+1})``, Heun's churn ``(σ_i, σ̂_i)``, the Langevin corrector
            ``(σ_{i+1}, σ_{i+1})``.
        enable_grad: build the autograd graph through the denoiser calls (e.g. to differentiate samples
            with respect to the network's parameters). Default False: network calls run under
            ``torch.no_grad()`` (the built-in samplers run their whole loop so), so a trajectory of a
            trained network keeps no graph in memory.

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
        generator: GeneratorLike = None,
        callback: Callback | None = None,
        progress: bool = False,
        compile: bool = False,
        model_kwargs: Mapping[str, Any] | None = None,
        noise_sampler: NoiseSampler | None = None,
        enable_grad: bool = False,
    ) -> None:
        if not isinstance(compile, bool):
            raise TypeError(f"compile must be True or False; got {compile!r}.")
        if not isinstance(enable_grad, bool):
            raise TypeError(f"enable_grad must be True or False; got {enable_grad!r}.")
        if not callable(model):
            raise TypeError(
                f"model must be a denoiser callable as model(x, sigma, **model_kwargs) -> tensor of x's shape; "
                f"got {type(model).__name__}."
            )
        if callback is not None and not callable(callback):
            raise TypeError(
                f"callback must be callable as callback(info: dict) or None; got {type(callback).__name__}."
            )
        if model_kwargs is None:
            model_kwargs = {}
        if not isinstance(model_kwargs, Mapping) or not all(isinstance(k, str) for k in model_kwargs):
            raise TypeError(f"model_kwargs must be a mapping of str keys to the model's extra arguments, "
                            f"e.g. {{'class_labels': y}}; got {type(model_kwargs).__name__}.")
        if noise_sampler is not None:
            if not callable(noise_sampler):
                raise TypeError(f"noise_sampler must be callable as noise_sampler(sigma, sigma_next) -> tensor; "
                                f"got {type(noise_sampler).__name__}.")
            if generator is not None:
                raise ValueError("pass either generator or noise_sampler, not both: the noise_sampler draws all "
                                 "of the run's noise.")
        self.name = name
        self.model = model
        self.model_kwargs: dict[str, Any] = dict(model_kwargs)
        self.enable_grad = enable_grad
        self.compile_time = 0.0
        self._compiled = _compiled_denoiser(model) if compile else None
        self.x0 = check_state(x, "x")
        if x.device.type == "meta":
            raise ValueError("x is a meta tensor (no data); pass the starting state on a real device.")
        if not bool(torch.isfinite(x).all()):
            raise ValueError("x (the starting state) contains NaN or infinite values; pass a finite starting "
                             "state, e.g. initial_noise(shape, schedule).")
        check_same_device(model, x, name="model")
        self.sigmas = check_schedule(schedule)
        self.sigma_values: list[float] = self.sigmas.tolist()
        self.noise_sampler = noise_sampler
        self.sample_generators = _per_sample_generators(generator, x.shape[0], x.device)
        self.generator = None if self.sample_generators is not None else make_generator(generator, x.device)
        self.callback = callback
        self.nfe = 0
        self._checked = False
        self._noise_checked = False
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
        """``model(x, σ, **model_kwargs)`` with ``σ`` broadcast to (B,); counts one evaluation.

        A floating-point output of another dtype (a bf16/fp16 network under autocast) is cast to ``x``'s
        dtype, so the state and the step arithmetic stay in the state's dtype.
        """
        if isinstance(sigma, Tensor) and sigma.dim() == 1 and sigma.dtype == x.dtype and sigma.device == x.device:
            sig = sigma  # already the model's argument (the step primitives pass it so)
        else:
            sig = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
            if sig.dim() == 0:
                sig = sig.expand(x.shape[0])
        if torch.is_grad_enabled() == self.enable_grad:  # the built-in samplers already run in this mode
            out = self._forward(x, sig)
        else:
            with torch.set_grad_enabled(self.enable_grad):
                out = self._forward(x, sig)
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
            if not out.dtype.is_floating_point:
                raise TypeError(f"model(x, sigma) returned dtype {out.dtype} for x of dtype {x.dtype}; a denoiser "
                                f"returns floating-point values.")
            self._checked = True
        if out.dtype != x.dtype:
            out = out.to(x.dtype)
        return out

    def _forward(self, x: Tensor, sig: Tensor) -> Tensor:
        if self._compiled is not None:
            return self._call_compiled(x, sig)
        return self.model(x, sig, **self.model_kwargs)

    def _call_compiled(self, x: Tensor, sig: Tensor) -> Tensor:
        kw = self.model_kwargs
        try:
            signature = (tuple(x.shape), x.dtype, str(x.device), self.enable_grad, _kwargs_signature(kw))
            out, secs = call_compiled(self._compiled, signature, x, sig, **kw)
        except Exception as err:  # compilation unavailable or the model is not traceable: go on eagerly
            warn_compile_failure("the denoiser", err, "sampling continues with the eager model.", stacklevel=6)
            self._compiled = None
            return self.model(x, sig, **kw)
        self.compile_time += secs
        return out

    def randn_like(self, x: Tensor, sigma: float | None = None, sigma_next: float | None = None) -> Tensor:
        """Standard normal noise of ``x``'s shape for the step from ``sigma`` to ``sigma_next``.

        From the run's ``noise_sampler(sigma, sigma_next)`` if one was given, else from the per-sample
        generators (sample b from generator b), else from the run's generator (the batch's one stream).
        A custom sampler passes the step's interval so that a ``noise_sampler`` (e.g. a Brownian tree)
        can serve it; without it the ``noise_sampler`` is called with ``(None, None)``.
        """
        if self.noise_sampler is not None:
            out = self.noise_sampler(sigma, sigma_next)
            if not self._noise_checked:
                if not isinstance(out, Tensor) or out.shape != x.shape:
                    got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
                    raise ValueError(f"noise_sampler(sigma, sigma_next) must return a tensor of the state's shape "
                                     f"{tuple(x.shape)}; got {got}.")
                self._noise_checked = True
            return out.to(dtype=x.dtype, device=x.device)
        if self.sample_generators is not None:
            return per_sample_randn(self.sample_generators, x.shape[1:], dtype=x.dtype, device=x.device)
        return torch.randn(x.shape, generator=self.generator, dtype=x.dtype, device=x.device)

    def report(self, i: int, x: Tensor, sigma: float, sigma_next: float, denoised: Tensor | None = None) -> None:
        """Call the callback with ``{"i", "x", "sigma", "sigma_next", "denoised", "nfe"}`` and advance the bar."""
        if self.callback is not None:
            self.callback({"i": i, "x": x, "sigma": sigma, "sigma_next": sigma_next, "denoised": denoised,
                           "nfe": self.nfe})
        if self._bar is not None:
            self._bar.update(1)

    def result(self, x: Tensor, steps: int | None = None, status: Tensor | None = None,
               **info: object) -> SampleResult:
        """Close the progress bar and package the samples (``status``: per-sample, default from ``x``)."""
        if self._bar is not None:
            self._bar.close()
        if x.device.type == "cuda":
            torch.cuda.synchronize(x.device)
        if self._compiled is not None or self.compile_time:
            info = {"compile_time": self.compile_time, **info}
        return SampleResult(x=x, nfe=self.nfe, steps=self.n_steps if steps is None else steps, sigmas=self.sigmas,
                            sampler=self.name, wall_time=time.perf_counter() - self._tick - self.compile_time,
                            info=dict(info), status=status)


def grad_mode(enable_grad: object) -> contextlib.AbstractContextManager:
    """The autograd mode a sampler runs in: ``torch.no_grad()`` unless ``enable_grad`` is True."""
    if not isinstance(enable_grad, bool):
        raise TypeError(f"enable_grad must be True or False; got {enable_grad!r}.")
    return torch.enable_grad() if enable_grad else torch.no_grad()


def _compiled_denoiser(model: Denoiser) -> Callable[..., Tensor]:
    """``torch.compile`` of ``model``, cached per model outside it (``sdeflow._cache``) for later runs.

    The compiled function reaches the model through a weak reference, so the cache entry does not keep
    the model alive (an entry lives as long as its model).
    """
    cache = object_cache(model, "compiled")
    fn = cache.get("denoiser")
    if fn is None:
        try:
            ref = weakref.ref(model)
        except TypeError:  # not weak-referenceable: compile the object itself, uncached
            return torch.compile(model, dynamic=False)

        def call(x: Tensor, sigma: Tensor, **kwargs: Any) -> Tensor:
            return ref()(x, sigma, **kwargs)

        fn = torch.compile(call, dynamic=False)
        cache["denoiser"] = fn
    return fn


def check_nonneg(name: str, value: object) -> float:
    """A finite number >= 0 (sampler options)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0 or value == float("inf"):
        raise ValueError(f"{name} must be a finite number >= 0; got {value!r}.")
    return float(value)
