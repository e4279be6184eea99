"""The verification suite: a registry of named checks, each returning measured / expected / tolerance.

A check is a function ``fn(ctx: SuiteContext) -> CheckOutcome``. Register one with
:func:`register_check` (as a decorator or a call); :func:`run_suite` runs every registered check
(or those whose name matches ``select``), times it, turns exceptions into failed reports, and
returns a :class:`SuiteReport` (table, JSON, plots). ``sdeflow verify`` is a thin wrapper.

Adding checks from another module (e.g. probability-flow ODE checks)::

    from sdeflow.verify.suite import CheckOutcome, register_check

    @register_check("pf_ode/gaussian_likelihood", group="pf_ode", quick=True,
                    description="PF-ODE log-likelihood of Gaussian data vs the closed form")
    def _pf_likelihood(ctx):
        err = ...  # use ctx.quick to size the work, ctx.device, ctx.seed
        return CheckOutcome(measured=err, expected=0.0, tolerance=1e-4, comparison="le")

and add the module's import path to :data:`CHECK_MODULES`, which :func:`run_suite` imports
before it runs (so the checks exist even when nothing else imported that module).

Comparisons: ``"abs"`` passes when ``|measured − expected| ≤ tolerance`` (orders),
``"le"`` when ``measured ≤ tolerance`` (errors, residuals), ``"ge"`` when ``measured ≥ tolerance``
(p-values that must not fall below the level).
"""

from __future__ import annotations

import fnmatch
import importlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

__all__ = [
    "CheckOutcome", "Check", "SuiteContext", "CheckReport", "SuiteReport", "register_check", "registered_checks",
    "run_suite", "CHECK_MODULES",
]

#: Modules imported by :func:`run_suite` so that their ``register_check`` calls have run.
CHECK_MODULES: list[str] = ["sdeflow.verify.standard_checks", "sdeflow.generative.checks"]

COMPARISONS = ("abs", "le", "ge")


@dataclass
class CheckOutcome:
    """What a check measured and what it should be.

    Attributes:
        measured: the measured value.
        expected: the target value (shown in reports).
        tolerance: the allowed deviation (``"abs"``) or the bound (``"le"``, ``"ge"``).
        comparison: ``"abs"``, ``"le"`` or ``"ge"``.
        detail: a short human-readable note (e.g. a confidence interval).
        data: JSON-serialisable extras (step sizes, errors, ...).
        plot: optional ``plot(folder) -> list of written paths`` (PNG, written atomically).
    """

    measured: float
    expected: float
    tolerance: float
    comparison: str = "abs"
    detail: str = ""
    data: dict = field(default_factory=dict)
    plot: Callable[[Path], list[Path]] | None = None

    def __post_init__(self) -> None:
        if self.comparison not in COMPARISONS:
            raise ValueError(f"comparison must be one of {COMPARISONS}; got {self.comparison!r}.")

    @property
    def passed(self) -> bool:
        m = float(self.measured)
        if not math.isfinite(m):
            return False
        if self.comparison == "abs":
            return abs(m - self.expected) <= self.tolerance
        if self.comparison == "le":
            return m <= self.tolerance
        return m >= self.tolerance


@dataclass
class SuiteContext:
    """Passed to every check: where to run and how much work to do."""

    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    quick: bool = False
    seed: int = 0


@dataclass(frozen=True)
class Check:
    """A registered check."""

    name: str
    fn: Callable[[SuiteContext], CheckOutcome]
    group: str = "misc"
    quick: bool = False
    description: str = ""


@dataclass
class CheckReport:
    """The result of running one check."""

    name: str
    group: str
    measured: float
    expected: float
    tolerance: float
    comparison: str
    passed: bool
    seconds: float
    detail: str = ""
    data: dict = field(default_factory=dict)
    error: str | None = None
    plots: list[str] = field(default_factory=list)

    def criterion(self) -> str:
        if self.comparison == "abs":
            return f"±{self.tolerance:g}"
        return f"{'≤' if self.comparison == 'le' else '≥'} {self.tolerance:.3g}"

    def as_dict(self) -> dict:
        return {
            "name": self.name, "group": self.group, "measured": _json_float(self.measured),
            "expected": _json_float(self.expected), "tolerance": _json_float(self.tolerance),
            "comparison": self.comparison, "passed": self.passed, "seconds": round(self.seconds, 4),
            "detail": self.detail, "data": self.data, "error": self.error, "plots": self.plots,
        }


def _json_float(v: float) -> float | str:
    v = float(v)
    return v if math.isfinite(v) else str(v)


