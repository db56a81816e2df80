"""The extra keyword options of a sampler (``s_noise``, ``eta``, ``s_churn``, ...), named and checked.

Every sampler in :data:`vantage.diffusion.samplers.SAMPLERS` shares the signature
``sampler(denoiser, x, sigmas, cond, *, generator, callback, progress, **options)``; its options are the
keyword-only parameters after ``progress`` (e.g. the ancestral samplers' noise scale ``s_noise``, the
"temperature" of k-diffusion's ancestral samplers: 1 = the model's distribution, < 1 = colder samples).
A method config may carry ``default_sampler_options`` for its default sampler; ``vantage sample
--sampler-option KEY=VALUE`` sets them on the command line. Both are checked here, so a misspelt or
foreign option is an error naming the sampler and its options, never silently ignored.
"""

from __future__ import annotations

import inspect
import math
from typing import Any

from vantage.diffusion.samplers import get_sampler

__all__ = ["check_sampler_options", "parse_sampler_option", "sampler_option_defaults"]

_COMMON = ("generator", "callback", "progress")


def sampler_option_defaults(name: str) -> dict[str, Any]:
    """``{option: default}`` of sampler ``name`` (KeyError for an unknown sampler)."""
    params = inspect.signature(get_sampler(name)).parameters.values()
    return {p.name: p.default for p in params if p.kind is p.KEYWORD_ONLY and p.name not in _COMMON}


def check_sampler_options(name: str, options: dict[str, Any] | None, where: str = "sampler options") -> dict[str, Any]:
    """``options`` checked against sampler ``name``: every key one of its options, every value of the
    default's kind (a finite number for a number, ``true``/``false`` for a flag, a number or null where the
    default is null). Returns a new dict with numbers as floats. ``where`` names the source in errors."""
    if options is None:
        return {}
    if not isinstance(options, dict):
        raise ValueError(f"{where} must be a mapping option -> value, got {type(options).__name__}")
    defaults = sampler_option_defaults(name)
    out: dict[str, Any] = {}
    for key, value in options.items():
        if key not in defaults:
            known = ", ".join(sorted(defaults)) or "none"
            raise ValueError(f"{where}: sampler {name!r} has no option {key!r} (its options: {known})")
        default = defaults[key]
        if isinstance(default, bool):
            if not isinstance(value, bool):
                raise ValueError(f"{where}: {name} option {key!r} is true or false, got {value!r}")
            out[key] = value
        elif value is None and default is None:
            out[key] = None
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            out[key] = float(value)
        else:
            raise ValueError(f"{where}: {name} option {key!r} needs a finite number, got {value!r}")
    return out


def parse_sampler_option(text: str) -> tuple[str, Any]:
    """``"KEY=VALUE"`` -> ``(key, value)``: VALUE a number, ``true``/``false`` or ``null``."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ValueError(f"a sampler option is KEY=VALUE (e.g. s_noise=0.7), got {text!r}")
    raw = raw.strip().lower()
    if raw in ("true", "false"):
        return key, raw == "true"
    if raw in ("null", "none"):
        return key, None
    try:
        return key, float(raw)
    except ValueError:
        raise ValueError(f"sampler option {key!r}: {raw!r} is not a number, true/false or null") from None
