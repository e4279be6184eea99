"""The 8×8 digits shipped inside scikit-learn, as a fixed stratified train / held-out split.

``sklearn.datasets.load_digits`` holds 1,797 grey-scale 8×8 images of the digits 0–9 (about 180 per
class) with integer pixel values 0–16; it reads a file bundled with scikit-learn, so nothing is
downloaded. :func:`load_digits_split` turns it into tensors ``(N, 1, 8, 8)`` float32 and labels
``(N,)`` int64 and splits it the same way on every machine and every version of NumPy, PyTorch and
scikit-learn:

* the split is **stratified**: every class contributes its share of held-out images (the per-class
  counts are rounded by largest remainder so that they add up to the requested total);
* within a class, images are ordered by ``sha256(f"{seed}:{index}")`` of their index in
  ``load_digits()`` and the first ones are held out — a pure function of ``seed`` and the index, no
  random-number generator involved; each part keeps the original order of ``load_digits()``.

Pixel scales: ``"[-1,1]"`` (default) maps ``v ∈ {0..16}`` to ``v/8 − 1`` (back: ``(x + 1)·8``);
``"[0,1]"`` maps to ``v/16`` (back: ``16 x``); ``"raw"`` keeps ``v`` as floats. :func:`to_pixels`
inverts any of them. σ_data for EDM preconditioning of the ``[-1,1]`` training images is 0.75
(:func:`sdeflow.generative.estimate_sigma_data`: the pooled std of every pixel).
"""

from __future__ import annotations

import functools
import hashlib
import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

__all__ = ["DigitsSplit", "load_digits_split", "to_pixels", "from_pixels", "DIGITS_SCALES", "DIGITS_SHAPE",
           "DIGITS_CLASSES"]

#: Pixel scales of :func:`load_digits_split`.
DIGITS_SCALES: tuple[str, ...] = ("[-1,1]", "[0,1]", "raw")
#: The event shape of one digit image.
DIGITS_SHAPE: tuple[int, int, int] = (1, 8, 8)
#: Number of classes (digits 0–9).
DIGITS_CLASSES: int = 10


@functools.lru_cache(maxsize=1)
def _raw_digits() -> tuple[np.ndarray, np.ndarray]:
    try:
        from sklearn.datasets import load_digits
    except ImportError as err:  # pragma: no cover - scikit-learn is a dependency
        raise ImportError("the digits data ship inside scikit-learn: pip install scikit-learn") from err
    bunch = load_digits()
    images = np.asarray(bunch.images, dtype=np.float64)  # (1797, 8, 8), values 0..16
    labels = np.asarray(bunch.target, dtype=np.int64)
    images.setflags(write=False)
    labels.setflags(write=False)
    return images, labels


def _check_scale(scale: object) -> str:
    if scale not in DIGITS_SCALES:
        raise ValueError(f"scale must be one of {DIGITS_SCALES}; got {scale!r}.")
    return str(scale)


def from_pixels(v: Tensor, scale: str = "[-1,1]") -> Tensor:
    """Raw pixel values ``v ∈ [0, 16]`` -> the given scale (``"[-1,1]"``: ``v/8 − 1``; ``"[0,1]"``: ``v/16``)."""
    scale = _check_scale(scale)
    if scale == "[-1,1]":
        return v / 8.0 - 1.0
    if scale == "[0,1]":
        return v / 16.0
    return v.clone()


def to_pixels(x: Tensor, scale: str = "[-1,1]") -> Tensor:
    """The inverse of :func:`from_pixels`: images on ``scale`` -> raw pixel values on [0, 16] (not clamped)."""
    scale = _check_scale(scale)
    if scale == "[-1,1]":
        return (x + 1.0) * 8.0
    if scale == "[0,1]":
        return x * 16.0
    return x.clone()


def _held_out_counts(class_sizes: list[int], total: int) -> list[int]:
    """Per-class held-out counts summing to ``total``, proportional to the class sizes (largest remainder)."""
    n = sum(class_sizes)
    exact = [total * s / n for s in class_sizes]
    counts = [math.floor(e) for e in exact]
    order = sorted(range(len(exact)), key=lambda c: (-(exact[c] - counts[c]), c))  # ties: lower class first
    for c in order[: total - sum(counts)]:
        counts[c] += 1
    return counts


def _rank_key(seed: int, index: int) -> bytes:
    return hashlib.sha256(f"{seed}:{index}".encode()).digest()


