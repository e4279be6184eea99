"""``simulate()``: the front door for SDEs.

A call is two stages: :func:`~sdeflow.solve.plan.plan_simulation` checks the arguments and
resolves them into a frozen :class:`~sdeflow.solve.plan.SimulationPlan` (backend, method class,
integrator, grid, save points, noise), and :func:`~sdeflow.solve.drive.drive` runs the plan's
integrator from save point to save point and returns the :class:`Solution`.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from torch import Tensor

from .drive import drive
from .native.base import NativeSDEMethod
from .native.fused import DEFAULT_CHUNK
from .plan import METHOD_ALIASES, check_sde_functions, plan_simulation, supported_methods
from .plan import _native_name as _native_name  # sdeflow.verify imports it from here
from .plan import _philox_seed as _philox_seed  # the Triton tests import it from here
from .solution import Solution, check_on_failure

__all__ = ["simulate", "supported_methods", "check_sde_functions", "METHOD_ALIASES"]
SaveMode = Literal["ts", "final", "steps"]


def simulate(
    sde: object,
    x0: Tensor,
    ts: Tensor | np.ndarray | list[float],
    *,
    method: str | type[NativeSDEMethod] | None = None,
    dt: float | None = None,
    adaptive: bool = False,
    rtol: float = 1e-5,
    atol: float = 1e-4,
    backend: Literal["auto", "native", "torchsde"] = "auto",
    generator: torch.Generator | int | None = None,
    bm: object | None = None,
    save: SaveMode = "ts",
    adjoint: bool = False,
    progress: bool = False,
    compile: bool | Literal["inductor", "triton"] = False,
    chunk: int = DEFAULT_CHUNK,
    on_failure: Literal["return", "raise"] = "return",
) -> Solution:
    """Integrate ``dx = f dt + G dW`` from ``x0`` at ``ts[0]`` over the times ``ts``.

    Args:
        sde: an :class:`sdeflow.SDE` or any object with torchsde's protocol (``f``, ``g``,
            ``noise_type``, ``sde_type``; then states are 2-D).
        x0: initial state, shape (B, *event_shape), floating point.
        ts: strictly increasing or strictly decreasing times, shape (T,). Decreasing times integrate
            backward (``dt < 0`` in the equation, as reverse-time SDEs are written).
        method: ``"euler"`` (Euler–Maruyama), ``"milstein"``, ``"heun"``, ``"sra1"`` (native and
            torchsde) or any torchsde method: ``"srk"``, ``"midpoint"``, ``"euler_heun"``,
            ``"reversible_heun"``, ``"log_ode"``. Default: ``"euler"`` for Itô, ``"heun"`` for
            Stratonovich SDEs. Or a :class:`~sdeflow.solve.native.NativeSDEMethod` subclass (your
            own ``step()``, its support declared by its class attributes and costs by ``costs``),
            run by the native engine (eager or ``compile=True``).
        dt: fixed step size (> 0); required unless ``adaptive``. The grid restarts at every output
            time so each ``ts`` value is hit exactly (torchsde instead interpolates between steps).
        adaptive, rtol, atol: adaptive stepping (torchsde backend; not with Euler–Maruyama).
        backend: ``"native"`` (fast fixed-step engine), ``"torchsde"``, or ``"auto"``: native when
            the run is fixed-step, without adjoint, and the method has a native implementation that
            supports the SDE; torchsde otherwise.
        generator: ``torch.Generator`` (on ``x0``'s device) or int seed for the Brownian motion;
            ``None`` uses torch's global RNG.
        bm: a Brownian path ``bm(ta, tb)`` such as ``torchsde.BrownianInterval`` of size (B, m)
            (m = prod(event) for diagonal noise) covering ``ts``; both backends then run on it.
        save: ``"ts"`` (states at every ``ts``), ``"final"`` (only the last: O(B·d) memory), or
            ``"steps"`` (every native step).
        adjoint: gradients by torchsde's ``sdeint_adjoint`` (torchsde backend).
        progress: show a progress bar (native backend).
        compile: the fused paths (native backend). ``True`` (or ``"inductor"``): chunks of ``chunk``
            equal steps compiled into one graph with ``torch.compile``, fed the eager engine's noise
            (same paths); falls back to the eager engine if compilation fails. The first call per
            shape pays the compile time (``stats.compile_time``); later calls reuse it.
            ``"triton"``: one GPU kernel runs all steps between save points with the noise drawn
            in the kernel (Philox, keyed by a seed taken from ``generator``), for Itô SDEs with
            ``elementwise_affine = True`` (OU, BM, GBM, VP, sub-VP, VE, EDM) and method
            ``"euler"`` or ``"milstein"``; reproducible for a seed, but a different random stream
            from the eager engine (see :mod:`sdeflow.solve.native.triton_linear`).
        chunk: at most this many steps share one ``randn`` call (and, with ``compile=True``, one
            compiled graph); fewer when a chunk would exceed 2^18 random numbers (2^22 on CUDA).
            The random stream depends on it, so keep it fixed to reproduce paths; eager and compiled
            runs with the same ``chunk`` and seed use the same increments.
        on_failure: what to do when paths fail (the solvers' and samplers' one convention):
            ``"return"`` (default) warns, naming ``Solution.status``, and returns every path with its
            status; ``"raise"`` raises :class:`~sdeflow.solve.solution.SolveError` (its ``solution``
            holds the same result). A path fails when a saved state is NaN or infinite (status 1), or,
            on the torchsde backend, when the adaptive solver gives up on it (status 2, the time in
            ``Solution.failed_at``): the batch is then bisected to find those paths, and the others
            are solved again without them, on the same Brownian path.

    Returns:
        :class:`Solution` with ``xs`` of shape (len(saved ts), B, *event_shape). Its stats count the
        evaluations of the steps (the method's declared costs, or torchsde's counts) plus the one
        check of drift and diffusion at ``(ts[0], x0)``, which runs on the first call for an SDE,
        state signature and parameter version and is reused after it.
    """
    on_failure = check_on_failure(on_failure)
    plan = plan_simulation(sde, x0, ts, method=method, dt=dt, adaptive=adaptive, rtol=rtol, atol=atol,
                           backend=backend, generator=generator, bm=bm, save=save, adjoint=adjoint,
                           progress=progress, compile=compile, chunk=chunk)
    return drive(plan, x0, on_failure=on_failure)
