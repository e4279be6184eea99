"""``simulate()``: the front door for SDEs."""

from __future__ import annotations

import time
import warnings
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from .._checks import check_same_device, check_state, check_step, check_times, make_generator
from ..sde.base import SDE, TimeFlipped, as_sde
from .backends.torchsde_backend import TORCHSDE_METHODS, solve_torchsde, torchsde_support
from .grid import build_grid
from .native import SDE_METHODS
from .native.engine import integrate_sde
from .native.fused import DEFAULT_CHUNK, integrate_sde_fused
from .native.triton_linear import TRITON_METHODS, integrate_sde_triton, triton_unavailable_reason
from .noise import BrownianIncrements, GaussianIncrements, ReflectedBrownian
from .solution import Solution, SolveStats, path_status

__all__ = ["simulate", "supported_methods", "check_sde_functions", "METHOD_ALIASES"]

METHOD_ALIASES: dict[str, str] = {"euler_maruyama": "euler", "em": "euler"}
SaveMode = Literal["ts", "final", "steps"]


def _native_name(method: str, sde: SDE) -> str:
    # torchsde's "srk" is SRA1 on additive noise: the native engine has that tableau.
    return "sra1" if method == "srk" and sde.is_additive else method


def supported_methods(sde: object) -> dict[str, list[str]]:
    """The methods that can integrate ``sde``, by backend: ``{"native": [...], "torchsde": [...]}``."""
    sde = as_sde(sde)
    native = [n for n, cls in SDE_METHODS.items() if cls.unsupported_reason(sde) is None]
    ts_ok = [k for k in TORCHSDE_METHODS if torchsde_support(k, sde) is None]
    return {"native": native, "torchsde": ts_ok}


def _unsupported(method: str, backend: str, reason: str, sde: SDE) -> ValueError:
    ok = supported_methods(sde)
    return ValueError(
        f"method={method!r} ({backend} backend) cannot integrate this SDE: {reason}. Methods that can: "
        f"native: {', '.join(ok['native']) or 'none'}; torchsde: {', '.join(ok['torchsde']) or 'none'}."
    )


def _check_shape(fn: str, got: torch.Size, want: torch.Size, hint: str) -> None:
    try:
        ok = torch.broadcast_shapes(got, want) == want
    except RuntimeError:
        ok = False
    if not ok:
        raise ValueError(
            f"{fn}(t, x) returned shape {tuple(got)} but the state x has shape {tuple(want)}; {hint}."
        )


def check_sde_functions(sde: SDE, t0: Tensor, x0: Tensor) -> int:
    """Evaluate drift and diffusion once at ``(t0, x0)`` and check shapes, dtypes and finiteness.

    Returns the Brownian dimension ``m`` (1 for scalar noise, ``prod(event)`` for diagonal noise).
    Raises ``TypeError``/``ValueError`` naming the function and both shapes.
    """
    for fn in ("drift", "diffusion"):
        out = getattr(sde, fn)(t0, x0)
        if not isinstance(out, Tensor):
            raise TypeError(f"{fn}(t, x) must return a torch.Tensor; it returned {type(out).__name__}.")
        if out.dim() > 0 and out.dtype != x0.dtype:
            raise TypeError(
                f"{fn}(t, x) returned dtype {out.dtype} for a state of dtype {x0.dtype}; compute in the state's "
                f"dtype (or pass x0 in {out.dtype})."
            )
        if not bool(torch.isfinite(out).all()):
            raise ValueError(
                f"{fn}(t, x) returned NaN or inf at the initial time {float(t0):g}; check the SDE's parameters and x0."
            )
        if fn == "drift":
            _check_shape("drift", out.shape, x0.shape, f"drift must return a tensor of shape {tuple(x0.shape)}")
        elif sde.noise_type in ("diagonal", "scalar"):
            _check_shape("diffusion", out.shape, x0.shape,
                         f"for noise_type={sde.noise_type!r} diffusion must return a tensor broadcastable to "
                         f"{tuple(x0.shape)}; for a matrix G of shape {tuple(x0.shape)}+(m,) use "
                         f"noise_type='general'")
            m = 1 if sde.noise_type == "scalar" else int(np.prod(x0.shape[1:], dtype=np.int64))
        else:
            if out.dim() not in (x0.dim(), x0.dim() + 1):
                raise ValueError(
                    f"diffusion(t, x) returned shape {tuple(out.shape)} but noise_type={sde.noise_type!r} needs "
                    f"{tuple(x0.shape)}+(m,) (or {tuple(x0.shape[1:])}+(m,) shared by all paths) for a state of "
                    f"shape {tuple(x0.shape)}."
                )
            want = x0.shape if out.dim() == x0.dim() + 1 else x0.shape[1:]
            _check_shape("diffusion", out.shape[:-1], want,
                         f"for noise_type={sde.noise_type!r} diffusion must return shape {tuple(x0.shape)}+(m,)")
            m = int(out.shape[-1])
    return m


