"""Sources of Brownian increments for the native engine.

``GaussianIncrements`` draws from a ``torch.Generator`` in chunks of steps (one ``randn`` call per
chunk, so small batches do not pay a kernel launch per step); ``BrownianIncrements`` queries a
torchsde ``BrownianInterval`` (or any ``bm(ta, tb)`` callable), so the native engine and torchsde
can be run on the same Brownian path. Both return ``(dW, U)`` for step ``i`` where
``U = ∫_{t_i}^{t_{i+1}} (W_s − W_{t_i}) ds`` is only produced when ``space_time=True``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "GaussianIncrements", "BrownianIncrements", "ReflectedBrownian", "NoiseSchedule", "noise_schedule",
    "CHUNK_ELEMENTS", "CHUNK_ELEMENTS_CUDA",
]

#: Elements of noise drawn per ``randn`` call on a CPU (a chunk of steps covers at most this many
#: numbers: a block that stays in cache).
CHUNK_ELEMENTS = 1 << 18
#: The same on a CUDA device (16 MiB of float32): fewer launches, and with ``compile=True`` several
#: steps per compiled call even at a million elements per step.
CHUNK_ELEMENTS_CUDA = 1 << 22
_INV_SQRT12 = 1.0 / math.sqrt(12.0)


@dataclass(frozen=True)
class NoiseSchedule:
    """What :class:`GaussianIncrements` derives from the step sizes alone (cacheable per grid).

    Attributes:
        chunk: steps per ``randn`` call.
        sqrt_dt_host: ``sqrt(dt_i)`` as Python floats; ``sqrt_dt``: the same as a tensor (n,).
        uniform: per chunk, whether all its steps have the same size (one scaled ``normal_`` pass).
        dt: the step sizes as a tensor (only for ``space_time``), else ``None``.
    """

    chunk: int
    sqrt_dt_host: list[float]
    sqrt_dt: Tensor
    uniform: list[bool]
    dt: Tensor | None


def noise_schedule(
    dts: np.ndarray,
    shape: tuple[int, ...],
    *,
    device: torch.device,
    dtype: torch.dtype,
    space_time: bool = False,
    chunk_elements: int | None = None,
    chunk_steps: int | None = None,
) -> NoiseSchedule:
    """The :class:`NoiseSchedule` of steps ``dts`` (n,) for increments of ``shape``."""
    n = len(dts)
    numel = max(1, math.prod(shape))
    if chunk_elements is None:
        chunk_elements = CHUNK_ELEMENTS_CUDA if torch.device(device).type == "cuda" else CHUNK_ELEMENTS
    cap = max(1, chunk_elements // numel)
    chunk = max(1, min(n, cap if chunk_steps is None else min(chunk_steps, cap)))
    sq = np.sqrt(dts)
    # Chunks whose steps all have the same size (all but those ending at an output time, usually)
    # (equal up to the rounding of t0 + i dt grids; the mismatch in sqrt(dt) is then ~1e-9 relative at most).
    n_blocks = -(-n // chunk)
    padded = np.empty(n_blocks * chunk)
    padded[:n] = dts
    padded[n:] = dts[(n_blocks - 1) * chunk]  # the last block's first step: neutral for its check
    blocks = padded.reshape(n_blocks, chunk)
    uniform = np.all(np.abs(blocks - blocks[:, :1]) <= 1e-9 * blocks[:, :1], axis=1).tolist()
    return NoiseSchedule(
        chunk=chunk,
        sqrt_dt_host=sq.tolist(),
        sqrt_dt=torch.as_tensor(sq, dtype=dtype, device=device),
        uniform=uniform,
        dt=torch.tensor(dts, dtype=dtype, device=device) if space_time else None,
    )


class GaussianIncrements:
    """Increments ``dW_i ~ N(0, dt_i)`` (and ``U_i`` if ``space_time``) from a generator.

    Args:
        shape: shape of one increment, e.g. ``(B, *event)`` for diagonal noise or ``(B, m)``.
        dts: step sizes, float64 array of shape (n_steps,), all positive.
        generator: ``torch.Generator`` on ``device`` or ``None`` for torch's global RNG.
        space_time: also produce the time integral ``U`` (needed by SRA1).
        schedule: the :func:`noise_schedule` of ``dts`` when already computed (then
            ``chunk_elements``/``chunk_steps`` are ignored).
    """

    def __init__(
        self,
        shape: tuple[int, ...],
        dts: np.ndarray,
        *,
        generator: torch.Generator | None,
        device: torch.device,
        dtype: torch.dtype,
        space_time: bool = False,
        chunk_elements: int | None = None,
        chunk_steps: int | None = None,
        schedule: NoiseSchedule | None = None,
    ) -> None:
        self.shape = tuple(shape)
        self.n = len(dts)
        self.generator = generator
        self.device, self.dtype = device, dtype
        self.space_time = space_time
        if schedule is None:
            schedule = noise_schedule(dts, self.shape, device=device, dtype=dtype, space_time=space_time,
                                      chunk_elements=chunk_elements, chunk_steps=chunk_steps)
        self.chunk = schedule.chunk
        self._sqrt_dt_host = schedule.sqrt_dt_host
        self._sqrt_dt = schedule.sqrt_dt
        self._uniform = schedule.uniform
        self._dt = schedule.dt
        self._bshape = (1,) * len(self.shape)
        self._start = -(1 << 62)
        self._w: Tensor | None = None
        self._u: Tensor | None = None

    def _refill(self, i: int) -> None:
        k = min(self.chunk, self.n - i)
        view = (k,) + self._bshape
        sd = self._sqrt_dt[i : i + k].view(view)
        w = torch.empty((k,) + self.shape, device=self.device, dtype=self.dtype)
        if self._uniform[i // self.chunk]:
            # One pass: the generator scales by sqrt(dt) itself when every step in the chunk is equal.
            w.normal_(0.0, self._sqrt_dt_host[i], generator=self.generator)
        else:
            w.normal_(generator=self.generator).mul_(sd)
        if self.space_time:
            z2 = torch.empty((k,) + self.shape, device=self.device, dtype=self.dtype).normal_(generator=self.generator)
            h = self._dt[i : i + k].view(view)
            # U = h (W/2 + H) with the space-time Lévy area H ~ N(0, h/12) independent of W.
            self._u = h * (0.5 * w + (_INV_SQRT12 * sd) * z2)
        self._w = w
        self._start = i

    def __call__(self, i: int) -> tuple[Tensor, Tensor | None]:
        j = i - self._start
        if j >= self.chunk or j < 0:
            self._refill(i)
            j = 0
        return self._w[j], (self._u[j] if self.space_time else None)

    def block(self, i: int, k: int) -> tuple[Tensor, Tensor | None]:
        """The increments of steps ``i .. i+k-1`` stacked, shape (k, *shape); ``i`` starts a chunk of ``k``."""
        if k != self.chunk or i % self.chunk:
            raise ValueError(f"block({i}, {k}) must cover exactly one noise chunk of {self.chunk} steps.")
        if self._start != i:
            self._refill(i)
        return self._w, self._u


class ReflectedBrownian:
    """``W̃(s) = W(−s)`` for integrating in reversed time ``s = −t`` (decreasing ``ts``).

    The increment over ``[sa, sb]`` is ``W(−sb) − W(−sa) = −bm(−sb, −sa)``: exactly the increment
    ``W(t_next) − W(t)`` of the user's path over the backward step, so a forward run followed by a
    backward run on the same ``bm`` retraces it (for additive noise, exactly). The space-time
    integral ``U = ∫ (W̃(s) − W̃(sa)) ds`` over the step is ``U' − h·W'`` in terms of the path's own
    ``(W', U') = bm(−sb, −sa, return_U=True)`` and ``h = sb − sa``.
    """

    def __init__(self, bm: Callable[..., Tensor]) -> None:
        self.bm = bm

    def __call__(self, ta: float, tb: float, return_U: bool = False) -> Tensor:  # noqa: N803 (torchsde name)
        if return_U:
            w, u = self.bm(-tb, -ta, return_U=True)
            return -w, u - (tb - ta) * w
        return -self.bm(-tb, -ta)

    def __getattr__(self, name: str) -> object:
        # shape, dtype, device, levy_area_approximation: torchsde inspects these on its bm argument.
        if name == "bm":
            raise AttributeError(name)
        return getattr(self.bm, name)


class BrownianIncrements:
    """Increments queried from a Brownian path ``bm(ta, tb[, return_U=True])`` at the grid times."""

    def __init__(
        self,
        bm: Callable[..., object],
        times: np.ndarray,
        shape: tuple[int, ...],
        *,
        space_time: bool = False,
        chunk_steps: int = 1,
    ) -> None:
        if not callable(bm):
            raise TypeError(f"bm must be a Brownian path callable as bm(ta, tb), e.g. torchsde.BrownianInterval; "
                            f"got {type(bm).__name__}.")
        self.bm = bm
        self.times = [float(v) for v in times]
        self.shape = tuple(shape)
        self.space_time = space_time
        self.chunk = max(1, min(len(self.times) - 1, chunk_steps))  # steps per block for the fused path
        self._check()

    def _query(self, i: int) -> tuple[Tensor, Tensor | None]:
        ta, tb = self.times[i], self.times[i + 1]
        if self.space_time:
            try:
                w, u = self.bm(ta, tb, return_U=True)
            except (ValueError, RuntimeError, TypeError, AttributeError) as err:
                raise ValueError(
                    "this method needs the space-time integral of the Brownian path: create the path with "
                    "torchsde.BrownianInterval(..., levy_area_approximation='space-time')."
                ) from err
            return w.reshape(self.shape), u.reshape(self.shape)
        w = self.bm(ta, tb)
        return w.reshape(self.shape), None

    def _check(self) -> None:
        w = self.bm(self.times[0], self.times[1])
        if not isinstance(w, Tensor) or w.numel() != math.prod(self.shape):
            got = tuple(w.shape) if isinstance(w, Tensor) else type(w).__name__
            raise ValueError(
                f"bm returns increments of shape {got} but this SDE needs {self.shape} "
                f"(batch, *event) for diagonal noise or (batch, m) otherwise; create the Brownian path with "
                f"that size, e.g. torchsde.BrownianInterval(t0, t1, size={self.shape})."
            )

    def __call__(self, i: int) -> tuple[Tensor, Tensor | None]:
        return self._query(i)

    def block(self, i: int, k: int) -> tuple[Tensor, Tensor | None]:
        """The increments of steps ``i .. i+k-1`` stacked, shape (k, *shape)."""
        parts = [self._query(j) for j in range(i, i + k)]
        w = torch.stack([p[0] for p in parts])
        return w, (torch.stack([p[1] for p in parts]) if self.space_time else None)
