"""Built-in 2-D toy data.

Two are Gaussian mixtures with exact scores at every noise level (:func:`eight_gaussians`,
:func:`ring_of_gaussians`, returning :class:`GaussianMixture` objects); the others are sample
functions ``f(n, *, generator=None, dtype=torch.float32, device=None) -> (n, 2)``:
:func:`two_moons`, :func:`swiss_roll`, :func:`checkerboard`. :data:`TOY_DATA` maps names to
sample functions for all five.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from .._checks import make_generator
from .mixture import GaussianMixture

__all__ = [
    "eight_gaussians", "ring_of_gaussians", "two_moons", "swiss_roll", "checkerboard", "TOY_DATA", "sample_toy",
]


def _check_n(n: object) -> int:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive int (the number of samples); got {n!r}.")
    return n


def _check_pos(name: str, v: object, *, zero_ok: bool = False) -> float:
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and (v >= 0 if zero_ok else v > 0)
    if not ok:
        raise ValueError(f"{name} must be a finite number {'>= 0' if zero_ok else '> 0'}; got {v!r}.")
    return float(v)


def ring_of_gaussians(n_components: int = 16, radius: float = 4.0, std: float = 0.1) -> GaussianMixture:
    """Equal-weight isotropic Gaussians (std ``std``) centred on a circle of radius ``radius``.

    Centre k is at angle ``2πk / n_components``.
    """
    if isinstance(n_components, bool) or not isinstance(n_components, int) or n_components < 1:
        raise ValueError(f"n_components must be a positive int; got {n_components!r}.")
    radius = _check_pos("radius", radius, zero_ok=True)
    std = _check_pos("std", std)
    ang = torch.arange(n_components, dtype=torch.float64) * (2 * math.pi / n_components)
    means = radius * torch.stack([torch.cos(ang), torch.sin(ang)], dim=1)
    return GaussianMixture(torch.ones(n_components, dtype=torch.float64), means, std * std)


def eight_gaussians(radius: float = 4.0, std: float = 0.2) -> GaussianMixture:
    """Eight equal-weight Gaussians (std ``std``) on a circle of radius ``radius`` (the benchmark's data)."""
    return ring_of_gaussians(8, radius, std)


def two_moons(
    n: int,
    *,
    noise: float = 0.05,
    generator: torch.Generator | int | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> Tensor:
    """Two interleaved half circles (radius 1) with Gaussian noise of std ``noise``; shape (n, 2), centred."""
    n = _check_n(n)
    noise = _check_pos("noise", noise, zero_ok=True)
    device = torch.device(device) if device is not None else torch.device("cpu")
    gen = make_generator(generator, device)
    upper = torch.rand(n, generator=gen, device=device, dtype=torch.float64) < 0.5
    theta = math.pi * torch.rand(n, generator=gen, device=device, dtype=torch.float64)
    x = torch.where(upper, torch.cos(theta), 1.0 - torch.cos(theta))
    y = torch.where(upper, torch.sin(theta), 0.5 - torch.sin(theta))
    pts = torch.stack([x - 0.5, y - 0.25], dim=1)
    pts = pts + noise * torch.randn(pts.shape, generator=gen, device=device, dtype=torch.float64)
    return pts.to(dtype)


def swiss_roll(
    n: int,
    *,
    noise: float = 0.1,
    generator: torch.Generator | int | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> Tensor:
    """A 2-D Swiss roll: ``t (cos t, sin t) / 3`` for ``t ~ U(1.5π, 4.5π)``, plus noise; shape (n, 2)."""
    n = _check_n(n)
    noise = _check_pos("noise", noise, zero_ok=True)
    device = torch.device(device) if device is not None else torch.device("cpu")
    gen = make_generator(generator, device)
    t = 1.5 * math.pi * (1 + 2 * torch.rand(n, generator=gen, device=device, dtype=torch.float64))
    pts = torch.stack([t * torch.cos(t), t * torch.sin(t)], dim=1) / 3.0
    pts = pts + noise * torch.randn(pts.shape, generator=gen, device=device, dtype=torch.float64)
    return pts.to(dtype)


def checkerboard(
    n: int,
    *,
    squares: int = 4,
    size: float = 4.0,
    generator: torch.Generator | int | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> Tensor:
    """Uniform on the black squares of a ``squares × squares`` board covering ``[−size/2, size/2]²``; (n, 2).

    ``squares`` must be even so that half of the board is black.
    """
    n = _check_n(n)
    if isinstance(squares, bool) or not isinstance(squares, int) or squares < 2 or squares % 2:
        raise ValueError(f"squares must be an even int >= 2; got {squares!r}.")
    size = _check_pos("size", size)
    device = torch.device(device) if device is not None else torch.device("cpu")
    gen = make_generator(generator, device)
    cell = size / squares
    col = torch.randint(0, squares, (n,), generator=gen, device=device)
    row = torch.randint(0, squares // 2, (n,), generator=gen, device=device) * 2 + (col % 2)
    u = torch.rand((n, 2), generator=gen, device=device, dtype=torch.float64)
    pts = torch.stack([col, row], dim=1).to(torch.float64) * cell + u * cell - size / 2
    return pts.to(dtype)


def _mixture_sampler(make: Callable[[], GaussianMixture]) -> Callable[..., Tensor]:
    def sample(n: int, *, generator: torch.Generator | int | None = None, dtype: torch.dtype = torch.float32,
               device: torch.device | str | None = None) -> Tensor:
        return make().sample(_check_n(n), generator=generator, dtype=dtype, device=device)

    return sample


TOY_DATA: dict[str, Callable[..., Tensor]] = {
    "eight_gaussians": _mixture_sampler(eight_gaussians),
    "ring": _mixture_sampler(ring_of_gaussians),
    "two_moons": two_moons,
    "swiss_roll": swiss_roll,
    "checkerboard": checkerboard,
}


def sample_toy(
    name: str,
    n: int,
    *,
    generator: torch.Generator | int | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> Tensor:
    """``n`` samples (n, 2) of the toy data set ``name`` (a key of :data:`TOY_DATA`)."""
    if name not in TOY_DATA:
        raise ValueError(f"unknown toy data {name!r}; choose one of {', '.join(TOY_DATA)}.")
    return TOY_DATA[name](n, generator=generator, dtype=dtype, device=device)
