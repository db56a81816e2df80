"""Unwrapping a loaded state dict, and comparing one with what a module expects (errors name every wrong key)."""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping

from torch import Tensor

__all__ = ["state_dict_mismatch", "unwrap_state_dict"]


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


def unwrap_state_dict(obj: object, *, wrappers: Iterable[str], prefixes: tuple[str, ...], where: str = "state dict",
                      error: type[Exception] = ValueError,
                      skip: Collection[str] = ()) -> tuple[dict[str, Tensor], list[str]]:
    """``(state, ignored_keys)``: the tensors of a loaded weights file.

    Args:
        obj: a state dict (names -> tensors), or a mapping holding one under a key of ``wrappers``.
        wrappers: keys tried in order (e.g. ``"model"``, ``"state_dict"``); the first whose value is a
            non-empty mapping of tensors is the state dict.
        prefixes: stripped from the start of every key, repeatedly (e.g. ``"module."`` of DDP).
        where: names the file in errors.
        error: the exception raised when ``obj`` holds no state dict.
        skip: keys (after stripping) to leave out, like non-tensor entries.

    Returns:
        the state dict with stripped keys, and the original names of the entries left out.
    """
    if isinstance(obj, Mapping):
        for wrapper in wrappers:
            inner = obj.get(wrapper)
            if isinstance(inner, Mapping) and inner and all(isinstance(v, Tensor) for v in inner.values()):
                obj = inner
                break
    if not isinstance(obj, Mapping) or not obj:
        raise error(f"{where}: expected a state dict (a mapping of parameter names to tensors), "
                    f"got {type(obj).__name__}")
    state, ignored = {}, []
    for key, value in obj.items():
        k = str(key)
        while k.startswith(prefixes):
            k = k[len(next(p for p in prefixes if k.startswith(p))):]
        if not isinstance(value, Tensor) or k in skip:
            ignored.append(str(key))
            continue
        state[k] = value
    return state, ignored
