"""Real data for the generative layer: the 8×8 digits, feature metrics, latent spaces, an exact image reference.

* :mod:`sdeflow.latent.data` — scikit-learn's bundled digits as a fixed stratified split.
* :mod:`sdeflow.latent.metrics` — a cached digits classifier, the Fréchet distance and its floor,
  class accuracy, mean ± std over sampling seeds.
* :mod:`sdeflow.latent.autoencoder` — latent spaces: :class:`PCALatent` and :class:`Autoencoder`.
* :mod:`sdeflow.latent.empirical` — :class:`EmpiricalDenoiser`, the exact denoiser of the training set.
* :mod:`sdeflow.latent.lcm` — latent consistency models: a guided latent teacher, latent consistency
  distillation with the guidance scale as a student input and a skipping step, one-checkpoint models.

docs/latent.md describes all of them.
"""

from .autoencoder import Autoencoder, PCALatent, ReconstructionLoss, latent_scale, save_latent, train_autoencoder
from .data import DIGITS_CLASSES, DIGITS_SCALES, DIGITS_SHAPE, DigitsSplit, from_pixels, load_digits_split, to_pixels
from .empirical import EmpiricalDenoiser
from .lcm import (
    LatentConsistencyDistillation,
    LatentConsistencyModel,
    LatentDiffusionModel,
    LatentPipeline,
    LatentSpec,
    distill_latent,
    evaluate_latent,
    evaluate_pipeline,
    guided_teacher,
    train_latent_pipeline,
    train_latent_teacher,
)
from .metrics import (
    DEFAULT_CLASSIFIER,
    ClassificationLoss,
    ClassifierSpec,
    DigitsClassifier,
    FeatureStats,
    SeedStat,
    cache_folder,
    class_accuracy,
    digits_classifier,
    digits_fd,
    digits_fd_floor,
    digits_features,
    digits_metrics,
    feature_stats,
    frechet_distance,
    over_seeds,
)

__all__ = [
    "DigitsSplit", "load_digits_split", "to_pixels", "from_pixels", "DIGITS_SCALES", "DIGITS_SHAPE", "DIGITS_CLASSES",
    "EmpiricalDenoiser",
    "PCALatent", "Autoencoder", "ReconstructionLoss", "train_autoencoder", "save_latent", "latent_scale",
    "DigitsClassifier", "ClassifierSpec", "ClassificationLoss", "DEFAULT_CLASSIFIER", "digits_classifier",
    "cache_folder", "FeatureStats", "feature_stats", "frechet_distance", "digits_features", "digits_fd",
    "digits_fd_floor", "class_accuracy", "digits_metrics", "SeedStat", "over_seeds",
    "LatentSpec", "LatentConsistencyDistillation", "LatentConsistencyModel", "LatentDiffusionModel", "LatentPipeline",
    "guided_teacher", "train_latent_teacher", "distill_latent", "train_latent_pipeline", "evaluate_latent",
    "evaluate_pipeline",
]
