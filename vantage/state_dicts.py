"""Comparing a state dict with what a module expects, for errors that name every wrong key."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from torch import Tensor

__all__ = ["state_dict_mismatch"]


def state_dict_mismatch(expected: Mapping[str, Tensor], given: Mapping[str, Tensor], *,
                        name: Callable[[str], str] = str, expected_name: Callable[[str], str] = str,
                        tolerate_missing: Iterable[str] = (), limit: int = 8,
                        given_label: str = "file", expected_label: str = "model") -> str:
    """Describe how ``given`` differs from ``expected`` (key sets and shapes); ``""`` when they match.

    Args:
        expected: the module's ``state_dict()`` (or any name -> tensor mapping).
        given: the loaded weights, keyed like ``expected``.
        name: how to print a key of ``given`` (e.g. with its name in the original file).
        expected_name: how to print a key that ``given`` lacks.
        tolerate_missing: key suffixes that may be missing (e.g. ``num_batches_tracked``).
        limit: at most this many keys are listed per kind, then the count.
        given_label, expected_label: words for the two sides of a shape mismatch.

    Returns:
        ``"missing keys: ...; unexpected keys: ...; shape mismatches: k: file (..), model (..)"``
        with the empty parts left out.
    """
    suffixes = tuple(tolerate_missing)
    missing = sorted(expected_name(k) for k in expected
                     if k not in given and not (suffixes and k.endswith(suffixes)))
    unexpected = sorted(name(k) for k in given if k not in expected)
    shapes = sorted(f"{name(k)}: {given_label} {tuple(given[k].shape)}, {expected_label} {tuple(expected[k].shape)}"
                    for k in given if k in expected and tuple(given[k].shape) != tuple(expected[k].shape))

    def some(items: list[str]) -> str:
        return ", ".join(items[:limit]) + (f", ... ({len(items)} in all)" if len(items) > limit else "")

    parts = [f"missing keys: {some(missing)}" if missing else "",
             f"unexpected keys: {some(unexpected)}" if unexpected else "",
             f"shape mismatches: {some(shapes)}" if shapes else ""]
    return "; ".join(p for p in parts if p)
