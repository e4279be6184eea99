"""Raw networks ``F(x, c_noise, class_labels, extra)`` for learned denoisers, and their cost.

A raw network is what a preconditioning wrapper (:mod:`sdeflow.generative.precond`) turns into a
sampler denoiser ``D(x, σ)``. Every network here has the signature

    ``forward(x, c_noise, class_labels=None, extra=None) -> Tensor`` of ``x``'s shape

* ``x`` (B, *event): the (scaled) noisy state; :class:`MLPNet` takes vectors (B, d) (or any event
  shape, flattened), :class:`UNet` images (B, C, H, W).
* ``c_noise`` (B,) (or a scalar, repeated): the noise conditioning, e.g. ``¼ ln σ`` under EDM
  preconditioning or a scaled time ``t`` (docs/concepts.md §4). It is embedded by fixed features
  (random Fourier ``[cos 2πfc, sin 2πfc]`` with ``f ~ N(0, fourier_scale²)``, or the sinusoidal
  ``[cos ωc, sin ωc]`` with ``ω = max_period^{-k/half}``) followed by a small SiLU MLP.
* ``class_labels`` (B,) integers in ``[0, num_classes]``: a learned embedding with one extra row, the
  null class ``∅ = num_classes`` (unconditional, or a label dropped for classifier-free guidance;
  :func:`sdeflow.generative.losses.drop_labels`). ``None`` means every example is ∅. A network built
  with ``num_classes=0`` accepts only ``None``.
* ``extra`` (B, n_extra): scalar inputs (e.g. a guidance scale ``w`` fed to a consistency student),
  each embedded like the noise level (its own fixed features) and mixed by an MLP. ``None`` means
  zeros. A network built with ``n_extra=0`` accepts only ``None``.

The three embeddings are summed into one conditioning vector, which modulates every hidden layer by
a scale and shift (FiLM). The output layer starts at zero (``zero_init=True``), so a fresh network
under EDM preconditioning is ``D(x, σ) = c_skip(σ) x``.

Every network is a registered :class:`sdeflow.generative.config.Configurable` (rebuilt from its JSON
config; the Fourier frequencies are a persistent buffer, so they come back with the weights), takes
an optional ``seed`` for its initialisation, shows its parameter count in ``repr``, and has
``example_inputs(batch)`` for :func:`model_summary` (parameters and FLOPs per call).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor, nn

from .config import Configurable, register_model

__all__ = [
    "EMBEDDINGS",
    "NoiseFeatures",
    "ConditionEmbedding",
    "MLPNet",
    "UNet",
    "count_parameters",
    "flops_per_call",
    "model_summary",
]

EMBEDDINGS: tuple[str, ...] = ("fourier", "sinusoidal")


# -- checks ------------------------------------------------------------------------------------------
def _check_int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}; got {value!r}.")
    return value


def _check_pos(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
        raise ValueError(f"{name} must be a finite number > 0; got {value!r}.")
    return float(value)


def _check_embedding(value: object) -> str:
    if value not in EMBEDDINGS:
        raise ValueError(f"embedding must be one of {EMBEDDINGS}; got {value!r}.")
    return value  # type: ignore[return-value]


@contextlib.contextmanager
def _seeded(seed: int | None) -> Iterator[None]:
    """Initialise under ``torch.manual_seed(seed)`` without touching the global RNG; no-op for None."""
    if seed is None:
        yield
        return
    _check_int("seed", seed, 0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def _compiling() -> bool:
    return torch.compiler.is_compiling()


# -- embeddings --------------------------------------------------------------------------------------
class NoiseFeatures(nn.Module):
    """Fixed features of scalar inputs: (B, n) -> (B, n * num_features).

    ``"fourier"``: ``[cos 2πfc, sin 2πfc]`` with ``num_features/2`` frequencies ``f ~ N(0, scale²)``
    per input (a persistent buffer: saved with the weights). ``"sinusoidal"``: ``[cos ωc, sin ωc]`` with
    ``ω_k = max_period^{-k/half}``, k = 0..half−1 (the transformer / DDPM features; pair it with
    inputs spanning hundreds, e.g. ``999 t``).
    """

    def __init__(self, num_features: int, n_inputs: int = 1, *, kind: str = "fourier", scale: float = 1.0,
                 max_period: float = 10000.0) -> None:
        super().__init__()
        _check_int("num_features", num_features, 2)
        if num_features % 2:
            raise ValueError(f"num_features must be even (cos and sin pairs); got {num_features}.")
        self.kind = _check_embedding(kind)
        self.n_inputs = _check_int("n_inputs", n_inputs, 1)
        self.num_features = num_features
        half = num_features // 2
        if kind == "fourier":
            freqs = torch.randn(n_inputs, half) * _check_pos("fourier_scale", scale) * (2 * math.pi)
        else:
            k = torch.arange(half, dtype=torch.float64) / half
            freqs = torch.exp(-math.log(_check_pos("max_period", max_period)) * k).float().expand(n_inputs, half)
        self.register_buffer("freqs", freqs.contiguous())

    def forward(self, c: Tensor) -> Tensor:
        """``c`` (B, n_inputs) -> (B, n_inputs * num_features), computed in float32 (or float64)."""
        dt = torch.promote_types(torch.promote_types(c.dtype, self.freqs.dtype), torch.float32)
        arg = c.to(dt)[:, :, None] * self.freqs.to(dt)  # (B, n, half), at least float32 (bf16 weights too)
        return torch.cat([arg.cos(), arg.sin()], dim=-1).flatten(1)

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}, n_inputs={self.n_inputs}, num_features={self.num_features}"


class ConditionEmbedding(nn.Module):
    """The conditioning vector (B, emb_dim) from the noise level, the class label and extra scalars.

    ``SiLU(MLP(features(c_noise) + label_table[class_labels] + Linear(features(extra))))``: the label
    table has ``num_classes + 1`` rows (the last is the null class ∅); its shapes and values are checked
    here, with errors that name the argument.
    """

    def __init__(self, emb_dim: int, *, embedding: str = "fourier", fourier_scale: float = 1.0,
                 max_period: float = 10000.0, num_classes: int = 0, n_extra: int = 0,
                 extra_scale: float = 1.0) -> None:
        super().__init__()
        self.emb_dim = _check_int("emb_dim", emb_dim, 2)
        self.num_classes = _check_int("num_classes", num_classes, 0)
        self.n_extra = _check_int("n_extra", n_extra, 0)
        self.noise_features = NoiseFeatures(emb_dim, 1, kind=embedding, scale=fourier_scale, max_period=max_period)
        self.label_table = nn.Embedding(num_classes + 1, emb_dim) if num_classes else None
        if n_extra:
            self.extra_features = NoiseFeatures(emb_dim, n_extra, kind=embedding, scale=extra_scale,
                                                max_period=max_period)
            self.extra_proj = nn.Linear(n_extra * emb_dim, emb_dim)
        else:
            self.extra_features = None
            self.extra_proj = None
        self.mlp = nn.Sequential(nn.Linear(emb_dim, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim), nn.SiLU())

    def check(self, batch: int, c_noise: object, class_labels: object, extra: object) -> Tensor:
        """Check the conditioning inputs for a batch of ``batch``; returns ``c_noise`` as (B,)."""
        if not isinstance(c_noise, Tensor) or not c_noise.is_floating_point():
            got = c_noise.dtype if isinstance(c_noise, Tensor) else type(c_noise).__name__
            raise TypeError(f"c_noise must be a floating-point tensor of shape ({batch},); got {got}.")
        if c_noise.dim() == 0:
            c_noise = c_noise.expand(batch)
        elif c_noise.shape != (batch,):
            raise ValueError(f"c_noise must have shape ({batch},) (one noise level per example) or be a scalar; "
                             f"got {tuple(c_noise.shape)}.")
        if class_labels is not None:
            if self.num_classes == 0:
                raise ValueError("class_labels were given to a network built with num_classes=0; pass "
                                 "class_labels=None or build the network with num_classes=K.")
            if not isinstance(class_labels, Tensor) or class_labels.dtype.is_floating_point \
                    or class_labels.dtype.is_complex or class_labels.dtype == torch.bool:
                got = class_labels.dtype if isinstance(class_labels, Tensor) else type(class_labels).__name__
                raise TypeError(f"class_labels must be an integer tensor of shape ({batch},); got {got}.")
            if class_labels.shape != (batch,):
                raise ValueError(f"class_labels must have shape ({batch},); got {tuple(class_labels.shape)}.")
            if not _compiling() and class_labels.numel() and \
                    bool(((class_labels < 0) | (class_labels > self.num_classes)).any()):
                raise ValueError(f"class_labels must lie in [0, {self.num_classes}] (num_classes={self.num_classes}; "
                                 f"the value {self.num_classes} is the null class); got values in "
                                 f"[{int(class_labels.min())}, {int(class_labels.max())}].")
        if extra is not None:
            if self.n_extra == 0:
                raise ValueError("extra was given to a network built with n_extra=0; pass extra=None or build the "
                                 "network with n_extra=k.")
            if not isinstance(extra, Tensor) or not extra.is_floating_point():
                raise TypeError(f"extra must be a floating-point tensor of shape ({batch}, {self.n_extra}); got "
                                f"{extra.dtype if isinstance(extra, Tensor) else type(extra).__name__}.")
            if extra.shape != (batch, self.n_extra):
                raise ValueError(f"extra must have shape ({batch}, {self.n_extra}) (n_extra={self.n_extra}); "
                                 f"got {tuple(extra.shape)}.")
        return c_noise

    def forward(self, c_noise: Tensor, class_labels: Tensor | None = None, extra: Tensor | None = None) -> Tensor:
        """(B,) noise conditioning (+ labels (B,), extra (B, n_extra)) -> (B, emb_dim); inputs checked by ``check``."""
        e = self.noise_features(c_noise[:, None])
        dtype = self.mlp[0].weight.dtype
        if not torch.is_autocast_enabled(e.device.type):
            e = e.to(dtype)
        if self.label_table is not None:
            labels = class_labels if class_labels is not None else \
                torch.full((c_noise.shape[0],), self.num_classes, dtype=torch.long, device=c_noise.device)
            e = e + self.label_table(labels).to(e.dtype)
        if self.extra_proj is not None:
            ex = extra if extra is not None else torch.zeros(c_noise.shape[0], self.n_extra, device=c_noise.device)
            e = e + self.extra_proj(self.extra_features(ex).to(e.dtype))
        return self.mlp(e)


def _param_dtype(module: nn.Module) -> torch.dtype:
    for p in module.parameters():
        if p.is_floating_point():
            return p.dtype
    return torch.float32


class _RawNet(Configurable, nn.Module):
    """What MLPNet and UNet share: input checks, conditioning, the parameter count in ``repr``."""

    event_shape: tuple[int, ...]
    cond: ConditionEmbedding

    @property
    def num_classes(self) -> int:
        """Number of real classes K (the null class ∅ is label K); 0 for an unconditional network."""
        return self.cond.num_classes

    @property
    def null_label(self) -> int:
        """The label of the null class ∅ (= num_classes)."""
        return self.cond.num_classes

    @property
    def n_extra(self) -> int:
        """Number of extra scalar inputs."""
        return self.cond.n_extra

    def _check_x(self, x: object) -> Tensor:
        shape = "(B, " + ", ".join(map(str, self.event_shape)) + ")"
        if not isinstance(x, Tensor) or not x.is_floating_point():
            raise TypeError(f"x must be a floating-point tensor of shape {shape}; got "
                            f"{x.dtype if isinstance(x, Tensor) else type(x).__name__}.")
        if x.dim() != 1 + len(self.event_shape) or tuple(x.shape[1:]) != self.event_shape:
            raise ValueError(f"x must have shape {shape} for this {type(self).__name__}; got {tuple(x.shape)}.")
        return x

    def _inputs(self, x: object, c_noise: object, class_labels: object, extra: object) -> tuple[Tensor, Tensor]:
        """Checked input (cast to the weights' dtype unless autocast runs) and the conditioning vector."""
        x = self._check_x(x)
        c = self.cond.check(x.shape[0], c_noise, class_labels, extra)
        emb = self.cond(c, class_labels, extra)  # type: ignore[arg-type]
        if not torch.is_autocast_enabled(x.device.type):
            x = x.to(_param_dtype(self))
        return x, emb

    def example_inputs(self, batch: int = 1) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """``(args, kwargs)`` for one call on a batch of ``batch`` (labels and extra filled when the net takes them)."""
        p = next(self.parameters())
        args = (torch.zeros(batch, *self.event_shape, device=p.device), torch.zeros(batch, device=p.device))
        kwargs: dict[str, Any] = {}
        if self.num_classes:
            kwargs["class_labels"] = torch.zeros(batch, dtype=torch.long, device=p.device)
        if self.n_extra:
            kwargs["extra"] = torch.zeros(batch, self.n_extra, device=p.device)
        return args, kwargs

    def extra_repr(self) -> str:
        cfg = self.get_config()
        shown = ", ".join(f"{k}={v!r}" for k, v in cfg.items() if k != "kind")
        return f"parameters={count_parameters(self):,}, {shown}"


def _cond_kwargs(emb_dim: int, embedding: str, fourier_scale: float, max_period: float, num_classes: int,
                 n_extra: int, extra_scale: float) -> dict[str, Any]:
    return {"embedding": embedding, "fourier_scale": fourier_scale, "max_period": max_period,
            "num_classes": num_classes, "n_extra": n_extra, "extra_scale": extra_scale}


@register_model("mlp")
class MLPNet(_RawNet):
    """A residual SiLU MLP ``F(x, c_noise, class_labels, extra)`` for low-dimensional data.

    ``h = W_in x + U e``; ``depth`` times ``h ← h + W_k SiLU(h·(1 + γ_k(e)) + β_k(e))`` (plain: ``h ←``
    instead of ``h ← h +``); output ``W_out SiLU(h)``, with ``e`` the conditioning vector
    (:class:`ConditionEmbedding`).

    Args:
        dim: the data dimension d, or an event shape (a list/tuple) whose inputs are flattened.
        hidden: width of the hidden layers.
        depth: number of hidden (hidden × hidden) layers.
        emb_dim: width of the conditioning embedding (and number of noise features).
        embedding: ``"fourier"`` (random Fourier features, frequencies ``~ N(0, fourier_scale²)``) or
            ``"sinusoidal"`` (geometric frequencies down to ``1/max_period``) of ``c_noise``.
        fourier_scale: std of the Fourier frequencies (cycles per unit of ``c_noise``). The default 1.0 suits
            ``c_noise = ¼ ln σ`` (EDM; σ ∈ [0.002, 80] spans 2.6 units) and ``c_noise = t ∈ [0, 1]``.
        max_period: the sinusoidal features' longest period.
        num_classes: number of classes K (labels 0..K−1, and K = ∅); 0 for no labels.
        n_extra: number of extra scalar inputs; 0 for none.
        extra_scale: std of the extra inputs' Fourier frequencies, in cycles per unit; about 2.5 / (the
            inputs' range), like the default for ``c_noise`` — e.g. 0.25 for a guidance scale w ∈ [0, 10].
        modulation: how the conditioning reaches the hidden layers: ``"film"`` (scale and shift per layer,
            the default), ``"shift"`` (``β_k`` only; about half the extra cost) or ``"input"`` (only through
            ``U e`` at the input; the cost of a plain MLP). Per example, ``"film"`` costs
            ``depth·hidden·(hidden + 2·emb_dim)`` multiply-adds against ``depth·hidden²`` for ``"input"``.
        residual: residual blocks (default) or a plain MLP.
        zero_init: start the output layer at zero (F = 0).
        seed: seed for the initialisation (None: PyTorch's global RNG).

    Shapes: ``x`` (B, *dim) -> (B, *dim).
    """

    def __init__(self, dim: int | Sequence[int] = 2, hidden: int = 256, depth: int = 3, emb_dim: int = 64, *,
                 embedding: str = "fourier", fourier_scale: float = 1.0, max_period: float = 10000.0,
                 num_classes: int = 0, n_extra: int = 0, extra_scale: float = 1.0, modulation: str = "film",
                 residual: bool = True, zero_init: bool = True, seed: int | None = None) -> None:
        super().__init__()
        if isinstance(dim, (list, tuple)):
            shape = tuple(_check_int("dim", s, 1) for s in dim)
            if not shape:
                raise ValueError("dim must be a positive integer or a non-empty event shape; got ().")
        else:
            shape = (_check_int("dim", dim, 1),)
        _check_int("hidden", hidden, 1)
        _check_int("depth", depth, 0)
        if modulation not in ("film", "shift", "input"):
            raise ValueError(f"modulation must be 'film', 'shift' or 'input'; got {modulation!r}.")
        if not isinstance(residual, bool) or not isinstance(zero_init, bool):
            raise TypeError("residual and zero_init must be True or False.")
        self.record_config(dim=list(shape) if isinstance(dim, (list, tuple)) else dim, hidden=hidden, depth=depth,
                           emb_dim=emb_dim, embedding=embedding, fourier_scale=fourier_scale, max_period=max_period,
                           num_classes=num_classes, n_extra=n_extra, extra_scale=extra_scale,
                           modulation=modulation, residual=residual, zero_init=zero_init, seed=seed)
        self.event_shape = shape
        self.residual = residual
        self.modulation = modulation
        self.depth = depth
        self.hidden = hidden
        d = math.prod(shape)
        with _seeded(seed):
            self.cond = ConditionEmbedding(emb_dim, **_cond_kwargs(emb_dim, embedding, fourier_scale, max_period,
                                                                   num_classes, n_extra, extra_scale))
            self.inp = nn.Linear(d, hidden)
            self.inp_emb = nn.Linear(emb_dim, hidden)
            self.layers = nn.ModuleList(nn.Linear(hidden, hidden) for _ in range(depth))
            width = {"film": 2 * hidden, "shift": hidden, "input": 0}[modulation]
            self.film = nn.ModuleList(nn.Linear(emb_dim, width) for _ in range(depth if width else 0))
            self.out = nn.Linear(hidden, d)
            if zero_init:
                nn.init.zeros_(self.out.weight)
                nn.init.zeros_(self.out.bias)

    def forward(self, x: Tensor, c_noise: Tensor, class_labels: Tensor | None = None,
                extra: Tensor | None = None) -> Tensor:
        """``F(x, c_noise, class_labels, extra)``: ``x`` (B, *dim), ``c_noise`` (B,) -> (B, *dim)."""
        h_in, e = self._inputs(x, c_noise, class_labels, extra)
        h = self.inp(h_in.flatten(1)) + self.inp_emb(e)
        for k, layer in enumerate(self.layers):
            if self.modulation == "film":
                gamma, beta = self.film[k](e).chunk(2, dim=1)
                a = torch.addcmul(beta, h, 1 + gamma)
            elif self.modulation == "shift":
                a = h + self.film[k](e)
            else:
                a = h
            z = layer(F.silu(a))
            h = h + z if self.residual else z
        return self.out(F.silu(h)).reshape(x.shape)


# -- U-Net ---------------------------------------------------------------------------------------------
def _groups(channels: int, groups: int) -> int:
    return math.gcd(channels, groups)


class _ResBlock(nn.Module):
    """GroupNorm–SiLU–conv, FiLM by the embedding, GroupNorm–SiLU–dropout–conv, plus a (1×1) skip."""

    def __init__(self, c_in: int, c_out: int, emb_dim: int, groups: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(_groups(c_in, groups), c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.film = nn.Linear(emb_dim, 2 * c_out)
        self.norm2 = nn.GroupNorm(_groups(c_out, groups), c_out)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: Tensor, e: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        gamma, beta = self.film(e)[:, :, None, None].chunk(2, dim=1)
        h = F.silu(self.norm2(h) * (1 + gamma) + beta)
        h = self.conv2(self.dropout(h))
        return (self.skip(x) + h) * (1 / math.sqrt(2))


@register_model("unet")
class UNet(_RawNet):
    """A small U-Net ``F(x, c_noise, class_labels, extra)`` for images (B, C, H, W).

    ``conv_in``; per resolution level ``i`` (channels[i]) ``num_res_blocks`` residual blocks (GroupNorm,
    SiLU, 3×3 convs, FiLM by the conditioning vector) then a 2× average-pool downsampling (not after the
    last level); a middle block; the mirrored path up (nearest 2× upsampling, skip connections
    concatenated); GroupNorm–SiLU–``conv_out`` (zero-initialised). No attention: built for small images
    (8×8 digits, latents) on CPU.

    Args:
        in_channels: C.
        image_size: H = W (an int) or ``[H, W]``; each must be divisible by ``2^(len(channels) − 1)``.
        channels: channels per resolution level.
        num_res_blocks: residual blocks per level (down path; the up path has one more per level).
        emb_dim: width of the conditioning embedding.
        embedding, fourier_scale, max_period, num_classes, n_extra, extra_scale, zero_init, seed: as in
            :class:`MLPNet`.
        groups: GroupNorm groups (gcd with each channel count).
        dropout: dropout rate in the residual blocks.

    Shapes: ``x`` (B, C, H, W) -> (B, C, H, W).
    """

    def __init__(self, in_channels: int = 1, image_size: int | Sequence[int] = 8,
                 channels: Sequence[int] = (32, 64), num_res_blocks: int = 1, emb_dim: int = 128, *,
                 embedding: str = "fourier", fourier_scale: float = 1.0, max_period: float = 10000.0,
                 num_classes: int = 0, n_extra: int = 0, extra_scale: float = 1.0, groups: int = 8,
                 dropout: float = 0.0, zero_init: bool = True, seed: int | None = None) -> None:
        super().__init__()
        _check_int("in_channels", in_channels, 1)
        if isinstance(image_size, (list, tuple)):
            if len(image_size) != 2:
                raise ValueError(f"image_size must be an int or [H, W]; got {image_size!r}.")
            hw = (_check_int("image_size", image_size[0], 1), _check_int("image_size", image_size[1], 1))
        else:
            hw = (_check_int("image_size", image_size, 1),) * 2
        if not isinstance(channels, (list, tuple)) or not channels:
            raise ValueError(f"channels must be a non-empty list of channel counts; got {channels!r}.")
        chans = [_check_int("channels", c, 1) for c in channels]
        factor = 2 ** (len(chans) - 1)
        if hw[0] % factor or hw[1] % factor:
            raise ValueError(f"image_size {hw} must be divisible by 2^(len(channels) - 1) = {factor} for "
                             f"{len(chans)} resolution levels; use fewer channels entries or a larger image.")
        _check_int("num_res_blocks", num_res_blocks, 1)
        _check_int("groups", groups, 1)
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
            raise ValueError(f"dropout must be a number in [0, 1); got {dropout!r}.")
        self.record_config(in_channels=in_channels,
                           image_size=list(hw) if isinstance(image_size, (list, tuple)) else image_size,
                           channels=chans, num_res_blocks=num_res_blocks, emb_dim=emb_dim, embedding=embedding,
                           fourier_scale=fourier_scale, max_period=max_period, num_classes=num_classes,
                           n_extra=n_extra, extra_scale=extra_scale, groups=groups, dropout=dropout,
                           zero_init=zero_init, seed=seed)
        self.event_shape = (in_channels, *hw)
        with _seeded(seed):
            self.cond = ConditionEmbedding(emb_dim, **_cond_kwargs(emb_dim, embedding, fourier_scale, max_period,
                                                                   num_classes, n_extra, extra_scale))
            self.conv_in = nn.Conv2d(in_channels, chans[0], 3, padding=1)
            self.down = nn.ModuleList()
            skips = [chans[0]]
            c = chans[0]
            for i, ch in enumerate(chans):
                level = nn.ModuleList()
                for _ in range(num_res_blocks):
                    level.append(_ResBlock(c, ch, emb_dim, groups, dropout))
                    c = ch
                    skips.append(c)
                self.down.append(level)
                if i < len(chans) - 1:
                    skips.append(c)  # the pooled map is a skip too
            self.mid = _ResBlock(c, c, emb_dim, groups, dropout)
            self.up = nn.ModuleList()
            for ch in reversed(chans):
                level = nn.ModuleList()
                for _ in range(num_res_blocks + 1):
                    level.append(_ResBlock(c + skips.pop(), ch, emb_dim, groups, dropout))
                    c = ch
                self.up.append(level)
            self.norm_out = nn.GroupNorm(_groups(c, groups), c)
            self.conv_out = nn.Conv2d(c, in_channels, 3, padding=1)
            if zero_init:
                nn.init.zeros_(self.conv_out.weight)
                nn.init.zeros_(self.conv_out.bias)
        self.levels = len(chans)

    def forward(self, x: Tensor, c_noise: Tensor, class_labels: Tensor | None = None,
                extra: Tensor | None = None) -> Tensor:
        """``F(x, c_noise, class_labels, extra)``: ``x`` (B, C, H, W), ``c_noise`` (B,) -> (B, C, H, W)."""
        h, e = self._inputs(x, c_noise, class_labels, extra)
        h = self.conv_in(h)
        skips = [h]
        for i, level in enumerate(self.down):
            for block in level:
                h = block(h, e)
                skips.append(h)
            if i < self.levels - 1:
                h = F.avg_pool2d(h, 2)
                skips.append(h)
        h = self.mid(h, e)
        for i, level in enumerate(self.up):
            for block in level:
                h = block(torch.cat([h, skips.pop()], dim=1), e)
            if i < self.levels - 1:
                h = F.interpolate(h, scale_factor=2.0, mode="nearest")
        return self.conv_out(F.silu(self.norm_out(h)))


# -- cost --------------------------------------------------------------------------------------------
def count_parameters(model: nn.Module, *, trainable_only: bool = False) -> int:
    """Number of parameter elements (shared parameters counted once); buffers excluded."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def _example(model: nn.Module, args: tuple, kwargs: dict, batch: int) -> tuple[tuple, dict]:
    if args or kwargs:
        return args, kwargs
    make = getattr(model, "example_inputs", None)
    if make is None:
        raise ValueError(f"{type(model).__name__} has no example_inputs(batch); pass example inputs, "
                         f"e.g. flops_per_call(model, x, c_noise).")
    return make(batch)


def flops_per_call(model: nn.Module, *args: Any, batch: int = 1, **kwargs: Any) -> int:
    """Floating-point operations of one call ``model(*args, **kwargs)`` (no gradient).

    Counted by :class:`torch.utils.flop_counter.FlopCounterMode`: matrix products and convolutions,
    2 FLOPs per multiply-add; elementwise operations (activations, norms) are not counted. Without
    inputs, ``model.example_inputs(batch)`` supplies a batch of ``batch``.
    """
    from torch.utils.flop_counter import FlopCounterMode

    args, kwargs = _example(model, args, kwargs, batch)
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(*args, **kwargs)
    return int(counter.get_total_flops())


def model_summary(model: nn.Module, *args: Any, batch: int = 1, **kwargs: Any) -> dict[str, Any]:
    """Parameters and FLOPs of ``model`` for one call on the given inputs (or ``example_inputs(batch)``).

    Returns ``{"model", "parameters", "trainable", "flops", "macs", "batch", "flops_per_example"}``
    (FLOPs as in :func:`flops_per_call`; ``macs = flops / 2``).
    """
    args, kwargs = _example(model, args, kwargs, batch)
    b = args[0].shape[0] if args and isinstance(args[0], Tensor) and args[0].dim() else 1
    flops = flops_per_call(model, *args, **kwargs)
    return {"model": type(model).__name__, "parameters": count_parameters(model),
            "trainable": count_parameters(model, trainable_only=True), "flops": flops, "macs": flops // 2,
            "batch": b, "flops_per_example": flops / max(b, 1)}
