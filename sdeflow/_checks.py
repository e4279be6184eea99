"""Input validation shared by the front doors.

Every check raises a ``ValueError`` or ``TypeError`` whose message names the argument and says what
to do instead. Nothing here uses ``assert``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "check_state",
    "check_times",
    "check_step",
    "check_same_device",
    "check_not_meta",
    "make_generator",
    "broadcast_time",
    "as_time",
    "state_stamp",
    "module_tensors",
    "as_real",
    "check_positive",
    "check_finite_args",
    "check_int",
    "time_dtype",
    "memory_budget",
    "check_memory",
]


def check_state(x0: object, name: str = "x0") -> Tensor:
    """Check an initial state: a floating-point tensor with a leading batch dimension."""
    if not isinstance(x0, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (batch, *event_shape); got {type(x0).__name__}.")
    if not torch.is_floating_point(x0):
        raise TypeError(
            f"{name} must be a floating-point tensor, got dtype {x0.dtype}; "
            f"convert it with {name}.float() or {name}.double()."
        )
    if x0.dim() == 0:
        raise ValueError(
            f"{name} must have a leading batch dimension, shape (batch, *event_shape); got a 0-dim tensor. "
            f"For a single scalar path use {name}.reshape(1)."
        )
    if x0.shape[0] == 0:
        raise ValueError(f"{name} has an empty batch dimension (shape {tuple(x0.shape)}); pass at least one path.")
    return x0


def check_times(ts: object, name: str = "ts") -> np.ndarray:
    """Return ``ts`` as a float64 numpy array after checking it is 1-D, finite and strictly monotone."""
    if isinstance(ts, Tensor):
        arr = ts.detach().to("cpu", torch.float64).numpy()
    elif isinstance(ts, (list, tuple, np.ndarray, Sequence)):
        try:
            arr = np.asarray(ts, dtype=np.float64)
        except (TypeError, ValueError) as err:
            raise TypeError(f"{name} must be a 1-D sequence or tensor of times; got {ts!r}.") from err
    else:
        raise TypeError(f"{name} must be a 1-D tensor or sequence of times; got {type(ts).__name__}.")
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}; pass a flat vector of times.")
    if arr.size < 2:
        raise ValueError(f"{name} needs at least two times (start and end); got {arr.size}.")
    if not np.isfinite(arr).all():
        bad = int(np.flatnonzero(~np.isfinite(arr))[0])
        raise ValueError(f"{name} contains a non-finite value ({arr[bad]}) at index {bad}; all times must be finite.")
    diffs = arr[1:] - arr[:-1]
    if not ((diffs > 0).all() or (diffs < 0).all()):
        raise ValueError(
            f"{name} must be strictly increasing or strictly decreasing (no repeats); "
            f"got {arr.tolist() if arr.size <= 8 else str(arr[:8].tolist()) + ' ...'}. Sort it and drop duplicates."
        )
    return arr


def check_step(dt: object, name: str = "dt", *, required_for: str | None = None) -> float:
    """Check a fixed step size: a finite positive number."""
    if dt is None:
        what = f" for {required_for}" if required_for else ""
        raise ValueError(f"{name} is required{what}: pass a positive step size, e.g. {name}=1e-3.")
    dt = as_real(dt, name)
    if not math.isfinite(dt) or dt <= 0:
        raise ValueError(
            f"{name} must be a finite number > 0, got {dt}. The direction of integration comes from ts, "
            f"so {name} is always positive."
        )
    return dt


def as_real(value: object, name: str) -> float:
    """``value`` as a Python float: ints, floats, NumPy scalars and one-element tensors are accepted
    (bools and everything else raise ``TypeError`` naming ``name``). Finiteness is not checked here."""
    if isinstance(value, Tensor):
        if value.numel() != 1:
            raise ValueError(f"{name} must be a single number, got a tensor of shape {tuple(value.shape)}.")
        if value.is_complex() or value.dtype == torch.bool:
            raise TypeError(f"{name} must be a real number, got a {value.dtype} tensor.")
        return float(value.detach().cpu())
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value[()]
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a real number (int or float), got {type(value).__name__}.")
    return float(value)


def check_positive(value: object, name: str, *, allow_zero: bool = False, hint: str = "") -> float:
    """``value`` as a finite float > 0 (>= 0 with ``allow_zero``); ValueError naming ``name`` otherwise."""
    v = as_real(value, name)
    if not math.isfinite(v) or v < 0 or (v == 0 and not allow_zero):
        raise ValueError(f"{name} must be a finite number {'>=' if allow_zero else '>'} 0; got {value!r}"
                         f"{'. ' + hint if hint else '.'}")
    return v


def check_int(value: object, name: str, *, minimum: int = 1, allow_none: bool = False) -> int | None:
    """``value`` as a Python int >= ``minimum`` (NumPy integers accepted; floats and bools refused)."""
    if value is None and allow_none:
        return None
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int >= {minimum}; got {type(value).__name__} {value!r}.")
    if int(value) < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}; got {int(value)}.")
    return int(value)


def check_finite_args(owner: str, **values: object) -> None:
    """Refuse non-finite (or non-numeric) constructor arguments: ``ValueError`` naming ``owner(name=...)``.

    Tensors are checked elementwise; ``None`` is skipped."""
    for name, v in values.items():
        if v is None:
            continue
        if isinstance(v, Tensor):
            if v.is_floating_point() and not bool(torch.isfinite(v.detach()).all()):
                raise ValueError(f"{owner}({name}=...) must be finite; got {v.detach()}.")
            continue
        f = as_real(v, f"{owner}({name}=...)")
        if not math.isfinite(f):
            raise ValueError(f"{owner}({name}={v!r}) must be a finite number; pass a finite value.")


def time_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype the solvers use for times with states of ``dtype``: the state's own dtype, except
    float32 for half-precision states (float16/bfloat16 cannot even represent t = 7e4, and have
    only ~4000 distinct values in [0, 1])."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def memory_budget(device: torch.device | str = "cpu") -> int:
    """Bytes a single allocation plan may use on ``device``: the memory available now.

    CPU: ``MemAvailable`` from ``/proc/meminfo`` (Linux), else free pages times the page size
    from ``os.sysconf``; CUDA: the free memory from ``torch.cuda.mem_get_info``. Where neither can
    be read, no limit (``2**63``). The environment variable ``SDEFLOW_MEMORY_BUDGET`` (bytes)
    overrides it. Used by :func:`check_memory` to refuse sizes that cannot fit before allocating.
    """
    import os

    env = os.environ.get("SDEFLOW_MEMORY_BUDGET")
    if env:
        return int(float(env))
    dev = torch.device(device)
    if dev.type == "cuda":
        try:
            return int(torch.cuda.mem_get_info(dev)[0])
        except Exception:  # noqa: BLE001 (no driver: no limit known)
            return 1 << 63
    if dev.type == "meta":
        return 1 << 63
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return 1 << 63


def _fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024 or unit == "PiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} PiB"  # pragma: no cover


def check_memory(nbytes: float, what: str, fix: str, device: torch.device | str = "cpu") -> None:
    """Raise ``ValueError`` before allocating when ``nbytes`` exceeds :func:`memory_budget` of ``device``.

    The message gives the estimate, the budget, what needs it (``what``) and how to shrink it (``fix``).
    """
    budget = memory_budget(device)
    if nbytes > budget:
        raise ValueError(f"{what} would need about {_fmt_bytes(nbytes)} but only {_fmt_bytes(budget)} is available "
                         f"on {torch.device(device)}; {fix}.")


def module_tensors(obj: object) -> list[Tensor]:
    """The parameters and buffers of an ``nn.Module`` and its submodules (``[]`` for other objects).

    Read straight from the modules' tables: cheaper than ``parameters()``/``buffers()``, which
    matters on every ``simulate`` call. A tensor shared by two submodules appears twice.
    """
    if not isinstance(obj, torch.nn.Module):
        return []
    out: list[Tensor] = []
    stack = [obj]
    while stack:
        mod = stack.pop()
        out.extend(t for t in mod._parameters.values() if t is not None)
        out.extend(t for t in mod._buffers.values() if t is not None)
        stack.extend(m for m in mod._modules.values() if m is not None)
    return out


def _module_devices(obj: object) -> set[torch.device]:
    return {t.device for t in module_tensors(obj) if t.dim() > 0 or t.is_floating_point()}


def check_not_meta(x0: Tensor, name: str = "x0") -> None:
    """Refuse a tensor on the meta device (a shape without data) before anything is computed from it."""
    if x0.device.type == "meta":
        raise ValueError(f"{name} is on the meta device (a shape without data); create it on 'cpu' or 'cuda'.")


def check_same_device(module: object, x0: Tensor, name: str = "sde") -> None:
    """Raise if ``module`` (an nn.Module) holds parameters or buffers on another device than ``x0``."""
    for dev in _module_devices(module):
        if dev != x0.device and not (dev.type == x0.device.type and dev.index in (None, x0.device.index)):
            raise ValueError(
                f"{name} has parameters or buffers on {dev} but x0 is on {x0.device}; "
                f"move one of them, e.g. {name}.to(x0.device)."
            )


def make_generator(generator: torch.Generator | int | None, device: torch.device) -> torch.Generator | None:
    """Turn a seed into a ``torch.Generator`` on ``device``; check a passed generator's device."""
    if generator is None:
        return None
    if isinstance(generator, (bool, np.bool_)):
        raise TypeError("generator must be a torch.Generator, an int seed or None; got a bool.")
    if isinstance(generator, (float, np.floating)):
        raise TypeError(f"generator must be a torch.Generator or an int seed; got the float {generator!r} (a seed "
                        f"is never rounded: pass int(seed) if that is what you mean).")
    if isinstance(generator, (int, np.integer)):
        seed = int(generator)
        if not -(1 << 63) <= seed < 1 << 64:
            raise ValueError(f"generator seed must be an int in [-2**63, 2**64) (torch.Generator.manual_seed's range); "
                             f"got {seed}. Reduce it, e.g. seed % 2**64.")
        gen = torch.Generator(device=device)
        gen.manual_seed(seed)
        return gen
    if isinstance(generator, torch.Generator):
        gdev = torch.device(generator.device)
        if gdev.type != device.type:
            raise ValueError(
                f"generator lives on {gdev} but the state is on {device}; create it with "
                f"torch.Generator(device={str(device)!r}) or pass an int seed."
            )
        return generator
    raise TypeError(f"generator must be a torch.Generator, an int seed or None; got {type(generator).__name__}.")


