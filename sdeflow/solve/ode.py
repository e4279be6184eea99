"""``solve_ode()``: the front door for ODEs ``dx/dt = func(t, x)``."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from .._checks import check_same_device, check_state, check_step, check_times
from .backends.torchdiffeq_backend import TORCHDIFFEQ_METHODS, solve_torchdiffeq
from .grid import build_grid
from .native import ODE_METHODS
from .native.engine import integrate_ode
from .solution import Solution, SolveStats, path_status

__all__ = ["solve_ode"]


def _check_func(func: Callable[[Tensor, Tensor], Tensor], t0: Tensor, x0: Tensor) -> None:
    out = func(t0, x0)
    if not isinstance(out, Tensor):
        raise TypeError(f"func(t, x) must return a torch.Tensor; it returned {type(out).__name__}.")
    if out.shape != x0.shape:
        raise ValueError(
            f"func(t, x) returned shape {tuple(out.shape)} but the state x has shape {tuple(x0.shape)}; "
            f"the vector field must have the state's shape."
        )
    if out.dtype != x0.dtype:
        raise TypeError(f"func(t, x) returned dtype {out.dtype} for a state of dtype {x0.dtype}.")


def solve_ode(
    func: Callable[[Tensor, Tensor], Tensor],
    x0: Tensor,
    ts: Tensor | np.ndarray | list[float],
    *,
    method: str = "dopri5",
    rtol: float = 1e-7,
    atol: float = 1e-9,
    dt: float | None = None,
    backend: Literal["torchdiffeq", "native"] = "torchdiffeq",
    adjoint: bool = False,
    max_steps: int | None = None,
) -> Solution:
    """Integrate ``dx/dt = func(t, x)`` from ``x0`` at ``ts[0]``; ``ts`` may decrease.

    Args:
        func: vector field ``func(t, x)`` returning ``x``'s shape; an ``nn.Module`` for ``adjoint=True``
            (its parameters get gradients). Probability-flow wrappers are such modules.
        x0: initial state (B, *event_shape).
        ts: strictly monotone output times (T,).
        method: any torchdiffeq method (``"dopri5"``, ``"rk4"``, ...), or ``"euler"``, ``"heun"``,
            ``"rk4"`` with ``backend="native"``.
        rtol, atol: tolerances of the adaptive torchdiffeq methods.
        dt: step size for fixed-step methods (required by the native backend; torchdiffeq's
            fixed-grid methods step on ``ts`` when it is omitted).
        backend: ``"torchdiffeq"`` or ``"native"``.
        adjoint: gradients by ``torchdiffeq.odeint_adjoint`` (constant memory in the number of steps).
        max_steps: cap on adaptive steps (torchdiffeq's ``max_num_steps``).

    Returns:
        :class:`Solution` with ``xs`` of shape (T, B, *event_shape) and ``stats.nfe``.
    """
    if not callable(func):
        raise TypeError(f"func must be callable as func(t, x); got {type(func).__name__}.")
    x0 = check_state(x0)
    ts_np = check_times(ts)
    check_same_device(func, x0, name="func")
    if backend not in ("torchdiffeq", "native"):
        raise ValueError(f"backend must be 'torchdiffeq' or 'native'; got {backend!r}.")
    if backend == "native":
        if method not in ODE_METHODS:
            raise ValueError(
                f"method={method!r} is not a native ODE method; choose one of {', '.join(ODE_METHODS)}, "
                f"or use backend='torchdiffeq'."
            )
        if adjoint:
            raise ValueError("adjoint=True needs backend='torchdiffeq'; the native backend backpropagates directly.")
        dt = check_step(dt, required_for="the native ODE backend")
    else:
        if method not in TORCHDIFFEQ_METHODS:
            raise ValueError(f"unknown torchdiffeq method {method!r}; choose one of {', '.join(TORCHDIFFEQ_METHODS)}.")
        if dt is not None:
            dt = check_step(dt)
    t0 = torch.as_tensor(ts_np[0], dtype=x0.dtype, device=x0.device)
    _check_func(func, t0, x0)

    tick = time.perf_counter()
    if backend == "native":
        sign = 1.0 if ts_np[-1] > ts_np[0] else -1.0
        grid = build_grid(sign * ts_np, dt)
        solver = ODE_METHODS[method](func)
        xs = torch.stack(integrate_ode(solver, x0, sign * grid.times, grid.save_index))
        stats = SolveStats(method=method, backend="native", steps=grid.n_steps,
                           drift_evals=1 + grid.n_steps * solver.evals)
    else:
        ts_t = torch.as_tensor(ts_np, dtype=x0.dtype, device=x0.device)
        xs, counter = solve_torchdiffeq(func, x0, ts_t, method=method, rtol=rtol, atol=atol, dt=dt,
                                        max_steps=max_steps, adjoint=adjoint)
        stats = SolveStats(method=method, backend="torchdiffeq", steps=None, drift_evals=1 + counter.nfe)
    if x0.device.type == "cuda":
        torch.cuda.synchronize(x0.device)
    stats.wall_time = time.perf_counter() - tick
    ts_t = torch.as_tensor(ts_np, dtype=x0.dtype, device=x0.device)
    return Solution(ts=ts_t, xs=xs, stats=stats, status=path_status(xs))
