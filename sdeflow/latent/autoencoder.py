"""Latent spaces for the digits: a PCA baseline and a small autoencoder, both saved as sdeflow checkpoints.

Both map images (B, 1, 8, 8) to codes (B, k) and back, with the same interface:

* ``encode(x) -> (B, k)``, ``decode(z) -> (B, *event)``;
* a stored latent ``scale`` (a buffer saved with the weights): ``encode`` divides the raw code by it
  and ``decode`` multiplies by it first, so the codes of the training images have unit standard
  deviation over all coordinates (``estimate_sigma_data(encode(train_x)) = 1`` up to round-off: a
  latent diffusion model can use ``sigma_data=1.0``). One number for all coordinates keeps the
  relative spread of the latent dimensions (the leading PCA directions stay the widest), as the
  latent scale factor of latent diffusion does.

:class:`PCALatent` is fitted in closed form (:meth:`PCALatent.fit`, float64 eigen-decomposition of the
training covariance, each direction's sign fixed so that its largest-magnitude loading is positive: the
same fit every run). :class:`Autoencoder` is an MLP encoder/decoder trained by :func:`train_autoencoder`
through :class:`sdeflow.Trainer` with a per-example reconstruction loss (:class:`ReconstructionLoss`);
the scale is measured on the training images at the end of training, before the final checkpoint is
written, so :func:`sdeflow.load_model` of that checkpoint returns the calibrated model. Both are
registered models; :func:`save_latent` writes a fitted PCA (or any registered model) as a checkpoint.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..generative.config import Configurable, register_model
from ..generative.training import TrainConfig, Trainer, TrainResult

__all__ = ["PCALatent", "Autoencoder", "ReconstructionLoss", "train_autoencoder", "save_latent", "latent_scale"]


def _event(event_shape: object) -> tuple[int, ...]:
    if not isinstance(event_shape, (list, tuple)) or not event_shape or not all(
            isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in event_shape):
        raise ValueError(f"event_shape must be a non-empty list of positive ints, e.g. [1, 8, 8]; got {event_shape!r}.")
    return tuple(event_shape)


def _check_int(name: str, v: object, lo: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < lo:
        raise ValueError(f"{name} must be an int >= {lo}; got {v!r}.")
    return v


class _Latent(Configurable, nn.Module):
    """Shared checks of the latent maps."""

    event_shape: tuple[int, ...]
    latent_dim: int

    def _check_x(self, x: object) -> Tensor:
        shape = "(B, " + ", ".join(map(str, self.event_shape)) + ")"
        if not isinstance(x, Tensor) or not x.is_floating_point():
            raise TypeError(f"x must be a floating-point tensor of shape {shape}; got "
                            f"{x.dtype if isinstance(x, Tensor) else type(x).__name__}.")
        if x.dim() != 1 + len(self.event_shape) or tuple(x.shape[1:]) != self.event_shape:
            raise ValueError(f"x must have shape {shape}; got {tuple(x.shape)}.")
        return x

    def _check_z(self, z: object) -> Tensor:
        if not isinstance(z, Tensor) or not z.is_floating_point():
            raise TypeError(f"z must be a floating-point tensor of shape (B, {self.latent_dim}); got "
                            f"{z.dtype if isinstance(z, Tensor) else type(z).__name__}.")
        if z.dim() != 2 or z.shape[1] != self.latent_dim:
            raise ValueError(f"z must have shape (B, {self.latent_dim}) (latent_dim={self.latent_dim}); got "
                             f"{tuple(z.shape)}.")
        return z

    def reconstruct(self, x: Tensor) -> Tensor:
        """``decode(encode(x))`` without gradients."""
        with torch.no_grad():
            return self.decode(self.encode(x))

    def encode(self, x: Tensor) -> Tensor:  # pragma: no cover - overridden
        raise NotImplementedError

    def decode(self, z: Tensor) -> Tensor:  # pragma: no cover - overridden
        raise NotImplementedError


def latent_scale(codes: Tensor) -> float:
    """The population std of ``codes`` over all coordinates (float64): the latent scale that makes them unit-std."""
    v = codes.detach().to(torch.float64)
    std = float(v.std(correction=0))
    if not std > 0 or not math.isfinite(std):
        raise ValueError("the codes have zero or non-finite spread; the latent scale cannot be measured.")
    return std


@register_model("pca_latent")
class PCALatent(_Latent):
    """PCA to ``dim`` components: ``encode(x) = U (x − μ) / s``, ``decode(z) = Uᵀ (s z) + μ``.

    Build it with :meth:`fit` (closed form). ``PCALatent(dim, event_shape)`` alone is an unfitted shell
    (what :func:`sdeflow.load_model` builds before loading the buffers).

    Args:
        dim: number of components k (1 <= k <= prod(event_shape)).
        event_shape: the image shape, e.g. ``[1, 8, 8]``.

    Buffers: ``mean`` (d,), ``components`` (k, d) orthonormal rows (leading first), ``variances`` (k,)
    (the explained variance of each), ``scale`` () and ``fitted`` ().
    """

    def __init__(self, dim: int = 12, event_shape: Sequence[int] = (1, 8, 8)) -> None:
        super().__init__()
        shape = _event(list(event_shape))
        d = math.prod(shape)
        _check_int("dim", dim, 1)
        if dim > d:
            raise ValueError(f"dim must be <= prod(event_shape) = {d}; got {dim}.")
        self.record_config(dim=dim, event_shape=list(shape))
        self.event_shape = shape
        self.latent_dim = dim
        self.register_buffer("mean", torch.zeros(d))
        self.register_buffer("components", torch.zeros(dim, d))
        self.register_buffer("variances", torch.zeros(dim))
        self.register_buffer("scale", torch.ones(()))
        self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))

    @classmethod
    def fit(cls, train_x: Tensor, dim: int = 12) -> PCALatent:
        """Fit on training images (N, *event): mean, top-``dim`` eigenvectors of the covariance, scale."""
        if not isinstance(train_x, Tensor) or not train_x.is_floating_point() or train_x.dim() < 2:
            raise TypeError("train_x must be a floating-point tensor of shape (N, *event).")
        if train_x.shape[0] < 2:
            raise ValueError("train_x must hold at least 2 images to fit a PCA.")
        model = cls(dim=dim, event_shape=list(train_x.shape[1:]))
        flat = train_x.detach().reshape(train_x.shape[0], -1).to("cpu", torch.float64)
        if not bool(torch.isfinite(flat).all()):
            raise ValueError("train_x must be finite.")
        mu = flat.mean(0)
        c = flat - mu
        cov = c.T @ c / (flat.shape[0] - 1)
        lam, vec = torch.linalg.eigh(cov)
        order = torch.argsort(lam, descending=True)[:dim]
        comps = vec[:, order].T.contiguous()  # (k, d)
        lead = comps.abs().argmax(1)
        signs = torch.sign(comps[torch.arange(dim), lead])
        comps = comps * signs[:, None]
        codes = c @ comps.T
        model.mean.copy_(mu.float())
        model.components.copy_(comps.float())
        model.variances.copy_(lam[order].clamp_min(0).float())
        model.scale.fill_(latent_scale(codes))
        model.fitted.fill_(True)
        return model

    def _need_fit(self) -> None:
        if not bool(self.fitted):
            raise ValueError("this PCALatent is not fitted; build it with PCALatent.fit(train_x, dim) or load a "
                             "saved one with sdeflow.load_model(path).")

    def encode(self, x: Tensor) -> Tensor:
        """Codes (B, k) of images ``x`` (B, *event), unit-std on the training images."""
        self._need_fit()
        x = self._check_x(x)
        flat = x.reshape(x.shape[0], -1)
        return (flat - self.mean.to(x.dtype)) @ self.components.to(x.dtype).T / self.scale.to(x.dtype)

    def decode(self, z: Tensor) -> Tensor:
        """Images (B, *event) of codes ``z`` (B, k)."""
        self._need_fit()
        z = self._check_z(z)
        flat = (z * self.scale.to(z.dtype)) @ self.components.to(z.dtype) + self.mean.to(z.dtype)
        return flat.reshape(z.shape[0], *self.event_shape)

    def extra_repr(self) -> str:
        return f"dim={self.latent_dim}, event_shape={self.event_shape}, fitted={bool(self.fitted)}"


def _mlp(sizes: list[int], out_act: nn.Module | None) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(nn.SiLU())
    if out_act is not None:
        layers.append(out_act)
    return nn.Sequential(*layers)


@register_model("autoencoder")
class Autoencoder(_Latent):
    """An MLP autoencoder: images (B, *event) <-> codes (B, latent_dim).

    Encoder ``d → hidden → … → latent_dim`` (``depth`` hidden layers, SiLU), decoder the mirror image
    ending in ``tanh`` (images on the ``[-1,1]`` scale); ``encode = encoder(x) / scale``,
    ``decode(z) = decoder(scale · z)``, with the ``scale`` buffer set by :func:`train_autoencoder`.

    Args:
        latent_dim: k (8–16 for the digits).
        event_shape: the image shape.
        hidden: width of the hidden layers.
        depth: hidden layers in each of the encoder and the decoder (>= 1).
        seed: seed of the initialisation (None: PyTorch's global RNG).
    """

    def __init__(self, latent_dim: int = 12, event_shape: Sequence[int] = (1, 8, 8), hidden: int = 256,
                 depth: int = 2, seed: int | None = 0) -> None:
        super().__init__()
        shape = _event(list(event_shape))
        _check_int("latent_dim", latent_dim, 1)
        _check_int("hidden", hidden, 1)
        _check_int("depth", depth, 1)
        self.record_config(latent_dim=latent_dim, event_shape=list(shape), hidden=hidden, depth=depth, seed=seed)
        self.event_shape = shape
        self.latent_dim = latent_dim
        d = math.prod(shape)
        with torch.random.fork_rng(devices=[], enabled=seed is not None):
            if seed is not None:
                torch.manual_seed(seed)
            self.encoder = _mlp([d] + [hidden] * depth + [latent_dim], None)
            self.decoder = _mlp([latent_dim] + [hidden] * depth + [d], nn.Tanh())
        self.register_buffer("scale", torch.ones(()))

    def encode(self, x: Tensor) -> Tensor:
        """Codes (B, latent_dim) of images ``x`` (B, *event)."""
        x = self._check_x(x)
        w = self.encoder[0].weight
        return self.encoder(x.reshape(x.shape[0], -1).to(w.dtype)) / self.scale.to(w.dtype)

    def decode(self, z: Tensor) -> Tensor:
        """Images (B, *event) of codes ``z`` (B, latent_dim)."""
        z = self._check_z(z)
        w = self.decoder[0].weight
        return self.decoder(z.to(w.dtype) * self.scale.to(w.dtype)).reshape(z.shape[0], *self.event_shape)

    def forward(self, x: Tensor) -> Tensor:
        """``decode(encode(x))`` (with gradients: what the reconstruction loss trains)."""
        return self.decode(self.encode(x))

    def calibrate(self, train_x: Tensor, batch_size: int = 4096) -> float:
        """Set ``scale`` so that the codes of ``train_x`` have unit std over all coordinates; returns it."""
        self.scale.fill_(1.0)
        with torch.no_grad():
            codes = torch.cat([self.encode(train_x[i : i + batch_size].to(self.scale.device))
                               for i in range(0, train_x.shape[0], batch_size)])
        s = latent_scale(codes)
        self.scale.fill_(s)
        return s


class ReconstructionLoss:
    """``‖model(x) − x‖²`` per example, summed over pixels: ``loss(model, x, generator=None) -> (B,)``."""

    def __call__(self, model: nn.Module, x: Tensor, *, generator: torch.Generator | None = None,
                 **cond: Any) -> Tensor:
        return (model(x) - x).reshape(x.shape[0], -1).square().sum(1)


def train_autoencoder(train_x: Tensor, *, latent_dim: int = 12, hidden: int = 256, depth: int = 2,
                      config: TrainConfig | None = None, init_seed: int = 0,
                      out_dir: str | os.PathLike | None = None) -> tuple[Autoencoder, TrainResult]:
    """Train an :class:`Autoencoder` on images ``train_x`` (N, *event) with :class:`sdeflow.Trainer`.

    Args:
        train_x: the training images (e.g. ``load_digits_split().train_x``).
        latent_dim, hidden, depth, init_seed: the architecture and its initialisation.
        config: the :class:`sdeflow.TrainConfig` (default: 3,000 Adam steps of 128, lr 2e-3, cosine
            decay, seed 0); the result is bitwise reproducible for a given config on one device and
            thread count. With EMA copies, the first one is calibrated and returned.
        out_dir: write the trainer's checkpoints there (the last one holds the calibrated scale, so
            ``sdeflow.load_model(out_dir)`` returns the calibrated autoencoder).

    Returns:
        ``(autoencoder, result)``: the trained, calibrated model in eval mode (EMA weights if any) and the
        :class:`sdeflow.TrainResult` (its ``seconds`` is the training time).
    """
    if config is None:
        config = TrainConfig(iters=3000, batch_size=128, lr=2e-3, warmup=50, decay="cosine", seed=0,
                             log_every=500)
    model = Autoencoder(latent_dim=latent_dim, event_shape=list(train_x.shape[1:]), hidden=hidden, depth=depth,
                        seed=init_seed)

    def calibrate(trainer: Trainer, step: int) -> dict[str, float] | None:
        if step < trainer.config.iters:
            return None
        out = {}
        for name, m in [("model", trainer.model), *trainer.ema.items()]:
            out[f"scale/{name}"] = m.calibrate(train_x)  # type: ignore[operator]
        return out

    trainer = Trainer(model, ReconstructionLoss(), train_x, config, out_dir=out_dir, callbacks=[calibrate],
                      metadata={"latent_dim": latent_dim})
    result = trainer.fit()
    if result.steps < config.iters:  # stopped early (time budget): calibrate here
        calibrate(trainer, config.iters)
        if out_dir is not None:
            trainer.save_checkpoint()
    chosen = next(iter(trainer.ema.values())) if trainer.ema else trainer.model
    chosen.eval().requires_grad_(False)
    return chosen, result  # type: ignore[return-value]


def save_latent(model: nn.Module, folder: str | os.PathLike, *, metadata: dict[str, Any] | None = None) -> Path:
    """Save a registered model (e.g. a fitted :class:`PCALatent`) as a checkpoint of step 0 in ``folder``.

    ``sdeflow.load_model(folder)`` reads it back (checksum verified, nothing unpickled).
    """
    from ..generative.checkpoint import save_checkpoint

    get_config = getattr(model, "get_config", None)
    if not callable(get_config):
        raise TypeError(f"model must be a registered sdeflow model (with get_config); got {type(model).__name__}.")
    tensors = {f"model/{k}": v for k, v in model.state_dict().items()}
    return save_checkpoint(folder, 0, tensors, {"model_config": get_config(), "ema": [],
                                                "metadata": dict(metadata or {})}, keep=1)
