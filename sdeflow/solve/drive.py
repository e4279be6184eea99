"""``simulate``'s second stage: build the plan's integrator and drive it over the save points.

:func:`make_integrator` turns a :class:`~sdeflow.solve.plan.SimulationPlan` into an integrator
(:class:`~sdeflow.solve.native.engine.EagerIntegrator`,
:class:`~sdeflow.solve.native.fused.CompiledIntegrator`,
:class:`~sdeflow.solve.native.triton_linear.TritonIntegrator` or :class:`TorchsdeIntegrator`);
:func:`drive` is the one driver: it advances the integrator from save point to save point
(:func:`~sdeflow.solve.native.engine.run_segments`), keeps the saved states, shows the progress
bar, times the run, flags paths that became non-finite and reports the cost.
"""

from __future__ import annotations

import time

import torch
from torch import Tensor

from .._checks import module_tensors
from .backends.torchsde_backend import RowsBrownian, TorchsdeAdapter, make_brownian, solve_torchsde
from .native.engine import EagerIntegrator, Integrator, progress_bar, run_segments
from .native.fused import CompiledIntegrator
from .native.triton_linear import TritonIntegrator
from .noise import BrownianIncrements, GaussianIncrements
from .plan import SimulationPlan, _philox_seed
from .solution import Solution, SolveStats, path_status, report_solution, solve_by_parts

__all__ = ["drive", "make_integrator", "TorchsdeIntegrator"]


class TorchsdeIntegrator(Integrator):
    """torchsde integrates over all output times in one ``sdeint`` call (on the first ``advance``);
    ``advance(x, i, j)`` then returns its state at output index ``j``. Evaluations are counted."""

    def __init__(self, plan: SimulationPlan, x0: Tensor) -> None:
        self.plan, self.x0 = plan, x0
        self.states: Tensor | None = None
        self.adapter: TorchsdeAdapter | None = None
        self.status: Tensor | None = None
        self.failed_at: Tensor | None = None
        self.failure = ""

    def _solve(self) -> None:
        p, x0 = self.plan, self.x0
        bm = p.bm if p.bm is not None else make_brownian(x0, p.times, method=p.method, dt=p.dt,
                                                         brownian_size=p.brownian_size, generator=p.generator,
                                                         fixed_step=not p.adaptive and not p.adjoint)
        sdef = p.sde
        self.adapter = TorchsdeAdapter(sdef, tuple(x0.shape[1:]), None)
        # one adapter counts every attempt (a failed whole-batch solve and its parts)
        from .backends.torchsde_backend import _solver_class

        if sdef.is_additive:
            self.adapter.sde_type = _solver_class(p.method, sdef.sde_type).sde_type

        def solve(rows: Tensor | None) -> Tensor:
            xr = x0 if rows is None else x0[rows.to(x0.device)]
            br = bm if rows is None else RowsBrownian(bm, rows)
            try:
                return solve_torchsde(sdef, xr, p.times, method=p.method, dt=p.dt, adaptive=p.adaptive,
                                      rtol=p.rtol, atol=p.atol, bm=br, brownian_size=p.brownian_size,
                                      generator=None, adjoint=p.adjoint, adapter=self.adapter)[0]
            except RecursionError as err:
                raise ValueError(
                    "torchsde's BrownianInterval exceeded Python's recursion limit (its tree needs a dt hint for "
                    "long runs): create bm with torchsde.BrownianInterval(..., dt=<your step>), or omit bm."
                ) from err

        shape = (len(p.times),) + tuple(x0.shape)
        self.states, self.status, self.failed_at, self.failure = solve_by_parts(
            solve, x0.shape[0], lambda: self.adapter.last_t, shape, x0)
        if p.decreasing and self.failed_at is not None:
            self.failed_at = -self.failed_at  # the user's time

    def advance(self, x: Tensor, i: int, j: int) -> Tensor:
        if self.states is None:
            self._solve()
        return self.states[j]

    def evaluations(self, n_steps: int) -> tuple[int, int]:
        if self.adapter is None:
            return 0, 0
        return self.adapter.drift_evals, self.adapter.diffusion_evals


