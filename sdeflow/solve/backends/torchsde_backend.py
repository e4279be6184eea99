"""torchsde adapter: flattens states to (B, d), counts evaluations, maps method names and support."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor, nn

from ...sde.base import SDE

__all__ = [
    "TORCHSDE_METHODS", "torchsde_support", "TorchsdeAdapter", "solve_torchsde", "make_brownian", "RowsBrownian",
    "levy_area_for", "StreamingBrownian",
]

#: sdeflow name -> torchsde name.
TORCHSDE_METHODS: dict[str, str] = {
    "euler": "euler",
    "milstein": "milstein",
    "srk": "srk",
    "heun": "heun",
    "midpoint": "midpoint",
    "euler_heun": "euler_heun",
    "reversible_heun": "reversible_heun",
    "log_ode": "log_ode",
}


def _solver_class(method: str, sde_type: str):  # noqa: ANN202
    from torchsde._core.methods import select

    return select(TORCHSDE_METHODS[method], sde_type)


def torchsde_support(method: str, sde: SDE) -> str | None:
    """``None`` if torchsde's ``method`` integrates ``sde``, else a short reason."""
    cls = _solver_class(method, sde.sde_type)
    if cls.sde_type != sde.sde_type and not sde.is_additive:
        return f"sde_type={sde.sde_type!r} (torchsde's {method} integrates {cls.sde_type})"
    if sde.noise_type not in cls.noise_types:
        return f"noise_type={sde.noise_type!r} (torchsde's {method} handles {', '.join(cls.noise_types)})"
    return None


#: Why torchsde's Milstein is refused on scalar noise whose diffusion has a non-symmetric Jacobian.
SCALAR_MILSTEIN_REASON = (
    "torchsde's scalar-noise Milstein correction uses Jᵀg where it needs J g (J = ∂g/∂x), and J of this "
    "diffusion is not symmetric at (ts[0], x0), so its strong order would drop to 0.5; the native milstein is "
    "correct (backend='native' or 'auto', fixed dt), or use method='srk' on torchsde"
)


def scalar_milstein_jacobian_asymmetric(sde: SDE, t: Tensor, x0: Tensor) -> bool:
    """Whether ``J = ∂g/∂x`` of a scalar-noise diffusion is non-symmetric at ``(t, x0[0])`` (states flattened;
    ``d`` reverse-mode passes). torchsde's scalar Milstein is only correct when it is symmetric."""
    x = x0[:1].detach().reshape(1, -1)
    d = x.shape[1]
    if d == 1:
        return False
    shape = (1,) + tuple(x0.shape[1:])

    def g(flat: Tensor) -> Tensor:
        out = sde.diffusion(t, flat.reshape(shape))
        return out.expand(shape).reshape(-1)

    with torch.enable_grad():
        jac = torch.autograd.functional.jacobian(g, x.reshape(-1).clone().requires_grad_(True))
    if not bool(torch.isfinite(jac).all()):
        return False
    scale = float(jac.abs().max()) or 1.0
    return float((jac - jac.T).abs().max()) > 1e-6 * scale


def levy_area_for(method: str) -> str:
    """The ``levy_area_approximation`` torchsde's ``method`` needs of its Brownian path."""
    name = TORCHSDE_METHODS[method]
    if name == "srk":
        return "space-time"
    if name == "log_ode":
        return "foster"
    return "none"


class TorchsdeAdapter(nn.Module):
    """Presents an sdeflow SDE with states (B, *event) to torchsde as one with flat (B, d) states."""

    def __init__(self, sde: SDE, event_shape: tuple[int, ...], sde_type: str | None = None) -> None:
        super().__init__()
        self.sde = sde
        self.noise_type = sde.noise_type
        # With additive noise Itô and Stratonovich coincide, so either calculus' methods apply.
        self.sde_type = sde_type or sde.sde_type
        self.event_shape = tuple(event_shape)
        self.drift_evals = 0
        self.diffusion_evals = 0
        self.last_t = float("nan")  # the last time f was evaluated at (where a failed solve gave up)

    def _x(self, y: Tensor) -> Tensor:
        return y.reshape((y.shape[0],) + self.event_shape)

    def f(self, t: Tensor, y: Tensor) -> Tensor:
        self.drift_evals += 1
        self.last_t = float(t)
        x = self._x(y)
        return self.sde.drift(t, x).to(y.dtype).expand(x.shape).reshape(y.shape)

    def g(self, t: Tensor, y: Tensor) -> Tensor:
        self.diffusion_evals += 1
        x = self._x(y)
        return self.sde.noise_op.flat(self.sde.diffusion(t, x).to(y.dtype), x)


#: Runs longer than this many steps get torchsde's ``dt`` hint (see :func:`make_brownian`).
HINT_MIN_STEPS = 10_000


class RowsBrownian:
    """The rows ``rows`` of a Brownian path of size (B, m): the same path for a sub-batch (re-solving
    the good paths of a failed adaptive solve without the bad ones)."""

    def __init__(self, bm: object, rows: Tensor) -> None:
        self.bm, self.rows = bm, rows
        self.shape = (int(rows.numel()),) + tuple(bm.shape[1:])

    def __call__(self, ta: float, tb: float | None = None, return_U: bool = False, return_A: bool = False):  # noqa: ANN204, N803
        out = self.bm(ta, tb, return_U=return_U, return_A=return_A)
        if isinstance(out, tuple):
            return tuple(o[self.rows.to(o.device)] for o in out)
        return out[self.rows.to(out.device)]

    def __getattr__(self, name: str) -> object:
        if name in ("bm", "rows"):
            raise AttributeError(name)
        return getattr(self.bm, name)


