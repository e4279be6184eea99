"""Models rebuilt from JSON: one registry for every network and wrapper the generative layer saves.

A checkpoint holds tensors (safetensors) and a JSON config; loading never unpickles code. For that,
every model class that can be saved is registered under a name with :func:`register_model` and
describes itself by :meth:`Configurable.get_config` — its constructor arguments as JSON values, with
nested models (a preconditioning wrapper's network, a guidance wrapper's denoiser) given as their own
configs. :func:`build_model` inverts it::

    net = MLPNet(dim=2, hidden=256)                 # any registered class
    cfg = net.get_config()                          # {"kind": "mlp", "dim": 2, "hidden": 256, ...}
    same_shape = build_model(cfg)                   # a fresh module of the same architecture
    same_shape.load_state_dict(net.state_dict())    # the weights come from the checkpoint

Rules for a registered class: its ``__init__`` takes keyword arguments that are JSON values (numbers,
strings, bools, None, lists, dicts) or registered models; it records them by calling
``self.record_config(...)`` with the same names; and ``build_model(get_config())`` must rebuild it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeVar

from torch import nn

__all__ = ["MODELS", "register_model", "Configurable", "build_model", "check_config"]

MODELS: dict[str, type[nn.Module]] = {}
T = TypeVar("T", bound=type)


def register_model(name: str) -> Callable[[T], T]:
    """Class decorator: register a :class:`Configurable` module under ``name`` (its config's ``"kind"``)."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"name must be a non-empty string; got {name!r}.")

    def deco(cls: T) -> T:
        if name in MODELS and MODELS[name] is not cls:
            raise ValueError(f"a model kind {name!r} is already registered ({MODELS[name].__qualname__}).")
        if not (isinstance(cls, type) and issubclass(cls, Configurable) and issubclass(cls, nn.Module)):
            raise TypeError(f"register_model needs an nn.Module subclass of Configurable; got {cls!r}.")
        cls.kind = name
        MODELS[name] = cls
        return cls

    return deco


class Configurable:
    """Mixin of registered models: records constructor arguments and rebuilds from them."""

    kind: str = ""

    def record_config(self, **kwargs: Any) -> None:
        """Record the constructor arguments (JSON values or registered models) for :meth:`get_config`."""
        out = {}
        for key, value in kwargs.items():
            out[key] = value.get_config() if isinstance(value, Configurable) else _check_json(key, value)
        object.__setattr__(self, "_sdeflow_config", out)

    def get_config(self) -> dict[str, Any]:
        """``{"kind": name, **constructor arguments}``, JSON-serialisable, nested models as configs."""
        cfg = getattr(self, "_sdeflow_config", None)
        if cfg is None:
            raise TypeError(f"{type(self).__name__} did not call record_config(...) in __init__; it cannot be saved.")
        return {"kind": self.kind, **json.loads(json.dumps(cfg))}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> nn.Module:
        """Build from a config (nested model configs are built first)."""
        kwargs = {k: (build_model(v) if isinstance(v, dict) and "kind" in v else v)
                  for k, v in config.items() if k != "kind"}
        return cls(**kwargs)


def _check_json(key: str, value: Any) -> Any:
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as err:
        raise TypeError(f"config value {key}={value!r} is not a JSON value (numbers, strings, bools, None, lists, "
                        f"dicts) or a registered model; it cannot be saved in a checkpoint.") from err
    return value


def check_config(config: object) -> dict[str, Any]:
    """Check that ``config`` names a registered model kind; returns it."""
    if not isinstance(config, dict) or "kind" not in config:
        raise ValueError(f"a model config is a dict with a 'kind' key; got {type(config).__name__}.")
    if config["kind"] not in MODELS:
        known = ", ".join(sorted(MODELS)) or "none"
        raise ValueError(f"unknown model kind {config['kind']!r} in the config; registered kinds: {known}.")
    return config


def build_model(config: dict[str, Any]) -> nn.Module:
    """A fresh module (random weights) of the architecture ``config`` describes (see the module docstring)."""
    config = check_config(config)
    return MODELS[config["kind"]].from_config(config)
