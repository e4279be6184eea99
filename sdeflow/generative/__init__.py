"""The generative layer: exact Gaussian-mixture references, toy data, schedules and samplers."""

from .mixture import GaussianMixture
from .samplers import (
    SAMPLERS,
    SampleResult,
    SamplerRun,
    initial_noise,
    sample,
    sample_adaptive,
    sample_dpmpp_2m,
    sample_dpmpp_3m,
    sample_euler,
    sample_euler_maruyama,
    sample_heun,
    sample_pc,
    sample_unipc,
)
from .schedule_search import ScheduleSearch, optimize_schedule
from .schedules import (
    check_schedule,
    karras_sigmas,
    log_snr_sigmas,
    time_uniform_sigmas,
    uniform_sigmas,
    vp_sigmas,
)
from .toy_data import TOY_DATA, checkerboard, eight_gaussians, ring_of_gaussians, sample_toy, swiss_roll, two_moons

__all__ = [
    "GaussianMixture",
    "eight_gaussians", "ring_of_gaussians", "two_moons", "swiss_roll", "checkerboard", "TOY_DATA", "sample_toy",
    "karras_sigmas", "uniform_sigmas", "log_snr_sigmas", "time_uniform_sigmas", "vp_sigmas", "check_schedule",
    "SAMPLERS", "sample", "SampleResult", "SamplerRun", "initial_noise",
    "sample_euler", "sample_heun", "sample_euler_maruyama", "sample_pc", "sample_dpmpp_2m", "sample_dpmpp_3m",
    "sample_unipc", "sample_adaptive", "optimize_schedule", "ScheduleSearch",
]
