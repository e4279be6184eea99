"""Whole-trajectory Triton kernel for elementwise-affine SDEs, noise drawn in the kernel.

For an Itô SDE with diagonal noise whose coefficients are affine in the state, element by element,

    dx_i = (a_i(t) x_i + b_i(t)) dt + (c_i(t) x_i + e_i(t)) dW_i,

(Ornstein–Uhlenbeck, Brownian motion, geometric Brownian motion, VP, sub-VP, VE, EDM: the SDE says
so with ``elementwise_affine = True``), each element's path is independent of every other element.
One kernel launch then runs all steps between two save points: every program loads a block of
elements once, keeps them in registers for the whole segment, draws the Gaussian increments with a
counter-based Philox generator inside the loop, and stores the block once. Memory traffic is one read
and one write of the state per segment instead of several per step, and there is one launch instead
of several per step, so it is fast at any batch size.

Random stream: the normal for element ``k`` at global step ``n`` comes from Philox-4x32-10 keyed by a
64-bit seed with counter ``(k mod 2^32, k div 2^32, n div 4, 0)`` (one call gives the normals of four
consecutive steps, by Box–Muller). It depends only on the seed, the element and the step, not on the
save points, the block size or the device, so ``save="ts"`` and ``save="final"`` give the same final
state. It is a different stream from the eager engine's ``torch.randn``: with the same seed the two
paths differ, the laws agree. The uniforms have 31 random bits and are kept away from 0, so
``|z| <= 6.7``: the truncated tail mass is below 1e-10.

The coefficients are evaluated on the host side once per step (``drift``/``diffusion`` at ``x = 0``
and ``x = 1``, vectorised over the step times), premultiplied by ``dt`` and ``sqrt(dt)``, and read by
the kernel from a small table of shape (steps, 4, D) (D = 1 when they are equal over the elements).
Euler–Maruyama and Milstein (``½ g ∂g/∂x (ΔW² − dt)`` with ``∂g/∂x = c``) are supported.

Without a GPU the kernel runs under Triton's interpreter when ``TRITON_INTERPRET=1`` is set before
Triton is imported (slow; used by the tests on machines without CUDA).
"""

from __future__ import annotations

import math
import os
import time
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..._cache import object_cache
from ..._checks import state_stamp
from .engine import Integrator, run_segments

__all__ = ["triton_unavailable_reason", "linear_coefficient_table", "TritonIntegrator", "integrate_sde_triton",
           "kernel_normals"]

_KERNELS: Any = None
_IMPORT_ERROR: str | None = None
_SEEN: set[tuple] = set()


def _kernels() -> Any:
    """The kernel module, imported on first use (Triton ships with CUDA builds of torch only)."""
    global _KERNELS, _IMPORT_ERROR
    if _KERNELS is None and _IMPORT_ERROR is None:
        try:
            from . import _triton_kernels
        except Exception as err:  # noqa: BLE001 (any import failure means: no Triton)
            _IMPORT_ERROR = f"{type(err).__name__}: {err}"
        else:
            _KERNELS = _triton_kernels
    return _KERNELS


#: Native methods the kernel implements.
TRITON_METHODS = ("euler", "milstein")


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def triton_unavailable_reason(device: torch.device) -> str | None:
    """Why ``compile='triton'`` cannot run on ``device`` (``None`` when it can)."""
    if device.type != "cuda" and not (device.type == "cpu" and _interpreting()):
        return (f"the Triton kernel runs on CUDA devices and the state is on {device.type!r} "
                f"(on a CPU it runs only under Triton's interpreter, TRITON_INTERPRET=1)")
    if _kernels() is None:  # imported only once the device can use it
        return f"Triton cannot be imported ({_IMPORT_ERROR}); it comes with CUDA builds of torch"
    return None


_M32 = np.uint64(0xFFFFFFFF)