@dataclass
class SuiteReport:
    """All check reports of one run."""

    reports: list[CheckReport]
    wall_time: float
    quick: bool
    device: str

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.reports)

    @property
    def n_failed(self) -> int:
        return sum(not r.passed for r in self.reports)

    def table(self) -> str:
        """A plain-text table: check, measured, expected, tolerance, pass (and seconds)."""
        rows = [("check", "measured", "expected", "tolerance", "pass", "time")]
        for r in self.reports:
            exp = f"{r.expected:.4g}" if r.comparison == "abs" else ("0" if r.comparison == "le" else "-")
            rows.append((r.name, "error" if r.error else f"{r.measured:.4g}", exp, r.criterion(),
                         "pass" if r.passed else "FAIL", f"{r.seconds:.2f}s"))
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        lines = []
        for k, row in enumerate(rows):
            lines.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths,
                                                                                                   strict=True))))
            if k == 0:
                lines.append("  ".join("-" * w for w in widths))
        for r in self.reports:
            if r.error:
                lines.append(f"  {r.name}: {r.error}")
        lines.append(f"{len(self.reports) - self.n_failed}/{len(self.reports)} checks passed in "
                     f"{self.wall_time:.1f} s ({'quick' if self.quick else 'full'} suite, device {self.device})")
        return "\n".join(lines)

    def as_dict(self) -> dict:
        return {"passed": self.passed, "n_checks": len(self.reports), "n_failed": self.n_failed,
                "wall_time": round(self.wall_time, 3), "quick": self.quick, "device": self.device,
                "checks": [r.as_dict() for r in self.reports]}

    def to_json(self) -> str:
        return json.dumps(self.as_dict(), indent=2)


_REGISTRY: dict[str, Check] = {}


def register_check(
    name: str,
    fn: Callable[[SuiteContext], CheckOutcome] | None = None,
    *,
    group: str = "misc",
    quick: bool = False,
    description: str = "",
    replace: bool = False,
) -> Callable:
    """Register a check under ``name`` (use as ``@register_check(name, ...)`` or ``register_check(name, fn)``).

    Args:
        name: unique name, conventionally ``"group/what"``.
        fn: ``fn(ctx: SuiteContext) -> CheckOutcome``.
        group: a label for grouping in reports.
        quick: include it in ``--quick`` runs (keep those to about a second each).
        description: one line for ``sdeflow verify --list``.
        replace: allow re-registering an existing name (otherwise ValueError).
    """
    if not isinstance(name, str) or not name:
        raise ValueError("name must be a non-empty string.")

    def add(f: Callable[[SuiteContext], CheckOutcome]) -> Callable[[SuiteContext], CheckOutcome]:
        if not callable(f):
            raise TypeError(f"the check {name!r} must be callable as fn(ctx) -> CheckOutcome.")
        if name in _REGISTRY and not replace and _REGISTRY[name].fn is not f:
            raise ValueError(f"a check named {name!r} is already registered; pick another name or pass replace=True.")
        _REGISTRY[name] = Check(name=name, fn=f, group=group, quick=quick, description=description)
        return f

    if fn is not None:
        add(fn)
        return fn
    return add


def _load_modules() -> None:
    for mod in CHECK_MODULES:
        importlib.import_module(mod)


def registered_checks(*, quick: bool | None = None, select: str | None = None) -> list[Check]:
    """The registered checks (after importing :data:`CHECK_MODULES`), filtered.

    ``quick=True`` keeps the quick ones; ``select`` is a glob or substring matched against names.
    """
    _load_modules()
    out = []
    for c in _REGISTRY.values():
        if quick and not c.quick:
            continue
        if select and not (fnmatch.fnmatch(c.name, select) or select in c.name):
            continue
        out.append(c)
    return out


def run_suite(
    *,
    quick: bool = False,
    device: torch.device | str = "cpu",
    plots: str | Path | None = None,
    select: str | None = None,
    seed: int = 0,
    progress: Callable[[CheckReport], None] | None = None,
) -> SuiteReport:
    """Run the registered checks and return a :class:`SuiteReport`.

    Args:
        quick: run only the checks marked quick, each sized down (``ctx.quick``).
        device: ``"cpu"`` or ``"cuda"``.
        plots: a folder for PNG plots (created if missing), or None.
        select: run only checks whose name matches this glob or contains it.
        seed: base seed handed to the checks.
        progress: called with each report as soon as it is done.
    """
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' requested but CUDA is not available; use device='cpu'.")
    folder = None
    if plots is not None:
        folder = Path(plots)
        folder.mkdir(parents=True, exist_ok=True)
    ctx = SuiteContext(device=dev, quick=quick, seed=seed)
    reports = []
    tick = time.perf_counter()
    for check in registered_checks(quick=quick, select=select):
        t0 = time.perf_counter()
        try:
            out = check.fn(ctx)
            if not isinstance(out, CheckOutcome):
                raise TypeError(f"the check returned {type(out).__name__}, not a CheckOutcome")
            written: list[str] = []
            if folder is not None and out.plot is not None:
                written = [str(p) for p in out.plot(folder)]
            rep = CheckReport(name=check.name, group=check.group, measured=float(out.measured),
                              expected=float(out.expected), tolerance=float(out.tolerance),
                              comparison=out.comparison, passed=out.passed, seconds=time.perf_counter() - t0,
                              detail=out.detail, data=out.data, plots=written)
        except Exception as err:  # a crashing check is a failed check, reported, not a crashed suite
            rep = CheckReport(name=check.name, group=check.group, measured=float("nan"), expected=float("nan"),
                              tolerance=float("nan"), comparison="abs", passed=False,
                              seconds=time.perf_counter() - t0, error=f"{type(err).__name__}: {err}")
        reports.append(rep)
        if progress is not None:
            progress(rep)
    return SuiteReport(reports=reports, wall_time=time.perf_counter() - tick, quick=quick, device=str(dev))
