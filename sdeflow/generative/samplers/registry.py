"""One declaration per sampler: the :func:`sampler` decorator, :class:`SamplerSpec` and the registry.

A sampler declares its name, order, network evaluations per schedule and whether it draws noise once,
where it is defined::

    @sampler("heun", order=2.0, nfe=lambda steps: 2 * steps - 1, stochastic=False)
    def sample_heun(model, x, schedule, *, generator=None, ...): ...

:data:`SAMPLERS` (name → function), :data:`SAMPLER_SPECS` (name → spec), the order checks of
``sdeflow verify`` (:mod:`sdeflow.generative.checks`) and the tests' NFE and order tables are all read
from these declarations. The decorator also runs the sampler under ``torch.no_grad()`` unless it is
called with ``enable_grad=True``, and reports non-finite samples the same way for every sampler: each
sampler takes ``on_failure="return"`` (default: warn, naming ``SampleResult.status``, and return the
samples with their per-sample status) or ``on_failure="raise"`` (raise :class:`SamplingError`, which
carries the result) — the convention of ``simulate`` and ``solve_ode`` (docs/reliability.md).
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from .base import SampleResult, check_on_failure, grad_mode, report_failures

__all__ = ["SamplerSpec", "sampler", "SAMPLERS", "SAMPLER_SPECS", "sampler_spec"]

#: name → sampler function, in the order the samplers were declared.
SAMPLERS: dict[str, Callable[..., SampleResult]] = {}
#: name → its :class:`SamplerSpec`.
SAMPLER_SPECS: dict[str, SamplerSpec] = {}


@dataclass(frozen=True)
class SamplerSpec:
    """What a sampler declares about itself.

    Attributes:
        name: the registry key (``sample(name, ...)``).
        fn: the sampler function.
        order: the convergence order at default options: of the pathwise (ODE) error for deterministic
            samplers, of the weak error for ``order_kind="weak"``; None when no order is claimed
            (adaptive step control, or a scheme whose error does not vanish with the step, like a
            fixed-snr corrector).
        order_kind: ``"ode"`` (pathwise error to the exact PF-ODE solution) or ``"weak"`` (error in
            the law of the samples, for SDE samplers).
        nfe: network evaluations for a schedule of ``steps`` intervals ending in 0, ``nfe(steps,
            **options)`` with the sampler's options (defaults as the sampler's); None when adaptive.
        stochastic: whether it draws noise at its default options (Heun with ``S_churn > 0`` does
            too, but is declared deterministic since its default is the ODE solver).
    """

    name: str
    fn: Callable[..., SampleResult]
    order: float | None
    order_kind: Literal["ode", "weak"]
    nfe: Callable[..., int] | None
    stochastic: bool

    def nfe_for(self, steps: int, **options: object) -> int | None:
        """Network evaluations for ``steps`` intervals ending in 0 (None for adaptive samplers)."""
        return None if self.nfe is None else int(self.nfe(steps, **options))


def sampler(
    name: str,
    *,
    order: float | None,
    nfe: Callable[..., int] | None,
    stochastic: bool,
    order_kind: Literal["ode", "weak"] = "ode",
    register: bool = True,
) -> Callable[[Callable[..., SampleResult]], Callable[..., SampleResult]]:
    """Declare a sampler (see the module docstring); returns the decorator.

    The decorated function keeps its signature and gains ``.spec`` (its :class:`SamplerSpec`); it runs
    under ``torch.no_grad()`` unless called with ``enable_grad=True``. With ``register=True`` (default)
    it is added to :data:`SAMPLERS` under ``name``; declaring a name already taken by another function
    raises ValueError (re-running the same module, e.g. a reloaded script, replaces its own entry).
    """
    if not isinstance(name, str) or not name:
        raise TypeError(f"name must be a non-empty str; got {name!r}.")
    if order is not None and (isinstance(order, bool) or not isinstance(order, (int, float))
                              or not math.isfinite(order) or order <= 0):
        raise ValueError(f"order must be a positive number or None; got {order!r}.")
    if order_kind not in ("ode", "weak"):
        raise ValueError(f"order_kind must be 'ode' or 'weak'; got {order_kind!r}.")
    if nfe is not None and not callable(nfe):
        raise TypeError(f"nfe must be callable as nfe(steps, **options) -> int, or None; got {type(nfe).__name__}.")
    if not isinstance(stochastic, bool):
        raise TypeError(f"stochastic must be True or False; got {stochastic!r}.")

    def decorate(fn: Callable[..., SampleResult]) -> Callable[..., SampleResult]:
        @functools.wraps(fn)
        def run(*args: object, on_failure: str = "return", **kwargs: object) -> SampleResult:
            on_failure = check_on_failure(on_failure)
            with grad_mode(kwargs.get("enable_grad", False)):
                result = fn(*args, **kwargs)
            return report_failures(result, on_failure) if isinstance(result, SampleResult) else result

        run.__signature__ = _with_on_failure(fn)  # type: ignore[attr-defined]

        spec = SamplerSpec(name=name, fn=run, order=None if order is None else float(order), order_kind=order_kind,
                           nfe=nfe, stochastic=stochastic)
        run.spec = spec  # type: ignore[attr-defined]
        if register:
            old = SAMPLERS.get(name)
            if old is not None and (old.__module__, old.__qualname__) != (run.__module__, run.__qualname__):
                raise ValueError(f"a sampler named {name!r} is already registered ({old.__module__}."
                                 f"{old.__qualname__}); choose another name or pass register=False.")
            SAMPLERS[name] = run
            SAMPLER_SPECS[name] = spec
        return run

    return decorate


def _with_on_failure(fn: Callable[..., SampleResult]) -> inspect.Signature:
    """``fn``'s signature with the keyword ``on_failure`` the decorator adds (before any ``**options``)."""
    sig = inspect.signature(fn)
    params = list(sig.parameters.values())
    if "on_failure" in sig.parameters:
        return sig
    extra = inspect.Parameter("on_failure", inspect.Parameter.KEYWORD_ONLY, default="return", annotation="str")
    at = next((i for i, p in enumerate(params) if p.kind is inspect.Parameter.VAR_KEYWORD), len(params))
    return sig.replace(parameters=params[:at] + [extra] + params[at:])


def sampler_spec(name_or_fn: str | Callable[..., SampleResult]) -> SamplerSpec:
    """The :class:`SamplerSpec` of a registered sampler name or of a decorated sampler function."""
    if isinstance(name_or_fn, str):
        if name_or_fn not in SAMPLER_SPECS:
            raise ValueError(f"unknown sampler {name_or_fn!r}; choose one of {', '.join(SAMPLERS)}.")
        return SAMPLER_SPECS[name_or_fn]
    spec = getattr(name_or_fn, "spec", None)
    if not isinstance(spec, SamplerSpec):
        raise TypeError(f"{name_or_fn!r} is not a sampler declared with @sampler(...); it has no spec.")
    return spec