def make_integrator(plan: SimulationPlan, x0: Tensor) -> Integrator:
    """The integrator the plan names, with its noise source (drawn from the plan's generator)."""
    if plan.integrator == "torchsde":
        return TorchsdeIntegrator(plan, x0)
    if plan.integrator == "triton":
        return TritonIntegrator(plan.sde, x0, plan.times, plan.save_index, seed=_philox_seed(plan.generator),
                                method=plan.method)
    cls, grid = plan.method_cls, plan.grid
    if plan.bm is not None:
        noise = BrownianIncrements(plan.bm, plan.times, plan.noise_shape, space_time=cls.needs_space_time,
                                   chunk_steps=plan.chunk)
    else:
        noise = GaussianIncrements(plan.noise_shape, grid.dts_np, generator=plan.generator, device=x0.device,
                                   dtype=x0.dtype, space_time=cls.needs_space_time, schedule=plan.noise)
    method = cls(plan.sde)
    if plan.integrator == "compiled":
        return CompiledIntegrator(method, grid.times, grid.dts_np, noise, chunk=noise.chunk, dt=plan.dt)
    return EagerIntegrator(method, grid.times, grid.dts, noise)


# States of at least this many numbers are copied into the output as they are saved (while in cache)
_IN_PLACE_MIN = 1 << 14


def _write_in_place(plan: SimulationPlan, x0: Tensor) -> bool:
    """Whether to write the saved states straight into a preallocated output: several large saved
    states and no autograd graph to keep (an in-place copy would enter it)."""
    if len(plan.save_index) < 2 or x0.numel() < _IN_PLACE_MIN:
        return False
    if not torch.is_grad_enabled():
        return True
    return not (x0.requires_grad or any(t.requires_grad for t in module_tensors(plan.sde)))


class _Keeper:
    """Copies each saved state into its row of the output (one peak copy of the states, not two) and
    sums it while it is in cache: a non-finite value anywhere makes its sum non-finite."""

    def __init__(self, n_saves: int, x0: Tensor) -> None:
        self.xs = torch.empty((n_saves,) + tuple(x0.shape), dtype=x0.dtype, device=x0.device)
        self.sums: list[Tensor] = []
        self.k = 0

    def __call__(self, x: Tensor) -> None:
        row = self.xs[self.k]
        row.copy_(x)
        self.sums.append(row.sum())
        self.k += 1


def drive(plan: SimulationPlan, x0: Tensor, integrator: Integrator | None = None, on_failure: str = "return",
          ) -> Solution:
    """Run ``plan`` from ``x0``: the saved states, their status and the solve's stats as a :class:`Solution`.

    Failed paths (non-finite states; on the torchsde backend also paths the adaptive solver gave up on,
    found by bisection) are reported by :func:`~sdeflow.solve.solution.report_solution`: a warning
    naming ``Solution.status`` (``on_failure="return"``) or a :class:`~sdeflow.solve.solution.SolveError`
    (``"raise"``)."""
    tick = time.perf_counter()
    if integrator is None:
        integrator = make_integrator(plan, x0)
    native = plan.backend == "native"
    n = plan.n_steps
    bar = progress_bar(n, plan.progress and native, f"simulate ({plan.method})")
    keep = _Keeper(len(plan.save_index), x0) if _write_in_place(plan, x0) else None
    states = run_segments(integrator.advance, x0, plan.save_index, n, bar=bar, quantum=integrator.quantum, keep=keep)
    xs = torch.stack(states) if keep is None else keep.xs
    if x0.device.type == "cuda":
        torch.cuda.synchronize(x0.device)
    evals = integrator.evaluations(n)
    if evals is None:
        evals = (n * plan.step_costs[0], n * plan.step_costs[1])
    stats = SolveStats(method=plan.method, backend=plan.backend, steps=n if native else None,
                       drift_evals=plan.check_evals + evals[0], diffusion_evals=plan.check_evals + evals[1],
                       compile_time=integrator.compile_time)
    stats.wall_time = time.perf_counter() - tick - stats.compile_time
    failed_at, failure = None, ""
    if keep is not None and bool(torch.isfinite(torch.stack(keep.sums).sum())):
        status = torch.zeros(xs.shape[1], dtype=torch.int8, device=xs.device)  # every value finite
    else:
        status = path_status(xs)
    if isinstance(integrator, TorchsdeIntegrator) and integrator.failed_at is not None:
        status = integrator.status.to(status.device)
        failed_at, failure = integrator.failed_at, integrator.failure
    sol = Solution(ts=plan.ts_out.clone(), xs=xs, stats=stats, status=status, failed_at=failed_at, failure=failure)
    hint = ("try a smaller dt or a more stable method" if not plan.adaptive else
            "try smaller rtol/atol or a smaller initial dt, a fixed-step method (adaptive=False with a dt), or "
            "a more stable method")
    return report_solution(sol, on_failure, what=f"simulate(method={plan.method!r}, backend={plan.backend!r})",
                           hint=hint, stacklevel=4)
