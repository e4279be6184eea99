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
    "make_generator",
    "broadcast_time",
    "as_time",
    "state_stamp",
    "module_tensors",
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
    if isinstance(dt, Tensor):
        if dt.numel() != 1:
            raise ValueError(f"{name} must be a single number, got a tensor of shape {tuple(dt.shape)}.")
        dt = float(dt)
    if isinstance(dt, bool) or not isinstance(dt, (int, float)):
        raise TypeError(f"{name} must be a positive float, got {type(dt).__name__}.")
    dt = float(dt)
    if not math.isfinite(dt) or dt <= 0:
        raise ValueError(
            f"{name} must be a finite number > 0, got {dt}. The direction of integration comes from ts, "
            f"so {name} is always positive."
        )
    return dt


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
    if isinstance(generator, bool):
        raise TypeError("generator must be a torch.Generator, an int seed or None; got a bool.")
    if isinstance(generator, int):
        gen = torch.Generator(device=device)
        gen.manual_seed(generator)
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
