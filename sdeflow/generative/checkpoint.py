"""Checkpoints that load without unpickling: safetensors for tensors, a JSON sidecar for the rest.

A checkpoint of step k in a folder is two files:

* ``ckpt-0000000k.safetensors`` — every tensor (model weights ``model/…``, EMA copies ``ema/<name>/…``,
  optimiser state ``optim/…``, random-generator states ``rng/…``, the data order ``data/…``);
* ``ckpt-0000000k.json`` — the model's config (:func:`sdeflow.generative.config.build_model` rebuilds
  the architecture from it), the training config, the step, the optimiser's scalar state, user
  metadata, and the SHA-256 of the weights file.

Both are written atomically (a temporary file, fsync, rename, fsync of the folder), the weights
first and the JSON last, so a checkpoint is complete exactly when its JSON exists and its checksum
matches; a run killed mid-write leaves the previous checkpoint intact, and the stray temporary files
are removed by the next write. :func:`load_model` rebuilds a ready denoiser from a folder or a file.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..io import atomic_write
from .config import build_model

__all__ = ["save_checkpoint", "read_checkpoint", "latest_checkpoint", "list_checkpoints", "load_model",
           "CheckpointError"]

FORMAT = "sdeflow-checkpoint"
VERSION = 1
_NAME = re.compile(r"^ckpt-(\d{8,})\.json$")


class CheckpointError(ValueError):
    """A checkpoint file is missing, truncated, corrupted or not an sdeflow checkpoint."""


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # e.g. Windows: directories cannot be opened
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _clean_temporaries(folder: Path) -> None:
    for stale in folder.glob(".ckpt-*.tmp"):
        try:
            stale.unlink()
        except OSError:
            pass


def list_checkpoints(folder: str | Path) -> list[Path]:
    """The JSON files of the checkpoints in ``folder``, oldest first (by step)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def save_checkpoint(folder: str | Path, step: int, tensors: Mapping[str, Tensor], meta: Mapping[str, Any], *,
                    keep: int | None = None) -> Path:
    """Write the checkpoint of ``step`` into ``folder`` (created) and keep the newest ``keep``; returns the JSON path.

    ``tensors`` are saved with safetensors (moved to the CPU, made contiguous); ``meta`` must be JSON.
    """
    from safetensors.torch import save_file

    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"out_dir {str(folder)!r} exists and is not a folder; choose another out_dir.")
    folder.mkdir(parents=True, exist_ok=True)
    _clean_temporaries(folder)
    stem = f"ckpt-{int(step):08d}"
    weights = folder / f"{stem}.safetensors"
    flat = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    atomic_write(weights, lambda tmp: save_file(flat, tmp))
    record = {"format": FORMAT, "version": VERSION, **dict(meta), "step": int(step),
              "weights": weights.name, "sha256": _sha256(weights)}
    text = json.dumps(record, indent=1, allow_nan=False)
    path = atomic_write(folder / f"{stem}.json", lambda tmp: Path(tmp).write_text(text))
    _fsync_dir(folder)
    if keep is not None:
        for old in list_checkpoints(folder)[:-keep]:
            old.unlink(missing_ok=True)
            (folder / f"{old.stem}.safetensors").unlink(missing_ok=True)
    return path


def latest_checkpoint(folder: str | Path) -> Path | None:
    """The newest complete checkpoint (JSON path) in ``folder``, or None when there is none."""
    found = list_checkpoints(folder)
    return found[-1] if found else None


def _resolve(path: str | Path) -> Path:
    path = Path(path)
    if path.is_dir():
        latest = latest_checkpoint(path)
        if latest is None:
            raise CheckpointError(f"no checkpoint (ckpt-*.json) in the folder {str(path)!r}.")
        return latest
    if path.suffix == ".safetensors":
        path = path.with_suffix(".json")
    if not path.exists():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist.")
    return path


def read_checkpoint(path: str | Path) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """The tensors and the JSON record of a checkpoint (a folder: its newest), checksum verified."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    jpath = _resolve(path)
    try:
        meta = json.loads(jpath.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"checkpoint {str(jpath)!r} is not readable JSON ({err}); it is truncated or "
                              f"corrupted.") from err
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{str(jpath)!r} is not an sdeflow checkpoint (no format={FORMAT!r} field).")
    if meta.get("version", 0) > VERSION:
        raise CheckpointError(f"checkpoint {str(jpath)!r} has format version {meta['version']}, newer than this "
                              f"sdeflow reads ({VERSION}); upgrade sdeflow.")
    weights = jpath.parent / str(meta.get("weights", ""))
    if not weights.is_file():
        raise CheckpointError(f"the weights file {str(weights)!r} of checkpoint {str(jpath)!r} is missing.")
    digest = _sha256(weights)
    if digest != meta.get("sha256"):
        raise CheckpointError(f"the weights file {str(weights)!r} does not match the checksum in {str(jpath)!r}: "
                              f"it is truncated or corrupted (sha256 {digest[:12]}…, expected "
                              f"{str(meta.get('sha256'))[:12]}…).")
    try:
        tensors = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"the weights file {str(weights)!r} cannot be read: {err}.") from err
    return tensors, meta


def load_model(path: str | Path, *, weights: str = "ema", device: str | torch.device = "cpu") -> nn.Module:
    """Rebuild the trained model of a checkpoint, ready to sample with (eval mode, no gradients).

    Args:
        path: a checkpoint folder (its newest checkpoint), or a checkpoint's ``.json`` or ``.safetensors``.
        weights: ``"ema"`` (the first EMA copy if the run kept one, else the trained weights), ``"model"``
            (the trained weights), or the name of an EMA copy.
        device: where to put the model.

    Returns:
        The module the trainer trained (e.g. an ``EDMPrecond`` denoiser ``D(x, σ, **cond)``), rebuilt from
        the JSON config with :func:`sdeflow.generative.config.build_model`; nothing is unpickled.
    """
    tensors, meta = read_checkpoint(path)
    config = meta.get("model_config")
    if config is None:
        raise CheckpointError(f"checkpoint {str(_resolve(path))!r} has no model_config: the model was not a "
                              f"registered sdeflow model, so only its tensors can be read (read_checkpoint).")
    emas = list(meta.get("ema", []))
    if weights == "ema":
        prefix = f"ema/{emas[0]}/" if emas else "model/"
    elif weights == "model":
        prefix = "model/"
    elif weights in emas:
        prefix = f"ema/{weights}/"
    else:
        raise ValueError(f"weights must be 'ema', 'model' or one of the checkpoint's EMA copies {emas}; "
                         f"got {weights!r}.")
    model = build_model(config)
    state = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
    model.load_state_dict(state)
    model.to(device).eval()
    model.requires_grad_(False)
    model.checkpoint_metadata = dict(meta.get("metadata", {}))
    model.checkpoint_step = int(meta["step"])
    return model
