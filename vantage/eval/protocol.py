"""Versioned evaluation protocols: which data, which views, which metrics, which sampler settings.

A protocol is a JSON file (``pyyaml`` is not a dependency of vantage, so no YAML) that fixes every
choice behind a reported number, so that two evaluations with the same protocol name and version
are comparable. Shipped protocols live in ``vantage/eval/protocols/<name>-v<version>.json`` and are
loaded by name (``load_protocol("srn-cars-v1")``, or ``"srn-cars"`` for its newest version); any
other file is loaded by path. ``docs/evaluation.md`` lists the fields and where the published
protocols' choices come from.

Fields (unknown keys and wrong types are errors naming the key, the file and what is allowed):

* ``name`` (str), ``version`` (int >= 1), ``description`` (str).
* ``dataset``: ``{"spec": "synthetic:SPLIT", "options": {...}}`` (the embedded synthetic data,
  options for :class:`~vantage.data.synthetic.SyntheticDataset`) or ``{"format": "srn", "split":
  "test", "options": {...}}`` (a dataset on disk whose path is given at run time).
* ``objects``: a count (the first N scenes), a list of scene names, or ``null`` (all).
* ``input_views``: view ids (as the dataset numbers them: ``ObjectViews.view_ids``) used for every
  object, ``{"random": K, "seed": S}`` (K views per object, drawn from a generator seeded by S and
  the scene name), or ``{"view_list": FILE}`` (one line per object: name tokens then view ids,
  pixelNeRF's ``viewlist`` format; relative paths are relative to the protocol file).
* ``target_views``: ``"all-others"`` or a list of view ids (never an input view);
  ``missing_views``: ``"error"`` (default) or ``"skip"`` (objects lacking a listed view are left
  out and listed).
* ``resolution`` (px, square: views are centre-cropped and resized), ``background`` (``"white"``,
  ``"black"``, ``"grey"`` or ``[r, g, b]`` in [0, 1]).
* ``metrics``: ``names`` (subset of ``psnr ssim lpips fid kid jfid fd_dinov2 jfd_dinov2``; ``jfid``: VIVID's
  joint FID of (target, source image) pairs, :func:`vantage.eval.fid.joint_fid`; ``fd_dinov2``: the
  Fréchet distance of DINOv2 ViT-L/14 features, :mod:`vantage.eval.dinov2`; ``jfd_dinov2``: VIVID's
  joint FD-DINOv2, the same pairs in DINOv2 features), ``ssim_window`` (``"gaussian"``:
  11x11, σ 1.5; ``"uniform7"``: 7x7 uniform, scikit-image's default), ``psnr_data_range`` (the peak
  R in 10·log10(R²/MSE) of [0, 1] images), ``lpips_net`` (``"vgg"`` | ``"alex"``), ``average``
  (``"images"``: mean over all images; ``"objects"``: mean of per-object means, as pixelNeRF),
  ``consistency`` (``null`` or ``{"grid", "iters", "holdout"}``: the 3D consistency score),
  ``adjacent_views`` (bool: PSNR/SSIM between each generated target and its nearest generated neighbour, and
  where the data has depth the reprojection error between them; the same on the ground truth as reference).
* ``seeds`` (list of ints; one, or one per sample) and ``samples_per_target`` (int >= 1).
* ``sampling``: ``sampler``, ``steps``, ``guidance``, ``strategy`` (``null`` = the model's own), ``order``
  (``"sequential"`` | ``"alternating"``), ``autoregressive`` (bool), ``max_context`` (optional; null = all views).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Protocol", "DatasetSpec", "MetricSettings", "ConsistencySettings", "SamplingSettings", "ProtocolError",
           "PROTOCOL_DIR", "METRIC_NAMES", "load_protocol", "protocol_from_dict", "shipped_protocols"]

PROTOCOL_DIR = Path(__file__).resolve().parent / "protocols"
METRIC_NAMES = ("psnr", "ssim", "lpips", "fid", "kid", "jfid", "fd_dinov2", "jfd_dinov2")
SSIM_WINDOWS = ("gaussian", "uniform7")
STRATEGIES = ("stochastic", "single", "interpolated", "composed", "genvs-pooled")
NAMED_BACKGROUNDS = {"white": (1.0, 1.0, 1.0), "black": (0.0, 0.0, 0.0), "grey": (0.5, 0.5, 0.5),
                     "gray": (0.5, 0.5, 0.5)}


class ProtocolError(ValueError):
    """A protocol file that cannot be used; the message names the file and the field."""


@dataclass(frozen=True)
class DatasetSpec:
    """``spec`` ("synthetic:SPLIT") or ``format`` (+ ``split``) of a dataset on disk; reader ``options``."""

    spec: str | None = None
    format: str | None = None
    split: str | None = None
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def is_synthetic(self) -> bool:
        return self.spec is not None


@dataclass(frozen=True)
class ConsistencySettings:
    """The 3D consistency score's fitter (:func:`vantage.eval.consistency_score`)."""

    grid: int = 32
    iters: int = 300
    holdout: str | int = "alternate"


