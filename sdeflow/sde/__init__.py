"""SDE definitions: the protocol, the standard equations with closed forms, calculus conversion."""

from ._gaussian import DiffusionSDE, GaussianMarginals
from .base import NOISE_TYPES, SDE, SDE_TYPES, ProtocolSDE, as_sde
from .brownian_motion import BrownianMotion
from .edm import EDMSDE
from .geometric_brownian_motion import GeometricBrownianMotion
from .linear import LinearSDE
from .ornstein_uhlenbeck import OrnsteinUhlenbeck
from .stratonovich import ConvertedSDE, ito_stratonovich_correction, to_ito, to_stratonovich
from .subvp import SubVPSDE
from .ve import VESDE
from .vp import VPSDE

__all__ = [
    "SDE", "NOISE_TYPES", "SDE_TYPES", "ProtocolSDE", "as_sde",
    "GaussianMarginals", "DiffusionSDE",
    "BrownianMotion", "OrnsteinUhlenbeck", "GeometricBrownianMotion", "LinearSDE",
    "VPSDE", "SubVPSDE", "VESDE", "EDMSDE",
    "ConvertedSDE", "to_ito", "to_stratonovich", "ito_stratonovich_correction",
]
