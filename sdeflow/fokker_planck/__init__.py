"""The Fokker–Planck equation: generator and adjoint, residual checks on densities, grid solver."""

from .expm import KrylovStats, expm_krylov, expm_rational
from .grid import Grid, Grid1D, Grid2D, Grid3D
from .operator import FPOperator, evaluate_coefficients, fokker_planck_operator
from .residual import EXACT_MAX_DIM, FPResidual, apply_adjoint, apply_generator, fokker_planck_residual
from .solver import FPSolution, FPStats, solve_fokker_planck, stationary_density

__all__ = [
    "fokker_planck_residual", "FPResidual", "apply_adjoint", "apply_generator", "EXACT_MAX_DIM",
    "Grid", "Grid1D", "Grid2D", "Grid3D",
    "FPOperator", "fokker_planck_operator", "evaluate_coefficients",
    "FPSolution", "FPStats", "solve_fokker_planck", "stationary_density",
    "KrylovStats", "expm_krylov", "expm_rational",
]
