"""Atomic file writes: a crash mid-write never leaves a half-written file under the user's name."""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

__all__ = ["atomic_write", "clean_stale_temporaries", "check_writable", "save_arrays", "load_arrays"]


def _fsync_dir(folder: Path) -> None:
    """fsync a folder so a rename inside it survives a power loss (a no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # e.g. Windows: directories cannot be opened
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # exists (another user's) or cannot tell: keep its file
    return True


def clean_stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """Remove the temporaries that killed writers (SIGKILL, power loss) left beside ``path``; returns them.

    :func:`atomic_write` names its temporary ``.NAME.PID-RANDOM.tmp`` (``PID``: the writing process);
    one whose process no longer exists on this machine is stale, and so is one without a pid (written
    by an older sdeflow). A temporary of a live process (a concurrent writer) is left alone. Called by
    every :func:`atomic_write`.
    """
    path = Path(path)
    folder = path.parent
    pattern = re.compile(rf"^\.{re.escape(path.name)}\.(?:(\d+)-)?[A-Za-z0-9_]+\.tmp$")
    removed = []
    try:
        entries = list(folder.iterdir())
    except OSError:
        return removed
    for entry in entries:
        m = pattern.match(entry.name)
        if m is None:
            continue
        try:
            stale = m.group(1) is None or not _pid_alive(int(m.group(1)))
            if stale and not entry.is_dir():
                entry.unlink()
                removed.append(entry)
        except OSError:
            pass
    return removed


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """Call ``write(tmp_path)`` on a temporary file beside ``path``, then rename it over ``path``.

    The rename is atomic on POSIX and Windows: readers see the old file or the complete new one.
    The temporary's bytes are fsynced before the rename and the folder after it, so the new file
    survives a power loss once this returns. An exception (Ctrl-C included) removes the temporary; a
    writer killed outright (SIGKILL) leaves ``.NAME.PID-RANDOM.tmp``, which the next write to the same
    ``path`` removes (:func:`clean_stale_temporaries`).

    A ``path`` that is a symbolic link is followed, deliberately: the link's target is replaced
    (atomically, beside the target) and the link itself is kept, as editors do; a link to a missing
    file creates its target. A ``path`` that is a folder is refused. Returns ``path`` as given.
    """
    given = Path(path)
    if given.is_dir():
        raise IsADirectoryError(f"{str(given)!r} is a folder; pass a file name.")
    target = Path(os.path.realpath(given)) if given.is_symlink() else given
    folder = target.parent
    if not folder.is_dir():
        raise FileNotFoundError(f"the folder {str(folder)!r} does not exist; create it first.")
    clean_stale_temporaries(target)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.{os.getpid()}-", suffix=".tmp", dir=folder)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as fh:  # the bytes are on disk before the rename makes them visible
            os.fsync(fh.fileno())
        # mkstemp creates 0600 files: keep the mode of the file replaced, else the umask default.
        if target.exists():
            mode = target.stat().st_mode & 0o777
        else:
            umask = os.umask(0)
            os.umask(umask)
            mode = 0o666 & ~umask
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    _fsync_dir(folder)
    return given


def check_writable(path: str | os.PathLike, suffixes: tuple[str, ...] | None = None) -> Path:
    """Check, before any work, that :func:`atomic_write` can write ``path``; returns it as a Path.

    Raises ValueError (naming the path and the fix) for an unsupported suffix, a folder, a missing
    folder, or a folder this process cannot write into (the temporary is created beside the target).
    """
    given = Path(path)
    if suffixes is not None and given.suffix.lower() not in suffixes:
        raise ValueError(f"{str(given)!r}: unsupported file type {given.suffix!r}; use a {' or '.join(suffixes)} "
                         f"file name.")
    if given.is_dir():
        raise ValueError(f"{str(given)!r} is a folder; pass a file name.")
    target = Path(os.path.realpath(given)) if given.is_symlink() else given
    folder = target.parent if str(target.parent) else Path(".")
    if not folder.is_dir():
        raise ValueError(f"{str(given)!r}: the folder does not exist ({str(folder)!r}); create it first.")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ValueError(f"{str(given)!r}: cannot write into the folder {str(folder)!r} (permission denied).")
    if target.exists() and not os.access(target, os.W_OK) and not os.access(folder, os.W_OK):
        raise ValueError(f"{str(given)!r} exists and is not writable.")
    return given


_ARRAY_SUFFIXES = (".pt", ".npz")


def save_arrays(path: str | os.PathLike, arrays: dict[str, torch.Tensor]) -> Path:
    """Save named tensors to ``.pt`` (loadable with ``torch.load(weights_only=True)``) or ``.npz``, atomically."""
    suffix = Path(path).suffix.lower()
    if suffix not in _ARRAY_SUFFIXES:
        raise ValueError(f"unsupported file type {suffix!r} for {str(path)!r}; use a .pt or .npz file name.")
    if not isinstance(arrays, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                               for k, v in arrays.items()):
        raise TypeError("arrays must be a dict of str names to tensors, e.g. {'x': samples}.")
    cpu = {k: v.detach().cpu() for k, v in arrays.items()}
    if suffix == ".pt":
        return atomic_write(path, lambda tmp: torch.save(cpu, tmp))

    def _write(tmp: str) -> None:
        with open(tmp, "wb") as fh:
            np.savez(fh, **{k: v.numpy() for k, v in cpu.items()})

    return atomic_write(path, _write)


def load_arrays(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Load what :func:`save_arrays` wrote, without unpickling code.

    A missing, truncated or foreign file raises ValueError naming the file and the problem.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in _ARRAY_SUFFIXES:
        raise ValueError(f"unsupported file type {suffix!r} for {str(path)!r}; use a .pt or .npz file name.")
    if not path.is_file():
        raise ValueError(f"{str(path)!r} is {'a folder' if path.is_dir() else 'missing'}; pass a file that "
                         f"save_arrays wrote.")
    try:
        if suffix == ".pt":
            out = torch.load(path, map_location="cpu", weights_only=True)
        else:
            with np.load(path, allow_pickle=False) as data:
                out = {k: torch.from_numpy(data[k]) for k in data.files}
    except Exception as err:  # torch/numpy/zipfile/pickle raise many types for a damaged file
        raise ValueError(f"{str(path)!r} cannot be read as a {suffix} file of arrays: it is truncated, corrupted "
                         f"or not written by save_arrays ({type(err).__name__}: {err}).") from err
    if not isinstance(out, dict) or not all(isinstance(v, torch.Tensor) for v in out.values()):
        raise ValueError(f"{str(path)!r} does not hold a dict of named tensors (as save_arrays writes).")
    return out
