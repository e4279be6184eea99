"""Sample quality on the digits: a cached feature classifier, the Fréchet distance and its floor, accuracy.

* :class:`DigitsClassifier` — a small CNN (three 3×3 convolutions, two 2×2 max-pools, a 64-wide
  penultimate layer) with ``features(x) -> (B, 64)`` and ``logits(x) -> (B, 10)``.
* :func:`digits_classifier` — the package's classifier: trained on the training part of
  :func:`sdeflow.latent.load_digits_split` by :class:`sdeflow.Trainer` (fixed seed, fixed iterations,
  CPU, random ±1-pixel shifts drawn from the trainer's generator), written as an sdeflow checkpoint
  into a cache folder, and read back on later calls, so the metric is the same every run. The cache
  folder is ``cache_dir``, else ``$SDEFLOW_CACHE``, else ``$XDG_CACHE_HOME/sdeflow``, else
  ``~/.cache/sdeflow``; the checkpoint sits in ``digits_classifier/<key>/`` where ``key`` is a hash of
  the :class:`ClassifierSpec`, the architecture and the data's fingerprint. A cache hit is used only
  if its weights match the SHA-256 in its JSON and its recorded key, config and step match; anything
  else is retrained and rewritten (atomically).
* :func:`frechet_distance` — ``‖μ_a − μ_b‖² + tr(Σ_a + Σ_b − 2 (Σ_a^{1/2} Σ_b Σ_a^{1/2})^{1/2})`` between
  Gaussians fitted to two feature sets, in float64; the matrix square root is taken by eigen-
  decomposition of the symmetric form ``Σ_a^{1/2} Σ_b Σ_a^{1/2}`` (negative round-off eigenvalues
  clamped to 0), so it never returns complex values or NaN.
* :func:`digits_fd`, :func:`digits_fd_floor` (training vs held-out images: what a perfect generator
  scores at the held-out sample size), :func:`class_accuracy`, :func:`digits_metrics`, and
  :func:`over_seeds` (mean ± std over sampling seeds).

The Fréchet distance of finite samples is biased upwards by roughly ``tr`` of the covariance
estimates' error, which shrinks like 1/n: compare sample sets of the same size, e.g. as many samples
as held-out images (359) against the training images, like the floor.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor, nn

from .._cache import object_cache
from ..generative.config import Configurable, register_model
from .data import DIGITS_CLASSES, DIGITS_SHAPE, DigitsSplit, load_digits_split

__all__ = [
    "DigitsClassifier",
    "ClassifierSpec",
    "ClassificationLoss",
    "DEFAULT_CLASSIFIER",
    "digits_classifier",
    "cache_folder",
    "FeatureStats",
    "feature_stats",
    "frechet_distance",
    "digits_features",
    "digits_fd",
    "digits_fd_floor",
    "class_accuracy",
    "digits_metrics",
    "SeedStat",
    "over_seeds",
]

_CACHE_FORMAT = 1


# -- the classifier --------------------------------------------------------------------------------
@register_model("digits_classifier")
class DigitsClassifier(Configurable, nn.Module):
    """A small CNN for (B, 1, 8, 8) digits on the ``[-1,1]`` scale.

    ``conv(1→c₀)–ReLU–conv(c₀→c₀)–ReLU–maxpool2–conv(c₀→c₁)–ReLU–maxpool2–Linear(4c₁→feature_dim)–ReLU``
    gives the features; a linear head gives the logits.

    Args:
        channels: ``(c₀, c₁)``.
        feature_dim: width of the penultimate layer (the Fréchet-distance features).
        num_classes: number of classes.
        seed: seed of the initialisation (None: PyTorch's global RNG).
    """

    def __init__(self, channels: Sequence[int] = (32, 64), feature_dim: int = 64, num_classes: int = DIGITS_CLASSES,
                 seed: int | None = 0) -> None:
        super().__init__()
        if not isinstance(channels, (list, tuple)) or len(channels) != 2 or not all(
                isinstance(c, int) and not isinstance(c, bool) and c >= 1 for c in channels):
            raise ValueError(f"channels must be two positive ints (c0, c1); got {channels!r}.")
        for name, v in (("feature_dim", feature_dim), ("num_classes", num_classes)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive int; got {v!r}.")
        self.record_config(channels=list(channels), feature_dim=feature_dim, num_classes=num_classes, seed=seed)
        c0, c1 = channels
        with torch.random.fork_rng(devices=[], enabled=seed is not None):
            if seed is not None:
                torch.manual_seed(seed)
            self.conv1 = nn.Conv2d(1, c0, 3, padding=1)
            self.conv2 = nn.Conv2d(c0, c0, 3, padding=1)
            self.conv3 = nn.Conv2d(c0, c1, 3, padding=1)
            self.fc = nn.Linear(4 * c1, feature_dim)
            self.head = nn.Linear(feature_dim, num_classes)
        self.feature_dim = feature_dim
        self.num_classes = num_classes

    def _check(self, x: object) -> Tensor:
        if not isinstance(x, Tensor) or not x.is_floating_point():
            raise TypeError(f"x must be a floating-point tensor of shape (B, 1, 8, 8); got "
                            f"{x.dtype if isinstance(x, Tensor) else type(x).__name__}.")
        if x.dim() != 4 or tuple(x.shape[1:]) != DIGITS_SHAPE:
            raise ValueError(f"x must have shape (B, 1, 8, 8) (digits on the [-1,1] scale); got {tuple(x.shape)}.")
        return x.to(self.fc.weight.dtype)

    def features(self, x: Tensor) -> Tensor:
        """Penultimate-layer features (B, feature_dim) of images ``x`` (B, 1, 8, 8)."""
        h = F.relu(self.conv1(self._check(x)))
        h = F.max_pool2d(F.relu(self.conv2(h)), 2)
        h = F.max_pool2d(F.relu(self.conv3(h)), 2)
        return F.relu(self.fc(h.flatten(1)))

    def logits(self, x: Tensor) -> Tensor:
        """Class logits (B, num_classes)."""
        return self.head(self.features(x))

    def forward(self, x: Tensor) -> Tensor:
        """Same as :meth:`logits`."""
        return self.logits(x)


def _random_shift(x: Tensor, generator: torch.Generator | None, shift: int, background: float) -> Tensor:
    """Each image moved by its own (dy, dx) in [−shift, shift]², drawn from ``generator``; background filled in."""
    if shift == 0:
        return x
    b, _, h, w = x.shape
    padded = F.pad(x, (shift, shift, shift, shift), value=background)
    offs = torch.randint(0, 2 * shift + 1, (2, b), generator=generator, device="cpu").to(x.device)
    rows = offs[0][:, None] + torch.arange(h, device=x.device)  # (B, H)
    cols = offs[1][:, None] + torch.arange(w, device=x.device)  # (B, W)
    idx_b = torch.arange(b, device=x.device)[:, None, None]
    return padded[idx_b, 0, rows[:, :, None], cols[:, None, :]][:, None]


@dataclass(frozen=True)
class ClassificationLoss:
    """Per-example cross-entropy of ``model(x)`` against ``class_labels``, with random pixel shifts.

    ``loss(model, x, generator=g, class_labels=y) -> (B,)``, the trainer's loss convention. Each image
    is shifted by up to ``shift`` pixels in each direction (an augmentation drawn from ``generator``),
    the uncovered border set to ``background`` (−1: the ``[-1,1]`` scale's black).
    """

    shift: int = 1
    background: float = -1.0

    def __call__(self, model: nn.Module, x: Tensor, *, generator: torch.Generator | None = None,
                 class_labels: Tensor | None = None) -> Tensor:
        if class_labels is None:
            raise ValueError("ClassificationLoss needs class_labels: train on the pair (images, labels).")
        return F.cross_entropy(model(_random_shift(x, generator, self.shift, self.background)), class_labels,
                               reduction="none")


@dataclass(frozen=True)
class ClassifierSpec:
    """How :func:`digits_classifier` builds and trains its classifier (part of the cache key).

    Attributes:
        channels, feature_dim, init_seed: :class:`DigitsClassifier`'s architecture and initialisation.
        iters, batch_size, lr, weight_decay, warmup, seed: the :class:`sdeflow.TrainConfig` (AdamW, cosine
            decay to 0).
        shift: the augmentation's pixel shift (:class:`ClassificationLoss`).
        held_out, split_seed: the :func:`sdeflow.latent.load_digits_split` it trains on (its training part).
    """

    channels: tuple[int, int] = (16, 32)
    feature_dim: int = 64
    init_seed: int = 0
    iters: int = 1000
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup: int = 50
    seed: int = 0
    shift: int = 1
    held_out: float | int = 0.2
    split_seed: int = 0

    def to_json(self) -> dict[str, Any]:
        """A JSON-able dict."""
        d = asdict(self)
        d["channels"] = list(self.channels)
        return d


#: The classifier the metrics use by default.
DEFAULT_CLASSIFIER = ClassifierSpec()

_LOADED: dict[tuple[str, str, str], DigitsClassifier] = {}


def cache_folder(cache_dir: str | os.PathLike | None = None) -> Path:
    """Cache root: ``cache_dir``, else ``$SDEFLOW_CACHE``, else ``$XDG_CACHE_HOME/sdeflow``, else ~/.cache/sdeflow."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get("SDEFLOW_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "sdeflow"


def _cache_key(spec: ClassifierSpec, model_config: Mapping[str, Any], split: DigitsSplit) -> str:
    blob = json.dumps({"format": _CACHE_FORMAT, "spec": spec.to_json(), "model": dict(model_config),
                       "data": split.fingerprint()}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def _train_classifier(spec: ClassifierSpec, split: DigitsSplit, folder: Path | None, key: str,
                      progress: bool) -> DigitsClassifier:
    """Train the classifier of ``spec``; write its checkpoint into ``folder`` (None: keep it in memory only)."""
    from ..generative.training import TrainConfig, Trainer

    model = DigitsClassifier(channels=spec.channels, feature_dim=spec.feature_dim, seed=spec.init_seed)
    config = TrainConfig(iters=spec.iters, batch_size=spec.batch_size, lr=spec.lr, optimizer="adamw",
                         weight_decay=spec.weight_decay, warmup=spec.warmup, decay="cosine", seed=spec.seed,
                         keep=1, device="cpu", progress=progress, log_every=max(1, spec.iters // 10))
    trainer = Trainer(model, ClassificationLoss(shift=spec.shift), (split.train_x, split.train_y), config)
    result = trainer.fit()
    model.eval().requires_grad_(False)
    meta = {"cache_key": key, "spec": spec.to_json(), "data": split.fingerprint(),
            "held_out_accuracy": _accuracy(model, split.test_x, split.test_y), "train_seconds": result.seconds}
    trainer.metadata = meta
    if folder is not None:
        trainer.out_dir = folder
        trainer.save_checkpoint()  # one checkpoint, at the last step, with the accuracy in its metadata
    model.checkpoint_metadata = meta
    model.checkpoint_step = trainer.step
    return model


def _writable(folder: Path) -> bool:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return False
    return os.access(folder, os.W_OK)


def _accuracy(model: DigitsClassifier, x: Tensor, y: Tensor) -> float:
    with torch.no_grad():
        pred = model.logits(x.to(model.fc.weight.device)).argmax(1).cpu()
    return float((pred == y.cpu()).double().mean())


def _load_cached(folder: Path, key: str, config: Mapping[str, Any], spec: ClassifierSpec,
                 device: str) -> DigitsClassifier | None:
    from ..generative.checkpoint import CheckpointError, latest_checkpoint, load_model

    found = latest_checkpoint(folder)
    if found is None:
        return None
    try:
        meta = json.loads(found.read_text())
        ok = (meta.get("metadata", {}).get("cache_key") == key and meta.get("model_config") == dict(config)
              and int(meta.get("step", -1)) == spec.iters)
        if not ok:
            warnings.warn(f"the cached digits classifier in {str(folder)!r} does not match its key; retraining it.",
                          stacklevel=3)
            return None
        model = load_model(found, weights="model", device=device)
    except (CheckpointError, OSError, ValueError, KeyError, RuntimeError) as err:
        warnings.warn(f"the cached digits classifier in {str(folder)!r} is unusable ({err}); retraining it.",
                      stacklevel=3)
        return None
    return model  # type: ignore[return-value]


def digits_classifier(spec: ClassifierSpec | None = None, *, cache_dir: str | os.PathLike | None = None,
                      device: str | torch.device = "cpu", retrain: bool = False,
                      progress: bool = False) -> DigitsClassifier:
    """The package's digits classifier, trained once (deterministically, on the CPU) and cached.

    Args:
        spec: what to train (default :data:`DEFAULT_CLASSIFIER`: ≥ 97 % held-out accuracy, about 15 s on
            one CPU core); any other spec is cached under its own key.
        cache_dir: the cache root (see :func:`cache_folder`).
        device: where the returned model lives (training always runs on the CPU).
        retrain: ignore a cached copy and train again (the new checkpoint replaces it).
        progress: a tqdm bar while training.

    Returns:
        A :class:`DigitsClassifier` in eval mode without gradients; its ``checkpoint_metadata`` holds the
        spec, the data fingerprint, ``held_out_accuracy`` and ``train_seconds``. Repeated calls in one
        process return the same module.
    """
    spec = DEFAULT_CLASSIFIER if spec is None else spec
    if not isinstance(spec, ClassifierSpec):
        raise TypeError(f"spec must be a sdeflow.latent.ClassifierSpec or None; got {type(spec).__name__}.")
    dev = str(torch.device(device))
    split = load_digits_split(held_out=spec.held_out, seed=spec.split_seed)
    config = DigitsClassifier(channels=spec.channels, feature_dim=spec.feature_dim, seed=spec.init_seed).get_config()
    key = _cache_key(spec, config, split)
    root = cache_folder(cache_dir)
    folder = root / "digits_classifier" / key[:20]
    memo = (key, str(root.resolve()), dev)
    if not retrain and memo in _LOADED:
        return _LOADED[memo]
    model = None if retrain else _load_cached(folder, key[:20], config, spec, dev)
    if model is None:
        if _writable(folder):
            for old in folder.glob("ckpt-*"):
                old.unlink(missing_ok=True)
            _train_classifier(spec, split, folder, key[:20], progress)
            model = _load_cached(folder, key[:20], config, spec, dev)
            if model is None:  # pragma: no cover - a fresh checkpoint failed to read back
                raise RuntimeError(f"the digits classifier written to {str(folder)!r} could not be read back.")
        else:
            warnings.warn(f"the cache folder {str(folder)!r} is not writable; the digits classifier is trained in "
                          f"memory only (set SDEFLOW_CACHE or pass cache_dir= to keep it).", stacklevel=2)
            model = _train_classifier(spec, split, None, key[:20], progress).to(dev)
    _LOADED[memo] = model
    return model


# -- Fréchet distance ------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class FeatureStats:
    """A Gaussian fitted to features: ``mean`` (k,), ``cov`` (k, k) (unbiased, float64) and the count ``n``."""

    mean: Tensor
    cov: Tensor
    n: int


def feature_stats(feats: Tensor) -> FeatureStats:
    """Mean and unbiased covariance (divided by n − 1) of ``feats`` (n, k), n >= 2, in float64."""
    if isinstance(feats, FeatureStats):
        return feats
    if not isinstance(feats, Tensor) or not feats.is_floating_point() or feats.dim() != 2:
        raise TypeError(f"features must be a floating-point tensor of shape (n, k); got "
                        f"{tuple(feats.shape) if isinstance(feats, Tensor) else type(feats).__name__}.")
    if feats.shape[0] < 2:
        raise ValueError(f"features need at least 2 rows to fit a covariance; got {feats.shape[0]}.")
    f = feats.detach().to("cpu", torch.float64)
    if not bool(torch.isfinite(f).all()):
        raise ValueError("features must be finite (no NaN or inf); check the samples fed to the classifier.")
    mean = f.mean(0)
    c = f - mean
    cov = c.T @ c / (f.shape[0] - 1)
    return FeatureStats(mean, cov, int(f.shape[0]))


def _sqrt_psd(a: Tensor) -> Tensor:
    lam, v = torch.linalg.eigh(0.5 * (a + a.T))
    return (v * lam.clamp_min(0).sqrt()) @ v.T


def frechet_distance(feats_a: Tensor | FeatureStats, feats_b: Tensor | FeatureStats) -> float:
    """The Fréchet distance between Gaussians fitted to two feature sets (n_a, k) and (n_b, k).

    ``FD = ‖μ_a − μ_b‖² + tr Σ_a + tr Σ_b − 2 tr (Σ_a^{1/2} Σ_b Σ_a^{1/2})^{1/2}`` (the squared 2-Wasserstein
    distance between the two Gaussians), in float64. Either argument may be a :class:`FeatureStats`.
    The result is >= 0 (round-off below zero is clamped).
    """
    a, b = feature_stats(feats_a), feature_stats(feats_b)
    if a.mean.shape != b.mean.shape:
        raise ValueError(f"the two feature sets must have the same width k; got {a.mean.shape[0]} and "
                         f"{b.mean.shape[0]}.")
    root_a = _sqrt_psd(a.cov)
    m = root_a @ b.cov @ root_a
    cross = torch.linalg.eigvalsh(0.5 * (m + m.T)).clamp_min(0).sqrt().sum()
    fd = float((a.mean - b.mean).square().sum() + torch.trace(a.cov) + torch.trace(b.cov) - 2 * cross)
    return max(fd, 0.0)


# -- the digits metrics ----------------------------------------------------------------------------
def _check_images(x: object, name: str) -> Tensor:
    if not isinstance(x, Tensor) or not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor of images (n, 1, 8, 8); got "
                        f"{x.dtype if isinstance(x, Tensor) else type(x).__name__}.")
    if x.dim() != 4 or tuple(x.shape[1:]) != DIGITS_SHAPE:
        raise ValueError(f"{name} must have shape (n, 1, 8, 8) (digits on the [-1,1] scale); got {tuple(x.shape)}.")
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} must be finite; {int((~torch.isfinite(x)).flatten(1).any(1).sum())} images hold "
                         f"NaN or inf (a diverged sampler?).")
    return x


def _classifier(classifier: DigitsClassifier | None) -> DigitsClassifier:
    if classifier is None:
        return digits_classifier()
    if not isinstance(classifier, DigitsClassifier):
        raise TypeError(f"classifier must be a DigitsClassifier (see digits_classifier()) or None; got "
                        f"{type(classifier).__name__}.")
    return classifier


def _split(split: DigitsSplit | None) -> DigitsSplit:
    split = load_digits_split() if split is None else split
    if not isinstance(split, DigitsSplit):
        raise TypeError(f"split must be a DigitsSplit (load_digits_split()) or None; got {type(split).__name__}.")
    if split.scale != "[-1,1]":
        raise ValueError(f"the metrics take images on the '[-1,1]' scale; the split has scale={split.scale!r}.")
    return split


def digits_features(x: Tensor, *, classifier: DigitsClassifier | None = None, clamp: bool = True,
                    batch_size: int = 2048) -> Tensor:
    """The classifier's features (n, k) float64 of images ``x`` (n, 1, 8, 8) on the ``[-1,1]`` scale.

    ``clamp=True`` clips the images to [−1, 1] first (the data's pixel range: what saving a sample as an
    image would do).
    """
    x = _check_images(x, "x")
    model = _classifier(classifier)
    dev = model.fc.weight.device
    out = []
    with torch.no_grad():
        for start in range(0, x.shape[0], batch_size):
            xb = x[start : start + batch_size].to(dev, torch.float32)
            out.append(model.features(xb.clamp(-1, 1) if clamp else xb).to("cpu", torch.float64))
    return torch.cat(out)


def _reference(reference: object, model: DigitsClassifier, split: DigitsSplit) -> FeatureStats:
    if isinstance(reference, FeatureStats):
        return reference
    if isinstance(reference, Tensor):
        return feature_stats(digits_features(reference, classifier=model, clamp=False))
    if reference not in ("train", "held_out"):
        raise ValueError(f"reference must be 'train', 'held_out', a tensor of images or FeatureStats; got "
                         f"{reference!r}.")
    cache = object_cache(model, "digits_reference_stats")
    key = (split.fingerprint(), reference)
    if key not in cache:
        images = split.train_x if reference == "train" else split.test_x
        cache[key] = feature_stats(digits_features(images, classifier=model, clamp=False))
    return cache[key]


def digits_fd(samples: Tensor, reference: str | Tensor | FeatureStats = "train", *,
              classifier: DigitsClassifier | None = None, split: DigitsSplit | None = None,
              clamp: bool = True) -> float:
    """Fréchet distance between ``samples`` (n, 1, 8, 8) and a reference, in the classifier's feature space.

    Args:
        samples: generated images on the ``[-1,1]`` scale (clamped to it when ``clamp``), n >= 2.
        reference: ``"train"`` (default: the images a model was trained on), ``"held_out"``, a tensor of
            images, or :class:`FeatureStats`. The train and held-out statistics are cached per classifier.
        classifier: the feature network (default: :func:`digits_classifier`).
        split: the data split (default: ``load_digits_split()``).
        clamp: clip the samples to [−1, 1] first.
    """
    model = _classifier(classifier)
    ref = _reference(reference, model, _split(split))
    return frechet_distance(digits_features(samples, classifier=model, clamp=clamp), ref)


def digits_fd_floor(*, classifier: DigitsClassifier | None = None, split: DigitsSplit | None = None) -> float:
    """The floor: FD between the held-out and the training images (real data the model never saw)."""
    model = _classifier(classifier)
    split = _split(split)
    return frechet_distance(_reference("held_out", model, split), _reference("train", model, split))


def class_accuracy(samples: Tensor, labels: Tensor, *, classifier: DigitsClassifier | None = None,
                   clamp: bool = True) -> float:
    """Fraction of class-conditional ``samples`` (n, 1, 8, 8) the classifier assigns to their ``labels`` (n,)."""
    x = _check_images(samples, "samples")
    if not isinstance(labels, Tensor) or labels.dtype.is_floating_point or labels.shape != (x.shape[0],):
        raise ValueError(f"labels must be an integer tensor of shape ({x.shape[0]},) (the requested classes).")
    model = _classifier(classifier)
    dev = model.fc.weight.device
    with torch.no_grad():
        xb = x.to(dev, torch.float32)
        pred = model.logits(xb.clamp(-1, 1) if clamp else xb).argmax(1).cpu()
    return float((pred == labels.cpu()).double().mean())


def digits_metrics(samples: Tensor, labels: Tensor | None = None, *, reference: str | Tensor | FeatureStats = "train",
                   classifier: DigitsClassifier | None = None, split: DigitsSplit | None = None) -> dict[str, float]:
    """``{"fd": digits_fd(samples, reference)}``, plus ``"accuracy"`` (:func:`class_accuracy`) when labels are given."""
    out = {"fd": digits_fd(samples, reference, classifier=classifier, split=split)}
    if labels is not None:
        out["accuracy"] = class_accuracy(samples, labels, classifier=classifier)
    return out


# -- over sampling seeds ---------------------------------------------------------------------------
@dataclass(frozen=True)
class SeedStat:
    """A metric over sampling seeds: ``mean``, ``std`` (sample std, n − 1; 0 for one seed), the ``values``."""

    mean: float
    std: float
    values: tuple[float, ...]
    seeds: tuple[int, ...]

    def __str__(self) -> str:
        return f"{self.mean:.4g} ± {self.std:.2g}"


def _stat(values: list[float], seeds: tuple[int, ...]) -> SeedStat:
    n = len(values)
    mean = math.fsum(values) / n
    std = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return SeedStat(mean, std, tuple(values), seeds)


def over_seeds(fn: Callable[[int], float | Mapping[str, float]],
               seeds: Sequence[int] = (0, 1, 2)) -> SeedStat | dict[str, SeedStat]:
    """Run ``fn(seed)`` for each seed and report mean ± std of what it returns.

    ``fn`` returns a number (-> one :class:`SeedStat`) or a dict of numbers (-> a dict of them, same
    keys; every call must return the same keys), e.g.
    ``over_seeds(lambda s: digits_metrics(*draw(s)), seeds=range(5))``.
    """
    seeds = tuple(int(s) for s in seeds)
    if not seeds:
        raise ValueError("seeds must hold at least one seed.")
    results = [fn(s) for s in seeds]
    if all(isinstance(r, (int, float)) and not isinstance(r, bool) for r in results):
        return _stat([float(r) for r in results], seeds)
    if all(isinstance(r, Mapping) for r in results):
        keys = list(results[0])
        if any(list(r) != keys for r in results):
            raise ValueError("fn(seed) returned dicts with different keys for different seeds.")
        return {k: _stat([float(r[k]) for r in results], seeds) for k in keys}
    raise TypeError("fn(seed) must return a number or a dict of numbers for every seed.")
