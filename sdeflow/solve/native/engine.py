"""The native integration loops: integrators advance a state between grid indices, one loop saves.

An *integrator* advances the state from grid index ``i`` to ``j`` (:meth:`Integrator.advance`);
it neither saves states nor reports progress. :func:`run_segments` is the one loop that does:
it calls ``advance`` between consecutive save points (and progress ticks) and keeps the states at
the requested grid indices, so ``save="final"`` keeps O(B·d) memory whatever the number of steps.
The eager integrators here are one Python loop over precomputed grid times, with no host
synchronisation inside it (no ``.item()``, no data-dependent branches), so CUDA work is queued
asynchronously. The compiled-chunk and Triton integrators live in :mod:`.fused` and
:mod:`.triton_linear`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import Tensor

from ..._checks import time_dtype
from .base import NativeODEMethod, NativeSDEMethod

__all__ = [
    "Integrator", "EagerIntegrator", "run_segments", "progress_bar", "integrate_sde", "integrate_ode",
    "times_on_device", "step_times",
]

Noise = Callable[[int], tuple[Tensor, "Tensor | None"]]
Advance = Callable[[Tensor, int, int], Tensor]

# Up to this many steps the grid's times are split into 0-dim tensors once (cheaper than indexing
# the time tensor twice per step); above it they are indexed step by step, to bound the memory.
_UNBIND_MAX = 1 << 16


class Integrator:
    """Advances a state between grid indices; the driver (:func:`run_segments`) saves.

    Attributes:
        quantum: the driver splits the run only at multiples of this many steps (besides the save
            points), e.g. a compiled chunk's length, so progress ticks never change the arithmetic.
        compile_time: seconds spent compiling so far (fused paths).
    """

    quantum: int = 1
    compile_time: float = 0.0

    def advance(self, x: Tensor, i: int, j: int) -> Tensor:
        """The state at grid index ``j`` from the state ``x`` at index ``i < j``."""
        raise NotImplementedError

    def evaluations(self, n_steps: int) -> tuple[int, int] | None:
        """Drift and diffusion evaluations actually made over ``n_steps`` steps, where the integrator
        counts them (``None``: the method's declared costs per step apply)."""
        return None


def times_on_device(times: np.ndarray, x0: Tensor) -> Tensor:
    """The time grid as a tensor on ``x0``'s device, in :func:`~sdeflow._checks.time_dtype` of its dtype (x0's
    dtype; float32 for half-precision states); on CUDA through pinned memory, without a host sync."""
    tt = torch.tensor(times, dtype=time_dtype(x0.dtype))  # a copy: the grid arrays are shared (read-only)
    if x0.device.type == "cuda":
        return tt.pin_memory().to(x0.device, non_blocking=True)
    return tt.to(x0.device)


def step_times(tt: Tensor) -> Sequence[Tensor]:
    """The grid times as a sequence of 0-dim tensors (``tt`` itself for very long grids)."""
    return tt.unbind() if tt.shape[0] <= _UNBIND_MAX else tt


class EagerIntegrator(Integrator):
    """One ``method.step`` per grid step, fed by ``noise(i) -> (dW, U)``.

    Args:
        method: a :class:`~sdeflow.solve.native.base.NativeSDEMethod` bound to the working SDE.
        times: the grid times as 0-dim tensors (:func:`step_times`), (n + 1,).
        dts: the step sizes as Python floats, (n,).
        noise: the increments of step ``i``.
    """

    def __init__(self, method: NativeSDEMethod, times: Sequence[Tensor], dts: Sequence[float], noise: Noise) -> None:
        self.method, self.times, self.dts, self.noise = method, times, dts, noise

    def advance(self, x: Tensor, i: int, j: int) -> Tensor:
        step, noise, tt, dts = self.method.step, self.noise, self.times, self.dts
        for k in range(i, j):
            dw, u = noise(k)
            x = step(tt[k], tt[k + 1], dts[k], x, dw, u)
        return x


def progress_bar(total: int, enabled: bool, desc: str):  # noqa: ANN201 (tqdm or None)
    """A tqdm bar over ``total`` steps, or ``None`` when not ``enabled``."""
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="step", mininterval=0.5)


def run_segments(
    advance: Advance,
    x0: Tensor,
    save_index: Sequence[int],
    n: int,
    *,
    bar: object | None = None,
    quantum: int = 1,
    keep: Callable[[Tensor], None] | None = None,
) -> list[Tensor]:
    """The one saving loop: ``advance`` between save points, keeping the states at ``save_index``.

    Args:
        advance: ``advance(x, i, j)`` returns the state at grid index ``j`` from ``x`` at ``i``.
        x0: the state at index 0 (kept as is when 0 is a save point).
        save_index: strictly increasing grid indices in ``[0, n]``.
        n: the number of steps.
        bar: a progress bar (tqdm-like ``update``/``close``/``n``); the run is then also split at
            about 200 ticks, at multiples of ``quantum`` steps.
        keep: called with each saved state, in order, instead of collecting them.

    Returns:
        The states at ``save_index``, in order (empty when ``keep`` takes them).
    """
    saves = save_index.tolist() if isinstance(save_index, np.ndarray) else list(save_index)
    stops = saves
    if bar is not None:
        stride = max(1, n // 200)
        stride = -(-stride // quantum) * quantum
        stops = sorted(set(saves).union(range(stride, n, stride)))
    want = set(saves) if bar is not None else None
    out: list[Tensor] = []
    if keep is None:
        keep = out.append
    x, pos = x0, 0
    for stop in stops:
        if stop > pos:
            x = advance(x, pos, stop)
            if bar is not None:
                bar.update(stop - pos)
            pos = stop
        if want is None or stop in want:
            keep(x)
    if bar is not None:
        bar.update(n - bar.n)
        bar.close()
    return out


def integrate_sde(
    method: NativeSDEMethod,
    x0: Tensor,
    times: np.ndarray,
    save_index: np.ndarray,
    noise: Noise,
    *,
    progress: bool = False,
) -> list[Tensor]:
    """Step ``method`` over ``times`` from ``x0``; return the states at ``save_index`` (in order)."""
    n = len(times) - 1
    integ = EagerIntegrator(method, step_times(times_on_device(times, x0)), np.diff(times).tolist(), noise)
    bar = progress_bar(n, progress, f"simulate ({method.name})")
    return run_segments(integ.advance, x0, save_index, n, bar=bar)


def integrate_ode(
    method: NativeODEMethod,
    x0: Tensor,
    times: np.ndarray,
    save_index: np.ndarray,
) -> list[Tensor]:
    """Fixed-step ODE loop over ``times`` (increasing or decreasing); states at ``save_index``."""
    n = len(times) - 1
    tt = times_on_device(times, x0)
    dts = np.diff(times).tolist()
    step = method.step

    def advance(x: Tensor, i: int, j: int) -> Tensor:
        for k in range(i, j):
            x = step(tt[k], tt[k + 1], dts[k], x)
        return x

    return run_segments(advance, x0, save_index, n)
