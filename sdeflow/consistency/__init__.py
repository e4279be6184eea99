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

# -- distillation and training (losses, schedules, presets, recipes) --------------------------------------
from .losses import (  # noqa: E402
    ESTIMATES,
    TEACHER_SOLVERS,
    ConsistencyDistillation,
    ConsistencyTraining,
    ContinuousConsistency,
    EasyConsistencyTuning,
    ode_velocity,
    teacher_step,
)
from .presets import PRESETS, cm2023, ect2024, ict2023, scm2024  # noqa: E402
from .recipes import (  # noqa: E402
    CONSISTENCY_MODES,
    ConsistencyRecipe,
    consistency_recipe,
    default_taus,
    evaluate_consistency,
    format_consistency_evaluation,
)
from .schedules import (  # noqa: E402
    cm_ema_rate,
    cm_num_steps,
    ect_ratio,
    ect_stage,
    ict_num_steps,
    karras_grid,
    linear_warmup,
    lognormal_index_weights,
)

__all__ += [
    "TEACHER_SOLVERS", "ConsistencyDistillation", "ConsistencyTraining", "ContinuousConsistency",
    "EasyConsistencyTuning", "teacher_step", "ESTIMATES", "ode_velocity", "PRESETS", "cm2023", "ict2023",
    "ect2024", "scm2024",
    "CONSISTENCY_MODES", "ConsistencyRecipe", "consistency_recipe", "default_taus", "evaluate_consistency",
    "format_consistency_evaluation", "cm_ema_rate", "cm_num_steps", "ect_ratio", "ect_stage", "ict_num_steps",
    "karras_grid", "linear_warmup", "lognormal_index_weights",
]
