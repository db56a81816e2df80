"""Dataset formats: a registry of readers, format detection and :func:`open_dataset`.

Each reader is a :class:`vantage.data.views.SceneDataset` subclass with a classmethod
``detect(path: Path) -> bool`` and a constructor ``Reader(path, **options)``. Readers are
imported lazily so that a missing optional dependency of one format does not break others.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from vantage.data.formats.common import DatasetError
from vantage.data.views import SceneDataset

__all__ = ["FORMATS", "format_class", "detect_format", "open_dataset"]

# name -> "module:Class"; detection tries them in this order (most specific first).
FORMATS: dict[str, str] = {
    "vantage": "vantage.data.synthetic_io:SyntheticFolderDataset",
    "nerfstudio": "vantage.data.formats.nerfstudio:NerfstudioDataset",
    "srn": "vantage.data.formats.srn:SRNDataset",
    "nmr": "vantage.data.formats.nmr:NMRDataset",
    "zero123": "vantage.data.formats.zero123:Zero123Dataset",
    "gso": "vantage.data.formats.gso:GSODataset",
    "realestate10k": "vantage.data.formats.realestate10k:RealEstate10KDataset",
    "images": "vantage.data.formats.images:ImageFolderDataset",
}


def format_class(name: str) -> type[SceneDataset]:
    """The reader class registered under ``name``."""
    if name not in FORMATS:
        raise DatasetError(f"unknown dataset format '{name}'; known formats: {', '.join(FORMATS)}")
    module, cls = FORMATS[name].split(":")
    return getattr(importlib.import_module(module), cls)


def detect_format(path: str | Path) -> str:
    """Name of the first registered format whose ``detect`` accepts ``path``."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"dataset path does not exist: {path}")
    for name in FORMATS:
        try:
            cls = format_class(name)
        except (ImportError, AttributeError):
            continue
        if cls.detect(path):
            return name
    raise DatasetError(f"could not detect the dataset format of {path}; pass --format with one of: "
                     f"{', '.join(FORMATS)} (see docs/datasets.md for each layout)")


def open_dataset(path: str | Path, format: str | None = None, **options) -> SceneDataset:
    """Open the dataset at ``path`` (format detected when ``format`` is None)."""
    name = format or detect_format(path)
    return format_class(name)(Path(path), **options)
