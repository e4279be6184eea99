"""The exact denoiser of an empirical distribution: an ideal reference for samplers on real images.

For data ``x_0`` drawn uniformly from N training images ``x_1 … x_N`` and ``x = x_0 + σ n``, the
posterior over the images is a softmax of their distances, so the ideal (minimum-MSE) denoiser is
closed form (docs/concepts.md §4 for the EDM convention ``D(x, σ) = E[x_0 | x_0 + σ n = x]``):

    ``D(x, σ) = Σ_i softmax_i(−‖x − x_i‖² / (2σ²)) x_i``.

With labels, the class-conditional law of class ``c`` is uniform on the images of that class, and
``D(x, σ, c)`` is the same softmax over them. It is the exact PF-ODE of that distribution: a sampler
driven by it is checked against an exact reference on (B, 1, 8, 8) states, as the Gaussian-mixture
denoisers do on toy data (it is the mixture of N equal-weight components of zero covariance).

**It memorises.** The empirical law has no density between the training images: as σ → 0 the
softmax concentrates on the nearest image, so every PF-ODE sample lands (to within the last noise
level) on a training image: its samples are a resample of the training set. It is a reference for
solvers and consistency maps, not a generative model. (A Fréchet distance at the floor's sample size
does not tell memorisation from generalisation — a resample of 359 training images scores about the
train-vs-held-out floor, see docs/latent.md — but :meth:`EmpiricalDenoiser.nearest` does: the distance
of samples to their nearest training image.)
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = ["EmpiricalDenoiser"]


class EmpiricalDenoiser(nn.Module):
    """The ideal denoiser ``D(x, σ, class_labels=None)`` of the empirical distribution of ``train_x``.

    Args:
        train_x: (N, *event) training images (e.g. ``DigitsSplit.train_x``, (N, 1, 8, 8)).
        labels: (N,) integer class labels in ``[0, num_classes)``, or None (unconditional only).
        num_classes: K; None: ``labels.max() + 1``. The label K is the null class ∅ (all images), so
            :class:`sdeflow.ClassifierFreeGuidance` wraps this denoiser as it wraps a trained one.
        chunk_size: training images per block of the streaming log-sum-exp (memory ~ B·chunk numbers).
        dtype: the precision of the computation: None (the input's dtype) or ``torch.float64`` (any
            input is upcast, the result is cast back to the input's dtype).

    ``forward(x, sigma, class_labels=None)``: ``x`` (B, *event), ``sigma`` a number or (B,) (>= 0),
    ``class_labels`` (B,) integers in [0, K] or None (∅ for every row) -> (B, *event). At ``σ = 0``
    it returns the nearest training image (the σ → 0 limit). Squared distances are computed as
    differences (not by the ‖a‖² − 2ab + ‖b‖² expansion), so small noise levels stay exact in float32.
    """

    def __init__(self, train_x: Tensor, labels: Tensor | None = None, *, num_classes: int | None = None,
                 chunk_size: int = 1024, dtype: torch.dtype | None = None) -> None:
        super().__init__()
        if not isinstance(train_x, Tensor) or not train_x.is_floating_point() or train_x.dim() < 2:
            raise TypeError("train_x must be a floating-point tensor of shape (N, *event) with N >= 1.")
        if train_x.shape[0] < 1:
            raise ValueError("train_x must hold at least one training image.")
        if not bool(torch.isfinite(train_x).all()):
            raise ValueError("train_x must be finite (no NaN or inf).")
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
            raise ValueError(f"chunk_size must be a positive int; got {chunk_size!r}.")
        if dtype not in (None, torch.float64):
            raise ValueError(f"dtype must be None (the input's dtype) or torch.float64; got {dtype!r}.")
        n = train_x.shape[0]
        self.event_shape = tuple(train_x.shape[1:])
        self.chunk_size = chunk_size
        self.compute_dtype = dtype
        flat = train_x.detach().reshape(n, -1).to(torch.float64 if dtype is not None else train_x.dtype)
        self.register_buffer("data", flat.clone(), persistent=False)
        if labels is None:
            if num_classes not in (None, 0):
                raise ValueError("num_classes was given without labels; pass labels=(N,) class indices.")
            self._k = 0
            self.register_buffer("labels", torch.zeros(0, dtype=torch.long), persistent=False)
        else:
            if not isinstance(labels, Tensor) or labels.dtype.is_floating_point or labels.dtype == torch.bool \
                    or labels.dtype.is_complex:
                raise TypeError(f"labels must be an integer tensor of shape ({n},); got "
                                f"{labels.dtype if isinstance(labels, Tensor) else type(labels).__name__}.")
            if labels.shape != (n,):
                raise ValueError(f"labels must have shape ({n},) (one per training image); got {tuple(labels.shape)}.")
            if bool((labels < 0).any()):
                raise ValueError("labels must be >= 0.")
            k = int(labels.max()) + 1 if num_classes is None else num_classes
            if isinstance(k, bool) or not isinstance(k, int) or k < int(labels.max()) + 1:
                raise ValueError(f"num_classes must be an int > every label (max label {int(labels.max())}); "
                                 f"got {num_classes!r}.")
            self._k = k
            self.register_buffer("labels", labels.detach().to(torch.long).clone(), persistent=False)

    # -- conditioning ----------------------------------------------------------------------------------
    @property
    def num_classes(self) -> int:
        """K (0 without labels)."""
        return self._k

    @property
    def null_label(self) -> int:
        """The null class ∅ = K: every training image."""
        return self._k

    @property
    def n_train(self) -> int:
        """N, the number of training images."""
        return int(self.data.shape[0])

    def _check_x(self, x: object) -> Tensor:
        shape = "(B, " + ", ".join(map(str, self.event_shape)) + ")"
        if not isinstance(x, Tensor) or not x.is_floating_point():
            raise TypeError(f"x must be a floating-point tensor of shape {shape}; got "
                            f"{x.dtype if isinstance(x, Tensor) else type(x).__name__}.")
        if x.dim() != 1 + len(self.event_shape) or tuple(x.shape[1:]) != self.event_shape:
            raise ValueError(f"x must have shape {shape} like the training images; got {tuple(x.shape)}.")
        return x

    def _check_labels(self, class_labels: object, batch: int, device: torch.device) -> Tensor | None:
        if class_labels is None:
            return None
        if not isinstance(class_labels, Tensor) or class_labels.dtype.is_floating_point \
                or class_labels.dtype == torch.bool or class_labels.dtype.is_complex:
            got = class_labels.dtype if isinstance(class_labels, Tensor) else type(class_labels).__name__
            raise TypeError(f"class_labels must be an integer tensor of shape ({batch},) or None; got {got}.")
        if class_labels.shape != (batch,):
            raise ValueError(f"class_labels must have shape ({batch},); got {tuple(class_labels.shape)}.")
        if self._k == 0:
            raise ValueError("class_labels were given to an EmpiricalDenoiser built without labels; pass labels= "
                             "(the training labels) when building it, or class_labels=None.")
        if class_labels.numel() and bool(((class_labels < 0) | (class_labels > self._k)).any()):
            raise ValueError(f"class_labels must lie in [0, {self._k}] (the value {self._k} is the null class: all "
                             f"images); got values in [{int(class_labels.min())}, {int(class_labels.max())}].")
        return class_labels.to(device=device, dtype=torch.long)

    def _sigma(self, sigma: object, x: Tensor) -> Tensor:
        if isinstance(sigma, bool) or not isinstance(sigma, (Tensor, int, float)):
            raise TypeError(f"sigma must be a number or a tensor of shape ({x.shape[0]},); got "
                            f"{type(sigma).__name__}.")
        sig = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
        if sig.dim() == 0:
            sig = sig.expand(x.shape[0])
        elif sig.shape != (x.shape[0],):
            raise ValueError(f"sigma must be a scalar or have shape ({x.shape[0]},); got {tuple(sig.shape)}.")
        if bool(((sig < 0) | ~torch.isfinite(sig)).any()):
            raise ValueError("sigma must be finite and >= 0 (a noise level).")
        return sig

    # -- the softmax over the images -------------------------------------------------------------------
    def _rows(self, class_labels: Tensor | None, base: Tensor) -> list[tuple[Tensor | None, Tensor]]:
        """(row indices of the batch or None for all, the training images they see) per label group."""
        if class_labels is None:
            return [(None, base)]
        out = []
        for c in torch.unique(class_labels).tolist():
            rows = torch.nonzero(class_labels == c).squeeze(1)
            data = base if c == self._k else base[self.labels == c]
            if data.shape[0] == 0:
                raise ValueError(f"class {c} has no training image; it cannot be denoised.")
            out.append((rows, data))
        return out

    def _sq_dist(self, x: Tensor, data: Tensor) -> Tensor:
        """(B, n) squared distances, as sums of squared differences (exact at small σ)."""
        return torch.cdist(x, data, compute_mode="donot_use_mm_for_euclid_dist").square()

    def _denoise(self, x: Tensor, sigma: Tensor, data: Tensor) -> Tensor:
        b = x.shape[0]
        positive = sigma > 0
        inv = torch.where(positive, 0.5 / sigma.clamp_min(torch.finfo(sigma.dtype).tiny) ** 2,
                          torch.zeros_like(sigma))[:, None]
        m = torch.full((b, 1), -math.inf, dtype=x.dtype, device=x.device)
        s = torch.zeros((b, 1), dtype=x.dtype, device=x.device)
        acc = torch.zeros_like(x)
        best = torch.full((b,), math.inf, dtype=x.dtype, device=x.device)
        nearest = torch.zeros_like(x)
        for start in range(0, data.shape[0], self.chunk_size):
            block = data[start : start + self.chunk_size]
            d2 = self._sq_dist(x, block)  # (B, n)
            logits = -d2 * inv
            m_new = torch.maximum(m, logits.amax(1, keepdim=True))
            w = torch.exp(logits - m_new)
            decay = torch.exp(m - m_new)
            s = s * decay + w.sum(1, keepdim=True)
            acc = acc * decay + w @ block
            m = m_new
            if not bool(positive.all()):  # σ = 0 rows: the nearest image
                dmin, arg = d2.min(1)
                better = dmin < best
                best = torch.where(better, dmin, best)
                nearest = torch.where(better[:, None], block[arg], nearest)
        out = acc / s
        return out if bool(positive.all()) else torch.where(positive[:, None], out, nearest)

    def forward(self, x: Tensor, sigma: Tensor | float, class_labels: Tensor | None = None) -> Tensor:
        """``D(x, σ, c)`` for ``x`` (B, *event), ``sigma`` a number or (B,), labels (B,) or None -> ``x``'s shape."""
        x = self._check_x(x)
        sig = self._sigma(sigma, x)
        labels = self._check_labels(class_labels, x.shape[0], x.device)
        dt = self.data.dtype if self.compute_dtype is not None else x.dtype
        flat = x.reshape(x.shape[0], -1).to(dt)
        sig = sig.to(dt)
        base = self.data.to(dt)
        out = torch.empty_like(flat)
        for rows, subset in self._rows(labels, base):
            if rows is None:
                out = self._denoise(flat, sig, subset)
            else:
                out[rows] = self._denoise(flat[rows], sig[rows], subset)
        return out.to(x.dtype).reshape(x.shape)

    def nearest(self, x: Tensor, class_labels: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Distances (B,) from each ``x`` to its nearest training image and that image's index (B,) in ``train_x``.

        With ``class_labels`` only the images of each row's class are searched (∅: all). Distances are
        Euclidean over all pixels, in the computation dtype.
        """
        x = self._check_x(x)
        labels = self._check_labels(class_labels, x.shape[0], x.device)
        dt = self.data.dtype if self.compute_dtype is not None else x.dtype
        flat = x.reshape(x.shape[0], -1).to(dt)
        dist = torch.empty(x.shape[0], dtype=dt, device=x.device)
        index = torch.empty(x.shape[0], dtype=torch.long, device=x.device)
        all_idx = torch.arange(self.n_train, device=x.device)
        groups = [(None, all_idx)] if labels is None else [
            (torch.nonzero(labels == c).squeeze(1), all_idx if c == self._k else all_idx[self.labels == c])
            for c in torch.unique(labels).tolist()]
        for rows, idx in groups:
            xr = flat if rows is None else flat[rows]
            d = torch.cdist(xr, self.data[idx].to(dt), compute_mode="donot_use_mm_for_euclid_dist")
            dmin, arg = d.min(1)
            if rows is None:
                dist, index = dmin, idx[arg]
            else:
                dist[rows], index[rows] = dmin, idx[arg]
        return dist, index

    def extra_repr(self) -> str:
        dt = "float64" if self.compute_dtype is not None else "input dtype"
        return f"n_train={self.n_train}, event_shape={self.event_shape}, num_classes={self._k}, compute={dt}"