class StreamingBrownian:
    """A Brownian motion drawn step by step for a fixed-step torchsde run, keeping nothing behind.

    torchsde's fixed-step solvers query ``bm(t, t_next)`` once per step, each step starting where the
    previous one ended; this path draws ``W ~ N(0, h)`` (and, for ``return_U``, ``U = h (W/2 + H)``
    with the space-time Lévy area ``H ~ N(0, h/12)``) from ``generator`` for each new step, and
    returns the same values for a repeated query. Memory is O(B·m) whatever the number of steps
    (torchsde's ``BrownianInterval`` keeps a node per step: ~430 bytes, 0.4 GiB over 10^6 steps).
    Any other query (overlapping, backward, out of order) raises ValueError: it is not for adaptive
    or adjoint runs.
    """

    def __init__(self, t0: float, size: tuple[int, int], *, dtype: torch.dtype, device: torch.device,
                 generator: torch.Generator | None, levy_area_approximation: str) -> None:
        self.shape = tuple(size)
        self.dtype, self.device = dtype, device
        self.generator = generator
        self.levy_area_approximation = levy_area_approximation
        self._end = float(t0)
        self._last: tuple[float, float, Tensor, Tensor | None] | None = None

    def __call__(self, ta: float, tb: float | None = None, return_U: bool = False,  # noqa: N803 (torchsde)
                 return_A: bool = False) -> Tensor | tuple[Tensor, ...]:
        if return_A:
            raise ValueError("StreamingBrownian has no Lévy area A; use a BrownianInterval (method='log_ode').")
        ta, tb = float(ta), float(tb)
        last = self._last
        if last is None or (ta, tb) != (last[0], last[1]):
            if ta != self._end or tb < ta:
                raise ValueError(f"StreamingBrownian draws consecutive steps only: got [{ta}, {tb}] after a step "
                                 f"ending at {self._end}; use torchsde.BrownianInterval for adaptive or adjoint runs.")
            h = tb - ta
            w = torch.randn(self.shape, generator=self.generator, dtype=self.dtype, device=self.device) * math.sqrt(h)
            u = None
            if self.levy_area_approximation != "none":
                z = torch.randn(self.shape, generator=self.generator, dtype=self.dtype, device=self.device)
                u = h * (0.5 * w + math.sqrt(h / 12.0) * z)
            self._last = last = (ta, tb, w, u)
            self._end = tb
        if return_U:
            if last[3] is None:
                raise ValueError("this Brownian path has no space-time area (levy_area_approximation='none').")
            return last[2], last[3]
        return last[2]


def make_brownian(x0: Tensor, ts: np.ndarray, *, method: str, dt: float | None, brownian_size: int,
                  generator: torch.Generator | None, fixed_step: bool = False) -> object:
    """The torchsde ``BrownianInterval`` sdeflow builds for a run: over ``ts``, seeded from ``generator``,
    with the Lévy area ``method`` needs and, for runs of more than 10^4 steps of ``dt``, either a
    :class:`StreamingBrownian` (``fixed_step``: no adaptive steps, no adjoint; flat memory) or the
    step hint ``dt`` (without it torchsde refines its tree recursively from the queries and fails with
    RecursionError beyond ~2·10^4 steps; shorter runs keep the tree, hence the paths, of earlier
    versions)."""
    import torchsde

    span = abs(float(ts[-1]) - float(ts[0]))
    long = dt is not None and span / dt > HINT_MIN_STEPS
    if long and fixed_step and levy_area_for(method) in ("none", "space-time"):
        return StreamingBrownian(float(ts[0]), (x0.shape[0], brownian_size), dtype=x0.dtype, device=x0.device,
                                 generator=generator, levy_area_approximation=levy_area_for(method))
    hint = dt if long else None
    entropy = int(torch.randint(0, 2**31 - 1, (1,), generator=generator, device=x0.device).item())
    return torchsde.BrownianInterval(
        t0=float(ts[0]), t1=float(ts[-1]), size=(x0.shape[0], brownian_size), dtype=x0.dtype, device=x0.device,
        entropy=entropy, levy_area_approximation=levy_area_for(method), dt=hint,
    )


def solve_torchsde(
    sde: SDE,
    x0: Tensor,
    ts: np.ndarray,
    *,
    method: str,
    dt: float | None,
    adaptive: bool,
    rtol: float,
    atol: float,
    bm: object | None,
    brownian_size: int,
    generator: torch.Generator | None,
    adjoint: bool,
    adapter: TorchsdeAdapter | None = None,
) -> tuple[Tensor, TorchsdeAdapter]:
    """Integrate with torchsde over increasing ``ts``; returns states (T, B, *event) and the adapter."""
    import torchsde

    b = x0.shape[0]
    if adapter is None:
        adapter = TorchsdeAdapter(sde, tuple(x0.shape[1:]), _solver_class(method, sde.sde_type).sde_type
                                  if sde.is_additive else None)
    ts_t = torch.as_tensor(ts, dtype=x0.dtype, device=x0.device)
    y0 = x0.reshape(b, -1)
    if bm is None:
        bm = make_brownian(x0, ts, method=method, dt=dt, brownian_size=brownian_size, generator=generator)
    kwargs = dict(bm=bm, method=TORCHSDE_METHODS[method], dt=dt if dt is not None else 1e-3,
                  adaptive=adaptive, rtol=rtol, atol=atol)
    if adjoint:
        ys = torchsde.sdeint_adjoint(adapter, y0, ts_t, **kwargs)
    else:
        ys = torchsde.sdeint(adapter, y0, ts_t, **kwargs)
    return ys.reshape((len(ts),) + tuple(x0.shape)), adapter
