"""Conversions of an SDE: probability-flow ODE, reverse-time SDE, likelihood, model parameterizations."""

from ..calculus import divergence
from .continuity import ContinuityResidual, continuity_residual
from .likelihood import LikelihoodResult, bits_per_dim, log_likelihood
from .parameterization import (
    PREDICTIONS,
    DenoiserModel,
    SDEDenoiser,
    convert_prediction,
    denoiser_from_model,
    model_from_denoiser,
    noise_level,
    score_from_denoiser,
    time_at_noise_level,
)
from .probability_flow import ProbabilityFlowODE, probability_flow
from .reverse import ReverseSDE, reverse_sde

__all__ = [
    "ProbabilityFlowODE", "probability_flow", "ReverseSDE", "reverse_sde",
    "PREDICTIONS", "convert_prediction", "noise_level", "time_at_noise_level",
    "SDEDenoiser", "DenoiserModel", "denoiser_from_model", "model_from_denoiser", "score_from_denoiser",
    "LikelihoodResult", "log_likelihood", "bits_per_dim", "divergence",
    "ContinuityResidual", "continuity_residual",
]
