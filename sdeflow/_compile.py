"""What the torch.compile paths share (the fused SDE engine, the samplers' compiled denoiser).

A compiled function's first call with a new input signature builds a new graph; that call's time is
reported as compile time (and left out of the run's wall time). A compilation failure warns once per
path and kind of error; the caller then carries on eagerly.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Hashable
from typing import Any

import torch
from torch import Tensor

from ._cache import object_cache

__all__ = ["call_compiled", "warn_compile_failure"]

_WARNED: set[tuple[str, str]] = set()


def call_compiled(fn: Callable[..., Any], signature: Hashable, *args: Any, **kwargs: Any) -> tuple[Any, float]:
    """``fn(*args, **kwargs)`` and the seconds it took when ``signature`` is new to ``fn`` (a compile), else 0.

    ``signature`` names what makes the compiler build a new graph (shapes, dtype, device). On CUDA the
    first call is synchronised, so its time includes the compiled kernels' first run, not only the
    launch. The signatures seen are kept per ``fn`` in :func:`sdeflow._cache.object_cache`, not on ``fn``.
    """
    seen = object_cache(fn, "compiled_signatures")
    if signature in seen:
        return fn(*args, **kwargs), 0.0
    tic = time.perf_counter()
    out = fn(*args, **kwargs)
    cuda = next((a.device for a in (*args, *kwargs.values()) if isinstance(a, Tensor) and a.is_cuda), None)
    if cuda is not None:
        torch.cuda.synchronize(cuda)
    seen[signature] = True
    return out, time.perf_counter() - tic


def warn_compile_failure(what: str, err: Exception, fallback: str, stacklevel: int = 3) -> None:
    """Warn (once per ``what`` and kind of error) that torch.compile of ``what`` failed."""
    key = (what, type(err).__name__)
    if key not in _WARNED:
        _WARNED.add(key)
        warnings.warn(f"torch.compile of {what} failed ({type(err).__name__}: {err}); {fallback}", RuntimeWarning,
                      stacklevel=stacklevel + 1)
