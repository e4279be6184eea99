"""torchdiffeq adapter: counts evaluations, maps options, supports the adjoint."""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn

__all__ = ["TORCHDIFFEQ_METHODS", "FIXED_GRID_METHODS", "CountingFunc", "solve_torchdiffeq"]

TORCHDIFFEQ_METHODS: tuple[str, ...] = (
    "dopri8", "dopri5", "bosh3", "fehlberg2", "adaptive_heun", "euler", "midpoint", "heun2", "heun3",
    "rk4", "explicit_adams", "implicit_adams", "fixed_adams", "scipy_solver",
)
_RK_ADAPTIVE: tuple[str, ...] = ("dopri8", "dopri5", "bosh3", "fehlberg2", "adaptive_heun")
FIXED_GRID_METHODS: tuple[str, ...] = (
    "euler", "midpoint", "heun2", "heun3", "rk4", "explicit_adams", "implicit_adams", "fixed_adams",
)


class CountingFunc(nn.Module):
    """Wraps ``func(t, x)`` (module or plain callable) and counts its evaluations."""

    def __init__(self, func: Callable[[Tensor, Tensor], Tensor]) -> None:
        super().__init__()
        if isinstance(func, nn.Module):
            self.func = func
        else:
            self._plain = func
        self.nfe = 0

    def forward(self, t: Tensor, x: Tensor) -> Tensor:
        self.nfe += 1
        f = self.func if "func" in self._modules else self._plain
        return f(t, x)


def solve_torchdiffeq(
    func: Callable[[Tensor, Tensor], Tensor],
    x0: Tensor,
    ts: Tensor,
    *,
    method: str,
    rtol: float,
    atol: float,
    dt: float | None,
    max_steps: int | None,
    adjoint: bool,
) -> tuple[Tensor, CountingFunc]:
    """Integrate ``dx/dt = func(t, x)`` with torchdiffeq; returns states (T, *x0.shape) and the counter."""
    import torchdiffeq

    counter = CountingFunc(func)
    options: dict[str, object] = {}
    if dt is not None and method in FIXED_GRID_METHODS:
        options["step_size"] = dt
    if max_steps is not None and method not in FIXED_GRID_METHODS:
        options["max_num_steps"] = int(max_steps)
    if method in _RK_ADAPTIVE:
        # Land on every output time instead of stepping past the last one and interpolating: the field
        # is then never evaluated outside [ts[0], ts[-1]] (a VP PF-ODE is undefined at t < 0).
        options["step_t"] = ts
    if adjoint:
        params = tuple(p for p in counter.parameters() if p.requires_grad)
        xs = torchdiffeq.odeint_adjoint(counter, x0, ts, rtol=rtol, atol=atol, method=method,
                                        options=options or None, adjoint_params=params)
    else:
        xs = torchdiffeq.odeint(counter, x0, ts, rtol=rtol, atol=atol, method=method, options=options or None)
    return xs, counter
