"""Shared helpers for the benchmark scripts in this folder.

Not a package: each script puts this folder on ``sys.path`` and does ``import _common``.

* :func:`best_of` -- wall-clock timing, warm-up then best of ``n`` repeats, with CUDA syncs.
* :func:`machine_info` / :func:`machine_description` -- what the numbers were measured on.
* :func:`append_section` -- append a section to ``benchmarks/RESULTS.md`` (atomic replace).
* :func:`markdown_table`, :func:`fmt_rate`, :func:`utc_stamp` -- formatting.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from sdeflow.io import atomic_write

HERE = Path(__file__).resolve().parent
RESULTS_PATH = HERE / "RESULTS.md"
RESULTS_HEADER = "# Benchmark results\n"

__all__ = [
    "HERE", "RESULTS_PATH", "Timing", "best_of", "sync", "resolve_device", "machine_info",
    "machine_description", "append_section", "markdown_table", "fmt_rate", "fmt_ratio", "utc_stamp",
    "dump_json", "TimeLimitExceeded", "time_limited",
]


# -- devices and timing ------------------------------------------------------------------------------
def resolve_device(name: str) -> torch.device:
    """``torch.device(name)``; a clear error when CUDA is asked for but not available."""
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda requested but torch.cuda.is_available() is False on this machine.")
    return dev


def sync(device: torch.device | str | None) -> None:
    """Wait for queued work on ``device`` (no-op on CPU)."""
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class Timing:
    """Result of :func:`best_of`: all timed repeats in seconds (warm-up excluded)."""

    times: list[float] = field(default_factory=list)
    warmup: float | None = None

    @property
    def best(self) -> float:
        return min(self.times)

    @property
    def median(self) -> float:
        s = sorted(self.times)
        return s[len(s) // 2]

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["best"] = self.best if self.times else None
        return d


def _time_once(fn: Callable[[], Any], device: torch.device | str | None) -> tuple[float, Any]:
    sync(device)
    t0 = time.perf_counter()
    out = fn()
    sync(device)
    return time.perf_counter() - t0, out


def best_of(
    fn: Callable[[], Any],
    repeats: int,
    *,
    device: torch.device | str | None = None,
    warmup: Callable[[], Any] | None | bool = True,
) -> tuple[Timing, Any]:
    """Time ``fn()`` ``repeats`` times (after a warm-up) and return ``(Timing, last output)``.

    ``warmup``: ``True`` runs ``fn`` once untimed first, a callable runs that instead (e.g. a shorter
    run of the same shape), ``False``/``None`` skips it. The device is synchronised before and after
    every timed call, so asynchronous CUDA work is counted.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1; got {repeats}.")
    timing = Timing()
    if warmup:
        w = fn if warmup is True else warmup
        timing.warmup, _ = _time_once(w, device)
    out = None
    for _ in range(repeats):
        t, out = _time_once(fn, device)
        timing.times.append(t)
    return timing, out


class TimeLimitExceeded(Exception):
    """Raised inside a call wrapped by :func:`time_limited` when it runs past its limit."""


def time_limited(fn: Callable[[], Any], seconds: float) -> Callable[[], Any]:
    """``fn`` wrapped so that each call raises :class:`TimeLimitExceeded` after ``seconds``.

    Uses ``SIGALRM`` (main thread, POSIX); elsewhere the call runs unlimited. The alarm interrupts
    Python between bytecodes, so a single long native op finishes before it fires.
    """
    if not hasattr(signal, "setitimer") or seconds <= 0:
        return fn

    def _raise(signum: int, frame: object) -> None:
        raise TimeLimitExceeded(f"call exceeded {seconds:g} s")

    def wrapped() -> Any:
        old = signal.signal(signal.SIGALRM, _raise)
        signal.setitimer(signal.ITIMER_REAL, seconds)
        try:
            return fn()
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, old)

    return wrapped


# -- the machine ---------------------------------------------------------------------------------------
def _cpu_model() -> str:
    name = platform.processor() or ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return name or platform.machine() or "unknown CPU"


def machine_info(device: torch.device | str = "cpu") -> dict[str, Any]:
    """Platform, CPU, torch version and threads, and the device's name."""
    dev = torch.device(device)
    info: dict[str, Any] = {
        "platform_processor": platform.processor(),
        "machine": platform.machine(),
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_version": torch.__version__,
        "torch_num_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "device": str(dev),
    }
    if dev.type == "cuda":
        info["device_name"] = torch.cuda.get_device_name(dev)
        info["cuda_version"] = torch.version.cuda
    else:
        info["device_name"] = f"CPU ({info['cpu_model']})"
    return info


def machine_description(info: dict[str, Any]) -> str:
    """One line, e.g. ``cpu: Intel Xeon (x86_64), 2 cores, torch 2.13.0, 2 threads``."""
    proc = info["platform_processor"] or info["machine"]
    s = (f"{info['device']}: {info['device_name']}, processor {proc!s}, {info['cpu_count']} cores, "
         f"torch {info['torch_version']}, {info['torch_num_threads']} threads")
    if info.get("cuda_version"):
        s += f", CUDA {info['cuda_version']}"
    return s


# -- output ----------------------------------------------------------------------------------------------
def utc_stamp() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def fmt_rate(v: float | None) -> str:
    return "skipped" if v is None else f"{v:.2e}"


def fmt_ratio(v: float | None) -> str:
    if v is None:
        return "n/a"
    return f"{v:.1f}x" if v >= 10 else f"{v:.2f}x"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub-markdown table; cells are ``str()``-ed, numeric-looking columns right-aligned."""
    cells = [[str(c) for c in r] for r in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(header)]
    line = "| " + " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + " |"
    sep = "|" + "|".join("-" * (w + 1) + ":" for w in widths) + "|"
    body = ["| " + " | ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in cells]
    return "\n".join([line, sep, *body])


def append_section(title: str, body: str, path: Path | str = RESULTS_PATH) -> Path:
    """Append ``## title`` + ``body`` to the markdown file at ``path``, keeping what is there.

    Creates the file with ``# Benchmark results`` if missing. Writes the whole new content to a temp
    file in the same directory, fsyncs it, then ``os.replace``s it over ``path``, so a crash never
    leaves a half-written file.
    """
    path = Path(path)
    existing = path.read_text(encoding="utf-8") if path.exists() else RESULTS_HEADER
    if not existing.strip():
        existing = RESULTS_HEADER
    if not existing.endswith("\n"):
        existing += "\n"
    content = f"{existing}\n## {title}\n\n{body.rstrip()}\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write(path, lambda tmp: Path(tmp).write_text(content, encoding="utf-8"))


def dump_json(obj: Any, path: Path | str) -> None:
    """Write ``obj`` as indented JSON (atomic replace)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(obj, indent=2, default=str) + "\n"
    atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def _rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_memory_mb(fn: Callable[[], Any], device: torch.device | str = "cpu") -> float:
    """Peak extra memory of one call of ``fn`` in MiB: CUDA max allocated, or CPU RSS sampled every 1 ms."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        fn()
        torch.cuda.synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - base) / 2**20
    import threading

    base = _rss_bytes()
    peak = [base]
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _rss_bytes())
            done.wait(0.001)

    th = threading.Thread(target=watch, daemon=True)
    th.start()
    try:
        fn()
    finally:
        done.set()
        th.join()
    peak[0] = max(peak[0], _rss_bytes())
    return (peak[0] - base) / 2**20