@dataclass(frozen=True)
class MetricSettings:
    """Which metrics and with which conventions (see the module docstring)."""

    names: tuple[str, ...] = ("psnr", "ssim", "lpips")
    ssim_window: str = "gaussian"
    psnr_data_range: float = 1.0
    lpips_net: str = "vgg"
    average: str = "images"
    consistency: ConsistencySettings | None = None
    adjacent_views: bool = False


@dataclass(frozen=True)
class SamplingSettings:
    """Sampler settings; ``None`` means the checkpoint's own default."""

    sampler: str | None = None
    steps: int | None = None
    guidance: float | None = None
    strategy: str | None = None
    order: str = "sequential"
    autoregressive: bool = True
    max_context: int | None = None


@dataclass(frozen=True)
class Protocol:
    """One evaluation protocol (module docstring). ``source``: the file it was read from."""

    name: str
    version: int
    dataset: DatasetSpec
    input_views: list[int] | dict[str, Any]
    resolution: int
    description: str = ""
    objects: int | list[str] | None = None
    target_views: str | list[int] = "all-others"
    missing_views: str = "error"
    background: tuple[float, float, float] = (1.0, 1.0, 1.0)
    metrics: MetricSettings = field(default_factory=MetricSettings)
    seeds: tuple[int, ...] = (0,)
    samples_per_target: int = 1
    sampling: SamplingSettings = field(default_factory=SamplingSettings)
    source: str = ""

    @property
    def label(self) -> str:
        """``name-vVERSION``."""
        return f"{self.name}-v{self.version}"

    def sample_seeds(self) -> list[int]:
        """One base seed per sample: ``seeds`` itself, or ``seeds[0] + k`` when one seed is given."""
        if len(self.seeds) == self.samples_per_target:
            return list(self.seeds)
        return [self.seeds[0] + k for k in range(self.samples_per_target)]

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict (the file's fields, ``background`` as a list, without ``source``)."""
        d = asdict(self)
        d.pop("source")
        d["background"] = list(self.background)
        d["seeds"] = list(self.seeds)
        d["metrics"]["names"] = list(self.metrics.names)
        return d


# ----------------------------------------------------------------------------------------- checking
Check = Callable[[Any, str], Any]


def _type_name(v: Any) -> str:
    return "null" if v is None else type(v).__name__


def _fail(where: str, key: str, want: str, got: Any) -> ProtocolError:
    return ProtocolError(f"{where}: '{key}' must be {want}, got {json.dumps(got)[:80]} ({_type_name(got)})")


def _int(lo: int | None = None, optional: bool = False) -> Check:
    def check(v: Any, key: str, where: str = "") -> Any:
        if v is None and optional:
            return None
        if isinstance(v, bool) or not isinstance(v, int) or (lo is not None and v < lo):
            raise _fail(where, key, "an integer" + (f" >= {lo}" if lo is not None else "")
                        + (" or null" if optional else ""), v)
        return v
    return check


def _float(positive: bool = False, optional: bool = False) -> Check:
    def check(v: Any, key: str, where: str = "") -> Any:
        if v is None and optional:
            return None
        if isinstance(v, bool) or not isinstance(v, (int, float)) or (positive and v <= 0):
            raise _fail(where, key, ("a positive number" if positive else "a number") + (" or null" if optional
                                                                                           else ""), v)
        return float(v)
    return check


def _str(choices: tuple[str, ...] | None = None, optional: bool = False) -> Check:
    def check(v: Any, key: str, where: str = "") -> Any:
        if v is None and optional:
            return None
        if not isinstance(v, str) or (choices is not None and v not in choices):
            want = f"one of {', '.join(choices)}" if choices else "a string"
            raise _fail(where, key, want + (" or null" if optional else ""), v)
        return v
    return check


def _bool(v: Any, key: str, where: str = "") -> bool:
    if not isinstance(v, bool):
        raise _fail(where, key, "true or false", v)
    return v


def _int_list(v: Any, key: str, where: str, *, lo: int = 0, distinct: bool = True) -> list[int]:
    if not isinstance(v, list) or not v or any(isinstance(x, bool) or not isinstance(x, int) or x < lo for x in v):
        raise _fail(where, key, f"a non-empty list of integers >= {lo}", v)
    if distinct and len(set(v)) != len(v):
        raise ProtocolError(f"{where}: '{key}' lists a value twice: {v}")
    return list(v)


def _fields(data: Any, spec: dict[str, tuple[Check, Any]], where: str, section: str = "") -> dict[str, Any]:
    """Check ``data`` (a dict) against ``spec`` {key: (check, default)}; ``...`` as default = required."""
    label = f"'{section}'" if section else "the protocol"
    if not isinstance(data, dict):
        raise ProtocolError(f"{where}: {label} must be a JSON object, got {_type_name(data)}")
    unknown = sorted(set(data) - set(spec))
    if unknown:
        raise ProtocolError(f"{where}: unknown key '{unknown[0]}' in {label}; allowed keys: {', '.join(spec)}")
    out = {}
    for key, (check, default) in spec.items():
        name = f"{section}.{key}" if section else key
        if key not in data:
            if default is ...:
                raise ProtocolError(f"{where}: {label} has no '{key}' (required)")
            out[key] = default
        else:
            out[key] = check(data[key], name, where)
    return out


def _dataset(v: Any, key: str, where: str) -> DatasetSpec:
    d = _fields(v, {"spec": (_str(optional=True), None), "format": (_str(optional=True), None),
                    "split": (_str(optional=True), None), "options": (_options, {})}, where, key)
    if (d["spec"] is None) == (d["format"] is None):
        raise ProtocolError(f"{where}: 'dataset' needs exactly one of 'spec' (\"synthetic:SPLIT\") and 'format' "
                            f"(a dataset format such as srn, nmr, realestate10k), got {json.dumps(v)}")
    if d["spec"] is not None and not (d["spec"] == "synthetic" or d["spec"].startswith("synthetic:")):
        raise ProtocolError(f"{where}: 'dataset.spec' must be 'synthetic' or 'synthetic:SPLIT', got '{d['spec']}' "
                            f"(a dataset on disk is named by 'format' and given with --data at run time)")
    if d["spec"] is not None and d["split"] is not None:
        raise ProtocolError(f"{where}: 'dataset.split' is for datasets on disk; the synthetic split goes in the spec "
                            f"(\"synthetic:{d['split']}\")")
    return DatasetSpec(**d)


def _options(v: Any, key: str, where: str) -> dict[str, Any]:
    if not isinstance(v, dict):
        raise _fail(where, key, "a JSON object of reader options", v)
    return dict(v)


def _objects(v: Any, key: str, where: str) -> int | list[str] | None:
    if v is None:
        return None
    if isinstance(v, int) and not isinstance(v, bool) and v >= 1:
        return v
    if isinstance(v, list) and v and all(isinstance(x, str) and x for x in v):
        if len(set(v)) != len(v):
            raise ProtocolError(f"{where}: 'objects' lists a scene twice")
        return list(v)
    raise _fail(where, key, "a count >= 1, a non-empty list of scene names or null (all)", v)


def _input_views(v: Any, key: str, where: str) -> list[int] | dict[str, Any]:
    if isinstance(v, list):
        return _int_list(v, key, where)
    if isinstance(v, dict):
        if "random" in v:
            d = _fields(v, {"random": (_int(1), ...), "seed": (_int(), 0)}, where, key)
            return d
        if "view_list" in v:
            return _fields(v, {"view_list": (_str(), ...)}, where, key)
    raise _fail(where, key, 'a list of view ids, {"random": K, "seed": S} or {"view_list": FILE}', v)


def _target_views(v: Any, key: str, where: str) -> str | list[int]:
    if v == "all-others":
        return v
    if isinstance(v, list):
        return _int_list(v, key, where)
    raise _fail(where, key, '"all-others" or a list of view ids', v)


def _background(v: Any, key: str, where: str) -> tuple[float, float, float]:
    if isinstance(v, str) and v in NAMED_BACKGROUNDS:
        return NAMED_BACKGROUNDS[v]
    if (isinstance(v, list) and len(v) == 3
            and all(isinstance(x, (int, float)) and not isinstance(x, bool) and 0 <= x <= 1 for x in v)):
        return tuple(float(x) for x in v)  # type: ignore[return-value]
    raise _fail(where, key, f"one of {', '.join(NAMED_BACKGROUNDS)} or [r, g, b] in [0, 1]", v)


def _consistency(v: Any, key: str, where: str) -> ConsistencySettings | None:
    if v is None or v is False:
        return None
    if v is True:
        return ConsistencySettings()
    d = _fields(v, {"grid": (_int(4), 32), "iters": (_int(1), 300), "holdout": (_holdout, "alternate")}, where, key)
    return ConsistencySettings(**d)


def _holdout(v: Any, key: str, where: str) -> str | int:
    if v == "alternate" or (isinstance(v, int) and not isinstance(v, bool) and v >= 2):
        return v
    raise _fail(where, key, '"alternate" or an integer k >= 2', v)


def _metrics(v: Any, key: str, where: str) -> MetricSettings:
    d = _fields(v, {"names": (_names, ("psnr", "ssim", "lpips")), "ssim_window": (_str(SSIM_WINDOWS), "gaussian"),
                    "psnr_data_range": (_float(positive=True), 1.0), "lpips_net": (_str(("vgg", "alex")), "vgg"),
                    "average": (_str(("images", "objects")), "images"), "consistency": (_consistency, None),
                    "adjacent_views": (_bool, False)},
                where, key)
    return MetricSettings(**d)


def _names(v: Any, key: str, where: str) -> tuple[str, ...]:
    if not isinstance(v, list) or not v or any(x not in METRIC_NAMES for x in v):
        raise _fail(where, key, f"a non-empty list of {', '.join(METRIC_NAMES)}", v)
    return tuple(dict.fromkeys(v))


def _sampling(v: Any, key: str, where: str) -> SamplingSettings:
    d = _fields(v, {"sampler": (_str(optional=True), None), "steps": (_int(1, optional=True), None),
                    "guidance": (_float(optional=True), None), "strategy": (_str(STRATEGIES, optional=True), None),
                    "order": (_str(("sequential", "alternating")), "sequential"), "autoregressive": (_bool, True),
                    "max_context": (_int(0, optional=True), None)},
                where, key)
    return SamplingSettings(**d)


def _seeds(v: Any, key: str, where: str) -> tuple[int, ...]:
    return tuple(_int_list(v, key, where, lo=0))


_SPEC: dict[str, tuple[Check, Any]] = {
    "name": (_str(), ...), "version": (_int(1), ...), "description": (_str(), ""), "dataset": (_dataset, ...),
    "objects": (_objects, None), "input_views": (_input_views, ...), "target_views": (_target_views, "all-others"),
    "missing_views": (_str(("error", "skip")), "error"), "resolution": (_int(8), ...),
    "background": (_background, (1.0, 1.0, 1.0)), "metrics": (_metrics, MetricSettings()),
    "seeds": (_seeds, (0,)), "samples_per_target": (_int(1), 1), "sampling": (_sampling, SamplingSettings()),
}


def protocol_from_dict(data: Any, where: str = "protocol", base_dir: str | Path | None = None) -> Protocol:
    """Check ``data`` (a parsed protocol file) and build the :class:`Protocol`.

    ``where`` names it in errors (and becomes ``source``); a relative ``view_list`` is taken relative
    to ``base_dir`` (the protocol file's folder).
    """
    d = _fields(data, _SPEC, where)
    if not d["name"].strip() or any(c in d["name"] for c in "/\\ "):
        raise ProtocolError(f"{where}: 'name' must be a non-empty name without spaces or slashes, got '{d['name']}'")
    if len(d["seeds"]) not in (1, d["samples_per_target"]):
        raise ProtocolError(f"{where}: 'seeds' must hold one seed or one per sample (samples_per_target = "
                            f"{d['samples_per_target']}), got {len(d['seeds'])}")
    if isinstance(d["input_views"], list) and isinstance(d["target_views"], list):
        both = sorted(set(d["input_views"]) & set(d["target_views"]))
        if both:
            raise ProtocolError(f"{where}: view(s) {both} are both input and target views")
    view_list = d["input_views"].get("view_list") if isinstance(d["input_views"], dict) else None
    if view_list is not None and not Path(view_list).is_absolute() and base_dir is not None:
        d["input_views"] = {"view_list": str(Path(base_dir).resolve() / view_list)}
    return Protocol(**d, source=where)


def shipped_protocols() -> dict[str, Path]:
    """``{"synthetic-v1": path, ...}``: the protocol files shipped with vantage."""
    return {p.stem: p for p in sorted(PROTOCOL_DIR.glob("*.json"))}


def _read(path: Path) -> Protocol:
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ProtocolError(f"{path}: not valid JSON ({e})") from None
    except OSError as e:
        raise ProtocolError(f"{path}: cannot read the protocol file ({e})") from None
    return protocol_from_dict(data, str(path), path.parent)


def load_protocol(name_or_path: str | Path | Protocol) -> Protocol:
    """A shipped protocol by name (``"srn-cars-v1"``; ``"srn-cars"`` = its newest version) or a file by path.

    Raises :class:`ProtocolError` naming the file and field, or listing the shipped names.
    """
    if isinstance(name_or_path, Protocol):
        return name_or_path
    text = str(name_or_path)
    path = Path(text).expanduser()
    if path.is_file():
        return _read(path)
    shipped = shipped_protocols()
    if text in shipped:
        return _read(shipped[text])
    versions = sorted((p for p in shipped if p.rsplit("-v", 1)[0] == text and p.rsplit("-v", 1)[-1].isdigit()),
                      key=lambda p: int(p.rsplit("-v", 1)[-1]))
    if versions:
        return _read(shipped[versions[-1]])
    if path.suffix == ".json" or "/" in text or "\\" in text:
        raise ProtocolError(f"protocol file not found: {path}")
    raise ProtocolError(f"unknown protocol '{text}': not a file, and not a shipped protocol "
                        f"({', '.join(shipped) or 'none'})")
