"""Simulate an SDE of your own and verify it against theory, four independent ways.

The SDE: ``dX = −X dt + sqrt(1 + X²) dW`` (Itô, multiplicative diagonal noise). Its stationary
density solves the stationary Fokker–Planck equation in closed form,
``p(x) ∝ exp(∫ 2f/g²) / g² = 1/(1 + x²)²``, i.e. ``p(x) = 2/(π (1 + x²)²)``: the law of ``Z/sqrt(V)``
with ``Z ~ N(0, 1)`` and ``V ~ χ²₃`` (a Student-t with 3 degrees of freedom, scaled by 1/√3).

1. Fokker–Planck residual: the closed-form stationary density has residual ~1e-16; a wrong one does not.
2. Grid solver: the density from a point-like start relaxes to the closed form (L1 distance).
3. Solver order: Milstein (strong order 1, the SDE gives ``∂g/∂x``) and Euler–Maruyama (strong order
   0.5 with multiplicative noise) measured on one Brownian path per step size.
4. Samples: paths started from the stationary law are still stationary at t = 1 (KS / moment tests
   against fresh exact draws) and agree with the grid density (chi-square).

Run ``python examples/simulate_and_verify.py`` or ``--quick`` (fewer paths, used by tests/test_examples.py).
"""

from __future__ import annotations

import argparse
import math
import os

import torch

import sdeflow as sf
from sdeflow.fokker_planck import Grid1D
from sdeflow.verify import compare_samples, compare_to_density, strong_order


class HeavyTailOU(sf.SDE):
    """``dX = −θX dt + sqrt(1 + X²) dW``: mean-reverting, noise growing with |X|; states (B, 1)."""

    noise_type, sde_type = "diagonal", "ito"

    def __init__(self, theta: float = 1.0) -> None:
        super().__init__()
        self.theta = theta

    def drift(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return -self.theta * x

    def diffusion(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return torch.sqrt(1 + x**2)

    def diffusion_derivative(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return x / torch.sqrt(1 + x**2)  # ∂g/∂x, used by Milstein


def stationary_log_prob(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """log p(x) = log 2/π − 2 log(1 + x²) for θ = 1 (time-independent); (B, 1) -> (B,)."""
    return (math.log(2 / math.pi) - 2 * torch.log1p(x**2)).sum(-1)


def stationary_sample(n: int, generator: torch.Generator) -> torch.Tensor:
    """Exact draws ``Z / sqrt(V)``, ``V ~ χ²₃``, shape (n, 1), float64."""
    z = torch.randn(n, 4, generator=generator, dtype=torch.float64)
    return z[:, :1] / z[:, 1:].pow(2).sum(-1, keepdim=True).sqrt()


def main(quick: bool = False, seed: int = 0, verbose: bool = True) -> dict:
    """Run the four checks; returns the measured numbers (used by tests/test_examples.py)."""
    sde = HeavyTailOU()
    out: dict = {}

    # 1. The Fokker–Planck residual of the closed-form stationary density (and of a wrong one).
    x = torch.linspace(-4, 4, 101, dtype=torch.float64).reshape(-1, 1)
    out["fp_residual"] = sf.fokker_planck_residual(sde, stationary_log_prob, 0.0, x).max_relative()
    wrong = lambda t, x: -1.5 * torch.log1p(x**2).sum(-1)  # noqa: E731  (a Student-t with the wrong tails)
    out["fp_residual_wrong"] = sf.fokker_planck_residual(sde, wrong, 0.0, x).max_relative()

    # 2. The grid solver from N(1, 0.1²) relaxes to the stationary density.
    grid = Grid1D(-12.0, 12.0, 480 if quick else 960)
    p0 = grid.gaussian(1.0, 0.1**2)
    fp = sf.solve_fokker_planck(sde, p0, grid, [0.0, 1.0, 10.0])
    exact = grid.cell_average(lambda x: stationary_log_prob(None, x).exp())
    exact = exact / grid.mass(exact)            # the tails beyond ±12 (mass 3e-4) are cut by the grid
    out["fp_grid_l1_stationary"] = float(grid.l1(fp.p[-1], exact))
    out["fp_mass"] = float(grid.mass(fp.p[-1]))

    # 3. Strong orders on one Brownian path per step size.
    n_paths = 400 if quick else 2000
    x0 = torch.full((n_paths, 1), 0.5, dtype=torch.float64)
    dts = [2.0**-k for k in range(4, 8)]
    mil = strong_order(sde, x0, 1.0, method="milstein", dts=dts, generator=seed)
    em = strong_order(sde, x0, 1.0, method="euler", dts=dts, generator=seed, declared=0.5)
    out.update(milstein_order=mil.order, milstein_passed=mil.passed, euler_order=em.order, euler_passed=em.passed)

    # 4. Stationarity of simulated paths, and agreement with the grid density.
    n = 2000 if quick else 20_000
    g = torch.Generator().manual_seed(seed)
    start = stationary_sample(n, g)
    sol = sf.simulate(sde, start, [0.0, 1.0], method="milstein", dt=1e-2, generator=seed + 1, save="final")
    out["all_paths_ok"] = bool(sol.ok.all())            # sol.ok: (B,) bool, one per path
    fresh = stationary_sample(n, g)
    out["stationary_p"] = compare_samples(sol.final, fresh).p_value
    pts = sf.simulate(sde, torch.full((n, 1), 1.0, dtype=torch.float64) + 0.1 * torch.randn(n, 1, generator=g,
                      dtype=torch.float64), [0.0, 1.0], method="milstein", dt=1e-2, generator=seed + 2,
                      save="final").final
    out["grid_density_p"] = compare_to_density(pts, grid, fp.p[1], cells_per_bin=20).p_value
    if verbose:
        print(f"1. FP residual, exact stationary density {out['fp_residual']:.1e}; wrong density "
              f"{out['fp_residual_wrong']:.1e}")
        print(f"2. grid solution at t = 10 vs the stationary density: L1 {out['fp_grid_l1_stationary']:.1e}")
        print(f"3. {mil}\n   {em}")
        print(f"4. stationarity p = {out['stationary_p']:.3f} (paths ok: {out['all_paths_ok']}); "
              f"samples vs grid density at t = 1: p = {out['grid_density_p']:.3f}")
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", default=bool(os.environ.get("SDEFLOW_EXAMPLE_QUICK")),
                        help="fewer paths and cells (also: SDEFLOW_EXAMPLE_QUICK=1)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    main(quick=args.quick, seed=args.seed)
