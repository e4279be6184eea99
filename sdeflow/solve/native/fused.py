"""The fused native path: chunks of steps compiled into one kernel graph with ``torch.compile``.

Small batches spend nearly all their time in Python and kernel-launch overhead (one launch per op
per step). Compiling ``chunk`` consecutive steps of a method into one graph removes that overhead:
the Brownian increments of the chunk are drawn by the same noise source as the eager engine (so a
seed gives the same paths up to floating-point rounding of the fused arithmetic), and the compiled
graph does the arithmetic of all steps at once.

Chunks that contain a save point or steps of unequal size run eagerly, step by step, with the same
increments. Compiled graphs are cached per SDE object (outside it, by
:func:`sdeflow._cache.object_cache`) and per (method, chunk length, dt, space-time), so repeated
``simulate`` calls reuse them; the first call pays the compile time, reported as
``SolveStats.compile_time``. If compilation is unavailable (no C++ compiler, an unsupported
platform, a graph the compiler rejects) the engine warns once and runs eagerly.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import Tensor

from ..._cache import object_cache
from ..._compile import call_compiled, warn_compile_failure
from .base import NativeSDEMethod
from .engine import Integrator, run_segments, step_times, times_on_device

__all__ = ["CompiledIntegrator", "integrate_sde_fused", "DEFAULT_CHUNK"]

#: Steps per compiled chunk by default.
DEFAULT_CHUNK = 128


def _chunk_function(k: int, dt: float, space_time: bool) -> Callable[..., Tensor]:
    def chunk(method: NativeSDEMethod, x: Tensor, t0: Tensor, dw: Tensor, u: Tensor | None) -> Tensor:
        step = method.step
        for i in range(k):
            ta = t0 + i * dt
            x = step(ta, ta + dt, dt, x, dw[i], u[i] if space_time else None)
        return x

    return chunk


def _compiled(method: NativeSDEMethod, k: int, dt: float, space_time: bool) -> Callable[..., Tensor]:
    """The compiled chunk of ``k`` steps, cached per SDE (outside it) and per (method, k, dt, space-time).

    The method (and so the SDE) is an argument of the compiled function, not captured by it: the
    cache entry, which lives as long as the SDE, must not keep the SDE alive itself.
    """
    cache = object_cache(method.sde, "fused_chunks")
    key = (type(method), k, dt, space_time)
    fn = cache.get(key)
    if fn is None:
        fn = torch.compile(_chunk_function(k, dt, space_time), dynamic=False)
        cache[key] = fn
    return fn


class CompiledIntegrator(Integrator):
    """Full chunks of ``chunk`` equal steps run as one compiled graph; other steps run eagerly.

    A chunk is the noise source's block ``[c·chunk, (c+1)·chunk)``; it is fused when it lies inside
    one ``advance`` call (no save point strictly inside it) and its steps all equal ``dt``. If
    compilation fails, the integrator warns once and runs eagerly from then on.

    Args:
        method: the method bound to the working SDE.
        times: the grid times as 0-dim tensors (n + 1,); ``dts``: the step sizes, float64 (n,).
        noise: ``GaussianIncrements`` or ``BrownianIncrements`` drawing blocks of ``chunk`` steps.
        chunk: steps per compiled graph (``noise.chunk``); ``dt``: the nominal step.
    """

    def __init__(self, method: NativeSDEMethod, times: Sequence[Tensor], dts: np.ndarray, noise,  # noqa: ANN001
                 *, chunk: int, dt: float) -> None:
        self.method, self.times, self.noise, self.chunk, self.dt = method, times, noise, chunk, dt
        self.quantum = chunk
        self.dts = dts.tolist()
        n = len(self.dts)
        full = n // chunk
        # A chunk's steps all equal dt up to the rounding of t0 + i dt grids (relative 1e-9).
        blocks = np.abs(dts[: full * chunk].reshape(full, chunk) - dt) <= 1e-9 * dt
        self.uniform = np.all(blocks, axis=1).tolist()
        self.fused_ok = True
        self.compile_time = 0.0

    def advance(self, x: Tensor, a: int, b: int) -> Tensor:
        chunk, tl, dts = self.chunk, self.times, self.dts
        step = self.method.step
        i = a
        while i < b:
            blk = i // chunk
            end = (blk + 1) * chunk
            if self.fused_ok and i == blk * chunk and end <= b and blk < len(self.uniform) and self.uniform[blk]:
                w_blk, u_blk = self.noise.block(i, chunk)
                fn = _compiled(self.method, chunk, self.dt, self.method.needs_space_time)
                try:  # a new state signature compiles a new graph: its time is compile time
                    x, secs = call_compiled(fn, (tuple(x.shape), x.dtype, x.device), self.method, x, tl[i], w_blk,
                                            u_blk)
                    self.compile_time += secs
                except Exception as err:  # compilation unavailable: run this and later chunks eagerly
                    warn_compile_failure("the fused SDE chunk", err, "the fused path falls back to the eager engine.")
                    self.fused_ok = False
                    continue
                i = end
                continue
            stop = min(end, b)
            for j in range(i, stop):
                dw, u = self.noise(j)
                x = step(tl[j], tl[j + 1], dts[j], x, dw, u)
            i = stop
        return x


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
    integ = CompiledIntegrator(method, step_times(times_on_device(times, x0)), np.diff(times), noise,
                               chunk=chunk, dt=dt)
    out = run_segments(integ.advance, x0, save_index, len(times) - 1)
    return out, integ.compile_time
