"""One training loop for every model in the package: optimiser, schedule, EMA copies, checkpoints, resume.

:class:`Trainer` minimises the mean of a per-example loss ``loss(model, x0, generator=g, **cond) -> (B,)``
(the losses of :mod:`sdeflow.generative.losses`, or your own) over batches drawn from ``data``, with

* Adam or AdamW, linear learning-rate warm-up and a cosine / linear / inverse-square-root decay
  (a pure function of the step, so nothing about it needs saving), gradient clipping;
* any number of EMA copies (:class:`EMA`): a fixed rate or a half-life in samples (EDM's form
  ``β = 0.5^(batch / halflife)``), optional warm-up, buffers averaged too;
* evaluation callbacks every ``eval_every`` steps, a tqdm bar with the loss and it/s, an iteration
  and a wall-clock budget, opt-in ``torch.compile`` of the model's forward and bf16 autocast (the
  loss arithmetic stays in float32: the preconditioners upcast the network's output);
* checkpoints (:mod:`sdeflow.generative.checkpoint`): safetensors for every tensor — the model, each
  EMA copy, the optimiser state, the random generators, the data order — and a JSON sidecar with the
  configs, the step and a checksum, written atomically; the last ``keep`` are kept.

Determinism: the model is built by the caller (seed it: ``torch.manual_seed``); the trainer draws
data order and loss noise from two generators seeded from ``config.seed``, so the same seed gives
bitwise-identical weights on the same device and thread count, and a run stopped at step k and
resumed (``Trainer(..., resume=True)``) ends bitwise equal to an uninterrupted one. Under torchrun
(``sdeflow.distributed``) every rank draws the same global batch and trains on its shard, DDP averages
the gradients, and each rank's loss noise comes from its own stream (reproducible for a given seed and
world size, though not equal to a one-process run's noise).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn

from .. import distributed as sfd
from ..ensemble import seeded_generator

__all__ = ["EMA", "TrainConfig", "Trainer", "TrainResult", "lr_at"]

Loss = Callable[..., Tensor]
Batch = tuple[Tensor, dict[str, Tensor]]


# -- configuration -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class EMA:
    """An exponential moving average of the weights, ``p_ema ← β p_ema + (1 − β) p`` after every step.

    Give exactly one of ``beta`` (a fixed rate, e.g. 0.999) and ``halflife`` (in training samples:
    ``β = 0.5^(batch / halflife)``, EDM's ``ema_halflife_kimg`` form, so the average forgets at the same
    rate whatever the batch size).

    Attributes:
        name: the copy's name (checkpoint keys, ``Trainer.ema[name]``, ``load_model(weights=name)``).
        beta: fixed rate in [0, 1).
        halflife: half-life in samples (> 0).
        warmup: for ``beta``: use ``min(beta, (1 + k)/(10 + k))`` at step k, so early averages are not
            dominated by the random initial weights; for ``halflife``: a ratio r > 0 capping the
            half-life at ``r ·`` (samples seen), EDM's ramp-up (0.05 there). ``0``/``False``: off.
    """

    name: str = "ema"
    beta: float | None = None
    halflife: float | None = None
    warmup: float = 0.0

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name or "/" in self.name:
            raise ValueError(f"EMA name must be a non-empty string without '/'; got {self.name!r}.")
        if (self.beta is None) == (self.halflife is None):
            raise ValueError(f"EMA {self.name!r}: give exactly one of beta= (e.g. 0.999) and halflife= (samples).")
        if self.beta is not None and not (isinstance(self.beta, (int, float)) and 0 <= self.beta < 1):
            raise ValueError(f"EMA {self.name!r}: beta must be in [0, 1); got {self.beta!r}.")
        if self.halflife is not None and not (isinstance(self.halflife, (int, float)) and self.halflife > 0):
            raise ValueError(f"EMA {self.name!r}: halflife must be > 0 (samples); got {self.halflife!r}.")
        if not (isinstance(self.warmup, (int, float)) and self.warmup >= 0):
            raise ValueError(f"EMA {self.name!r}: warmup must be >= 0; got {self.warmup!r}.")

    def beta_at(self, step: int, batch_size: int) -> float:
        """The rate used after step ``step`` (0-based) with ``batch_size`` samples per step."""
        if self.beta is not None:
            return min(self.beta, (1 + step) / (10 + step)) if self.warmup else float(self.beta)
        halflife = float(self.halflife)
        if self.warmup:
            halflife = min(halflife, self.warmup * (step + 1) * batch_size)
        return 0.5 ** (batch_size / max(halflife, 1e-8))


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run needs besides the model, the loss and the data (JSON in checkpoints).

    Attributes:
        iters: total optimiser steps.
        batch_size: examples per step (the global batch under torchrun).
        lr, optimizer, betas, weight_decay, eps: ``torch.optim.Adam`` / ``AdamW``.
        warmup: steps of linear learning-rate warm-up from 0.
        decay: ``"none"``, ``"cosine"`` (to ``min_lr_ratio · lr`` at ``iters``), ``"linear"`` or
            ``"inverse_sqrt"`` (``lr·sqrt(warmup/step)`` after warm-up, EDM2's form).
        grad_clip: clip the global gradient norm to this value (None: off).
        ema: the EMA copies (:class:`EMA`).
        seed: seeds the data order and the loss noise.
        eval_every, log_every, checkpoint_every: periods in steps (0: never; a checkpoint is also
            written at the end when the trainer has an ``out_dir``).
        keep: checkpoints kept in ``out_dir`` (the newest).
        time_budget: stop after this many seconds of training (None: no limit). A run stopped by the
            clock is resumable but is not bitwise-reproducible (where it stops depends on the machine).
        device: where the model and the data live.
        compile: run the loss's forward through ``torch.compile(model)`` (the weights are shared).
        autocast: ``"bf16"`` runs the forward under ``torch.autocast`` in bfloat16; None: off.
        progress: a tqdm bar with the loss and it/s.
    """

    iters: int = 1000
    batch_size: int = 256
    lr: float = 1e-3
    optimizer: Literal["adam", "adamw"] = "adam"
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    eps: float = 1e-8
    warmup: int = 0
    decay: Literal["none", "cosine", "linear", "inverse_sqrt"] = "none"
    min_lr_ratio: float = 0.0
    grad_clip: float | None = None
    ema: tuple[EMA, ...] = ()
    seed: int = 0
    eval_every: int = 0
    log_every: int = 50
    checkpoint_every: int = 0
    keep: int = 3
    time_budget: float | None = None
    device: str = "cpu"
    compile: bool = False
    autocast: Literal["bf16"] | None = None
    progress: bool = False

    def __post_init__(self) -> None:
        for name in ("iters", "batch_size", "log_every", "eval_every", "checkpoint_every", "warmup", "seed"):
            v = getattr(self, name)
            low = 1 if name in ("iters", "batch_size") else 0
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                raise ValueError(f"{name} must be an int >= {low}; got {v!r}.")
        if isinstance(self.keep, bool) or not isinstance(self.keep, int) or self.keep < 1:
            raise ValueError(f"keep must be an int >= 1 (checkpoints kept); got {self.keep!r}.")
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be a finite number > 0; got {self.lr!r}.")
        if self.optimizer not in ("adam", "adamw"):
            raise ValueError(f"optimizer must be 'adam' or 'adamw'; got {self.optimizer!r}.")
        if self.decay not in ("none", "cosine", "linear", "inverse_sqrt"):
            raise ValueError(f"decay must be 'none', 'cosine', 'linear' or 'inverse_sqrt'; got {self.decay!r}.")
        if not 0 <= self.min_lr_ratio <= 1:
            raise ValueError(f"min_lr_ratio must be in [0, 1]; got {self.min_lr_ratio!r}.")
        if self.grad_clip is not None and not (isinstance(self.grad_clip, (int, float)) and self.grad_clip > 0):
            raise ValueError(f"grad_clip must be > 0 or None; got {self.grad_clip!r}.")
        if self.time_budget is not None and not (isinstance(self.time_budget, (int, float)) and self.time_budget > 0):
            raise ValueError(f"time_budget must be > 0 seconds or None; got {self.time_budget!r}.")
        if self.autocast not in (None, "bf16"):
            raise ValueError(f"autocast must be None or 'bf16'; got {self.autocast!r}.")
        ema = tuple(self.ema) if isinstance(self.ema, (list, tuple)) else (self.ema,)
        if not all(isinstance(e, EMA) for e in ema):
            raise TypeError("ema must be a sequence of sdeflow.EMA(...) specs.")
        if len({e.name for e in ema}) != len(ema):
            raise ValueError(f"EMA names must be distinct; got {[e.name for e in ema]}.")
        object.__setattr__(self, "ema", ema)
        betas = self.betas
        if not isinstance(betas, (tuple, list)) or len(betas) != 2 or not all(
                isinstance(b, (int, float)) and not isinstance(b, bool) and 0 <= b < 1 for b in betas):
            raise ValueError(f"betas must be two numbers in [0, 1) (Adam's moment rates); got {betas!r}.")
        object.__setattr__(self, "betas", tuple(float(b) for b in betas))
        for name in ("weight_decay", "eps"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise ValueError(f"{name} must be a finite number >= 0; got {v!r}.")
        try:
            torch.device(self.device)
        except (RuntimeError, TypeError) as err:
            raise ValueError(f"device must be a torch device such as 'cpu' or 'cuda'; got {self.device!r}.") from err

    def to_json(self) -> dict[str, Any]:
        """A JSON-able dict (the EMA specs as dicts)."""
        d = asdict(self)
        d["ema"] = [asdict(e) for e in self.ema]
        d["betas"] = list(self.betas)
        return d

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> TrainConfig:
        """Inverse of :meth:`to_json`."""
        d = dict(d)
        d["ema"] = tuple(EMA(**e) for e in d.get("ema", ()))
        d["betas"] = tuple(d.get("betas", (0.9, 0.999)))
        return cls(**d)


def lr_at(config: TrainConfig, step: int) -> float:
    """The learning rate of step ``step`` (0-based): warm-up, then the decay, as a pure function."""
    lr, w, n = config.lr, config.warmup, config.iters
    if w and step < w:
        return lr * (step + 1) / w
    if config.decay == "none":
        return lr
    if config.decay == "inverse_sqrt":
        return lr * math.sqrt(max(w, 1) / max(step + 1, max(w, 1)))
    frac = min(1.0, (step - w) / max(1, n - w))
    lo = config.min_lr_ratio
    if config.decay == "cosine":
        return lr * (lo + (1 - lo) * 0.5 * (1 + math.cos(math.pi * frac)))
    return lr * (lo + (1 - lo) * (1 - frac))


# -- data ---------------------------------------------------------------------------------------------
class _Data:
    """Batches from a tensor dataset (epochs of random permutations) or a sampling function."""

    def __init__(self, data: object, batch_size: int, generator: torch.Generator, device: torch.device) -> None:
        self.batch_size, self.generator, self.device = batch_size, generator, device
        self.fn: Callable[..., object] | None = None
        self.arrays: dict[str, Tensor] = {}
        if callable(data) and not isinstance(data, Tensor):
            self.fn = data
        else:
            if isinstance(data, Tensor):
                arrays = {"x": data}
            elif isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(a, Tensor) for a in data):
                arrays = {"x": data[0], "class_labels": data[1]}
            elif isinstance(data, Mapping) and "x" in data:
                arrays = dict(data)
            else:
                raise TypeError("data must be a tensor (N, *event), a pair (x, class_labels), a dict with key 'x' "
                                "(other keys: per-example conditioning), or a function (batch_size, generator) -> "
                                f"x or (x, cond); got {type(data).__name__}.")
            n = arrays["x"].shape[0] if arrays["x"].dim() else 0
            for k, v in arrays.items():
                if not isinstance(v, Tensor) or v.dim() == 0 or v.shape[0] != n:
                    raise ValueError(f"data[{k!r}] must be a tensor with {n} rows (one per example) like data['x'].")
            if n < batch_size:
                raise ValueError(f"the dataset has {n} examples, fewer than batch_size={batch_size}; lower batch_size.")
            x = arrays["x"]
            if x.is_floating_point() and x.device.type != "meta" and not bool(torch.isfinite(x).all()):
                raise ValueError("data['x'] contains NaN or infinite values; clean the data set before training.")
            self.arrays = {k: v.to(device) for k, v in arrays.items()}
            self.n = n
            self.perm = torch.randperm(n, generator=generator)
            self.pos = 0

    def next(self) -> Batch:
        if self.fn is not None:
            out = self.fn(self.batch_size, self.generator)
            x, cond = (out if isinstance(out, tuple) else (out, {}))
            if not isinstance(x, Tensor) or x.shape[0] != self.batch_size:
                raise ValueError(f"data(batch_size, generator) must return a tensor with batch_size={self.batch_size} "
                                 f"rows (or a pair (x, cond)); got {type(x).__name__} "
                                 f"{tuple(x.shape) if isinstance(x, Tensor) else ''}.")
            return x.to(self.device), {k: v.to(self.device) for k, v in dict(cond).items()}
        if self.pos + self.batch_size > self.n:  # a new epoch; the last partial batch is dropped
            self.perm = torch.randperm(self.n, generator=self.generator)
            self.pos = 0
        idx = self.perm[self.pos : self.pos + self.batch_size].to(self.device)
        self.pos += self.batch_size
        batch = {k: v[idx] for k, v in self.arrays.items()}
        return batch.pop("x"), batch

    def state(self) -> tuple[dict[str, Tensor], dict[str, Any]]:
        tensors = {"rng/data": self.generator.get_state()}
        if self.fn is not None:
            return tensors, {}
        tensors["data/perm"] = self.perm.clone()
        return tensors, {"pos": self.pos}

    def load(self, tensors: Mapping[str, Tensor], meta: Mapping[str, Any]) -> None:
        self.generator.set_state(tensors["rng/data"])
        if self.fn is None:
            self.perm = tensors["data/perm"].clone()
            self.pos = int(meta["pos"])


