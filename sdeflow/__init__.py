"""sdeflow: stochastic and ordinary differential equations on PyTorch.

Simulate SDEs (native fixed-step engine, torchsde, torchdiffeq), check them against theory, and
build diffusion samplers on the same solver API. See README.md and docs/.
"""

from .ensemble import EnsembleStats, combine_partials, ensemble_partials, ensemble_statistics
from .fokker_planck import (
    FPResidual,
    FPSolution,
    Grid1D,
    Grid2D,
    apply_adjoint,
    apply_generator,
    fokker_planck_residual,
    solve_fokker_planck,
    stationary_density,
)
from .sde import (
    EDMSDE,
    NOISE_TYPES,
    SDE,
    SDE_TYPES,
    VESDE,
    VPSDE,
    BrownianMotion,
    ConvertedSDE,
    DiffusionSDE,
    GaussianMarginals,
    GeometricBrownianMotion,
    LinearSDE,
    OrnsteinUhlenbeck,
    ProtocolSDE,
    SubVPSDE,
    as_sde,
    ito_stratonovich_correction,
    to_ito,
    to_stratonovich,
)
from .solve import (
    ODE_METHODS,
    SDE_METHODS,
    Solution,
    SolveStats,
    check_sde_functions,
    simulate,
    solve_ode,
    supported_methods,
)

__version__ = "0.1.0"

__all__ = [
    "SDE", "NOISE_TYPES", "SDE_TYPES", "ProtocolSDE", "as_sde",
    "GaussianMarginals", "DiffusionSDE",
    "BrownianMotion", "OrnsteinUhlenbeck", "GeometricBrownianMotion", "LinearSDE",
    "VPSDE", "SubVPSDE", "VESDE", "EDMSDE",
    "ConvertedSDE", "to_ito", "to_stratonovich", "ito_stratonovich_correction",
    "simulate", "solve_ode", "supported_methods", "check_sde_functions",
    "Solution", "SolveStats", "SDE_METHODS", "ODE_METHODS",
    "EnsembleStats", "ensemble_statistics", "ensemble_partials", "combine_partials",
    "fokker_planck_residual", "FPResidual", "apply_adjoint", "apply_generator",
    "solve_fokker_planck", "FPSolution", "stationary_density", "Grid1D", "Grid2D",
    "__version__",
]
