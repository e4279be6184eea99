"""Exact log-likelihoods through the probability-flow ODE (Song et al. 2021, §4.3; FFJORD).

Along a PF-ODE trajectory ``dx/dt = v(t, x)``, ``d log p_t(x_t)/dt = −∇·v(t, x_t)``. Integrating
from the data point at ``eps`` **up** to ``T`` (increasing time: the data are encoded into the
prior) gives ``log p_eps(x) = log p_T(x_T) + ∫_eps^T ∇·v(t, x_t) dt``. The divergence is the exact
trace of the Jacobian (d vector–Jacobian products per evaluation) or Hutchinson's estimate
``E[zᵀ (∂v/∂x) z]`` with probes fixed along the trajectory, which makes the estimate unbiased.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .._checks import check_state
from ..calculus import choose_trace_method, divergence, draw_probes
from ..sde._gaussian import DiffusionSDE
from ..solve.ode import solve_ode
from ..solve.solution import check_on_failure, path_status, report_solution
from .probability_flow import ProbabilityFlowODE, ScoreFunction

__all__ = ["LikelihoodResult", "log_likelihood", "bits_per_dim"]


@dataclass
class LikelihoodResult:
    """Output of :func:`log_likelihood` (all tensors detached, shape (B,) unless noted).

    Attributes:
        log_prob: ``log p_eps(x)`` in nats.
        prior_log_prob: ``log p_T(x_T)`` of the encoded point.
        delta_log_prob: ``∫_eps^T ∇·v dt``.
        x_T: the encoded points, shape of ``x``.
        nfe: vector-field evaluations of the solve (each with its divergence).
        status: per-point status, int8 (B,): 0 ok, 1 non-finite, 2 the adaptive solver gave up on the
            point (its values are NaN); as :attr:`sdeflow.Solution.status`.
    """

    log_prob: Tensor
    prior_log_prob: Tensor
    delta_log_prob: Tensor
    x_T: Tensor
    nfe: int
    status: Tensor | None = None

    @property
    def ok(self) -> Tensor:
        """Per-point boolean tensor (B,): True where the log-likelihood is finite and was solved to the end."""
        return self.status == 0


class _Augmented(nn.Module):
    """``d/dt [x, Δ] = [v(t, x), ∇·v(t, x)]`` on flat (B, d + 1) states."""

    def __init__(self, flow: ProbabilityFlowODE, event_shape: tuple[int, ...], probes: Tensor | None) -> None:
        super().__init__()
        self.flow = flow
        self.event_shape = event_shape
        self.probes = probes
        self.d = math.prod(event_shape)

    def forward(self, t: Tensor, y: Tensor) -> Tensor:
        b = y.shape[0]
        x = y[:, : self.d].reshape((b,) + self.event_shape)
        v, div = divergence(lambda z: self.flow(t, z), x, method="exact" if self.probes is None else "hutchinson",
                            probes=self.probes)
        return torch.cat([v.detach().reshape(b, self.d), div.detach()[:, None]], dim=1)

    def select_rows(self, rows: Tensor) -> _Augmented:
        """The same field for the sub-batch ``rows`` (its probes; used when a failed solve is bisected)."""
        probes = None if self.probes is None else self.probes[:, rows.to(self.probes.device)]
        return _Augmented(self.flow, self.event_shape, probes)


def log_likelihood(
    sde: object,
    score: ScoreFunction,
    x: Tensor,
    *,
    trace: str = "auto",
    hutchinson_probes: int = 1,
    probe: str = "rademacher",
    method: str = "dopri5",
    rtol: float = 1e-6,
    atol: float = 1e-8,
    dt: float | None = None,
    eps: float | None = None,
    T: float | None = None,
    prior_log_prob: Callable[[Tensor], Tensor] | None = None,
    generator: torch.Generator | int | None = None,
    on_failure: str = "return",
) -> LikelihoodResult:
    """``log p_eps(x)`` by integrating the probability-flow ODE and its divergence from ``eps`` up to ``T``.

    Args:
        sde: the forward SDE (a :class:`sdeflow.DiffusionSDE` supplies ``eps``, ``T`` and the prior).
        score: ``score(x, t)`` (x (B, *event), t (B,)) approximating ``∇log p_t``.
        x: data points (B, *event).
        trace: how the divergence is computed (:func:`sdeflow.divergence`): ``"exact"`` (d
            vector–Jacobian products per evaluation), ``"hutchinson"`` (unbiased estimate), or
            ``"auto"`` (default: exact up to :data:`sdeflow.calculus.EXACT_MAX_DIM` = 16 dimensions,
            Hutchinson above — an exact trace on a 64-dimensional image state costs 64 products per step).
        hutchinson_probes: probes per point for Hutchinson's estimator (drawn once, fixed along the
            trajectory, which keeps the estimate unbiased; more probes lower the variance).
        probe: ``"rademacher"`` (±1 entries) or ``"gaussian"``.
        method, rtol, atol, dt: passed to :func:`sdeflow.solve_ode` (torchdiffeq backend; ``dt`` for
            fixed-step methods).
        eps, T: the integration interval (default: the SDE's).
        prior_log_prob: ``log p_T`` as a function of x_T (B, *event) -> (B,); default the SDE's
            ``prior_log_prob``.
        generator: random source of the Hutchinson probes.
        on_failure: as in :func:`sdeflow.solve_ode`: ``"return"`` (default) warns and returns every
            point with its ``status`` (a point the adaptive solver gives up on is found by bisection, its
            values are NaN, and the other points are solved again without it); ``"raise"`` raises
            :class:`~sdeflow.solve.solution.SolveError`.

    Returns:
        :class:`LikelihoodResult`; ``log_prob`` in nats (see :func:`bits_per_dim`). Detached: no
        gradient flows to the score's parameters.
    """
    x = check_state(x, "x")
    if not bool(torch.isfinite(x).all()):
        raise ValueError("x must be finite: the log-likelihood of a NaN or infinite point is undefined; drop or "
                         "fix those rows (torch.isfinite(x).flatten(1).all(1) selects the finite ones).")
    if isinstance(sde, DiffusionSDE):
        eps = sde.eps if eps is None else eps
        T = sde.T if T is None else T
        if prior_log_prob is None:
            prior_log_prob = sde.prior_log_prob
    if eps is None or T is None:
        raise ValueError("eps and T are required for an SDE that is not a sdeflow.DiffusionSDE; pass eps= and T=.")
    if prior_log_prob is None:
        raise ValueError("prior_log_prob is required for an SDE that is not a sdeflow.DiffusionSDE.")
    if not 0 <= eps < T:
        raise ValueError(f"need 0 <= eps < T; got eps={eps}, T={T}.")
    probes = None
    if choose_trace_method(trace, x[0].numel(), name="trace") == "hutchinson":
        probes = draw_probes(tuple(x.shape), hutchinson_probes, like=x, kind=probe, generator=generator,
                             name="hutchinson_probes")
    flow = ProbabilityFlowODE(sde, score, T=T, eps=eps)
    b = x.shape[0]
    event = tuple(x.shape[1:])
    aug = _Augmented(flow, event, probes)
    y0 = torch.cat([x.detach().reshape(b, -1), x.new_zeros(b, 1)], dim=1)
    on_failure = check_on_failure(on_failure)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # reported below, naming LikelihoodResult.status
        sol = solve_ode(aug, y0, [float(eps), float(T)], method=method, rtol=rtol, atol=atol, dt=dt,
                        on_failure="return")
    report_solution(sol, on_failure, what=f"log_likelihood(method={method!r})", status_field="LikelihoodResult.status",
                    hint="check the score near eps and T, try a fixed-step method (method='rk4' with a dt) or "
                         "looser tolerances")
    y_T = sol.final
    x_T = y_T[:, :-1].reshape(x.shape)
    delta = y_T[:, -1]
    prior = prior_log_prob(x_T).detach()
    return LikelihoodResult(log_prob=prior + delta, prior_log_prob=prior, delta_log_prob=delta, x_T=x_T,
                            nfe=sol.stats.nfe, status=torch.where(sol.status != 0, sol.status,
                                                                 path_status((prior + delta)[None, :, None])))


def bits_per_dim(log_prob: Tensor, dim: int, *, bins: int | None = None, data_range: float = 2.0) -> Tensor:
    """Bits per dimension ``−log p / (d ln 2)``, with the dequantisation offset for discrete data.

    Args:
        log_prob: log-density in nats, shape (B,) (e.g. ``log_likelihood(...).log_prob``).
        dim: the number of dimensions d of one data point.
        bins: for data quantised to ``bins`` levels (256 for 8-bit images) and rescaled to an
            interval of width ``data_range`` (2 for [−1, 1]), the density is converted to the
            probability mass of one bin: ``log P = log p + d log(data_range / bins)``. ``None``
            (default) reports the continuous density.
    """
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
        raise ValueError(f"dim must be a positive int (dimensions per data point); got {dim!r}.")
    lp = log_prob
    if bins is not None:
        if isinstance(bins, bool) or not isinstance(bins, int) or bins < 2:
            raise ValueError(f"bins must be an int >= 2 (e.g. 256 for 8-bit data); got {bins!r}.")
        if not data_range > 0:
            raise ValueError(f"data_range must be > 0; got {data_range!r}.")
        lp = lp + dim * math.log(data_range / bins)
    return -lp / (dim * math.log(2.0))
