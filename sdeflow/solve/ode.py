"""``solve_ode()``: the front door for ODEs ``dx/dt = func(t, x)``."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from .._checks import (
    check_int,
    check_memory,
    check_not_meta,
    check_same_device,
    check_state,
    check_step,
    check_times,
    time_dtype,
)
from .backends.torchdiffeq_backend import TORCHDIFFEQ_METHODS, solve_torchdiffeq
from .grid import build_grid
from .native import ODE_METHODS
from .native.engine import integrate_ode
from .plan import _time_tolerance, check_tolerances, estimated_steps
from .solution import Solution, SolveStats, check_on_failure, path_status, report_solution, solve_by_parts

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
    on_failure: Literal["return", "raise"] = "return",
) -> Solution:
    """Integrate ``dx/dt = func(t, x)`` from ``x0`` at ``ts[0]``; ``ts`` may decrease.

    Args:
        func: vector field ``func(t, x)`` returning ``x``'s shape; an ``nn.Module`` for ``adjoint=True``
            (its parameters get gradients). Probability-flow wrappers are such modules.
        x0: initial state (B, *event_shape).
        ts: strictly monotone output times (T,).
        method: any torchdiffeq method (``"dopri5"``, ``"rk4"``, ...), or ``"euler"``, ``"heun"``,
            ``"rk4"`` with ``backend="native"``.
        rtol, atol: tolerances of the adaptive torchdiffeq methods (finite, > 0).
        dt: step size for fixed-step methods (required by the native backend; torchdiffeq's
            fixed-grid methods step on ``ts`` when it is omitted).
        backend: ``"torchdiffeq"`` or ``"native"``.
        adjoint: gradients by ``torchdiffeq.odeint_adjoint`` (constant memory in the number of steps).
        max_steps: cap on adaptive steps (torchdiffeq's ``max_num_steps``), an int >= 1.
        on_failure: ``"return"`` (default: warn, naming ``Solution.status``, and return every path) or
            ``"raise"`` (:class:`~sdeflow.solve.solution.SolveError`), as in :func:`sdeflow.simulate`.
            A path fails when its states become NaN or infinite (status 1) or when torchdiffeq gives up
            on it ("underflow in dt", status 2, the time in ``Solution.failed_at``): the batch is then
            bisected to find those paths and the others are solved again without them. A vector
            field that holds per-path data besides ``x`` (e.g. Hutchinson probes) gives a method
            ``func.select_rows(rows) -> func`` for the sub-batch ``rows`` (a (k,) index tensor).

    The adaptive Runge–Kutta methods (``dopri5``, ``dopri8``, ``bosh3``, ``fehlberg2``,
    ``adaptive_heun``) are given torchdiffeq's option ``step_t=ts``: they land on every output time
    instead of stepping past it and interpolating, so ``func`` is never evaluated outside
    ``[ts[0], ts[-1]]`` (a VP probability-flow ODE is undefined at t < 0). The price is a step cut at
    every output time. For plain ``torchdiffeq.odeint`` behaviour call it directly on the same ``func``
    (``torchdiffeq.odeint(func, x0, ts, method="dopri5", rtol=..., atol=...)``).

    Half-precision states (float16/bfloat16) get their times in float32
    (:func:`sdeflow._checks.time_dtype`); times given as a float32 tensor are matched to the grid
    with a tolerance of a few float32 ulps, as in :func:`sdeflow.simulate`.

    Returns:
        :class:`Solution` with ``xs`` of shape (T, B, *event_shape) and ``stats.nfe``.
    """
    if not callable(func):
        raise TypeError(f"func must be callable as func(t, x); got {type(func).__name__}.")
    x0 = check_state(x0)
    ts_np = check_times(ts)
    check_same_device(func, x0, name="func")
    check_not_meta(x0)
    on_failure = check_on_failure(on_failure)
    rtol, atol = check_tolerances(rtol, atol)
    max_steps = check_int(max_steps, "max_steps", minimum=1, allow_none=True)
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
        n = estimated_steps(ts_np, dt)
        check_memory(n * 64 + len(ts_np) * x0.numel() * x0.element_size(),
                     f"solve_ode(dt={dt:g}) builds a grid of {n:.4g} steps", "use a larger dt (or fewer ts points)",
                     x0.device)
    else:
        if method not in TORCHDIFFEQ_METHODS:
            raise ValueError(f"unknown torchdiffeq method {method!r}; choose one of {', '.join(TORCHDIFFEQ_METHODS)}.")
        if dt is not None:
            dt = check_step(dt)
    tdt = time_dtype(x0.dtype)
    t0 = torch.as_tensor(ts_np[0], dtype=tdt, device=x0.device)
    _check_func(func, t0, x0)

    tick = time.perf_counter()
    failed_at, failure = None, ""
    if backend == "native":
        sign = 1.0 if ts_np[-1] > ts_np[0] else -1.0
        grid = build_grid(sign * ts_np, dt, time_tol=_time_tolerance(ts, ts_np))
        solver = ODE_METHODS[method](func)
        xs = torch.stack(integrate_ode(solver, x0, sign * grid.times, grid.save_index))
        stats = SolveStats(method=method, backend="native", steps=grid.n_steps,
                           drift_evals=1 + grid.n_steps * solver.evals)
        status = path_status(xs)
    else:
        ts_t = torch.as_tensor(ts_np, dtype=x0.dtype if tdt == x0.dtype else tdt, device=x0.device)
        last = [float("nan")]
        nfe = [0]

        def solve(rows: Tensor | None) -> Tensor:
            xr = x0 if rows is None else x0[rows.to(x0.device)]
            f = func if rows is None or not hasattr(func, "select_rows") else func.select_rows(rows)

            def field(t: Tensor, x: Tensor) -> Tensor:
                last[0] = float(t)
                nfe[0] += 1  # counted here, so the evaluations of failed attempts count too
                return f(t, x)

            out, counter = solve_torchdiffeq(f if adjoint else field, xr, ts_t, method=method, rtol=rtol, atol=atol,
                                             dt=dt, max_steps=max_steps, adjoint=adjoint)
            if adjoint:
                nfe[0] += counter.nfe
            return out

        xs, status, failed_at, failure = solve_by_parts(solve, x0.shape[0], lambda: last[0],
                                                        (len(ts_np),) + tuple(x0.shape), x0)
        stats = SolveStats(method=method, backend="torchdiffeq", steps=None, drift_evals=1 + nfe[0])
    if x0.device.type == "cuda":
        torch.cuda.synchronize(x0.device)
    stats.wall_time = time.perf_counter() - tick
    ts_t = torch.as_tensor(ts_np, dtype=tdt, device=x0.device)
    sol = Solution(ts=ts_t, xs=xs, stats=stats, status=status, failed_at=failed_at, failure=failure)
    return report_solution(sol, on_failure, what=f"solve_ode(method={method!r}, backend={backend!r})",
                           hint="try a smaller dt, a larger max_steps if it was reached, looser or tighter "
                                "tolerances, or a fixed-step method (method='rk4' with a dt)")