def _noise_shape(sde: SDE, x0: Tensor, m: int) -> tuple[int, ...]:
    if sde.noise_type == "diagonal":
        return tuple(x0.shape)
    if sde.noise_type == "scalar":
        return (x0.shape[0],) + (1,) * (x0.dim() - 1)
    return (x0.shape[0], m)


def _check_triton(sde: SDE, x0: Tensor, method: str, bm: object | None) -> None:
    """Why ``compile='triton'`` cannot run, as a ValueError naming the argument to change."""
    hint = "use compile=True (torch.compile) for this SDE"
    params = sde.parameters() if isinstance(sde, torch.nn.Module) else ()
    if torch.is_grad_enabled() and (x0.requires_grad or any(p.requires_grad for p in params)):
        raise ValueError("compile='triton' does not propagate gradients (x0 or an SDE parameter requires grad); "
                         "use compile=True or the eager engine for differentiable simulation, or wrap the call "
                         "in torch.no_grad().")
    reason = triton_unavailable_reason(x0.device)
    if reason is not None:
        raise ValueError(f"compile='triton' cannot run: {reason}; {hint}.")
    if not getattr(sde, "elementwise_affine", False) or sde.noise_type != "diagonal" or sde.sde_type != "ito":
        raise ValueError(
            f"compile='triton' needs an Itô SDE with diagonal noise and elementwise_affine = True (drift "
            f"a(t) x + b(t), diffusion c(t) x + e(t)); {type(sde).__name__} is not declared so; {hint}."
        )
    if METHOD_ALIASES.get(method.lower(), method.lower()) not in TRITON_METHODS:
        raise ValueError(f"compile='triton' implements method {' and '.join(TRITON_METHODS)}; got method={method!r}.")
    if bm is not None:
        raise ValueError("compile='triton' draws its noise inside the kernel and cannot follow a given Brownian "
                         "path; drop bm (pass generator=seed) or use compile=True.")


def _philox_seed(gen: torch.Generator | None) -> int:
    """A kernel seed in [0, 2^62) drawn from ``gen`` (on its device; torch's global CPU generator when None)."""
    return int(torch.randint(0, 2**62, (1,), generator=gen, device=gen.device if gen is not None else "cpu"))


