"""Checkpoints that load without unpickling: safetensors for tensors, a JSON sidecar for the rest.

A checkpoint of step k in a folder is two files:

* ``ckpt-0000000k.safetensors`` — every tensor (model weights ``model/…``, EMA copies ``ema/<name>/…``,
  optimiser state ``optim/…``, random-generator states ``rng/…``, the data order ``data/…``);
* ``ckpt-0000000k.json`` — the model's config (:func:`sdeflow.generative.config.build_model` rebuilds
  the architecture from it), the training config, the step, the optimiser's scalar state, user
  metadata, and the SHA-256 of the weights file.

Both are written atomically (:func:`sdeflow.io.atomic_write`: a temporary file, fsync, rename, fsync
of the folder; a name that is a symbolic link has its target replaced, the link kept), the weights
first and the JSON last, so a checkpoint is complete exactly when its JSON exists and its checksum
matches; a run killed mid-write leaves the previous checkpoint intact, and the stray temporary files
are removed by the next write. :func:`load_model` rebuilds a ready denoiser from a folder or a file.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..io import _fsync_dir, atomic_write, clean_stale_temporaries
from .config import build_model

__all__ = ["save_checkpoint", "read_checkpoint", "latest_checkpoint", "list_checkpoints", "load_model",
           "CheckpointError"]

FORMAT = "sdeflow-checkpoint"
VERSION = 1
_NAME = re.compile(r"^ckpt-(\d{8,})\.json$")
_TMP = re.compile(r"^\.(ckpt-\d{8,}\.(?:json|safetensors))\..+\.tmp$")


class CheckpointError(ValueError):
    """A checkpoint file is missing, truncated, corrupted or not an sdeflow checkpoint."""


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _clean_temporaries(folder: Path) -> None:
    """Remove the temporaries that killed writers left in ``folder`` (live writers' files are kept)."""
    targets = set()
    for stale in folder.glob(".ckpt-*.tmp"):
        m = _TMP.match(stale.name)
        if m is not None:
            targets.add(m.group(1))
    for name in targets:
        clean_stale_temporaries(folder / name)


def list_checkpoints(folder: str | Path) -> list[Path]:
    """The JSON files of the checkpoints in ``folder``, oldest first (by step)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _NAME.match(p.name)) and p.is_file()]
    return [p for _, p in sorted(found)]


def save_checkpoint(folder: str | Path, step: int, tensors: Mapping[str, Tensor], meta: Mapping[str, Any], *,
                    keep: int | None = None) -> Path:
    """Write the checkpoint of ``step`` into ``folder`` (created) and keep the newest ``keep``; returns the JSON path.

    ``tensors`` are saved with safetensors (moved to the CPU, made contiguous); ``meta`` must be JSON.
    """
    from safetensors.torch import save_file

    if keep is not None and (isinstance(keep, bool) or not isinstance(keep, int) or keep < 1):
        raise ValueError(f"keep must be None (keep every checkpoint) or an int >= 1; got {keep!r}.")
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise ValueError(f"step must be an int >= 0; got {step!r}.")
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
    if path.is_dir() and path.suffix in (".json", ".safetensors"):
        raise CheckpointError(f"checkpoint {str(path)!r} is a folder, not a checkpoint file; pass the folder that "
                              f"holds the ckpt-*.json files, or one of those files.")
    if path.is_dir():
        latest = latest_checkpoint(path)
        if latest is None:
            raise CheckpointError(f"no checkpoint (ckpt-*.json) in the folder {str(path)!r}.")
        return latest
    if path.suffix == ".safetensors":
        path = path.with_suffix(".json")
    if not path.exists():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist.")
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} is not a regular file; pass a checkpoint folder or its "
                              f"ckpt-*.json file.")
    return path


def read_checkpoint(path: str | Path) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """The tensors and the JSON record of a checkpoint (a folder: its newest), checksum verified."""
    from safetensors.torch import load_file

    jpath = _resolve(path)
    try:
        meta = json.loads(jpath.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:
        raise CheckpointError(f"checkpoint {str(jpath)!r} is not readable JSON ({err}); it is truncated or "
                              f"corrupted.") from err
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{str(jpath)!r} is not an sdeflow checkpoint (no format={FORMAT!r} field).")
    if meta.get("version", 0) > VERSION:
        raise CheckpointError(f"checkpoint {str(jpath)!r} has format version {meta['version']}, newer than this "
                              f"sdeflow reads ({VERSION}); upgrade sdeflow.")
    name = meta.get("weights")
    if not isinstance(name, str) or not name or Path(name).name != name or name in (".", ".."):
        raise CheckpointError(f"checkpoint {str(jpath)!r} names its weights file {name!r}; it must be a file name "
                              f"beside the JSON (the file is corrupted or was edited).")
    if not isinstance(meta.get("step"), int) or isinstance(meta.get("step"), bool) or meta["step"] < 0:
        raise CheckpointError(f"checkpoint {str(jpath)!r} has no valid step (got {meta.get('step')!r}); it is "
                              f"corrupted.")
    weights = jpath.parent / name
    if weights.is_dir():
        raise CheckpointError(f"the weights file {str(weights)!r} of checkpoint {str(jpath)!r} is a folder.")
    if not weights.is_file():
        raise CheckpointError(f"the weights file {str(weights)!r} of checkpoint {str(jpath)!r} is missing.")
    digest = _sha256(weights)
    if digest != meta.get("sha256"):
        raise CheckpointError(f"the weights file {str(weights)!r} does not match the checksum in {str(jpath)!r}: "
                              f"it is truncated or corrupted (sha256 {digest[:12]}…, expected "
                              f"{str(meta.get('sha256'))[:12]}…).")
    try:
        tensors = load_file(str(weights))
    except Exception as err:  # SafetensorError, OSError, ValueError, a header that lies about its sizes, ...
        raise CheckpointError(f"the weights file {str(weights)!r} cannot be read as safetensors: "
                              f"{type(err).__name__}: {err}.") from err
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
    if not isinstance(weights, str):
        raise TypeError(f"weights must be 'ema', 'model' or an EMA copy's name; got {type(weights).__name__}.")
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"device must be a torch device such as 'cpu' or 'cuda'; got {device!r}.") from err
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
    try:
        model = build_model(config)
    except (ValueError, TypeError, KeyError) as err:
        raise CheckpointError(f"checkpoint {str(_resolve(path))!r}: its model_config cannot be rebuilt "
                              f"({type(err).__name__}: {err}).") from err
    state = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
    if not state:
        raise CheckpointError(f"checkpoint {str(_resolve(path))!r} holds no weights under {prefix!r} (weights="
                              f"{weights!r}); its weights file lacks them.")
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise CheckpointError(f"checkpoint {str(_resolve(path))!r}: the weights under {prefix!r} do not fit the "
                              f"model its config builds ({err}).") from err
    model.to(device).eval()
    model.requires_grad_(False)
    model.checkpoint_metadata = dict(meta.get("metadata", {}))
    model.checkpoint_step = int(meta["step"])
    return model