def _philox4x32(seed: int, c0: np.ndarray, c1: np.ndarray, c2: np.ndarray, c3: np.ndarray) -> list[np.ndarray]:
    """Philox-4x32-10 (Salmon et al. 2011) on uint64 arrays holding 32-bit words, as Triton computes it."""
    k0, k1 = np.uint64(seed & 0xFFFFFFFF), np.uint64((seed >> 32) & 0xFFFFFFFF)
    mul_a, mul_b = np.uint64(0xD2511F53), np.uint64(0xCD9E8D57)
    for _ in range(10):
        p0, p1 = mul_b * c2, mul_a * c0  # < 2^64: exact in uint64
        c0, c1, c2, c3 = ((p0 >> np.uint64(32)) ^ c1 ^ k0, p0 & _M32, (p1 >> np.uint64(32)) ^ c3 ^ k1, p1 & _M32)
        k0, k1 = (k0 + np.uint64(0x9E3779B9)) & _M32, (k1 + np.uint64(0xBB67AE85)) & _M32
    return [c0, c1, c2, c3]


def kernel_normals(seed: int, numel: int, n_steps: int) -> np.ndarray:
    """The standard normals the Triton kernel uses, computed on the host (a reference for tests).

    Returns a float32 array of shape (n_steps, numel): row ``n`` holds the normals of global step
    ``n`` for the elements of the flattened state. Host arithmetic may differ from the GPU's
    ``log``/``cos``/``sin`` in the last bits.
    """
    k = np.arange(numel, dtype=np.uint64)
    out = np.empty((4 * (-(-n_steps // 4)), numel), dtype=np.float32)
    scale = np.float32(4.656612873077393e-10)
    for grp in range(-(-n_steps // 4)):
        r = _philox4x32(seed, k & _M32, k >> np.uint64(32), np.full_like(k, grp), np.zeros_like(k))
        for pair in range(2):
            u0 = ((r[2 * pair] >> np.uint64(1)).astype(np.float32) + np.float32(0.5)) * scale
            u1 = (r[2 * pair + 1] >> np.uint64(1)).astype(np.float32) * scale
            rad = np.sqrt(np.float32(-2.0) * np.log(u0))
            ang = np.float32(6.283185307179586) * u1
            out[4 * grp + 2 * pair] = rad * np.cos(ang)
            out[4 * grp + 2 * pair + 1] = rad * np.sin(ang)
    return out[:n_steps]


def linear_coefficient_table(sde: Any, times: np.ndarray, x0: Tensor, *, check: bool = True) -> tuple[Tensor, bool]:
    """The per-step table ``(a dt, b dt, c sqrt(dt), e sqrt(dt))`` of an elementwise-affine SDE.

    Args:
        sde: an SDE with ``elementwise_affine = True`` (drift ``a x + b``, diffusion ``c x + e``).
        times: the step grid, shape (n + 1,), increasing (the solver's working time).
        x0: the initial state, shape (B, *event); gives the event shape, dtype and device.
        check: verify the affine claim at a random state (a wrong flag raises instead of giving
            silently wrong paths).

    Returns:
        ``(table, per_dim)``: the table of shape (n, 4, D) in ``x0``'s dtype on its device, with
        D = prod(event) when a coefficient differs between elements and D = 1 otherwise.
    """
    event = tuple(x0.shape[1:])
    n = len(times) - 1
    dev = x0.device
    t = torch.tensor(times[:-1], dtype=torch.float64, device=dev)
    dts = torch.as_tensor(np.diff(times), dtype=torch.float64, device=dev).reshape((n,) + (1,) * len(event))
    zeros = torch.zeros((n,) + event, dtype=torch.float64, device=dev)
    ones = torch.ones_like(zeros)
    with torch.no_grad():
        b = torch.broadcast_to(sde.drift(t, zeros), zeros.shape)
        a = torch.broadcast_to(sde.drift(t, ones), zeros.shape) - b
        e = torch.broadcast_to(sde.diffusion(t, zeros), zeros.shape)
        c = torch.broadcast_to(sde.diffusion(t, ones), zeros.shape) - e
        if check:
            gen = torch.Generator(device=dev).manual_seed(0)
            probe = torch.randn(zeros.shape, generator=gen, dtype=torch.float64, device=dev) * 3
            for name, fn, slope, icpt in (("drift", sde.drift, a, b), ("diffusion", sde.diffusion, c, e)):
                got = torch.broadcast_to(fn(t, probe), zeros.shape)
                want = slope * probe + icpt
                scale = want.abs().amax() + icpt.abs().amax() + 1e-300
                if not torch.isfinite(got).all() or float((got - want).abs().amax() / scale) > 1e-9:
                    raise ValueError(
                        f"{type(sde).__name__} declares elementwise_affine = True but its {name} is not "
                        f"affine in x element by element; set elementwise_affine = False (compile=True "
                        f"fuses any SDE with torch.compile)."
                    )
    sq = torch.sqrt(dts)
    table = torch.stack([a * dts, b * dts, c * sq, e * sq], dim=1).reshape(n, 4, -1)
    per_dim = bool(table.shape[-1] > 1 and not torch.equal(table, table[..., :1].expand_as(table)))
    if not per_dim:
        table = table[..., :1]
    if not torch.isfinite(table).all():
        raise ValueError(f"{type(sde).__name__}'s drift or diffusion is not finite on the time grid "
                         f"[{times[0]:g}, {times[-1]:g}]; check the time interval.")
    return table.to(x0.dtype).contiguous(), per_dim


def _cached_table(sde: Any, times: np.ndarray, x0: Tensor, save_index: np.ndarray) -> tuple[Tensor, bool, dict]:
    """:func:`linear_coefficient_table` and the constant-segment flags, cached per SDE object.

    The cache lives outside the SDE (:func:`sdeflow._cache.object_cache`). Repeated calls with the
    same grid, state shape, dtype and device reuse the table (no host synchronisation at all); any
    in-place change of a parameter or buffer, or of a plain attribute, invalidates it. The flags
    (``const_rows[(i, j)]``: all rows of steps ``i .. j-1`` are equal) are computed for the segments
    between save points; :func:`_segment_is_constant` adds other segments on demand.
    """
    owner = getattr(sde, "base", sde)  # a time-flipped wrapper is made afresh per call: cache on its base
    key = (type(sde).__name__, times.tobytes(), tuple(np.asarray(save_index).tolist()), tuple(x0.shape[1:]),
           x0.dtype, str(x0.device))
    stamp = state_stamp(owner)
    cache = object_cache(owner, "triton_tables")
    hit = cache.get(key)
    if hit is not None and hit[0] == stamp:
        return hit[1]
    table, per_dim = linear_coefficient_table(sde, times, x0)
    const_rows: dict[tuple[int, int], bool] = {}
    pos = 0
    for idx in (int(i) for i in save_index):
        if idx > pos:
            _segment_is_constant(table, const_rows, pos, idx)
            pos = idx
    if len(cache) >= 16:  # a few grids per SDE; drop the oldest
        cache.pop(next(iter(cache)))
    cache[key] = (stamp, (table, per_dim, const_rows))
    return table, per_dim, const_rows


def _segment_is_constant(table: Tensor, const_rows: dict[tuple[int, int], bool], i: int, j: int) -> bool:
    """Whether the table's rows ``i .. j-1`` are all equal (memoised in ``const_rows``)."""
    hit = const_rows.get((i, j))
    if hit is None:
        seg = table[i:j]
        hit = const_rows[(i, j)] = bool(torch.equal(seg, seg[:1].expand_as(seg)))
    return hit


def _launch_config(numel: int) -> tuple[int, int]:
    """(BLOCK, num_warps): 512 elements per program (4 per thread) for large states, fewer for small."""
    block = 512 if numel >= 512 else max(32, 1 << math.ceil(math.log2(max(numel, 1))))
    return block, (4 if block >= 128 else 1)


class TritonIntegrator(Integrator):
    """Advances an elementwise-affine SDE with one Triton kernel launch per ``advance`` call.

    Args:
        sde: the working SDE (already time-flipped for decreasing times), ``elementwise_affine``.
        x0: initial state (B, *event), float32 or float64, on CUDA (or CPU under the interpreter);
            gives the shape, dtype and device.
        times: step grid (n + 1,), increasing; ``save_index``: the save points (the coefficient
            table's constant-segment flags are precomputed for them).
        seed: Philox key, 0 <= seed < 2^63.
        method: ``"euler"`` or ``"milstein"``.
        block, num_warps: launch configuration (defaults chosen by the state size).

    ``compile_time`` adds up the seconds spent in launches that compiled a new kernel variant (the
    run time of those launches included; 0 once every variant has been seen). The noise of global
    step ``n`` depends only on the seed, the element and ``n``, so how the run is split into
    ``advance`` calls does not change the result.
    """

    def __init__(self, sde: Any, x0: Tensor, times: np.ndarray, save_index: np.ndarray, *, seed: int,
                 method: str = "euler", block: int | None = None, num_warps: int | None = None) -> None:
        reason = triton_unavailable_reason(x0.device)
        if reason is not None:
            raise RuntimeError(f"compile='triton' is unavailable: {reason}; use compile=True instead.")
        if method not in TRITON_METHODS:
            raise ValueError(f"compile='triton' implements {', '.join(TRITON_METHODS)}; got method={method!r}.")
        if x0.dtype not in (torch.float32, torch.float64):
            raise ValueError(f"compile='triton' integrates float32 or float64 states; x0 is {x0.dtype}: convert "
                             f"it with x0.float().")
        self.table, self.per_dim, self.const_rows = _cached_table(sde, times, x0, save_index)
        self.seed, self.method = int(seed), method
        numel = x0.numel()
        self.numel = numel
        self.dim = max(1, numel // max(1, x0.shape[0]))
        bl, nw = _launch_config(numel)
        self.block, self.num_warps = block or bl, num_warps or nw
        self.compile_time = 0.0

    def evaluations(self, n_steps: int) -> tuple[int, int]:
        # the kernel reads the (cached) coefficient table: per step, one drift and one diffusion, and
        # Milstein's derivative is the table's slope c
        return n_steps, n_steps

    def advance(self, x: Tensor, pos: int, idx: int) -> Tensor:
        x = x.detach().clone(memory_format=torch.contiguous_format)  # the kernel updates its input in place
        if self.numel == 0:
            return x
        table, bl, nw = self.table, self.block, self.num_warps
        sizes = (self.numel, self.dim, table.shape[-1])
        seg = table[pos:idx]
        const = _segment_is_constant(table, self.const_rows, pos, idx)  # one row suffices
        # Triton specialises integer arguments equal to 1 or divisible by 16 (not the step bounds, which
        # the kernel marks do_not_specialize): a new pattern compiles
        key = (self.method, self.per_dim, const, bl, nw, x.dtype, str(x.device),
               tuple((v == 1, v % 16 == 0) for v in sizes))
        first = key not in _SEEN
        if first and x.is_cuda:
            torch.cuda.synchronize(x.device)
        tic = time.perf_counter()
        _kernels().affine_sde_kernel[(-(-self.numel // bl),)](
            x, seg[:1] if const else seg, *sizes, pos, idx, pos // 4, (idx + 3) // 4, self.seed,
            MILSTEIN=(self.method == "milstein"), PER_DIM=self.per_dim, CONST_COEF=const, BLOCK=bl, num_warps=nw)
        if first:
            if x.is_cuda:
                torch.cuda.synchronize(x.device)
            self.compile_time += time.perf_counter() - tic
            _SEEN.add(key)
        return x


def integrate_sde_triton(
    sde: Any,
    x0: Tensor,
    times: np.ndarray,
    save_index: np.ndarray,
    *,
    seed: int,
    method: str = "euler",
    block: int | None = None,
    num_warps: int | None = None,
) -> tuple[list[Tensor], float]:
    """Integrate an elementwise-affine SDE with the Triton kernel; returns the states at ``save_index``.

    Arguments as :class:`TritonIntegrator`. Returns ``(states, compile_time)``: tensors of shape
    (B, *event), one per entry of ``save_index``, and the seconds spent compiling kernel variants.
    """
    integ = TritonIntegrator(sde, x0, times, save_index, seed=seed, method=method, block=block,
                             num_warps=num_warps)
    x = x0.detach().clone(memory_format=torch.contiguous_format)
    out = run_segments(integ.advance, x, save_index, len(times) - 1)
    return out, integ.compile_time
