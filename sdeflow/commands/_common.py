"""What every ``sdeflow`` command shares: argument types, one-line errors, threads, output checks.

* :class:`Parser` prints a bad argument as one line, ``sdeflow CMD: error: argument --dt: ...``, and
  exits with status 2 (no usage block, no traceback).
* The argument types (:func:`positive_int`, :func:`positive_float`, :func:`finite_float`, ...) refuse
  0, NaN, inf and non-numbers with the value and what is allowed.
* :func:`check_device` refuses an unknown or unavailable ``--device`` before any work.
* :func:`default_threads` and :func:`set_threads`: the torch intra-op thread count, set once at
  start-up (docs/performance.md, "Threads"); :func:`machine_line` prints it with the load average.
* :func:`check_output` checks an ``--out``/``--json`` path before the run (:func:`sdeflow.io.check_writable`);
  :func:`check_memory` refuses a run whose arrays cannot fit, with the number and the fix.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

import torch

__all__ = [
    "Parser", "CommandError", "positive_int", "nonnegative_int", "seed_arg", "positive_float", "finite_float",
    "threads_arg",
    "check_device", "default_threads", "set_threads", "machine_line", "check_output", "check_memory",
    "add_threads_argument",
]


class CommandError(ValueError):
    """A bad option value found after parsing: printed as one line naming the option, exit status 2."""


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line (``PROG: error: MESSAGE (see PROG --help)``), exit 2."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"{self.prog}: error: {message} (see {self.prog} --help)\n")
        sys.exit(2)


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None


def positive_int(text: str) -> int:
    """An integer >= 1."""
    v = _integer(text)
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1; got {v}")
    return v


def nonnegative_int(text: str) -> int:
    """An integer >= 0."""
    v = _integer(text)
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more; got {v}")
    return v


def positive_float(text: str) -> float:
    """A finite number > 0 (refuses 0, negatives, nan, inf)."""
    v = _number(text)
    if not (v > 0 and math.isfinite(v)):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0; got {text}")
    return v


def finite_float(text: str) -> float:
    """A finite number (refuses nan and inf)."""
    v = _number(text)
    if not math.isfinite(v):
        raise argparse.ArgumentTypeError(f"must be a finite number; got {text}")
    return v


def rate_arg(text: str) -> float:
    """An EMA rate: a number in [0, 1)."""
    v = _number(text)
    if not 0 <= v < 1:
        raise argparse.ArgumentTypeError(f"must be a number in [0, 1); got {text}")
    return v


def seed_arg(text: str) -> int:
    """``--seed``: an integer in [0, 2**63) (what every torch generator accepts)."""
    v = nonnegative_int(text)
    if v >= 1 << 63:
        raise argparse.ArgumentTypeError(f"must be below 2**63; got {v}")
    return v


#: The most threads --threads accepts (more than any machine's cores is a typo).
MAX_THREADS = 1024


def threads_arg(text: str) -> int:
    """``--threads``: an integer from 1 to 1024."""
    v = positive_int(text)
    if v > MAX_THREADS:
        raise argparse.ArgumentTypeError(f"must be at most {MAX_THREADS}; got {v}")
    return v


def add_threads_argument(p: argparse.ArgumentParser) -> None:
    """The ``--threads N`` option every command takes (see :func:`default_threads`)."""
    p.add_argument("--threads", type=threads_arg, default=None, metavar="N",
                   help="torch intra-op threads, set once at start-up (default: $OMP_NUM_THREADS if set, else "
                        "the cores not busy with other work, at most 4; see docs/performance.md)")


def check_device(text: str, flag: str = "--device") -> torch.device:
    """A torch device that exists here: ``cpu``, ``cuda``, ``cuda:N`` (N < device count), ``mps``."""
    try:
        device = torch.device(text)
    except (RuntimeError, TypeError, ValueError):
        raise CommandError(f"argument {flag}: {text!r} is not a device; use cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise CommandError(f"argument {flag}: {text} requested but no CUDA device is available; use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise CommandError(f"argument {flag}: {text}: there are only {torch.cuda.device_count()} CUDA devices")
    elif device.type == "mps":
        if not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
            raise CommandError(f"argument {flag}: mps requested but it is not available here; use --device cpu")
    elif device.type != "cpu":
        raise CommandError(f"argument {flag}: {text!r}: sdeflow commands run on cpu, cuda or mps")
    return device


def _cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def _load() -> float | None:
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def default_threads(environ: dict[str, str] | None = None, cores: int | None = None,
                    load: float | None = None) -> tuple[int, str]:
    """The default torch intra-op thread count and why: ``(n, reason)``.

    ``$OMP_NUM_THREADS`` (or ``$SDEFLOW_THREADS``) when set to a positive integer; otherwise the cores
    this process may use minus the 1-minute load average (work already running), at least 1 and at
    most 4. Torch's own default (one thread per core, whatever else runs) oversubscribes a shared
    machine: on a loaded 2-core machine ``sdeflow verify`` took 12m44 with it and 1m36 with one thread
    (docs/performance.md). The commands' workloads (small tensors, many steps) gain little past 4.
    """
    env = os.environ if environ is None else environ
    for var in ("SDEFLOW_THREADS", "OMP_NUM_THREADS"):
        text = env.get(var, "").strip()
        if text:
            try:
                n = int(text)
            except ValueError:
                continue
            if n >= 1:
                return min(n, MAX_THREADS), f"${var}"
    cores = _cores() if cores is None else cores
    load = _load() if load is None else load
    if load is None:
        n = min(cores, 4)
        return n, f"{cores} cores"
    n = max(1, min(4, cores - int(round(load))))
    return n, f"{cores} cores, load {load:.2f}"


def set_threads(requested: int | None) -> tuple[int, str]:
    """Set torch's intra-op threads once for the command (``requested`` or :func:`default_threads`)."""
    if requested is not None:
        if isinstance(requested, bool) or not isinstance(requested, int) or not 1 <= requested <= MAX_THREADS:
            raise CommandError(f"argument --threads: must be an integer from 1 to {MAX_THREADS}; got {requested!r}")
        n, why = requested, "--threads"
    else:
        n, why = default_threads()
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n, why


def machine_line() -> str:
    """``threads N, load average a b c`` for the timing lines of every command."""
    try:
        loads = " ".join(f"{v:.2f}" for v in os.getloadavg())
    except (AttributeError, OSError):
        loads = "n/a"
    return f"threads {torch.get_num_threads()}, load average {loads}"


def check_output(flag: str, path: str | None, suffixes: Sequence[str] | None = None) -> Path | None:
    """Check an output path before the run (folder exists and is writable, a file name, the suffix)."""
    if path is None:
        return None
    from ..io import check_writable

    try:
        return check_writable(path, tuple(suffixes) if suffixes is not None else None)
    except ValueError as err:
        raise CommandError(f"argument {flag}: {err}") from None


def check_memory(what: str, nbytes: float, fix: str, device: torch.device | None = None) -> None:
    """Refuse (CommandError) when ``nbytes`` cannot fit: :func:`sdeflow._checks.check_memory`, the
    library's one memory rule (the memory available now, ``SDEFLOW_MEMORY_BUDGET`` overrides it)."""
    from .._checks import check_memory as _check

    try:
        _check(nbytes, what, fix.rstrip("."), device if device is not None else "cpu")
    except ValueError as err:
        raise CommandError(str(err).rstrip(".")) from None
