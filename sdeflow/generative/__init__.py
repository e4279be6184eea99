"""The generative layer: exact Gaussian-mixture references, toy data, schedules, samplers, and the training
layer (networks, preconditioning, losses, trainer, checkpoints, evaluation against exact references)."""

from .checkpoint import CheckpointError, list_checkpoints, load_model, read_checkpoint, save_checkpoint
from .config import MODELS, Configurable, build_model, register_model
from .evaluation import NLLGap, SamplerError, ScoreError, nll_gap, sampler_error, score_error
from .losses import DSM_WEIGHTINGS, DenoisingScoreMatching, EDMLoss, LogNormalSigma, PseudoHuber, SquaredL2, drop_labels
from .mixture import GaussianMixture
from .networks import MLPNet, UNet, count_parameters, flops_per_call, model_summary
from .precond import (
    ClassifierFreeGuidance,
    EDMPrecond,
    SDEPrecond,
    edm_coefficients,
    estimate_sigma_data,
    guidance_from_scale,
    guided,
    scale_from_guidance,
)
from .recipes import TOY_DATASETS, Recipe, evaluate_toy_model, score_recipe
from .samplers import (
    SAMPLER_SPECS,
    SAMPLERS,
    BrownianTreeNoise,
    SampleResult,
    SamplerRun,
    SamplerSpec,
    dpmpp_2m_step,
    euler_maruyama_step,
    euler_step,
    heun_step,
    initial_noise,
    per_sample_randn,
    sample,
    sample_adaptive,
    sample_dpmpp_2m,
    sample_dpmpp_3m,
    sample_euler,
    sample_euler_maruyama,
    sample_heun,
    sample_pc,
    sample_unipc,
    sampler,
    sampler_spec,
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
from .training import EMA, TrainConfig, Trainer, TrainResult, lr_at

__all__ = [
    "GaussianMixture",
    "eight_gaussians", "ring_of_gaussians", "two_moons", "swiss_roll", "checkerboard", "TOY_DATA", "sample_toy",
    "karras_sigmas", "uniform_sigmas", "log_snr_sigmas", "time_uniform_sigmas", "vp_sigmas", "check_schedule",
    "SAMPLERS", "sample", "SampleResult", "SamplerRun", "initial_noise",
    "sample_euler", "sample_heun", "sample_euler_maruyama", "sample_pc", "sample_dpmpp_2m", "sample_dpmpp_3m",
    "sample_unipc", "sample_adaptive", "optimize_schedule", "ScheduleSearch",
    "SAMPLER_SPECS", "SamplerSpec", "sampler", "sampler_spec", "per_sample_randn", "BrownianTreeNoise",
    "euler_step", "heun_step", "dpmpp_2m_step", "euler_maruyama_step",
    "MODELS", "Configurable", "register_model", "build_model",
    "MLPNet", "UNet", "count_parameters", "flops_per_call", "model_summary",
    "EDMPrecond", "SDEPrecond", "ClassifierFreeGuidance", "guided", "edm_coefficients",
    "estimate_sigma_data", "scale_from_guidance", "guidance_from_scale",
    "DenoisingScoreMatching", "EDMLoss", "LogNormalSigma", "SquaredL2", "PseudoHuber", "drop_labels", "DSM_WEIGHTINGS",
    "Trainer", "TrainConfig", "TrainResult", "EMA", "lr_at",
    "save_checkpoint", "read_checkpoint", "list_checkpoints", "load_model", "CheckpointError",
    "score_error", "ScoreError", "nll_gap", "NLLGap", "sampler_error", "SamplerError",
    "score_recipe", "Recipe", "evaluate_toy_model", "TOY_DATASETS",
]
