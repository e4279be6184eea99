"""Result objects returned by the solver front doors."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

__all__ = [
    "Solution", "SolveStats", "SolveError", "STATUS_OK", "STATUS_NONFINITE", "STATUS_ABORTED", "ON_FAILURE",
    "check_on_failure", "report_solution", "solve_by_parts",
]

STATUS_OK = 0
STATUS_NONFINITE = 1
#: The adaptive solver (torchsde, torchdiffeq) gave up on this path (its states are NaN from then on).
STATUS_ABORTED = 2

#: The one convention of the solvers and samplers: ``"return"`` warns and returns every path with its
#: status; ``"raise"`` raises (:class:`SolveError` here, ``SamplingError`` for the samplers).
ON_FAILURE = ("return", "raise")
#: What the dependencies raise when an adaptive solve gives up ("underflow in dt", "Found nans in the
#: error estimate", a RecursionError in torchsde's Brownian tree).
_ABORTS = (AssertionError, RuntimeError, RecursionError, OverflowError, ZeroDivisionError)


@dataclass
class SolveStats:
    """What a solve cost.

    Attributes:
        method: the integration method used.
        backend: ``"native"``, ``"torchsde"`` or ``"torchdiffeq"``.
        steps: number of solver steps (``None`` where a backend does not report it).
        drift_evals: evaluations of the drift (for an ODE: of the vector field, the NFE).
        diffusion_evals: evaluations of the diffusion (0 for ODEs).
        wall_time: seconds spent in the solve, measured on the host (CUDA work synchronised once at the end).
        compile_time: seconds spent compiling (fused paths only; 0 otherwise).
    """

    method: str
    backend: str
    steps: int | None = None
    drift_evals: int = 0
    diffusion_evals: int = 0
    wall_time: float = 0.0
    compile_time: float = 0.0

    @property
    def nfe(self) -> int:
        """Number of drift / vector-field evaluations."""
        return self.drift_evals


@dataclass
class Solution:
    """Saved states of a solve.

    Attributes:
        ts: times of the saved states, shape (T,).
        xs: saved states, shape (T, B, *event_shape); ``xs[0]`` is the initial state when it was saved.
        stats: :class:`SolveStats`.
        status: per-path status, shape (B,), int8: 0 = ok (``STATUS_OK``), 1 = a saved state was NaN or
            infinite (``STATUS_NONFINITE``), 2 = the adaptive solver gave up on the path (``STATUS_ABORTED``;
            its states from ``failed_at`` on are NaN). ``ok`` is the boolean form.
        failed_at: for aborted paths, the time at which the solver gave up, shape (B,), float64, NaN for
            the other paths; ``None`` when no path was aborted.
        failure: the dependency's error when paths were aborted (e.g. ``"AssertionError: underflow in dt
            ..."``), else ``""``.
    """

    ts: Tensor
    xs: Tensor
    stats: SolveStats
    status: Tensor = field(default=None)  # type: ignore[assignment]
    failed_at: Tensor | None = None
    failure: str = ""

    def __post_init__(self) -> None:
        if self.status is None:
            self.status = path_status(self.xs)

    @property
    def final(self) -> Tensor:
        """The last saved state, shape (B, *event_shape)."""
        return self.xs[-1]

    @property
    def ok(self) -> Tensor:
        """Per-path boolean tensor, shape (B,): True where the path stayed finite and was solved to the end
        (``status == 0``). A tensor, not a bool: use ``sol.ok.all()`` for the whole batch, ``sol.xs[:, sol.ok]``
        for the good paths."""
        return self.status == STATUS_OK

    def __repr__(self) -> str:
        return (
            f"Solution(ts: {tuple(self.ts.shape)}, xs: {tuple(self.xs.shape)} {self.xs.dtype} on {self.xs.device}, "
            f"method={self.stats.method!r}, backend={self.stats.backend!r}, steps={self.stats.steps})"
        )


def path_status(xs: Tensor) -> Tensor:
    """Per-path status from saved states ``(T, B, *event)``: 1 where any saved value is not finite."""
    if xs.dim() < 2:
        raise ValueError(f"xs must have shape (T, B, *event_shape); got {tuple(xs.shape)}.")
    if xs.device.type == "cpu" and xs.is_floating_point() and bool(torch.isfinite(xs.detach().sum())):
        # The common case in one reduction without a mask: a NaN or inf anywhere makes the sum
        # non-finite (an overflowing sum of finite values only sends it to the exact check below).
        return torch.zeros(xs.shape[1], dtype=torch.int8)
    bad = ~torch.isfinite(xs.reshape(xs.shape[0], xs.shape[1], -1)).all(-1).all(0)
    return bad.to(torch.int8)


class SolveError(RuntimeError):
    """A solve had failed paths and was called with ``on_failure="raise"``.

    Attributes:
        solution: the :class:`Solution` with every path's status (failed paths' states are NaN).
        paths: indices of the failed paths; ``times``: for aborted paths the time the solver gave up (else NaN).
    """

    def __init__(self, message: str, solution: Solution) -> None:
        super().__init__(message)
        self.solution = solution
        self.paths = torch.nonzero(solution.status).flatten().tolist()


def check_on_failure(on_failure: object) -> str:
    """``on_failure`` must be ``"return"`` or ``"raise"`` (ValueError naming it otherwise)."""
    if on_failure not in ON_FAILURE:
        raise ValueError(f"on_failure must be 'return' (warn and return every path with its status in "
                         f"Solution.status) or 'raise' (raise SolveError); got {on_failure!r}.")
    return str(on_failure)


def report_solution(sol: Solution, on_failure: str, *, what: str, hint: str, stacklevel: int = 3,
                    status_field: str = "Solution.status") -> Solution:
    """Warn (``"return"``) or raise :class:`SolveError` (``"raise"``) when some paths of ``sol`` failed.

    The message counts the non-finite and aborted paths, names the first few (and for aborted ones the
    time the solver gave up), names ``Solution.status`` and says what to try (``hint``)."""
    status = sol.status
    n_bad = int((status != STATUS_OK).sum())
    if not n_bad:
        return sol
    b = status.shape[0]
    nonfinite = torch.nonzero(status == STATUS_NONFINITE).flatten().tolist()
    aborted = torch.nonzero(status == STATUS_ABORTED).flatten().tolist()
    parts = []
    if nonfinite:
        parts.append(f"{len(nonfinite)} of {b} paths became NaN or infinite (paths {_few(nonfinite)})")
    if aborted:
        at = sol.failed_at
        when = ", ".join(f"{i} at t={float(at[i]):.6g}" for i in aborted[:8]) if at is not None else _few(aborted)
        more = ", ..." if len(aborted) > 8 else ""
        said = f"; it said {sol.failure[:200]!r}" if sol.failure else ""
        again = "; the other paths were solved again without them" if len(aborted) < b else ""
        parts.append(f"the adaptive solver gave up on {len(aborted)} of {b} paths ({when}{more}{again}{said})")
    msg = f"{what}: {'; '.join(parts)}. See {status_field} (0 ok, 1 non-finite, 2 aborted); {hint}"
    if on_failure == "raise":
        raise SolveError(msg + "; on_failure='return' returns the finite paths with their status.", sol)
    warnings.warn(msg + ".", RuntimeWarning, stacklevel=stacklevel)
    return sol


def _few(idx: list[int]) -> str:
    return ", ".join(map(str, idx[:8])) + (", ..." if len(idx) > 8 else "")


def solve_by_parts(
    solve: Callable[[Tensor | None], Tensor],
    batch: int,
    last_time: Callable[[], float],
    shape: tuple[int, ...],
    like: Tensor,
    max_solves: int | None = None,
) -> tuple[Tensor, Tensor, Tensor | None, str]:
    """Run ``solve(rows)`` (``rows=None``: the whole batch) and, if the dependency gives up, find the
    paths responsible by bisection: halves that fail are split again down to single paths.

    ``solve(rows)`` returns the states (T, len(rows), *event) of those rows; ``last_time()`` the last
    time the vector field was evaluated at (the time a one-path solve gave up). Returns ``(xs, status,
    failed_at)``: the states (T, B, *event) with NaN for aborted paths, the per-path status (int8) and
    the failure times (float64, NaN elsewhere; ``None`` when nothing was aborted) and the dependency's
    first error message (``""`` when nothing was aborted). ``shape`` is the shape of the full result
    (T, B, *event), ``like`` a tensor of its dtype and device. At most ``max_solves`` sub-solves are
    made (default ``16 + 8·bit_length(B)``: enough for a few bad paths); rows not separated by then
    are given up together (status 2, ``failed_at`` NaN). The good paths
    of a split batch are solved without the bad ones (for adaptive methods their steps then differ
    from the whole batch's, within the tolerances).
    """
    try:
        xs = solve(None)
        return xs, path_status(xs), None, ""
    except _ABORTS as err:
        reason = f"{type(err).__name__}: {err}"
    parts: list[tuple[Tensor, Tensor]] = []
    failed: dict[int, float] = {}
    budget = [max_solves if max_solves is not None else 16 + 8 * max(1, batch.bit_length())]

    def run(rows: Tensor) -> None:
        if budget[0] <= 0:  # too many failing parts to separate: give the rest up together
            for i in rows.tolist():
                failed[i] = float("nan")
            return
        budget[0] -= 1
        try:
            parts.append((rows, solve(rows)))
        except _ABORTS:
            if rows.numel() == 1:
                failed[int(rows)] = float(last_time())
                return
            h = rows.numel() // 2
            run(rows[:h])
            run(rows[h:])

    all_rows = torch.arange(batch)
    h = batch // 2
    if batch == 1:
        failed[0] = float(last_time())
    else:
        run(all_rows[:h])
        run(all_rows[h:])
    xs = torch.full(shape, float("nan"), dtype=like.dtype, device=like.device)
    for rows, part in parts:
        xs[:, rows.to(like.device)] = part.detach() if not torch.is_grad_enabled() else part
    status = path_status(xs)
    at = torch.full((batch,), float("nan"), dtype=torch.float64)
    for i, t in failed.items():
        status[i] = STATUS_ABORTED
        at[i] = t
    if budget[0] <= 0 and any(math.isnan(t) for t in failed.values()):
        reason += " (the bisection stopped after its budget of solves; some paths were given up together)"
    return xs, status, at, reason
