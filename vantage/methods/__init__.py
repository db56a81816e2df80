"""Registry of methods and named presets.

* ``METHODS``: name -> ``"module:Class"`` of a :class:`~vantage.methods.base.Method` (imported lazily).
* ``PRESETS``: preset name -> ``(method name, config overrides, description)``; e.g. ``3dim-shapes64``,
  ``viewfusion-nmr64``.
* ``PRESET_TRAIN``: preset name -> the training defaults it brings (``TrainConfig`` fields, e.g. EDM2's
  ``lr_schedule="inv_sqrt"`` and ``ema="power"`` for VIVID); :func:`preset_train_defaults` reads it.
* :func:`build_method` builds a method from a preset or method name plus ``field=value`` overrides.

Method modules register their presets with :func:`register_preset` at import; the preset table
imports every method module once (:func:`all_presets`).

Training defaults live in a table of their own rather than as a fourth element of the ``PRESETS``
tuples, so that code unpacking ``(method, overrides, description)`` keeps working. They sit between
the trainer's built-in defaults and the user's ``--batch/--steps/--set train.*`` (the user wins) and
apply to new runs only: a resumed run keeps the training config stored in its ``config.json``
(:func:`vantage.train.config.resolve_train_config`, ``docs/training.md``).
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any

from vantage.methods.base import Method, MethodConfig, ViewCond, config_from_dict

__all__ = ["METHODS", "PRESETS", "PRESET_TRAIN", "Method", "MethodConfig", "ViewCond", "method_class",
           "register_preset", "all_presets", "preset_train_defaults", "build_method", "method_from_json",
           "parse_overrides"]

METHODS: dict[str, str] = {
    "3dim": "vantage.methods.threedim:ThreeDiM",
    "viewfusion": "vantage.methods.viewfusion:ViewFusion",
    "relpose": "vantage.methods.relpose:RelPose",
    "genvs": "vantage.methods.genvs:GeNVS",
    "vivid": "vantage.methods.vivid:VIVID",
    "vivid-sr": "vantage.methods.vivid_sr:VIVIDSR",
    "regression": "vantage.methods.regression:Regression",
}

PRESETS: dict[str, tuple[str, dict[str, Any], str]] = {}
PRESET_TRAIN: dict[str, dict[str, Any]] = {}


def method_class(name: str) -> type[Method]:
    if name not in METHODS:
        raise ValueError(f"unknown method '{name}'; known methods: {', '.join(METHODS)}")
    module, cls = METHODS[name].split(":")
    return getattr(importlib.import_module(module), cls)


def register_preset(name: str, method: str, overrides: dict[str, Any], description: str, *,
                    train: dict[str, Any] | None = None) -> None:
    """Register a named configuration of ``method`` (called by method modules at import).

    ``train``: training defaults of the preset (``TrainConfig`` field -> value), checked here: an unknown
    field or a bad value is a ``ValueError`` naming the preset and the field.
    """
    if train:
        from vantage.train.config import check_train_defaults

        PRESET_TRAIN[name] = check_train_defaults(train, where=f"preset '{name}'")
    else:
        PRESET_TRAIN.pop(name, None)
    PRESETS[name] = (method, dict(overrides), description)


def all_presets() -> dict[str, tuple[str, dict[str, Any], str]]:
    """Every preset of every registered method (imports the method modules)."""
    for name in METHODS:
        method_class(name)
    return dict(sorted(PRESETS.items()))


def preset_train_defaults(name: str) -> dict[str, Any]:
    """The training defaults preset ``name`` brings (``{}`` for a method name or a preset without any)."""
    if name not in PRESET_TRAIN and name not in PRESETS:
        all_presets()
    return dict(PRESET_TRAIN.get(name, {}))


def parse_overrides(items: list[str] | dict[str, Any], config_class: type[MethodConfig]) -> dict[str, Any]:
    """``["field=value", ...]`` -> typed dict, checked against ``config_class``'s fields."""
    import json

    if isinstance(items, dict):
        return dict(items)
    fields = {f.name: f for f in dataclasses.fields(config_class)}
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep:
            raise ValueError(f"--set expects field=value, got '{item}'")
        if key not in fields:
            raise ValueError(f"--set {key}: no such field in {config_class.__name__}; fields: {sorted(fields)}")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = {"None": None, "True": True, "False": False}.get(raw, raw)  # Python spellings too
        if isinstance(value, list):
            value = tuple(value)
        out[key] = value
    return out


def build_method(name: str, overrides: list[str] | dict[str, Any] | None = None) -> Method:
    """Build a method from a preset name (``3dim-shapes64``) or a method name (``3dim``)."""
    presets = all_presets()
    if name in presets:
        method, base, _ = presets[name]
    elif name in METHODS:
        method, base = name, {}
    else:
        raise ValueError(f"unknown preset or method '{name}'; presets: {', '.join(presets)}; "
                         f"methods: {', '.join(METHODS)} (see `vantage train --list`)")
    cls = method_class(method)
    values = {**base, **parse_overrides(overrides or [], cls.config_class)}
    return cls(config_from_dict(cls.config_class, values, where=f"preset '{name}'"))


def method_from_json(data: dict, where: str = "config.json") -> Method:
    """Rebuild a method from a checkpoint's ``config.json`` content."""
    if not isinstance(data, dict) or "method" not in data or "config" not in data:
        raise ValueError(f"{where}: expected keys 'method' and 'config' (a vantage checkpoint config)")
    cls = method_class(data["method"])
    return cls(config_from_dict(cls.config_class, data["config"], where=where))
