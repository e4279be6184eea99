"""Consistency models: the consistency function, its exact counterpart for Gaussian-mixture data,
self-consistency metrics and multistep sampling (docs/consistency.md, docs/concepts.md §6).

Roles (the names used throughout): ``student`` — the trained :class:`ConsistencyFunction`; ``target``
— its stop-gradient copy (EMA or the student itself); ``teacher`` — a frozen denoiser or None
(:class:`ConsistencyRoles`).
"""

from .exact import (
    ExactConsistencyFunction,
    SelfConsistencyError,
    exact_consistency_function,
    gaussian_consistency_function,
    pf_ode_trajectory,
    self_consistency_error,
)
from .function import (
    PARAMETERIZATIONS,
    ConsistencyFunction,
    ConsistencyRoles,
    consistency_coefficients,
    edm_to_trigflow_time,
    trigflow_to_edm_time,
)
from .sampling import TauSearch, sample_consistency, search_taus

__all__ = [
    "PARAMETERIZATIONS",
    "ConsistencyFunction",
    "ConsistencyRoles",
    "consistency_coefficients",
    "edm_to_trigflow_time",
    "trigflow_to_edm_time",
    "ExactConsistencyFunction",
    "exact_consistency_function",
    "gaussian_consistency_function",
    "pf_ode_trajectory",
    "SelfConsistencyError",
    "self_consistency_error",
    "sample_consistency",
    "search_taus",
    "TauSearch",
]
