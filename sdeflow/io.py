"""Atomic file writes: a crash mid-write never leaves a half-written file under the user's name."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

__all__ = ["atomic_write", "save_arrays", "load_arrays"]


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """Call ``write(tmp_path)`` on a temporary file beside ``path``, then rename it over ``path``.

    The rename is atomic on POSIX and Windows: readers see the old file or the complete new one.
    """
    path = Path(path)
    if path.parent and not path.parent.exists():
        raise FileNotFoundError(f"the folder {str(path.parent)!r} does not exist; create it first.")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent or ".")
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as fh:  # the bytes are on disk before the rename makes them visible
            os.fsync(fh.fileno())
        # mkstemp creates 0600 files: keep the mode of the file replaced, else the umask default.
        if path.exists():
            mode = path.stat().st_mode & 0o777
        else:
            umask = os.umask(0)
            os.umask(umask)
            mode = 0o666 & ~umask
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def save_arrays(path: str | os.PathLike, arrays: dict[str, torch.Tensor]) -> Path:
    """Save named tensors to ``.pt`` (loadable with ``torch.load(weights_only=True)``) or ``.npz``."""
    suffix = Path(path).suffix.lower()
    cpu = {k: v.detach().cpu() for k, v in arrays.items()}
    if suffix == ".pt":
        return atomic_write(path, lambda tmp: torch.save(cpu, tmp))
    if suffix == ".npz":
        def _write(tmp: str) -> None:
            with open(tmp, "wb") as fh:
                np.savez(fh, **{k: v.numpy() for k, v in cpu.items()})

        return atomic_write(path, _write)
    raise ValueError(f"unsupported file type {suffix!r} for {str(path)!r}; use a .pt or .npz file name.")


def load_arrays(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Load what :func:`save_arrays` wrote, without unpickling code."""
    suffix = Path(path).suffix.lower()
    if suffix == ".pt":
        return torch.load(path, map_location="cpu", weights_only=True)
    if suffix == ".npz":
        with np.load(path, allow_pickle=False) as data:
            return {k: torch.from_numpy(data[k]) for k in data.files}
    raise ValueError(f"unsupported file type {suffix!r} for {str(path)!r}; use a .pt or .npz file name.")
