"""The native fixed-step engine: one method per file behind one ``step()`` interface."""

from .base import NativeODEMethod, NativeSDEMethod, add_noise, noise_product
from .euler_maruyama import EulerMaruyama
from .heun import Heun
from .milstein import Milstein
from .ode_euler import ODEEuler
from .ode_heun import ODEHeun
from .ode_rk4 import ODERK4
from .sra1 import SRA1

#: SDE methods by name.
SDE_METHODS: dict[str, type[NativeSDEMethod]] = {
    m.name: m for m in (EulerMaruyama, Milstein, Heun, SRA1)
}
#: ODE methods by name.
ODE_METHODS: dict[str, type[NativeODEMethod]] = {m.name: m for m in (ODEEuler, ODEHeun, ODERK4)}

__all__ = [
    "NativeSDEMethod", "NativeODEMethod", "noise_product", "add_noise",
    "EulerMaruyama", "Milstein", "Heun", "SRA1", "ODEEuler", "ODEHeun", "ODERK4",
    "SDE_METHODS", "ODE_METHODS",
]
