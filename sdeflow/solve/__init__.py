"""Solver front doors: :func:`simulate` for SDEs, :func:`solve_ode` for ODEs."""

from .grid import StepGrid, build_grid
from .native import ODE_METHODS, SDE_METHODS
from .ode import solve_ode
from .simulate import check_sde_functions, simulate, supported_methods
from .solution import Solution, SolveStats

__all__ = [
    "simulate", "solve_ode", "supported_methods", "check_sde_functions",
    "Solution", "SolveStats", "StepGrid", "build_grid", "SDE_METHODS", "ODE_METHODS",
]