# -- the trainer -----------------------------------------------------------------------------------------
@dataclass
class TrainResult:
    """What :meth:`Trainer.fit` returns.

    Attributes:
        steps: the step count reached.
        seconds: training wall time of this call (evaluation callbacks excluded).
        history: logged rows ``{"step", "loss", "lr", "it_per_s"}`` and evaluation rows ``{"step", "eval": ...}``.
        stopped: ``"iters"``, ``"until"`` or ``"time_budget"``.
        checkpoint: the last checkpoint written (None without ``out_dir``).
    """

    steps: int
    seconds: float
    history: list[dict[str, Any]] = field(default_factory=list)
    stopped: str = "iters"
    checkpoint: Path | None = None


class Trainer:
    """Train ``model`` on ``data`` by minimising ``loss`` (see the module docstring).

    Args:
        model: the module trained (e.g. ``EDMPrecond(MLPNet(...))``); registered models (with a
            ``get_config``) can be rebuilt by :func:`sdeflow.load_model` from the checkpoints.
        loss: ``loss(model, x0, generator=g, **cond) -> (B,)`` per-example values. A loss that needs the
            training state defines ``bind(trainer)`` (called once, here: e.g. a consistency loss takes its
            ``target`` from ``trainer.ema`` and reads ``trainer.step``) and may define
            ``ema_beta(name, step) -> float | None`` to set an EMA copy's rate at a step (consistency
            training's μ(k)); None keeps the copy's own :class:`EMA` rule.
        data: a tensor (N, *event); a pair ``(x, class_labels)``; a dict ``{"x": ..., other conditioning
            tensors}``; or a function ``data(batch_size, generator) -> x`` or ``(x, cond)`` (fresh samples
            every step, e.g. toy data).
        config: :class:`TrainConfig`.
        out_dir: folder for checkpoints (created); None: no checkpoints.
        callbacks: ``fn(trainer, step) -> dict | None`` called every ``config.eval_every`` steps (and at
            the end); returned dicts are logged in the history with the step.
        metadata: JSON-able facts saved in every checkpoint (e.g. the data set, the SDE, σ_data).
        resume: continue from the newest complete checkpoint in ``out_dir`` if there is one.
    """

    def __init__(
        self,
        model: nn.Module,
        loss: Loss,
        data: object,
        config: TrainConfig | None = None,
        *,
        out_dir: str | Path | None = None,
        callbacks: Sequence[Callable[[Trainer, int], dict | None]] = (),
        metadata: Mapping[str, Any] | None = None,
        resume: bool = False,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module; got {type(model).__name__}.")
        if not callable(loss):
            raise TypeError(f"loss must be callable as loss(model, x0, generator=g, **cond); "
                            f"got {type(loss).__name__}.")
        self.config = config = config if config is not None else TrainConfig()
        if not isinstance(config, TrainConfig):
            raise TypeError(f"config must be a sdeflow.TrainConfig; got {type(config).__name__}.")
        self.device = torch.device(config.device)
        self.model = model.to(self.device)
        self.loss = loss
        self.callbacks = list(callbacks)
        self.metadata = dict(metadata or {})
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.rank, self.world_size = sfd.world()
        if config.batch_size % self.world_size:
            raise ValueError(f"batch_size={config.batch_size} does not split over {self.world_size} ranks; "
                             f"use a multiple of {self.world_size}.")
        params = [p for p in self.model.parameters() if p.requires_grad]
        if not params:
            raise ValueError("model has no parameters that require grad: there is nothing to train.")
        opt_cls = torch.optim.AdamW if config.optimizer == "adamw" else torch.optim.Adam
        self.optimizer = opt_cls(params, lr=config.lr, betas=config.betas, weight_decay=config.weight_decay,
                                 eps=config.eps)
        self.ema: dict[str, nn.Module] = {}
        for spec in config.ema:
            copy_ = copy.deepcopy(self.model).eval()
            copy_.requires_grad_(False)
            self.ema[spec.name] = copy_
        self._data = _Data(data, config.batch_size, seeded_generator((config.seed, 1), "cpu"), self.device)
        self.loss_generator = seeded_generator((config.seed, 2, self.rank), self.device)
        self.step = 0
        self.history: list[dict[str, Any]] = []
        # A loss that needs the training state (the step, the EMA copies: a consistency loss's target)
        # declares bind(trainer); it may also steer an EMA copy's rate with ema_beta(name, step).
        bind = getattr(loss, "bind", None)
        if callable(bind):
            bind(self)
        override = getattr(loss, "ema_beta", None)
        self._ema_override = override if callable(override) else None
        self._train_model = sfd.wrap_ddp(self.model, self.device)
        self._forward_model: nn.Module = self._train_model
        if config.compile:
            self._forward_model = torch.compile(self._train_model)
        if resume:
            if self.out_dir is None:
                raise ValueError("resume=True needs out_dir (the folder holding the checkpoints).")
            from .checkpoint import latest_checkpoint

            found = latest_checkpoint(self.out_dir)
            if found is not None:
                self.load_checkpoint(found)

    # -- one step --------------------------------------------------------------------------------------
    def _batch(self) -> Batch:
        x, cond = self._data.next()
        if self.world_size > 1:
            x = sfd.shard(x)
            cond = {k: sfd.shard(v) for k, v in cond.items()}
        return x, cond

    def _step(self) -> Tensor:
        cfg = self.config
        x, cond = self._batch()
        lr = lr_at(cfg, self.step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.zero_grad(set_to_none=True)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=cfg.autocast == "bf16"):
            per_example = self.loss(self._forward_model, x, generator=self.loss_generator, **cond)
        if not isinstance(per_example, Tensor) or per_example.dim() != 1 or per_example.shape[0] != x.shape[0]:
            raise ValueError(f"loss(model, x0, ...) must return per-example values of shape ({x.shape[0]},); got "
                             f"{tuple(per_example.shape) if isinstance(per_example, Tensor) else type(per_example)}.")
        loss = per_example.float().mean()
        loss.backward()
        if cfg.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
        self.optimizer.step()
        with torch.no_grad():
            for spec in cfg.ema:
                beta = self._ema_override(spec.name, self.step) if self._ema_override is not None else None
                _ema_update(self.ema[spec.name], self.model, spec.beta_at(self.step, cfg.batch_size)
                            if beta is None else float(beta))
        self.step += 1
        return loss.detach()

    # -- the loop --------------------------------------------------------------------------------------
    def fit(self, until: int | None = None) -> TrainResult:
        """Train to ``config.iters`` steps (or to ``until`` < iters, e.g. to stop and resume later)."""
        cfg = self.config
        end = cfg.iters if until is None else int(until)
        if not 0 <= end <= cfg.iters:
            raise ValueError(f"until must be between 0 and config.iters={cfg.iters}; got {until!r}.")
        self.model.train()
        bar = None
        if cfg.progress and self.rank == 0:
            from tqdm.auto import tqdm

            bar = tqdm(total=end, initial=self.step, desc="train", unit="it", mininterval=0.5)
        tick = time.perf_counter()
        eval_time = 0.0
        stopped = "iters" if until is None else "until"
        last_log, last_log_time = self.step, tick
        ckpt: Path | None = None
        running: Tensor | None = None
        while self.step < end:
            loss = self._step()
            running = loss if running is None else running + loss
            k = self.step
            if cfg.log_every and k % cfg.log_every == 0:
                now = time.perf_counter()
                mean = float(running) / (k - last_log)
                row = {"step": k, "loss": mean, "lr": lr_at(cfg, k - 1),
                       "it_per_s": (k - last_log) / max(now - last_log_time, 1e-9)}
                self.history.append(row)
                if bar is not None:
                    bar.set_postfix(loss=f"{mean:.4g}", lr=f"{row['lr']:.2g}")
                running, last_log, last_log_time = None, k, now
            if bar is not None:
                bar.update(1)
            if cfg.eval_every and k % cfg.eval_every == 0 and k < end:
                e0 = time.perf_counter()
                self._evaluate()
                eval_time += time.perf_counter() - e0
            if self.out_dir is not None and cfg.checkpoint_every and k % cfg.checkpoint_every == 0 and k < end:
                ckpt = self.save_checkpoint()
            if cfg.time_budget is not None and time.perf_counter() - tick - eval_time > cfg.time_budget:
                stopped = "time_budget"
                break
        seconds = time.perf_counter() - tick - eval_time
        if bar is not None:
            bar.close()
        if self.callbacks:
            self._evaluate()
        if self.out_dir is not None:
            ckpt = self.save_checkpoint()
        return TrainResult(steps=self.step, seconds=seconds, history=list(self.history), stopped=stopped,
                           checkpoint=ckpt)

    def _evaluate(self) -> None:
        self.model.eval()
        try:
            for cb in self.callbacks:
                out = cb(self, self.step)
                if out:
                    self.history.append({"step": self.step, "eval": dict(out)})
        finally:
            self.model.train()

    # -- checkpoints -----------------------------------------------------------------------------------
    def state_tensors(self) -> tuple[dict[str, Tensor], dict[str, Any]]:
        """Every tensor of the training state (flat names) and the JSON-able rest."""
        tensors: dict[str, Tensor] = {}
        for k, v in self.model.state_dict().items():
            tensors[f"model/{k}"] = v
        for name, m in self.ema.items():
            for k, v in m.state_dict().items():
                tensors[f"ema/{name}/{k}"] = v
        opt = self.optimizer.state_dict()
        scalars: dict[str, dict[str, Any]] = {}
        for idx, st in opt["state"].items():
            for key, val in st.items():
                if isinstance(val, Tensor):
                    tensors[f"optim/{idx}/{key}"] = val
                else:
                    scalars.setdefault(str(idx), {})[key] = val
        data_t, data_meta = self._data.state()
        tensors.update(data_t)
        tensors["rng/loss"] = self.loss_generator.get_state()
        tensors["rng/torch"] = torch.get_rng_state()
        meta = {
            "step": self.step,
            "optimizer": {"param_groups": opt["param_groups"], "scalar_state": scalars},
            "data": data_meta,
            "history": self.history,
        }
        return tensors, meta

    def save_checkpoint(self) -> Path | None:
        """Write a checkpoint of the current state to ``out_dir`` (rank 0 only); returns its JSON path."""
        if self.out_dir is None:
            raise ValueError("this trainer has no out_dir; pass out_dir= to save checkpoints.")
        from .checkpoint import save_checkpoint

        path = None
        if self.rank == 0:
            tensors, meta = self.state_tensors()
            get_config = getattr(self.model, "get_config", None)
            path = save_checkpoint(self.out_dir, self.step, tensors, {
                **meta,
                "model_config": get_config() if callable(get_config) else None,
                "train_config": self.config.to_json(),
                "ema": list(self.ema),
                "metadata": self.metadata,
            }, keep=self.config.keep)
        if self.world_size > 1:
            torch.distributed.barrier()
        return path

    def load_checkpoint(self, path: str | Path) -> None:
        """Restore the full training state from a checkpoint (its JSON or weights file, or a folder)."""
        from .checkpoint import read_checkpoint

        tensors, meta = read_checkpoint(path)
        saved_cfg = meta.get("train_config") or {}
        for key in ("batch_size", "seed", "iters", "lr", "warmup", "decay"):
            if key in saved_cfg and saved_cfg[key] != getattr(self.config, key):
                raise ValueError(f"the checkpoint {str(path)!r} was trained with {key}={saved_cfg[key]!r} but this "
                                 f"trainer has {key}={getattr(self.config, key)!r}; resume with the same config.")
        missing = set(self.ema) - set(meta.get("ema", []))
        if missing:
            raise ValueError(f"the checkpoint {str(path)!r} has no EMA copies {sorted(missing)}; resume with the "
                             f"same ema= specs.")
        self.model.load_state_dict(_prefixed(tensors, "model/"))
        for name, m in self.ema.items():
            m.load_state_dict(_prefixed(tensors, f"ema/{name}/"))
        opt_meta = meta["optimizer"]
        state: dict[int, dict[str, Any]] = {}
        for key, val in tensors.items():
            if key.startswith("optim/"):
                _, idx, name = key.split("/", 2)
                state.setdefault(int(idx), {})[name] = val.to(self.device)
        for idx, vals in opt_meta.get("scalar_state", {}).items():
            state.setdefault(int(idx), {}).update(vals)
        self.optimizer.load_state_dict({"state": state, "param_groups": opt_meta["param_groups"]})
        self._data.load(tensors, meta.get("data", {}))
        self.loss_generator.set_state(tensors["rng/loss"].to(torch.uint8).cpu())
        torch.set_rng_state(tensors["rng/torch"].to(torch.uint8).cpu())
        self.step = int(meta["step"])
        self.history = list(meta.get("history", []))


def _prefixed(tensors: Mapping[str, Tensor], prefix: str) -> dict[str, Tensor]:
    return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}


def _ema_update(ema: nn.Module, model: nn.Module, beta: float) -> None:
    """``p_ema ← β p_ema + (1 − β) p`` for parameters and floating buffers; other buffers are copied."""
    for pe, p in zip(ema.parameters(), model.parameters(), strict=True):
        pe.lerp_(p.detach(), 1.0 - beta)
    for be, b in zip(ema.buffers(), model.buffers(), strict=True):
        if be.is_floating_point():
            be.lerp_(b, 1.0 - beta)
        else:
            be.copy_(b)
