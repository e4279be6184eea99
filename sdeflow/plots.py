"""Figures of samples: a scatter plot for 2-D data, an image grid for image-shaped data (needs matplotlib)."""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import Tensor

from .io import atomic_write

__all__ = ["save_samples_png", "save_figure", "pyplot"]


def pyplot():  # noqa: ANN201 - matplotlib.pyplot, imported lazily
    """``matplotlib.pyplot`` on the non-interactive Agg backend (unless one was chosen), imported on first use."""
    try:
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
    except ImportError as err:  # pragma: no cover - matplotlib is a test dependency
        raise ImportError("sdeflow's figures need matplotlib: pip install 'sdeflow[plots]'.") from err
    return plt


def save_figure(fig: object, path: str | Path, *, dpi: int = 110) -> Path:
    """Write a matplotlib figure as a PNG atomically (temporary file, fsync, rename) and close it."""
    plt = pyplot()
    out = atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=dpi))
    plt.close(fig)
    return out


def save_samples_png(x: Tensor, path: str | Path, *, title: str = "", max_points: int = 20_000,
                     max_images: int = 64, limits: float | None = None) -> Path:
    """Save ``x`` as a PNG (written atomically): (N, 2) as a scatter plot, (N, C, H, W) as an image grid.

    Args:
        x: samples; 2-D points or images (1 or 3 channels; values are shown with their own min and max).
        path: the PNG file.
        title: the figure title.
        max_points, max_images: at most this many points / images are drawn (the first ones).
        limits: for 2-D points, the axes span [-limits, limits] (default: from the data).
    """
    plt = pyplot()
    x = x.detach().to("cpu", torch.float64)
    if x.dim() == 2 and x.shape[1] == 2:
        pts = x[:max_points]
        fig, ax = plt.subplots(figsize=(4.5, 4.5))
        ax.scatter(pts[:, 0], pts[:, 1], s=1.0, alpha=0.4, linewidths=0)
        if limits is not None:
            ax.set_xlim(-limits, limits)
            ax.set_ylim(-limits, limits)
        ax.set_aspect("equal")
        ax.set_xlabel("x₁")
        ax.set_ylabel("x₂")
    elif x.dim() == 4 and x.shape[1] in (1, 3):
        imgs = x[:max_images]
        n = imgs.shape[0]
        cols = math.ceil(math.sqrt(n))
        rows = math.ceil(n / cols)
        fig, axes = plt.subplots(rows, cols, figsize=(cols * 0.9, rows * 0.9), squeeze=False)
        for k, ax in enumerate(axes.flat):
            ax.set_axis_off()
            if k < n:
                img = imgs[k].permute(1, 2, 0)
                lo, hi = float(img.min()), float(img.max())
                img = (img - lo) / (hi - lo if hi > lo else 1.0)
                ax.imshow(img.squeeze(-1) if img.shape[-1] == 1 else img, cmap="gray", vmin=0, vmax=1)
    else:
        raise ValueError(f"x must be (N, 2) points or (N, C, H, W) images with C = 1 or 3; got {tuple(x.shape)}.")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, path)
