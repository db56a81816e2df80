"""Which objects and views a protocol evaluates (checkpoint mode of ``vantage evaluate``).

* :func:`open_protocol_dataset`: the protocol's dataset (the embedded synthetic data, or a folder in its format);
* :func:`select_objects`: the protocol's objects (all, the first N, or the listed names);
* :func:`choose_views`: an object's input and target views by view id (fixed ids, "all-others", random inputs
  seeded by the object's name, or a per-object view list), with the reason when the object lacks a view.

Used by :mod:`vantage.eval.evaluate_model`.
"""

from __future__ import annotations

import inspect
import random
from pathlib import Path

from vantage.data.formats.common import DatasetError
from vantage.data.views import SceneDataset
from vantage.eval.protocol import Protocol
from vantage.eval.scorer import EvaluationError

__all__ = ["open_protocol_dataset", "select_objects", "choose_views"]


def open_protocol_dataset(protocol: Protocol, data: str | Path | None, resolution: int) -> SceneDataset:
    """The protocol's dataset: the embedded synthetic data, or the folder ``data`` read with its format."""
    spec = protocol.dataset
    if spec.is_synthetic:
        from vantage.data.synthetic import SyntheticDataset

        if data is not None:
            raise EvaluationError(f"protocol {protocol.label} evaluates on the embedded data '{spec.spec}'; "
                                  f"leave out --data")
        split = spec.spec.partition(":")[2] or "train"
        count = protocol.objects if isinstance(protocol.objects, int) else None
        try:
            return SyntheticDataset(split, num_objects=count, resolution=resolution, **spec.options)
        except (TypeError, ValueError, IndexError) as e:
            raise EvaluationError(f"{protocol.source}: dataset '{spec.spec}' with options {spec.options}: {e}") \
                from None
    from vantage.data.formats import format_class

    if data is None:
        raise EvaluationError(f"protocol {protocol.label} evaluates on a '{spec.format}' dataset"
                              + (f" ({spec.split} split)" if spec.split else "") + ": give its folder with --data PATH")
    data = Path(data)
    if not data.exists():
        raise FileNotFoundError(f"--data: dataset path does not exist: {data}")
    cls = format_class(spec.format)
    kwargs = dict(spec.options)
    if "resolution" in inspect.signature(cls.__init__).parameters:
        kwargs.setdefault("resolution", resolution)
    try:
        return cls(data, **({"split": spec.split} if spec.split else {}), **kwargs)
    except DatasetError:
        if spec.split and (data.name == spec.split or data.name.endswith("_" + spec.split)):
            return cls(data, **kwargs)  # the split folder itself was given
        raise
    except TypeError as e:
        raise EvaluationError(f"{protocol.source}: bad option for the '{spec.format}' reader ({e})") from None


def select_objects(ds: SceneDataset, protocol: Protocol, limit: int | None = None) -> list[int]:
    """Dataset positions of the protocol's objects (the first ``limit`` of them when given)."""
    n, want = len(ds), protocol.objects
    if isinstance(want, list):
        names = {ds.scene_name(i): i for i in range(n)}
        missing = [w for w in want if w not in names]
        if missing:
            raise EvaluationError(f"protocol {protocol.label}: {len(missing)} object(s) not in the dataset: "
                                  f"{', '.join(missing[:5])}")
        picked = [names[w] for w in want]
    elif isinstance(want, int):
        if want > n:
            raise EvaluationError(f"protocol {protocol.label} evaluates {want} objects but the dataset has {n}")
        picked = list(range(want))
    else:
        picked = list(range(n))
    if limit is not None:
        if limit < 1:
            raise EvaluationError(f"--objects must be >= 1, got {limit}")
        picked = picked[:limit]
    return picked


def _view_ids(ds: SceneDataset, i: int) -> list[int]:
    entry = getattr(ds, "entry", None)
    if callable(entry):
        return [int(v) for v in entry(i).view_ids]
    if type(ds).__name__ == "SyntheticDataset":
        return list(range(ds.num_views(i)))
    return [int(v) for v in ds.load(i).view_ids]


def _read_view_list(path: str) -> dict[str, list[int]]:
    """pixelNeRF-style view list: per line, object name token(s) then view ids (``02958343 1a2b 7``).

    Name tokens may be numbers (ShapeNet class ids), so every split into a name and trailing integers
    is recorded: ``"02958343/1a2b"`` (tokens joined with '/') and ``"1a2b"`` (the last name token) both
    map to ``[7]``; full names take precedence when looking an object up.
    """
    full: dict[str, list[int]] = {}
    last: dict[str, list[int]] = {}
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as e:
        raise EvaluationError(f"cannot read the view list {path}: {e}") from None
    for k, line in enumerate(lines, 1):
        tokens = line.split()
        splits = [j for j in range(1, len(tokens)) if all(t.isdigit() for t in tokens[j:])]
        if tokens and not splits:
            raise EvaluationError(f"{path}:{k}: expected object name token(s) then view ids, got '{line.strip()}'")
        for j in splits:
            ids = [int(t) for t in tokens[j:]]
            full.setdefault("/".join(tokens[:j]), ids)
            last.setdefault(tokens[j - 1], ids)
    return {**last, **full}


def choose_views(protocol: Protocol, name: str, ids: list[int],
                 view_list: dict[str, list[int]] | None = None) -> tuple[list[int], list[int], str | None]:
    """``(input ids, target ids, why skipped)`` of object ``name`` whose views have ``ids``.

    Missing views raise :class:`EvaluationError` (``missing_views="error"``) or give a reason to
    skip the object (``"skip"``).
    """
    iv, tv = protocol.input_views, protocol.target_views
    if isinstance(iv, list):
        inputs = list(iv)
    elif "random" in iv:
        pool = sorted(v for v in ids if not (isinstance(tv, list) and v in tv))
        if len(pool) < iv["random"]:
            raise EvaluationError(f"object '{name}' has {len(pool)} candidate input views, fewer than {iv['random']}")
        inputs = random.Random(f"vantage-eval/{iv['seed']}/{name}").sample(pool, iv["random"])
    else:
        listed = view_list or {}
        key = name if name in listed else name.rsplit("/", 1)[-1]
        if key not in listed:
            raise EvaluationError(f"view list {iv['view_list']} has no line for object '{name}'")
        inputs = listed[key]
    targets = [v for v in ids if v not in inputs] if tv == "all-others" else list(tv)
    both = sorted(set(inputs) & set(targets))
    if both:
        raise EvaluationError(f"object '{name}': view(s) {both} are both input and target views")
    missing = [v for v in inputs + targets if v not in set(ids)]
    if missing:
        why = (f"object '{name}' has no view(s) {missing[:8]} (its view ids: {min(ids)}..{max(ids)}, "
               f"{len(ids)} views)")
        if protocol.missing_views == "error":
            raise EvaluationError(why + f"; protocol {protocol.label} needs them (missing_views: error)")
        return inputs, targets, why
    if not targets:
        raise EvaluationError(f"object '{name}' has no target view besides its input(s) {inputs}")
    return inputs, targets, None
