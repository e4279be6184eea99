"""``simulate``'s first stage: check the arguments and resolve them into a :class:`SimulationPlan`.

Everything ``simulate`` decides before integrating happens here, once: the backend, the method
class, the integrator (eager, compiled chunks, Triton, torchsde), the time direction and working
SDE, the step grid and the save points, the shape of the Brownian increments and the cost of a step.
The plan is a small frozen record; :mod:`sdeflow.solve.drive` executes it.

What depends only on the times (the step grid, its tensors, the noise schedule) is cached in a
small table keyed by the times and options; what depends on the SDE (the check of its functions at
``(t0, x0)``, the method's costs) is cached per SDE object with :func:`sdeflow._cache.object_cache`
and reused only while the SDE's tensors are unchanged (:func:`sdeflow._checks.state_stamp`). A
repeated call therefore costs little more than its steps.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from .._cache import object_cache
from .._checks import (
    check_memory,
    check_not_meta,
    check_same_device,
    check_state,
    check_step,
    check_times,
    make_generator,
    state_stamp,
    time_dtype,
)
from ..sde.base import SDE, TimeFlipped, as_sde
from .backends.torchsde_backend import TORCHSDE_METHODS, torchsde_support
from .grid import build_grid
from .native import SDE_METHODS, NativeSDEMethod
from .native.engine import step_times, times_on_device
from .native.triton_linear import TRITON_METHODS, triton_unavailable_reason
from .noise import NoiseSchedule, ReflectedBrownian, noise_schedule

__all__ = [
    "SimulationPlan", "GridTensors", "plan_simulation", "resolve_method", "check_sde_functions",
    "supported_methods", "METHOD_ALIASES",
]

METHOD_ALIASES: dict[str, str] = {"euler_maruyama": "euler", "em": "euler"}
SaveMode = Literal["ts", "final", "steps"]
Integrators = Literal["eager", "compiled", "triton", "torchsde"]


@dataclass(frozen=True, eq=False)
class GridTensors:
    """The step grid on the state's device and dtype (cached per grid, dtype and device).

    Attributes:
        times: the working step times as 0-dim tensors (n + 1,) (:func:`~.native.engine.step_times`).
        dts: the step sizes as Python floats (n,); ``dts_np``: the same, float64 (n,).
    """

    times: Sequence[Tensor]
    dts: list[float]
    dts_np: np.ndarray


@dataclass(frozen=True, eq=False)
class SimulationPlan:
    """What ``simulate`` will do, resolved and checked (see :func:`plan_simulation`).

    Attributes:
        backend: ``"native"`` or ``"torchsde"``.
        integrator: ``"eager"``, ``"compiled"`` (``compile=True``), ``"triton"`` or ``"torchsde"``.
        method: the method's name as reported in the stats (torchsde's name on that backend).
        method_cls: the native method class (``None`` on the torchsde backend).
        sde: the working SDE: the user's, or its time-flipped form for decreasing ``ts``.
        decreasing: whether ``ts`` decreases (integration in ``s = -t``).
        times: the working times, increasing, float64: the native step grid (n + 1,), or the output
            times on the torchsde backend.
        save_index: the indices into ``times`` whose states are returned (strictly increasing).
        ts_out: the times of the returned states, in the user's time, shape (T,), x0's dtype (float32 for
            float16/bfloat16 states: :func:`sdeflow._checks.time_dtype`).
        grid: the step grid's tensors (native backend), else ``None``.
        dt: the fixed step (``None`` for adaptive torchsde runs).
        noise_shape: the shape of one Brownian increment; ``brownian_size``: ``m``.
        noise: the increments' schedule (native backend without ``bm``), else ``None``.
        chunk: steps per ``randn`` call (and per compiled graph).
        bm: the Brownian path in working time (reflected for decreasing ``ts``), or ``None``.
        generator: the ``torch.Generator`` (``None``: torch's global RNG).
        step_costs: drift and diffusion evaluations per step (the method's declared costs).
        check_evals: evaluations made by the check of the SDE's functions in this call (0 when the
            check was cached).
        progress, adaptive, rtol, atol, adjoint: the options as given.
    """

    backend: str
    integrator: Integrators
    method: str
    method_cls: type[NativeSDEMethod] | None
    sde: SDE
    decreasing: bool
    times: np.ndarray
    save_index: tuple[int, ...]
    ts_out: Tensor
    grid: GridTensors | None
    dt: float | None
    noise_shape: tuple[int, ...]
    brownian_size: int
    noise: NoiseSchedule | None
    chunk: int
    bm: Any
    generator: torch.Generator | None
    step_costs: tuple[int, int]
    check_evals: int
    progress: bool = False
    adaptive: bool = False
    rtol: float = 1e-5
    atol: float = 1e-4
    adjoint: bool = False

    @property
    def n_steps(self) -> int:
        """Native steps (or torchsde output intervals)."""
        return len(self.times) - 1


# -- methods ----------------------------------------------------------------------------------------------
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


def _method_class(method: type) -> type[NativeSDEMethod]:
    """Check a user's method class: a NativeSDEMethod subclass with its own ``step``."""
    if not issubclass(method, NativeSDEMethod):
        raise TypeError(f"method={method.__name__} must subclass sdeflow.solve.native.NativeSDEMethod (with a "
                        f"step(t0, t1, dt, x, dw, u) method), or be a method name such as 'euler'.")
    if method.step is NativeSDEMethod.step:
        raise TypeError(f"method={method.__name__} does not implement step(t0, t1, dt, x, dw, u); override it.")
    return method


def resolve_method(method: object, sde: SDE) -> tuple[str, type[NativeSDEMethod] | None]:
    """``(name, native class)`` for ``simulate(method=...)``: a name (aliases resolved; the class is
    ``None`` for torchsde-only names) or a :class:`NativeSDEMethod` subclass (the ``name`` it declares
    itself, else its class name). Raises TypeError/ValueError for anything else."""
    if method is None:
        method = "euler" if sde.sde_type == "ito" else "heun"
    if isinstance(method, type):
        cls = _method_class(method)
        return cls.__dict__.get("name", cls.__name__), cls
    if isinstance(method, NativeSDEMethod):
        raise TypeError(f"method must be a method name or a NativeSDEMethod subclass, not an instance; pass "
                        f"method={type(method).__name__} (simulate binds it to the SDE).")
    if not isinstance(method, str):
        raise TypeError(f"method must be a string or a NativeSDEMethod subclass; got {type(method).__name__}.")
    name = METHOD_ALIASES.get(method.lower(), method.lower())
    if name not in SDE_METHODS and name not in TORCHSDE_METHODS:
        known = sorted(set(SDE_METHODS) | set(TORCHSDE_METHODS))
        raise ValueError(f"unknown method {name!r}; choose one of {', '.join(known)}.")
    native = _native_name(name, sde)
    return name, SDE_METHODS.get(native)


# -- the SDE's functions -----------------------------------------------------------------------------------
def _check_shape(fn: str, got: torch.Size, want: torch.Size, hint: str, *, shown: torch.Size | None = None,
                 x_shape: torch.Size | None = None) -> None:
    if len(got) > len(want) or any(g != w and g != 1 for g, w in zip(reversed(got), reversed(want), strict=False)):
        shown = got if shown is None else shown
        x_shape = want if x_shape is None else x_shape
        raise ValueError(
            f"{fn}(t, x) returned shape {tuple(shown)} but the state x has shape {tuple(x_shape)}; {hint}."
        )


def check_sde_functions(sde: SDE, t0: Tensor, x0: Tensor, *, t_user: float | None = None) -> int:
    """Evaluate drift and diffusion once at ``(t0, x0)`` and check shapes, dtypes and finiteness.

    Returns the Brownian dimension ``m`` (1 for scalar noise, ``prod(event)`` for diagonal noise).
    Raises ``TypeError``/``ValueError`` naming the function and both shapes (the shapes the
    functions returned and the state's, as the user passed them), and the time in the user's time
    (``t_user``, when ``t0`` is a working time such as ``-t`` of a backward run).
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
            if not bool(torch.isfinite(x0).all()):
                bad = int((~torch.isfinite(x0.reshape(x0.shape[0], -1))).any(-1).nonzero()[0])
                raise ValueError(f"x0 contains NaN or inf (path {bad} first); pass finite initial states.")
            raise ValueError(
                f"{fn}(t, x) returned NaN or inf at the initial time "
                f"{float(t0) if t_user is None else t_user:g}; check the SDE's parameters and x0."
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
                         f"for noise_type={sde.noise_type!r} diffusion must return shape {tuple(x0.shape)}+(m,) "
                         f"(or {tuple(x0.shape[1:])}+(m,) shared by all paths)", shown=out.shape, x_shape=x0.shape)
            m = int(out.shape[-1])
    return m


def _checked(owner: object, work: SDE, t0: float, x0: Tensor, method_cls: type[NativeSDEMethod] | None,
             t_user: float | None = None) -> tuple[int, tuple[int, int], int]:
    """``(m, step costs, evaluations made)``: :func:`check_sde_functions` and the method's costs, cached
    per SDE object while its tensors are unchanged."""
    key = (type(work), t0, tuple(x0.shape), x0.dtype, x0.device, method_cls, torch.is_grad_enabled())
    stamp = state_stamp(owner)
    cache = object_cache(owner, "simulate_checks")
    hit = cache.get(key)
    if hit is not None and hit[0] == stamp:
        return hit[1], hit[2], 0
    t = torch.as_tensor(t0, dtype=time_dtype(x0.dtype), device=x0.device)
    m = check_sde_functions(work, t, x0, t_user=t_user)
    costs = method_cls.costs(work, t, x0) if method_cls is not None else (0, 0)
    if len(cache) >= 16:
        cache.pop(next(iter(cache)))
    cache[key] = (stamp, m, costs)
    return m, costs, 1


# -- grids ---------------------------------------------------------------------------------------------------
_GRIDS: OrderedDict[Hashable, tuple[Any, int]] = OrderedDict()
_GRIDS_MAX = 64  # entries
_GRIDS_MAX_STEPS = 1 << 19  # grid points held over all entries (time tensors are one object per point)
_grid_steps = 0


def _memo(key: Hashable, make: Callable[[], Any], size: Callable[[Any], int] = lambda v: 1) -> Any:
    """A small LRU table for what depends only on the times and options (never on an SDE), bounded in
    entries and in the grid points they hold (``size(value)``, weighted by the memory per point); an
    entry above the bound is not kept."""
    global _grid_steps
    hit = _GRIDS.get(key)
    if hit is not None:
        _GRIDS.move_to_end(key)
        return hit[0]
    value = make()
    size = size(value)
    if size <= _GRIDS_MAX_STEPS:
        _GRIDS[key] = (value, size)
        _grid_steps += size
        while len(_GRIDS) > _GRIDS_MAX or _grid_steps > _GRIDS_MAX_STEPS:
            _grid_steps -= _GRIDS.popitem(last=False)[1][1]
    return value


def _time_tolerance(ts: object, ts_np: np.ndarray) -> float:
    """The rounding of times given in a low-precision tensor: 4 ulps of the largest |t| (0 for float64)."""
    if isinstance(ts, Tensor) and ts.dtype != torch.float64:
        return 4.0 * float(torch.finfo(ts.dtype).eps) * float(np.abs(ts_np).max())
    return 0.0


def _noise_shape(sde: SDE, x0: Tensor, m: int) -> tuple[int, ...]:
    if sde.noise_type == "diagonal":
        return tuple(x0.shape)
    if sde.noise_type == "scalar":
        return (x0.shape[0],) + (1,) * (x0.dim() - 1)
    return (x0.shape[0], m)


def _philox_seed(gen: torch.Generator | None) -> int:
    """A kernel seed in [0, 2^62) drawn from ``gen`` (on its device; torch's global CPU generator when None)."""
    return int(torch.randint(0, 2**62, (1,), generator=gen, device=gen.device if gen is not None else "cpu"))


# -- checks ----------------------------------------------------------------------------------------------
def _check_options(save: str, backend: str, chunk: object, compile: object, rtol: object, atol: object) -> None:
    if save not in ("ts", "final", "steps"):
        raise ValueError(f"save must be 'ts', 'final' or 'steps'; got {save!r}.")
    if backend not in ("auto", "native", "torchsde"):
        raise ValueError(f"backend must be 'auto', 'native' or 'torchsde'; got {backend!r}.")
    if isinstance(chunk, np.integer):
        chunk = int(chunk)
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise ValueError(f"chunk must be a positive int (steps per compiled chunk); got {chunk!r}.")
    if compile not in (False, True, "inductor", "triton"):
        raise ValueError(f"compile must be False, True, 'inductor' or 'triton'; got {compile!r}.")
    check_tolerances(rtol, atol)


def check_tolerances(rtol: object, atol: object) -> tuple[float, float]:
    """``(rtol, atol)`` as floats, each finite and > 0 (ValueError/TypeError naming the argument)."""
    from .._checks import check_positive

    return (check_positive(rtol, "rtol", hint="Use e.g. rtol=1e-5 (a zero or negative tolerance gives wrong steps)."),
            check_positive(atol, "atol", hint="Use e.g. atol=1e-4 (a zero or negative tolerance gives wrong steps)."))


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
    if method not in TRITON_METHODS:
        raise ValueError(f"compile='triton' implements method {' and '.join(TRITON_METHODS)}; got method={method!r}.")
    if bm is not None:
        raise ValueError("compile='triton' draws its noise inside the kernel and cannot follow a given Brownian "
                         "path; drop bm (pass generator=seed) or use compile=True.")


def _choose_backend(backend: str, name: str, cls: type[NativeSDEMethod] | None, custom: bool, sde: SDE,
                    adaptive: bool, adjoint: bool) -> str:
    """The backend (``"native"``/``"torchsde"``) after checking the method can integrate ``sde`` there."""
    if custom and (backend == "torchsde" or adaptive or adjoint):
        raise ValueError(f"method={cls.__name__} is a native method class: it runs on the native fixed-step "
                         f"engine (backend='native' or 'auto', a dt, no adaptive or adjoint).")
    if backend == "auto":
        use_native = name not in TORCHSDE_METHODS or (
            not adaptive and not adjoint and cls is not None and cls.unsupported_reason(sde) is None
        )
        backend = "native" if use_native else "torchsde"
    if backend == "native":
        if cls is None:
            raise ValueError(
                f"method={name!r} has no native implementation; native methods are {', '.join(SDE_METHODS)}; "
                f"use backend='torchsde' for {name!r}."
            )
        reason = cls.unsupported_reason(sde)
    else:
        if name not in TORCHSDE_METHODS:
            raise ValueError(f"method={name!r} is native-only; use backend='native' (or 'auto').")
        reason = torchsde_support(name, sde)
    if reason is not None:
        raise _unsupported(name if not custom else cls.__name__, backend, reason, sde)
    return backend


# -- the plan --------------------------------------------------------------------------------------------
def plan_simulation(
    sde: object,
    x0: Tensor,
    ts: object,
    *,
    method: object = None,
    dt: float | None = None,
    adaptive: bool = False,
    rtol: float = 1e-5,
    atol: float = 1e-4,
    backend: str = "auto",
    generator: torch.Generator | int | None = None,
    bm: object | None = None,
    save: str = "ts",
    adjoint: bool = False,
    progress: bool = False,
    compile: bool | str = False,
    chunk: int = 128,
) -> SimulationPlan:
    """Check ``simulate``'s arguments and resolve them into a :class:`SimulationPlan` (same arguments).

    Raises ``TypeError``/``ValueError`` naming the argument and the fix; evaluates the SDE's drift
    and diffusion once at ``(ts[0], x0)`` unless that check is cached for this SDE.
    """
    owner = sde
    sde = as_sde(sde)
    if sde is not owner and hasattr(sde, "_obj"):  # a torchsde-protocol object: cache on the user's object
        owner = sde._obj
    x0 = check_state(x0)
    ts_np = check_times(ts)
    check_same_device(sde, x0)
    chunk = int(chunk) if isinstance(chunk, np.integer) else chunk
    _check_options(save, backend, chunk, compile, rtol, atol)
    name, cls = resolve_method(method, sde)
    custom = isinstance(method, type)
    if adaptive and name == "euler":
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
    if compile and (backend == "torchsde" or adaptive or adjoint):
        raise ValueError(f"compile={compile!r} fuses the native fixed-step engine; use backend='native' (or "
                         f"'auto') without adaptive or adjoint.")
    if compile == "triton":
        _check_triton(sde, x0, name if not custom else cls.__name__, bm)
    gen = make_generator(generator, x0.device)
    check_not_meta(x0)
    backend = _choose_backend(backend, name, cls, custom, sde, adaptive, adjoint)
    if backend == "torchsde" and save == "steps":
        raise ValueError("save='steps' needs the native backend; use backend='native' or save='ts'.")
    native = backend == "native"
    if native and not custom:
        name = cls.name  # torchsde's "srk" runs as the native "sra1" on additive noise

    _check_size(ts_np, dt, x0, save, native)
    if bm is not None:
        _check_bm(bm, ts_np, generator, dt, space_time=(cls.needs_space_time if native else
                                                         _levy_area_needed(name, sde)))
    decreasing = bool(ts_np[0] > ts_np[-1])
    work = TimeFlipped(sde) if decreasing else sde
    s = -ts_np if decreasing else ts_np
    m, costs, check_evals = _checked(owner, work, float(s[0]), x0, cls if native else None, float(ts_np[0]))
    if not native and name == "milstein" and sde.noise_type == "scalar" and not sde.is_additive:
        from .backends.torchsde_backend import SCALAR_MILSTEIN_REASON, scalar_milstein_jacobian_asymmetric

        t_chk = torch.as_tensor(float(s[0]), dtype=time_dtype(x0.dtype), device=x0.device)
        if scalar_milstein_jacobian_asymmetric(work, t_chk, x0):
            raise _unsupported(name, backend, SCALAR_MILSTEIN_REASON, sde)
    key = (s.tobytes(), dt, decreasing, x0.dtype, x0.device, torch.is_inference_mode_enabled())
    if native:
        tol = _time_tolerance(ts, ts_np)
        times, grid_save = _memo(("grid", s.tobytes(), dt, tol), lambda: _grid(s, dt, tol),
                                 size=lambda v: len(v[0]) // 8)
        grid = _memo(("tensors", tol, *key), lambda: _grid_tensors(times, x0), size=lambda v: len(v.dts))
        if save == "ts":
            save_index = grid_save
        elif save == "final":
            save_index = grid_save[-1:]
        else:
            save_index = tuple(range(len(times)))
        n = len(times) - 1
        # Balance the blocks (1000 steps in chunks of <= 128 -> 8 x 125) so no long eager tail remains.
        chunk = -(-n // -(-n // chunk))
    else:
        times, grid, save_index = s, None, tuple(range(len(s))) if save != "final" else (len(s) - 1,)
    ts_out = _memo(("ts_out", save, *key, native and save == "steps" and tol),
                   lambda: _out_times(ts_np, times, save, decreasing, native, x0), size=lambda v: len(v) // 64)
    shape = _noise_shape(sde, x0, m)
    noise = None
    if native and bm is None and compile != "triton":
        space_time = cls.needs_space_time
        noise = _memo(("noise", *key, tol, shape, chunk, space_time),
                      lambda: noise_schedule(grid.dts_np, shape, device=x0.device, dtype=x0.dtype,
                                             space_time=space_time, chunk_steps=chunk),
                      size=lambda v: len(v.sqrt_dt_host) // 2)
    integrator = "torchsde" if not native else "triton" if compile == "triton" else "compiled" if compile else "eager"
    work_bm = ReflectedBrownian(bm) if (bm is not None and decreasing) else bm
    return SimulationPlan(
        backend=backend, integrator=integrator, method=name, method_cls=cls if native else None, sde=work,
        decreasing=decreasing, times=times, save_index=save_index, ts_out=ts_out, grid=grid, dt=dt,
        noise_shape=shape, brownian_size=m, noise=noise, chunk=chunk, bm=work_bm, generator=gen,
        step_costs=costs, check_evals=check_evals, progress=progress, adaptive=adaptive, rtol=rtol, atol=atol,
        adjoint=adjoint,
    )


#: Bytes per native step held while planning and running (the float64 grid and its step sizes, their
#: Python-float lists, the per-step 0-dim time tensors and the noise schedule): an upper estimate.
_BYTES_PER_STEP = 256


def estimated_steps(ts_np: np.ndarray, dt: float) -> float:
    """Steps of the native grid of ``ts_np`` with step ``dt`` (as a float: it may be astronomically large)."""
    return float(np.sum(np.maximum(1.0, np.ceil(np.abs(np.diff(ts_np)) / dt))))


def _check_size(ts_np: np.ndarray, dt: float | None, x0: Tensor, save: str, native: bool) -> None:
    """Refuse a run whose grid or saved states cannot fit in memory, before allocating anything
    (:func:`sdeflow._checks.check_memory`: the memory available now is the budget)."""
    state = float(x0.numel()) * x0.element_size()
    n = estimated_steps(ts_np, dt) if dt is not None else float(len(ts_np) - 1)
    saves = 1 if save == "final" else (n + 1 if save == "steps" and native else len(ts_np))
    grid = n * _BYTES_PER_STEP if native else 0.0
    total = grid + saves * state
    if total <= 1 << 28:  # 256 MiB: always fine, and the common case needs no system call
        return
    if saves * state >= grid:
        what = (f"simulate(save={save!r}) keeps {saves:.4g} states of shape {tuple(x0.shape)} ({x0.dtype}) "
                f"(+ a grid of {n:.4g} steps)")
        fix = ("pass save='final' (only the last state: O(B·d) memory), fewer output times ts, a smaller batch, "
               "or sdeflow.ensemble_statistics for moments and histograms without keeping paths")
    else:
        what = f"simulate(dt={dt:g}) builds a grid of {n:.4g} steps over ts = [{ts_np[0]:g} .. {ts_np[-1]:g}]"
        fix = "use a larger dt (the number of steps is |ts[-1] - ts[0]| / dt)"
    check_memory(total, what, fix, x0.device)


def _levy_area_needed(name: str, sde: SDE) -> bool:
    """Whether torchsde's ``name`` needs the space-time Lévy area of a user's ``bm``."""
    from .backends.torchsde_backend import levy_area_for

    return levy_area_for(name) != "none"


#: A torchsde BrownianInterval built without ``dt`` refines its tree recursively from the queries it
#: sees; beyond about 2·10^4 steps that recursion exceeds Python's limit (a known torchsde limitation).
_BM_NO_HINT_MAX_STEPS = 10_000


def _check_bm(bm: object, ts_np: np.ndarray, generator: object, dt: float | None, *, space_time: bool) -> None:
    """Check a user's Brownian path against the run: callable, covering ``ts``, with the Lévy area the
    method needs, with a ``dt`` hint for long runs, and not combined with ``generator``."""
    if not callable(bm):
        raise TypeError(f"bm must be a Brownian path callable as bm(ta, tb), e.g. torchsde.BrownianInterval; "
                        f"got {type(bm).__name__}.")
    if generator is not None:
        raise ValueError("pass either bm (the Brownian path to follow) or generator (to draw a new path), not both: "
                         "with bm the generator would be ignored. Drop generator, or drop bm.")
    lo, hi = float(ts_np.min()), float(ts_np.max())
    start, end = getattr(bm, "_start", None), getattr(bm, "_end", None)
    if start is None or end is None:
        start, end = getattr(bm, "t0", None), getattr(bm, "t1", None)
    try:
        start = None if start is None else float(start)
        end = None if end is None else float(end)
    except (TypeError, ValueError):
        start = end = None
    if start is not None and end is not None:
        slack = 1e-12 * max(1.0, abs(lo), abs(hi))
        if start > lo + slack or end < hi - slack:
            raise ValueError(
                f"bm covers [{start:g}, {end:g}] but ts spans [{lo:g}, {hi:g}]: outside its interval the path would "
                f"freeze (torchsde clamps the query times), halving the variance. Create the path over ts, e.g. "
                f"torchsde.BrownianInterval(t0={lo:g}, t1={hi:g}, size=...)."
            )
    levy = getattr(bm, "levy_area_approximation", None)
    if space_time and levy is not None and levy not in ("space-time", "davie", "foster"):
        raise ValueError(
            f"this method needs the space-time Lévy area of the Brownian path, but bm was created with "
            f"levy_area_approximation={levy!r}; create it with torchsde.BrownianInterval(..., "
            f"levy_area_approximation='space-time'), or use a method without it (euler, milstein, heun)."
        )
    n = estimated_steps(ts_np, dt) if dt is not None else 0.0
    if getattr(bm, "_dt", 0) is None and not getattr(bm, "_halfway_tree", True) and n > _BM_NO_HINT_MAX_STEPS:
        raise ValueError(
            f"bm is a torchsde.BrownianInterval created without dt, and this run takes {n:.4g} "
            f"steps: torchsde then refines its tree recursively and fails with RecursionError beyond ~2e4 steps. "
            f"Create it with the step hint, torchsde.BrownianInterval(..., dt={dt:g}), or omit bm and pass "
            f"generator=seed."
        )


def _grid(s: np.ndarray, dt: float, tol: float) -> tuple[np.ndarray, tuple[int, ...]]:
    g = build_grid(s, dt, time_tol=tol)
    g.times.setflags(write=False)  # shared by every plan of this grid
    return g.times, tuple(g.save_index.tolist())


def _grid_tensors(times: np.ndarray, x0: Tensor) -> GridTensors:
    dts = np.diff(times)
    dts.setflags(write=False)
    return GridTensors(times=step_times(times_on_device(times, x0)), dts=dts.tolist(), dts_np=dts)


def _out_times(ts_np: np.ndarray, times: np.ndarray, save: str, decreasing: bool, native: bool,
               x0: Tensor) -> Tensor:
    if save == "final":
        out = ts_np[-1:]
    elif save == "steps" and native:
        out = -times if decreasing else times
    else:
        out = ts_np
    return torch.tensor(np.ascontiguousarray(out), dtype=time_dtype(x0.dtype), device=x0.device)
