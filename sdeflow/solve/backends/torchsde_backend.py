"""torchsde adapter: flattens states to (B, d), counts evaluations, maps method names and support."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from ...sde.base import SDE

__all__ = ["TORCHSDE_METHODS", "torchsde_support", "TorchsdeAdapter", "solve_torchsde"]

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


def _levy_area(method: str) -> str:
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

    def _x(self, y: Tensor) -> Tensor:
        return y.reshape((y.shape[0],) + self.event_shape)

    def f(self, t: Tensor, y: Tensor) -> Tensor:
        self.drift_evals += 1
        x = self._x(y)
        return self.sde.drift(t, x).to(y.dtype).expand(x.shape).reshape(y.shape)

    def g(self, t: Tensor, y: Tensor) -> Tensor:
        self.diffusion_evals += 1
        x = self._x(y)
        return self.sde.noise_op.flat(self.sde.diffusion(t, x).to(y.dtype), x)


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
) -> tuple[Tensor, TorchsdeAdapter]:
    """Integrate with torchsde over increasing ``ts``; returns states (T, B, *event) and the adapter."""
    import torchsde

    b = x0.shape[0]
    adapter = TorchsdeAdapter(sde, tuple(x0.shape[1:]), _solver_class(method, sde.sde_type).sde_type
                              if sde.is_additive else None)
    ts_t = torch.as_tensor(ts, dtype=x0.dtype, device=x0.device)
    y0 = x0.reshape(b, -1)
    if bm is None:
        entropy = int(torch.randint(0, 2**31 - 1, (1,), generator=generator, device=x0.device).item())
        bm = torchsde.BrownianInterval(
            t0=float(ts[0]), t1=float(ts[-1]), size=(b, brownian_size), dtype=x0.dtype, device=x0.device,
            entropy=entropy, levy_area_approximation=_levy_area(method),
        )
    kwargs = dict(bm=bm, method=TORCHSDE_METHODS[method], dt=dt if dt is not None else 1e-3,
                  adaptive=adaptive, rtol=rtol, atol=atol)
    if adjoint:
        ys = torchsde.sdeint_adjoint(adapter, y0, ts_t, **kwargs)
    else:
        ys = torchsde.sdeint(adapter, y0, ts_t, **kwargs)
    return ys.reshape((len(ts),) + tuple(x0.shape)), adapter
