"""Consistency models: the consistency function, its exact counterpart for Gaussian-mixture data,
self-consistency metrics and multistep sampling (docs/consistency.md, docs/concepts.md §6).

Roles (the names used throughout): ``student`` — the trained :class:`ConsistencyFunction`; ``target``
— its stop-gradient copy (EMA or the student itself); ``teacher`` — a frozen denoiser or None
(:class:`ConsistencyRoles`).
"""

from .function import (
    PARAMETERIZATIONS,
    ConsistencyFunction,
    ConsistencyRoles,
    consistency_coefficients,
    edm_to_trigflow_time,
    trigflow_to_edm_time,
)

__all__ = [
    "PARAMETERIZATIONS",
    "ConsistencyFunction",
    "ConsistencyRoles",
    "consistency_coefficients",
    "edm_to_trigflow_time",
    "trigflow_to_edm_time",
]