def simulate(
    sde: object,
    x0: Tensor,
    ts: Tensor | np.ndarray | list[float],
    *,
    method: str | None = None,
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
            Stratonovich SDEs.
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

    Returns:
        :class:`Solution` with ``xs`` of shape (len(saved ts), B, *event_shape).
    """
    sde = as_sde(sde)
    x0 = check_state(x0)
    ts_np = check_times(ts)
    check_same_device(sde, x0)
    if save not in ("ts", "final", "steps"):
        raise ValueError(f"save must be 'ts', 'final' or 'steps'; got {save!r}.")
    if backend not in ("auto", "native", "torchsde"):
        raise ValueError(f"backend must be 'auto', 'native' or 'torchsde'; got {backend!r}.")
    if method is None:
        method = "euler" if sde.sde_type == "ito" else "heun"
    if not isinstance(method, str):
        raise TypeError(f"method must be a string; got {type(method).__name__}.")
    method = METHOD_ALIASES.get(method.lower(), method.lower())
    known = sorted(set(SDE_METHODS) | set(TORCHSDE_METHODS))
    if method not in known:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(known)}.")
    if adaptive and method == "euler":
        raise ValueError(
            "adaptive step sizes with Euler–Maruyama do not converge for SDEs; use method='srk' or "
            "'milstein' with adaptive=True, or a fixed dt."
        )
    if adaptive and backend == "native":
        raise ValueError("the native engine takes fixed steps; pass dt, or use backend='torchsde' for adaptive=True.")
    if adjoint and backend == "native":
        raise ValueError("adjoint=True uses torchsde's sdeint_adjoint; use backend='torchsde' (or 'auto').")
    if not adaptive or dt is not None:
        dt = check_step(dt, required_for="fixed-step integration (or pass adaptive=True)")
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise ValueError(f"chunk must be a positive int (steps per compiled chunk); got {chunk!r}.")
    if compile not in (False, True, "inductor", "triton"):
        raise ValueError(f"compile must be False, True, 'inductor' or 'triton'; got {compile!r}.")
    if compile and (backend == "torchsde" or adaptive or adjoint):
        raise ValueError(f"compile={compile!r} fuses the native fixed-step engine; use backend='native' (or "
                         f"'auto') without adaptive or adjoint.")
    if compile == "triton":
        _check_triton(sde, x0, method, bm)
    for name, val in (("rtol", rtol), ("atol", atol)):
        if not (isinstance(val, (int, float)) and val > 0):
            raise ValueError(f"{name} must be a positive number; got {val!r}.")
    gen = make_generator(generator, x0.device)

    native = _native_name(method, sde)
    if backend == "auto":
        use_native = method not in TORCHSDE_METHODS or (
            not adaptive and not adjoint and native in SDE_METHODS
            and SDE_METHODS[native].unsupported_reason(sde) is None
        )
        backend = "native" if use_native else "torchsde"
    if backend == "native":
        if native not in SDE_METHODS:
            raise ValueError(
                f"method={method!r} has no native implementation; native methods are {', '.join(SDE_METHODS)}; "
                f"use backend='torchsde' for {method!r}."
            )
        reason = SDE_METHODS[native].unsupported_reason(sde)
    else:
        if method not in TORCHSDE_METHODS:
            raise ValueError(f"method={method!r} is native-only; use backend='native' (or 'auto').")
        if save == "steps":
            raise ValueError("save='steps' needs the native backend; use backend='native' or save='ts'.")
        reason = torchsde_support(method, sde)
    if reason is not None:
        raise _unsupported(method, backend, reason, sde)

    decreasing = bool(ts_np[0] > ts_np[-1])
    work = TimeFlipped(sde) if decreasing else sde
    s = -ts_np if decreasing else ts_np
    work_bm = ReflectedBrownian(bm) if (bm is not None and decreasing) else bm
    t_start = torch.as_tensor(s[0], dtype=x0.dtype, device=x0.device)
    m = check_sde_functions(work, t_start, x0)

    tick = time.perf_counter()
    if backend == "native":
        cls = SDE_METHODS[native]
        grid = build_grid(s, dt)
        if save == "ts":
            save_index, ts_out = grid.save_index, ts_np
        elif save == "final":
            save_index, ts_out = grid.save_index[-1:], ts_np[-1:]
        else:
            save_index = np.arange(len(grid.times))
            ts_out = -grid.times if decreasing else grid.times
        shape = _noise_shape(sde, x0, m)
        # Balance the blocks (1000 steps in chunks of <= 128 -> 8 x 125) so no long eager tail remains.
        chunk = -(-grid.n_steps // -(-grid.n_steps // chunk))
        if compile == "triton":
            noise = None
        elif work_bm is not None:
            noise = BrownianIncrements(work_bm, grid.times, shape, space_time=cls.needs_space_time, chunk_steps=chunk)
        else:
            noise = GaussianIncrements(shape, grid.dts, generator=gen, device=x0.device, dtype=x0.dtype,
                                       space_time=cls.needs_space_time, chunk_steps=chunk)
        solver = cls(work)
        compile_time = 0.0
        if compile == "triton":
            seed = _philox_seed(gen)
            out, compile_time = integrate_sde_triton(work, x0, grid.times, save_index, seed=seed, method=native)
        elif compile:
            out, compile_time = integrate_sde_fused(solver, x0, grid.times, save_index, noise, chunk=noise.chunk, dt=dt)
        else:
            out = integrate_sde(solver, x0, grid.times, save_index, noise, progress=progress)
        xs = torch.stack(out)
        n = grid.n_steps
        extra_diff = n if (native == "milstein" and not sde.is_additive
                           and work.diffusion_derivative(t_start, x0) is None) else 0
        stats = SolveStats(method=native, backend="native", steps=n, drift_evals=1 + n * cls.drift_evals,
                           diffusion_evals=1 + n * cls.diffusion_evals + extra_diff, compile_time=compile_time)
    else:
        xs, adapter = solve_torchsde(
            work, x0, s, method=method, dt=dt, adaptive=adaptive, rtol=rtol, atol=atol, bm=work_bm,
            brownian_size=m,
            generator=gen, adjoint=adjoint,
        )
        ts_out = ts_np
        if save == "final":
            xs, ts_out = xs[-1:], ts_np[-1:]
        stats = SolveStats(method=method, backend="torchsde", steps=None,
                           drift_evals=1 + adapter.drift_evals, diffusion_evals=1 + adapter.diffusion_evals)
    if x0.device.type == "cuda":
        torch.cuda.synchronize(x0.device)
    stats.wall_time = time.perf_counter() - tick - stats.compile_time
    status = path_status(xs)
    n_bad = int(status.sum())
    if n_bad:
        warnings.warn(
            f"{n_bad} of {x0.shape[0]} paths became NaN or infinite (see Solution.status); "
            f"try a smaller dt or a more stable method.",
            RuntimeWarning,
            stacklevel=2,
        )
    ts_t = torch.as_tensor(np.ascontiguousarray(ts_out), dtype=x0.dtype, device=x0.device)
    return Solution(ts=ts_t, xs=xs, stats=stats, status=status)
