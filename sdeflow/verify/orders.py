"""Measured strong and weak orders of convergence, compared with the orders a solver declares.

Every step size runs on the **same Brownian path** (a :class:`~sdeflow.verify.NestedBrownianPath`
resolved to the finest step needed), so the errors at different step sizes are coupled and their
ratio is measured far more precisely than the errors themselves:

* strong error ``E‖X_T^h − X_T‖`` against the pathwise exact solution ``exact(x0, T, W_T)`` when
  one exists (GBM), otherwise against a fine-step reference solution on the same path
  (``reference_dt``, default the smallest step / 16, so the reference error is ``16^order`` times
  smaller than the smallest measured one);
* weak error ``|E φ(X_T^h) − E φ(X_T)|``: with a pathwise exact solution the estimator is
  ``mean(φ(X_T^h) − φ(X_T^exact))`` (the exact solution is a control variate with known mean
  ``E φ(X_T)``: unbiased, and its variance is the strong error squared instead of ``Var φ(X_T)``);
  otherwise ``mean φ(X_T^h) − exact_mean``.

The order is the least-squares slope of ``log error`` against ``log h``. Its confidence interval
comes from batch resampling: the paths are split into ``n_batches`` groups, the groups are
resampled with replacement (``n_boot`` times, seeded), and the slope is refitted each time; the
interval is the 2.5–97.5 percentile range.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .._checks import as_real, check_int, check_state, check_step, make_generator
from ..sde.base import SDE, as_sde
from ..solve.backends.torchsde_backend import TORCHSDE_METHODS, TorchsdeAdapter, torchsde_support
from ..solve.native import SDE_METHODS
from ..solve.simulate import METHOD_ALIASES, _native_name, check_sde_functions, simulate
from .brownian import NestedBrownianPath

__all__ = ["OrderResult", "strong_order", "weak_order", "declared_orders", "fit_order"]

#: Default step sizes as fractions of the time span: 2^-4 ... 2^-9.
DEFAULT_FRACTIONS = tuple(2.0 ** -k for k in range(4, 10))
# Keep one chunk's Brownian path under this many bytes (two tensors of (n_fine + 1) x chunk x m).
_PATH_BYTES = 96 * 2**20


@dataclass
class OrderResult:
    """A measured order of convergence.

    Attributes:
        kind: ``"strong"`` or ``"weak"``.
        method, backend: the solver.
        problem: a label for the SDE.
        dts: step sizes (n,).
        errors: the error at each step size (n,).
        errors_se: standard error of each error from the batch means (n,).
        order: the fitted slope.
        ci: 95% interval of the slope from batch resampling.
        declared: the order the method declares for this SDE.
        tolerance: allowed ``|order − declared|``.
        n_paths: number of paths.
        reference: ``"exact"`` or ``"fine"`` (strong), ``"control-variate"`` or ``"exact-mean"`` (weak).
    """

    kind: str
    method: str
    backend: str
    problem: str
    dts: np.ndarray
    errors: np.ndarray
    errors_se: np.ndarray
    order: float
    ci: tuple[float, float]
    declared: float
    tolerance: float
    n_paths: int
    reference: str
    extra: dict = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        """``order ≥ declared − tolerance``: a check fails only when the order is too low (a method may
        converge faster than it declares on a particular problem, see :attr:`above`)."""
        return bool(self.order >= self.declared - self.tolerance)

    @property
    def above(self) -> bool:
        """``order > declared + tolerance``: faster than declared on this problem (e.g. SRA1 on a nearly
        linear additive-noise problem); not a failure."""
        return bool(self.order > self.declared + self.tolerance)

    @property
    def verdict(self) -> str:
        """``"pass"``, ``"pass (above the declared order on this problem)"`` or
        ``"FAIL (below the declared order)"``."""
        if not self.passed:
            return "FAIL (below the declared order)"
        return "pass (above the declared order on this problem)" if self.above else "pass"

    @property
    def min_snr(self) -> float:
        """The smallest error / standard-error ratio: below ~5 the finest errors are noise-limited."""
        with np.errstate(divide="ignore"):
            return float(np.min(self.errors / np.where(self.errors_se > 0, self.errors_se, np.nan)))

    def as_dict(self) -> dict:
        d = asdict(self)
        d["dts"], d["errors"], d["errors_se"] = self.dts.tolist(), self.errors.tolist(), self.errors_se.tolist()
        d["ci"] = list(self.ci)
        d["passed"] = self.passed
        d["above"] = self.above
        return d

    def __str__(self) -> str:
        return (f"{self.kind} order of {self.method} ({self.backend}) on {self.problem}: {self.order:.3f} "
                f"[{self.ci[0]:.3f}, {self.ci[1]:.3f}], declared {self.declared:g} ± {self.tolerance:g}: "
                f"{self.verdict}")

    def plot(self, path: str | Path) -> Path:
        """Save a log-log plot of error against step size (PNG, written atomically). Needs matplotlib."""
        from ..plots import pyplot, save_figure

        plt = pyplot()
        fig, ax = plt.subplots(figsize=(5, 4))
        ax.errorbar(self.dts, self.errors, yerr=2 * self.errors_se, fmt="o-", capsize=3, label="measured")
        c = self.errors[-1] / self.dts[-1] ** self.declared
        ax.loglog(self.dts, c * self.dts**self.declared, "k--", label=f"slope {self.declared:g} (declared)")
        ax.set_xscale("log")
        ax.set_yscale("log")
        # Step ranges often span one decade or less, where matplotlib labels minor ticks and the labels
        # overlap: label exactly the measured step sizes (as 2^k where they are powers of two), and the
        # errors at 1, 2 and 5 times powers of ten, with no minor labels.
        from matplotlib.ticker import FixedLocator, FuncFormatter, LogLocator, NullFormatter, NullLocator

        ax.xaxis.set_major_locator(FixedLocator(self.dts))
        ax.xaxis.set_major_formatter(FuncFormatter(_step_label))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.yaxis.set_major_locator(LogLocator(base=10.0, subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.0e}"))
        ax.yaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("step size h")
        ax.set_ylabel(f"{self.kind} error")
        ax.set_title(f"{self.method} ({self.backend}), {self.problem}: order {self.order:.2f}", fontsize=9)
        ax.legend(fontsize=8)
        fig.tight_layout()
        return save_figure(fig, path, dpi=100)


def _step_label(h: float, _pos: object = None) -> str:
    """A step size as a tick label: ``2^{-k}`` for powers of two, else three significant digits."""
    k = math.log2(h) if h > 0 else float("nan")
    return f"$2^{{{round(k)}}}$" if math.isfinite(k) and abs(k - round(k)) < 1e-9 else f"{h:.3g}"


def fit_order(dts: np.ndarray, errors: np.ndarray) -> float:
    """Least-squares slope of ``log errors`` against ``log dts``."""
    dts, errors = np.asarray(dts, dtype=np.float64), np.asarray(errors, dtype=np.float64)
    if np.any(errors <= 0) or not np.all(np.isfinite(errors)):
        return float("nan")
    return float(np.polyfit(np.log(dts), np.log(errors), 1)[0])


def declared_orders(method: str, backend: str, sde: object) -> tuple[float, float]:
    """``(strong, weak)`` orders that ``method`` on ``backend`` declares for ``sde``'s kind of noise.

    Native methods: their class attributes (``declared_strong_order(sde)``, ``weak_order``). torchsde
    methods: the attributes torchsde's solver sets for the noise type it is given, except torchsde's
    Milstein on scalar, non-additive noise: its correction uses ``Jᵀg`` instead of ``J g``, so only
    strong order 0.5 holds in general (1.0 when ``∂g/∂x`` is symmetric; ``simulate`` refuses it when
    the Jacobian at the start is not). Raises ValueError when the method cannot integrate ``sde``.
    """
    sde = as_sde(sde)
    method = METHOD_ALIASES.get(method.lower(), method.lower())
    if backend == "native":
        name = _native_name(method, sde)
        if name not in SDE_METHODS:
            raise ValueError(f"method={method!r} has no native implementation; native methods: "
                             f"{', '.join(SDE_METHODS)}.")
        cls = SDE_METHODS[name]
        return float(cls.declared_strong_order(sde)), float(cls.weak_order)
    if backend != "torchsde":
        raise ValueError(f"backend must be 'native' or 'torchsde'; got {backend!r}.")
    if method not in TORCHSDE_METHODS:
        raise ValueError(f"unknown torchsde method {method!r}; choose one of {', '.join(TORCHSDE_METHODS)}.")
    from torchsde._core.methods import select

    reason = torchsde_support(method, sde)
    if reason is not None:
        raise ValueError(f"torchsde's {method} cannot integrate this SDE: {reason}.")
    cls = select(TORCHSDE_METHODS[method], sde.sde_type)
    if method == "milstein" and sde.noise_type == "scalar" and not sde.is_additive:
        return 0.5, 1.0
    adapter = TorchsdeAdapter(sde, (1,), cls.sde_type if sde.is_additive else None)
    m = 1
    bm = NestedBrownianPath(0.0, 1.0, (1, m), n_fine=1)
    solver = cls(sde=adapter, bm=bm, dt=0.1, adaptive=False, rtol=1e-5, atol=1e-4, dt_min=1e-5, options={})
    return float(solver.strong_order), float(solver.weak_order)


# -- shared machinery ---------------------------------------------------------------------------------
def _check_dts(dts: Sequence[float] | None, span: float) -> np.ndarray:
    arr = np.asarray(DEFAULT_FRACTIONS, dtype=np.float64) * span if dts is None else np.asarray(dts, np.float64)
    if arr.ndim != 1 or arr.size < 2:
        raise ValueError(f"dts must list at least two step sizes; got {dts!r}.")
    for v in arr:
        check_step(float(v), "dts")
        n = span / v
        if abs(n - round(n)) > 1e-6 * max(1.0, n):
            raise ValueError(f"every step in dts must divide the time span {span:g} exactly; {v:g} does not.")
    return np.sort(arr)[::-1].copy()


def _n_steps(span: float, dt: float) -> int:
    return int(round(span / dt))


def _check_common(x0: Tensor, n_batches: object, n_boot: object, tolerance: object) -> tuple[int, int, float]:
    """Refuse what would give a meaningless interval: one batch (no spread), no resamples, paths not
    splitting into equal batches, a non-positive tolerance."""
    n_batches = check_int(n_batches, "n_batches", minimum=2)
    n_boot = check_int(n_boot, "n_boot", minimum=10)
    tol = as_real(tolerance, "tolerance")
    if not math.isfinite(tol) or tol < 0:
        raise ValueError(f"tolerance must be a finite number >= 0; got {tolerance!r}.")
    if x0.shape[0] % n_batches or x0.shape[0] < 2 * n_batches:
        raise ValueError(f"the number of paths ({x0.shape[0]}) must be a multiple of n_batches ({n_batches}) with at "
                         f"least 2 paths per batch; use a multiple of {n_batches} (>= {2 * n_batches}) or fewer "
                         f"batches.")
    return n_batches, n_boot, tol


def _checked_exact(exact: Callable[[Tensor, float, Tensor], Tensor], xc: Tensor, span: float, w: Tensor) -> Tensor:
    out = exact(xc, span, w)
    if not isinstance(out, Tensor) or tuple(out.shape) != tuple(xc.shape):
        got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise ValueError(f"exact(x0, t, W_t) must return X_t with x0's shape {tuple(xc.shape)}; it returned {got} "
                         f"(it would be broadcast silently). Return one state per path.")
    return out


def _checked_fn(phi: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
    out = phi(x)
    if not isinstance(out, Tensor) or tuple(out.shape) != (x.shape[0],):
        got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise ValueError(f"fn(x) must return one value per path, shape ({x.shape[0]},), for states x of shape "
                         f"{tuple(x.shape)}; it returned {got}. Reduce over the event dimensions only, e.g. "
                         f"fn=lambda x: (x ** 2).reshape(x.shape[0], -1).sum(-1).")
    return out


def _bootstrap(per_batch: np.ndarray, dts: np.ndarray, transform: Callable[[np.ndarray], np.ndarray],
               n_boot: int, seed: int) -> tuple[float, float]:
    """95% percentile interval of the fitted slope over batch resamples (rows of ``per_batch``)."""
    nb = per_batch.shape[0]
    gen = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, nb, (n_boot, nb), generator=gen).numpy()
    slopes = []
    for row in idx:
        err = transform(per_batch[row].mean(0))
        slopes.append(fit_order(dts, err))
    s = np.asarray(slopes)
    s = s[np.isfinite(s)]
    if s.size == 0:
        return float("nan"), float("nan")
    return float(np.percentile(s, 2.5)), float(np.percentile(s, 97.5))


def _chunks(n_paths: int, n_batches: int, per_path_bytes: int) -> list[slice]:
    """Contiguous chunks of whole batches whose Brownian paths fit in memory."""
    if n_paths % n_batches:
        raise ValueError(f"the number of paths ({n_paths}) must be a multiple of n_batches ({n_batches}).")
    bsize = n_paths // n_batches
    per_chunk = max(1, _PATH_BYTES // max(1, per_path_bytes * bsize))
    out = []
    for start in range(0, n_batches, per_chunk):
        stop = min(n_batches, start + per_chunk)
        out.append(slice(start * bsize, stop * bsize))
    return out


def _run_levels(
    sde: SDE, x0: Tensor, t0: float, t1: float, *, method: str, backend: str, dts: np.ndarray,
    n_batches: int, generator: torch.Generator | int | None, reference: Callable[[Tensor, NestedBrownianPath, slice],
                                                                                    Tensor],
    finest: float, per_path: Callable[[Tensor, Tensor], Tensor],
) -> np.ndarray:
    """Per-path values ``per_path(X_T^h, X_T^ref)`` for every step size: array (n_paths, n_dts)."""
    span = t1 - t0
    m = check_sde_functions(sde, torch.as_tensor(t0, dtype=x0.dtype, device=x0.device), x0[:1])  # Brownian size
    n_fine = _n_steps(span, finest)
    gen = make_generator(generator, x0.device)
    elem = torch.finfo(x0.dtype).bits // 8
    out = np.empty((x0.shape[0], len(dts)))
    for sl in _chunks(x0.shape[0], n_batches, 2 * (n_fine + 1) * m * elem):
        xc = x0[sl]
        path = NestedBrownianPath(t0, t1, (xc.shape[0], m), n_fine=n_fine, dtype=x0.dtype, device=x0.device,
                                  generator=gen)
        ref = reference(xc, path, sl)
        for j, dt in enumerate(dts):
            sol = simulate(sde, xc, [t0, t1], method=method, dt=float(dt), backend=backend, bm=path, save="final")
            out[sl, j] = per_path(sol.final, ref).detach().cpu().double().numpy()
    return out


def _label(sde: SDE, problem: str | None) -> str:
    return problem if problem is not None else type(sde).__name__


def strong_order(
    sde: object,
    x0: Tensor,
    t1: float,
    *,
    method: str,
    backend: str = "native",
    t0: float = 0.0,
    dts: Sequence[float] | None = None,
    exact: Callable[[Tensor, float, Tensor], Tensor] | None = None,
    reference_method: str | None = None,
    reference_dt: float | None = None,
    n_batches: int = 20,
    n_boot: int = 400,
    generator: torch.Generator | int | None = 0,
    tolerance: float = 0.1,
    declared: float | None = None,
    problem: str | None = None,
) -> OrderResult:
    """Measure the strong order of ``method`` on ``sde`` from ``x0`` over ``[t0, t1]``.

    Args:
        sde: the SDE.
        x0: initial states (B, *event); B paths (a multiple of ``n_batches``).
        t1, t0: the time span.
        method, backend: the solver (``"native"`` or ``"torchsde"``).
        dts: step sizes, each dividing ``t1 − t0``; default ``(t1 − t0)·2^-k``, k = 4..9.
        exact: pathwise solution ``exact(x0, t, W_t) -> X_t`` (``W_t`` shaped like the Brownian
            increments, reshaped to ``x0``'s shape for diagonal noise); when ``None`` a fine-step
            reference on the same path is used.
        reference_method, reference_dt: the fine reference (default: the same method and backend
            ``"native"`` when it has the method, at the smallest step / 16).
        n_batches, n_boot: batch resampling for the confidence interval.
        generator: seed or ``torch.Generator`` for the Brownian paths.
        tolerance, declared: the check ``|order − declared| ≤ tolerance``; ``declared`` defaults to
            :func:`declared_orders`.
        problem: a label for reports.

    Returns:
        :class:`OrderResult` (``kind="strong"``).
    """
    sde = as_sde(sde)
    x0 = check_state(x0)
    span = float(t1) - float(t0)
    if not span > 0:
        raise ValueError(f"need t1 > t0; got t0={t0}, t1={t1}.")
    n_batches, n_boot, tolerance = _check_common(x0, n_batches, n_boot, tolerance)
    dts_arr = _check_dts(dts, span)
    strong_decl, _ = declared_orders(method, backend, sde)
    declared = strong_decl if declared is None else float(declared)
    b = x0.shape[0]

    if exact is not None:
        finest = float(dts_arr.min())

        def reference(xc: Tensor, path: NestedBrownianPath, sl: slice) -> Tensor:
            w = path.value(float(t1)).reshape(xc.shape) if sde.noise_type == "diagonal" else path.value(float(t1))
            return _checked_exact(exact, xc, float(t1) - float(t0), w)

        ref_kind = "exact"
    else:
        rdt = float(dts_arr.min()) / 16 if reference_dt is None else check_step(reference_dt, "reference_dt")
        finest = rdt
        rmethod = reference_method or method
        rname = _native_name(METHOD_ALIASES.get(rmethod, rmethod), sde)
        rbackend = "native" if rname in SDE_METHODS and SDE_METHODS[rname].unsupported_reason(sde) is None \
            else backend

        def reference(xc: Tensor, path: NestedBrownianPath, sl: slice) -> Tensor:
            return simulate(sde, xc, [t0, t1], method=rmethod, dt=rdt, backend=rbackend, bm=path, save="final").final

        ref_kind = "fine"
        if abs(span / rdt - round(span / rdt)) > 1e-6 * span / rdt:
            raise ValueError(f"reference_dt={rdt:g} must divide the time span {span:g} exactly.")

    def per_path(x: Tensor, ref: Tensor) -> Tensor:
        return (x - ref).reshape(x.shape[0], -1).norm(dim=-1)

    vals = _run_levels(sde, x0, float(t0), float(t1), method=method, backend=backend, dts=dts_arr,
                       n_batches=n_batches, generator=generator, reference=reference, finest=finest,
                       per_path=per_path)
    per_batch = vals.reshape(n_batches, b // n_batches, len(dts_arr)).mean(1)
    errors = per_batch.mean(0)
    se = per_batch.std(0, ddof=1) / math.sqrt(n_batches)
    order = fit_order(dts_arr, errors)
    ci = _bootstrap(per_batch, dts_arr, lambda e: e, n_boot, seed=1234)
    return OrderResult(kind="strong", method=method, backend=backend, problem=_label(sde, problem), dts=dts_arr,
                       errors=errors, errors_se=se, order=order, ci=ci, declared=declared, tolerance=tolerance,
                       n_paths=b, reference=ref_kind)


def weak_order(
    sde: object,
    x0: Tensor,
    t1: float,
    *,
    method: str,
    backend: str = "native",
    t0: float = 0.0,
    dts: Sequence[float] | None = None,
    fn: Callable[[Tensor], Tensor] | None = None,
    exact: Callable[[Tensor, float, Tensor], Tensor] | None = None,
    exact_mean: float | None = None,
    n_batches: int = 20,
    n_boot: int = 400,
    generator: torch.Generator | int | None = 0,
    tolerance: float = 0.1,
    declared: float | None = None,
    problem: str | None = None,
) -> OrderResult:
    """Measure the weak order of ``method`` with the test function ``fn`` (default: the mean coordinate).

    Give ``exact`` (a pathwise solution, used as a control variate; preferred) or ``exact_mean``
    (the exact ``E fn(X_T)``). Other arguments as in :func:`strong_order`.

    Returns:
        :class:`OrderResult` (``kind="weak"``).
    """
    sde = as_sde(sde)
    x0 = check_state(x0)
    span = float(t1) - float(t0)
    if not span > 0:
        raise ValueError(f"need t1 > t0; got t0={t0}, t1={t1}.")
    if exact is None and exact_mean is None:
        raise ValueError("weak_order needs the exact answer: pass exact=(x0, t, W_t) -> X_t (a pathwise solution, "
                         "used as a control variate) or exact_mean=E[fn(X_T)].")
    n_batches, n_boot, tolerance = _check_common(x0, n_batches, n_boot, tolerance)
    if exact is not None and exact_mean is not None:
        raise ValueError("pass exact (a pathwise solution) or exact_mean (E[fn(X_T)]), not both.")
    if exact_mean is not None:
        exact_mean = as_real(exact_mean, "exact_mean")
        if not math.isfinite(exact_mean):
            raise ValueError(f"exact_mean must be finite; got {exact_mean}.")
    dts_arr = _check_dts(dts, span)
    _, weak_decl = declared_orders(method, backend, sde)
    declared = weak_decl if declared is None else float(declared)
    phi = fn if fn is not None else (lambda x: x.reshape(x.shape[0], -1).mean(-1))
    b = x0.shape[0]

    if exact is not None:
        def reference(xc: Tensor, path: NestedBrownianPath, sl: slice) -> Tensor:
            w = path.value(float(t1)).reshape(xc.shape) if sde.noise_type == "diagonal" else path.value(float(t1))
            return _checked_fn(phi, _checked_exact(exact, xc, span, w))

        def per_path(x: Tensor, ref: Tensor) -> Tensor:
            return _checked_fn(phi, x) - ref

        ref_kind = "control-variate"
    else:
        def reference(xc: Tensor, path: NestedBrownianPath, sl: slice) -> Tensor:
            return torch.zeros(())

        def per_path(x: Tensor, ref: Tensor) -> Tensor:
            return _checked_fn(phi, x) - float(exact_mean)

        ref_kind = "exact-mean"

    vals = _run_levels(sde, x0, float(t0), float(t1), method=method, backend=backend, dts=dts_arr,
                       n_batches=n_batches, generator=generator, reference=reference, finest=float(dts_arr.min()),
                       per_path=per_path)
    per_batch = vals.reshape(n_batches, b // n_batches, len(dts_arr)).mean(1)
    errors = np.abs(per_batch.mean(0))
    se = per_batch.std(0, ddof=1) / math.sqrt(n_batches)
    order = fit_order(dts_arr, errors)
    ci = _bootstrap(per_batch, dts_arr, np.abs, n_boot, seed=1234)
    return OrderResult(kind="weak", method=method, backend=backend, problem=_label(sde, problem), dts=dts_arr,
                       errors=errors, errors_se=se, order=order, ci=ci, declared=declared, tolerance=tolerance,
                       n_paths=b, reference=ref_kind)