def as_time(t: Tensor | float) -> Tensor:
    """A time as a tensor: tensors pass through, Python numbers become float64 (never float32)."""
    return t if isinstance(t, Tensor) else torch.tensor(float(t), dtype=torch.float64)


def broadcast_time(t: Tensor | float, x: Tensor) -> Tensor:
    """Return ``t`` as a tensor on ``x``'s device/dtype that broadcasts against ``x`` of shape (B, *event).

    A scalar (or 0-dim tensor) stays 0-dim; a vector of shape (B,) becomes (B, 1, ..., 1).
    """
    if not isinstance(t, Tensor):
        return torch.as_tensor(t, dtype=x.dtype, device=x.device)
    if t.dtype != x.dtype or t.device != x.device:
        t = t.to(device=x.device, dtype=x.dtype)
    if t.dim() == 0:
        return t
    if t.dim() == 1 and t.shape[0] == x.shape[0]:
        return t.reshape((-1,) + (1,) * (x.dim() - 1))
    if t.dim() == x.dim():
        return t
    raise ValueError(
        f"t must be a scalar or a vector with one time per batch element (shape ({x.shape[0]},)); "
        f"got shape {tuple(t.shape)} for a state of shape {tuple(x.shape)}."
    )


def state_stamp(obj: object) -> tuple:
    """Identity and version of an object's tensors: it changes when a parameter is updated.

    For an ``nn.Module``: every parameter and buffer (recursively), and the plain tensor and
    number/string attributes of the module itself; for another object its plain tensor and
    number/string attributes. Caches of results that depend on the SDE's values compare stamps
    before reusing an entry.
    """
    stamp: list = [(id(t), t._version) for t in module_tensors(obj)]
    for k, v in getattr(obj, "__dict__", {}).items():
        if isinstance(v, (int, float, str, bool)):
            stamp.append((k, v))
        elif isinstance(v, Tensor):
            stamp.append((k, id(v), v._version))
    return tuple(stamp)