@dataclass(frozen=True, eq=False)
class DigitsSplit:
    """A train / held-out split of the digits (:func:`load_digits_split`).

    Attributes:
        train_x: (N_train, 1, 8, 8) float32 images on ``scale``.
        train_y: (N_train,) int64 labels 0–9.
        test_x: (N_held, 1, 8, 8) float32 held-out images.
        test_y: (N_held,) int64 held-out labels.
        train_index, test_index: (N,) int64 positions of the images in ``sklearn.datasets.load_digits()``.
        scale: the pixel scale (``"[-1,1]"``, ``"[0,1]"`` or ``"raw"``).
        seed: the split's seed.
    """

    train_x: Tensor
    train_y: Tensor
    test_x: Tensor
    test_y: Tensor
    train_index: Tensor
    test_index: Tensor
    scale: str
    seed: int

    @property
    def held_out_x(self) -> Tensor:
        """Alias of ``test_x``."""
        return self.test_x

    @property
    def held_out_y(self) -> Tensor:
        """Alias of ``test_y``."""
        return self.test_y

    def fingerprint(self) -> str:
        """SHA-256 (hex) of the split's indices, scale and pixel bytes: identifies the exact data a model saw."""
        h = hashlib.sha256(f"digits:{self.scale}:{self.seed}".encode())
        for t in (self.train_index, self.test_index, self.train_x, self.test_x, self.train_y, self.test_y):
            h.update(t.contiguous().numpy().tobytes())
        return h.hexdigest()

    def __repr__(self) -> str:
        return (f"DigitsSplit(train={self.train_x.shape[0]}, held_out={self.test_x.shape[0]}, scale={self.scale!r}, "
                f"seed={self.seed})")


def load_digits_split(*, held_out: float | int = 0.2, seed: int = 0, scale: str = "[-1,1]") -> DigitsSplit:
    """The 8×8 digits as a fixed stratified train / held-out split (see the module docstring).

    Args:
        held_out: the held-out share, a fraction in (0, 1) (``round(held_out · 1797)`` images; 0.2 gives
            359 held-out and 1,438 training images), or a fixed count (an int in [10, 1787]).
        seed: selects the split (a non-negative int); the same seed gives the same split everywhere.
        scale: ``"[-1,1]"`` (default), ``"[0,1]"`` or ``"raw"`` (0–16); :func:`to_pixels` maps back.

    Returns:
        :class:`DigitsSplit` with fresh tensors (modifying them does not change later calls).
    """
    scale = _check_scale(scale)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative int; got {seed!r}.")
    images, labels = _raw_digits()
    n = labels.shape[0]
    if isinstance(held_out, bool) or not isinstance(held_out, (int, float)):
        raise TypeError(f"held_out must be a fraction in (0, 1) or an int count; got {type(held_out).__name__}.")
    if isinstance(held_out, int):
        if not DIGITS_CLASSES <= held_out <= n - DIGITS_CLASSES:
            raise ValueError(f"held_out as a count must be an int in [{DIGITS_CLASSES}, {n - DIGITS_CLASSES}] (at "
                             f"least one image per class on each side); got {held_out}.")
        total = held_out
    else:
        if not 0 < held_out < 1:
            raise ValueError(f"held_out as a fraction must lie in (0, 1); got {held_out!r}.")
        total = round(held_out * n)
        if not DIGITS_CLASSES <= total <= n - DIGITS_CLASSES:
            raise ValueError(f"held_out={held_out!r} gives {total} held-out images; choose a fraction giving between "
                             f"{DIGITS_CLASSES} and {n - DIGITS_CLASSES}.")
    classes = list(range(DIGITS_CLASSES))
    members = [np.flatnonzero(labels == c) for c in classes]
    counts = _held_out_counts([len(m) for m in members], total)
    test = np.zeros(n, dtype=bool)
    for idx, k in zip(members, counts, strict=True):
        ranked = sorted(idx.tolist(), key=lambda i: _rank_key(seed, i))
        test[ranked[:k]] = True
    test_index = np.flatnonzero(test)
    train_index = np.flatnonzero(~test)
    x = from_pixels(torch.from_numpy(images.copy()), scale).to(torch.float32).reshape(n, *DIGITS_SHAPE)
    y = torch.from_numpy(labels.copy())
    tr, te = torch.from_numpy(train_index), torch.from_numpy(test_index)
    return DigitsSplit(train_x=x[tr].contiguous(), train_y=y[tr].contiguous(), test_x=x[te].contiguous(),
                       test_y=y[te].contiguous(), train_index=tr, test_index=te, scale=scale, seed=seed)
