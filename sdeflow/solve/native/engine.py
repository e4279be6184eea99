"""The native integration loops.

One Python loop over precomputed grid times; no host synchronisation inside it (no ``.item()``,
no data-dependent branches), so CUDA work is queued asynchronously. States are saved only at the
requested grid indices; ``save="final"`` keeps O(B·d) memory whatever the number of steps.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from .base import NativeODEMethod, NativeSDEMethod

__all__ = ["integrate_sde", "integrate_ode", "times_on_device"]

Noise = Callable[[int], tuple[Tensor, "Tensor | None"]]


def _progress_bar(total: int, enabled: bool, desc: str):  # noqa: ANN202
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="step", mininterval=0.5)


def _loop(
    advance: Callable[[int, Tensor], Tensor],
    x0: Tensor,
    n: int,
    save_index: np.ndarray,
    bar: object | None = None,
) -> list[Tensor]:
    """Run ``x = advance(i, x)`` for i < n, keeping the states at ``save_index`` (grid indices, in order)."""
    save = save_index.tolist() + [-1]
    out: list[Tensor] = []
    k = 0
    if save[0] == 0:
        out.append(x0)
        k = 1
    nxt = save[k]
    x = x0
    every = max(1, n // 200)
    for i in range(n):
        x = advance(i, x)
        if i + 1 == nxt:
            out.append(x)
            k += 1
            nxt = save[k]
        if bar is not None and (i + 1) % every == 0:
            bar.update(every)
    if bar is not None:
        bar.update(n - bar.n)
        bar.close()
    return out


def times_on_device(times: np.ndarray, x0: Tensor) -> Tensor:
    """The time grid as a tensor on ``x0``'s device; on CUDA through pinned memory, without a host sync."""
    tt = torch.as_tensor(times, dtype=x0.dtype)
    if x0.device.type == "cuda":
        return tt.pin_memory().to(x0.device, non_blocking=True)
    return tt.to(x0.device)


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
    tt = times_on_device(times, x0)
    dts = np.diff(times).tolist()
    step = method.step

    def advance(i: int, x: Tensor) -> Tensor:
        dw, u = noise(i)
        return step(tt[i], tt[i + 1], dts[i], x, dw, u)

    return _loop(advance, x0, n, save_index, _progress_bar(n, progress, f"simulate ({method.name})"))


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
    return _loop(lambda i, x: step(tt[i], tt[i + 1], dts[i], x), x0, n, save_index)
