"""The fused native path: chunks of steps compiled into one kernel graph with ``torch.compile``.

Small batches spend nearly all their time in Python and kernel-launch overhead (one launch per op
per step). Compiling ``chunk`` consecutive steps of a method into one graph removes that overhead:
the Brownian increments of the chunk are drawn by the same noise source as the eager engine (so a
seed gives the same paths up to floating-point rounding of the fused arithmetic), and the compiled
graph does the arithmetic of all steps at once.

Chunks that contain a save point or steps of unequal size run eagerly, step by step, with the same
increments. Compiled graphs are cached on the SDE object per (method, chunk length, dt, space-time),
so repeated ``simulate`` calls reuse them; the first call pays the compile time, reported as
``SolveStats.compile_time``. If compilation is unavailable (no C++ compiler, an unsupported
platform, a graph the compiler rejects) the engine warns once and runs eagerly.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from ..._compile import call_compiled, warn_compile_failure
from .base import NativeSDEMethod
from .engine import times_on_device

__all__ = ["integrate_sde_fused", "DEFAULT_CHUNK"]

#: Steps per compiled chunk by default.
DEFAULT_CHUNK = 128


def _equal_steps(dts: np.ndarray, dt: float) -> bool:
    """All steps equal ``dt`` up to the rounding of ``t0 + i dt`` grids (relative 1e-9)."""
    return bool(np.all(np.abs(dts - dt) <= 1e-9 * dt))


def _chunk_function(method: NativeSDEMethod, k: int, dt: float, space_time: bool) -> Callable[..., Tensor]:
    step = method.step

    def chunk(x: Tensor, t0: Tensor, dw: Tensor, u: Tensor | None) -> Tensor:
        for i in range(k):
            ta = t0 + i * dt
            x = step(ta, ta + dt, dt, x, dw[i], u[i] if space_time else None)
        return x

    return chunk


def _compiled(method: NativeSDEMethod, k: int, dt: float, space_time: bool) -> Callable[..., Tensor]:
    cache = method.sde.__dict__.setdefault("_sdeflow_fused_cache", {})
    key = (type(method).__name__, k, dt, space_time)
    fn = cache.get(key)
    if fn is None:
        fn = torch.compile(_chunk_function(method, k, dt, space_time), dynamic=False)
        cache[key] = fn
    return fn


def integrate_sde_fused(
    method: NativeSDEMethod,
    x0: Tensor,
    times: np.ndarray,
    save_index: np.ndarray,
    noise,  # noqa: ANN001 (GaussianIncrements or BrownianIncrements)
    *,
    chunk: int,
    dt: float,
) -> tuple[list[Tensor], float]:
    """Like :func:`~sdeflow.solve.native.engine.integrate_sde`, with compiled chunks of ``chunk`` steps.

    ``noise`` must draw its increments in blocks of ``chunk`` steps (``noise.chunk`` of a
    ``GaussianIncrements``), so a block is one compiled call. Returns the saved states and the
    seconds spent compiling (the first call of each new graph).
    """
    n = len(times) - 1
    tt = times_on_device(times, x0)
    tl = tt
    dts = np.diff(times)
    saves = save_index.tolist()
    save_set = set(saves)
    out: list[Tensor] = [x0] if saves and saves[0] == 0 else []
    space_time = method.needs_space_time
    x = x0
    compile_time = 0.0
    fused_ok = True
    i = 0
    while i < n:
        k = min(chunk, n - i)
        # A block is fused when it is a full chunk of equal steps with no save point strictly inside.
        inner_save = any((i + j) in save_set for j in range(1, k))
        uniform = k == chunk and _equal_steps(dts[i : i + k], dt)
        if fused_ok and uniform and not inner_save:
            w_blk, u_blk = noise.block(i, k)
            fn = _compiled(method, k, dt, space_time)
            try:  # a new state signature compiles a new graph: its time is compile time
                x, secs = call_compiled(fn, (tuple(x.shape), x.dtype, x.device), x, tl[i], w_blk, u_blk)
                compile_time += secs
            except Exception as err:  # compilation unavailable: run this and later blocks eagerly
                warn_compile_failure("the fused SDE chunk", err, "the fused path falls back to the eager engine.")
                fused_ok = False
                continue
            i += k
        else:
            step = method.step
            for j in range(i, i + k):
                dw, u = noise(j)
                x = step(tl[j], tl[j + 1], float(dts[j]), x, dw, u)
                if (j + 1) in save_set and (j + 1) != i + k:
                    out.append(x)
            i += k
        if i in save_set:
            out.append(x)
    return out, compile_time
