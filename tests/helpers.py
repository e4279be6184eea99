"""Small statistics helpers for the Monte Carlo tests."""

from __future__ import annotations

import torch


def mean_and_se(x: torch.Tensor) -> tuple[float, float]:
    """Sample mean and its standard error (std / sqrt(N)) over dim 0."""
    x = x.double().flatten()
    return float(x.mean()), float(x.std() / x.numel() ** 0.5)


def var_and_se(x: torch.Tensor) -> tuple[float, float]:
    """Sample variance and its standard error sqrt((m4 - s^4) / N) (valid for any finite-kurtosis law)."""
    x = x.double().flatten()
    c = x - x.mean()
    v = float((c**2).mean())
    m4 = float((c**4).mean())
    return v, ((m4 - v * v) / x.numel()) ** 0.5
