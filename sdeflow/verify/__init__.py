"""Verification against theory: convergence orders, statistical tests, reference problems, the suite."""

from .brownian import NestedBrownianPath
from .orders import OrderResult, declared_orders, fit_order, strong_order, weak_order
from .problems import PROBLEMS, DoubleWell, GibbsSDE, ReferenceProblem, SineAdditive, example_gibbs, get_problem
from .stats import TestResult, compare_samples, compare_to_density, compare_to_marginal, energy_test, standardise

__all__ = [
    "NestedBrownianPath",
    "TestResult", "compare_to_marginal", "compare_samples", "compare_to_density", "energy_test", "standardise",
    "OrderResult", "strong_order", "weak_order", "declared_orders", "fit_order",
    "DoubleWell", "SineAdditive", "GibbsSDE", "example_gibbs", "ReferenceProblem", "PROBLEMS", "get_problem",
]
