"""Registry of methods and named presets.

* ``METHODS``: name -> ``"module:Class"`` of a :class:`~vantage.methods.base.Method` (imported lazily).
* ``PRESETS``: preset name -> ``(method name, config overrides, description)``; e.g. ``3dim-shapes64``,
  ``viewfusion-nmr64``.
* :func:`build_method` builds a method from a preset or method name plus ``field=value`` overrides.

Method modules register their presets with :func:`register_preset` at import; the preset table
imports every method module once (:func:`all_presets`).
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any

from vantage.methods.base import Method, MethodConfig, ViewCond, config_from_dict

__all__ = ["METHODS", "PRESETS", "Method", "MethodConfig", "ViewCond", "method_class", "register_preset",
           "all_presets", "build_method", "method_from_json", "parse_overrides"]

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


def method_class(name: str) -> type[Method]:
    if name not in METHODS:
        raise ValueError(f"unknown method '{name}'; known methods: {', '.join(METHODS)}")
    module, cls = METHODS[name].split(":")
    return getattr(importlib.import_module(module), cls)


def register_preset(name: str, method: str, overrides: dict[str, Any], description: str) -> None:
    """Register a named configuration of ``method`` (called by method modules at import)."""
    PRESETS[name] = (method, dict(overrides), description)


def all_presets() -> dict[str, tuple[str, dict[str, Any], str]]:
    """Every preset of every registered method (imports the method modules)."""
    for name in METHODS:
        method_class(name)
    return dict(sorted(PRESETS.items()))


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
