"""The synthetic dataset on disk: :func:`write_synthetic_dataset` and :class:`SyntheticFolderDataset`.

Layout (format ``vantage-synthetic``, version 1; see ``docs/synthetic.md``)::

    ROOT/
      dataset.json              {"format": "vantage-synthetic", "version": 1, "split", "count",
                                 "first_index", "views", "layout", "elevation", "radius", "fov_deg",
                                 "resolution", "shadows", "supersample", "depth_scale",
                                 "objects": [folder names], "complete": true}
      train-000000/             one folder per object: "<split>-<index within split>"
        cameras.json            {"format": "vantage-synthetic-object", "version": 1, "width",
                                 "height", "depth_scale", "split", "index", "object_seed", "layout",
                                 "views": [{"id", "rgb", "mask", "depth", "c2w" 4x4, "K" 3x3}, ...],
                                 "object": {"seed", "parts": [primitive descriptions]}}
        rgb/000.png             8-bit RGB, composited on white
        mask/000.png            8-bit grey, 255 = object
        depth/000.png           16-bit grey: camera-z depth = value * depth_scale, 0 = background

Cameras are OpenCV camera-to-world and pixel intrinsics (pixel centres at +0.5), exactly the
:class:`~vantage.cameras.Cameras` convention. ``cameras.json`` is written after the images of
its object, so an object folder with a ``cameras.json`` is complete.
"""

from __future__ import annotations

import json
import math
import shutil
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from vantage.cameras import Cameras
from vantage.data.formats.common import DatasetError
from vantage.data.synthetic import SyntheticDataset
from vantage.data.views import ObjectViews, SceneDataset, Skipped
from vantage.outputs import prepare_output_dir

__all__ = ["DATASET_FORMAT", "OBJECT_FORMAT", "VERSION", "DEPTH_SCALE", "write_synthetic_dataset",
           "write_object", "SyntheticFolderDataset"]

DATASET_FORMAT = "vantage-synthetic"
OBJECT_FORMAT = "vantage-synthetic-object"
VERSION = 1
DEPTH_SCALE = 1e-4  # world units per 16-bit step: depths up to 6.5535


def _read_json(path: Path) -> dict:
    if not path.is_file():
        raise DatasetError(f"missing file: {path} does not exist")
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DatasetError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise DatasetError(f"{path}: expected a JSON object at the top level")
    return data


def _dataset_json(root: Path) -> dict | None:
    """The parsed ``dataset.json`` of a vantage synthetic dataset at ``root``, else None."""
    try:
        data = json.loads((root / "dataset.json").read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("format") == DATASET_FORMAT else None


def _is_object_dir(path: Path) -> bool:
    try:
        return json.loads((path / "cameras.json").read_text()).get("format") == OBJECT_FORMAT
    except (OSError, UnicodeDecodeError, ValueError, AttributeError):
        return False


def _prepare(out: Path, overwrite: bool) -> None:
    """Create ``out``; a non-empty folder is refused unless ``overwrite``.

    With ``overwrite`` and a previous vantage dataset in ``out``, that dataset's own object
    folders are removed first (so no stale objects remain); other files are left alone.
    """
    if out.is_dir() and any(out.iterdir()) and overwrite:
        old = _dataset_json(out)
        if old is not None:
            for name in old.get("objects", []):
                folder = out / str(name)
                ours = folder.is_dir() and (_is_object_dir(folder) or not any(folder.iterdir()))
                if folder.parent == out and ours:
                    shutil.rmtree(folder)
            (out / "dataset.json").unlink()
    prepare_output_dir(out, overwrite, what="output")


def _to_uint8(x: torch.Tensor) -> np.ndarray:
    """``(C, H, W)`` in [-1, 1] -> ``(H, W, C)`` uint8 (``round((x + 1) * 127.5)``)."""
    return ((x + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()


def write_object(obj: ObjectViews, folder: Path, *, depth_scale: float = DEPTH_SCALE) -> None:
    """Write one rendered object (images, masks, depth) and its ``cameras.json`` into ``folder``."""
    for sub in ("rgb", "mask", "depth"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    digits = max(3, len(str(int(obj.view_ids.max()))))
    if obj.depth is not None and obj.depth.max() / depth_scale > 65535:
        raise ValueError(f"depth {obj.depth.max():.3f} exceeds the 16-bit range at scale {depth_scale}")
    views = []
    for k in range(len(obj)):
        vid = int(obj.view_ids[k])
        names = {key: f"{key}/{vid:0{digits}d}.png" for key in ("rgb", "mask", "depth")}
        Image.fromarray(_to_uint8(obj.images[k])).save(folder / names["rgb"], compress_level=1)
        mask = (obj.masks[k, 0] * 255).round().clamp(0, 255).to(torch.uint8).numpy()
        Image.fromarray(mask).save(folder / names["mask"], compress_level=1)
        depth = (obj.depth[k, 0].double() / depth_scale).round().clamp(0, 65535).numpy().astype(np.uint16)
        Image.fromarray(depth).save(folder / names["depth"], compress_level=1)
        views.append({"id": vid, **names, "c2w": obj.cameras.c2w[k].tolist(), "K": obj.cameras.K[k].tolist()})
    meta = obj.meta
    doc = {"format": OBJECT_FORMAT, "version": VERSION, "width": obj.cameras.width,
           "height": obj.cameras.height,
           "depth_scale": depth_scale, "split": meta.get("split"), "index": meta.get("index"),
           "object_seed": meta.get("seed"), "layout": meta.get("layout"), "views": views,
           "object": {"seed": meta.get("seed"), "parts": meta.get("parts", [])}}
    (folder / "cameras.json").write_text(json.dumps(doc, indent=1))


class _Objects(torch.utils.data.Dataset):
    """Object ``i`` of a :class:`SyntheticDataset`, all its views (what the render workers produce)."""

    def __init__(self, ds: SyntheticDataset) -> None:
        self.ds = ds

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int) -> ObjectViews:
        return self.ds.load(i)


def _one_thread(_: int) -> None:
    torch.set_num_threads(1)


def write_synthetic_dataset(out_dir: str | Path, split: str = "train", num_objects: int = 16, views: int = 24,
                            resolution: int = 64, layout: str = "ring", seed: int = 0, *,
                            elevation: float = 30.0, shadows: bool = True, supersample: int = 1,
                            overwrite: bool = False, progress: bool = True, workers: int = 0) -> Path:
    """Render ``num_objects`` objects of ``split`` to ``out_dir`` (layout in the module docstring).

    Arguments match ``vantage data render``: ``seed`` is the index within the split of the first
    object (object ``i`` written is object ``seed + i`` of the split, see
    :class:`~vantage.data.synthetic.SyntheticDataset`). A folder holding a previous vantage
    synthetic dataset is replaced (only its own object folders are removed); any other non-empty
    folder is refused unless ``overwrite=True``, which writes into it without deleting anything.
    ``workers`` > 0 renders in that many processes (one thread each; the files are the same as with
    ``workers=0``, written in object order by this process).

    Returns the dataset root.
    """
    if workers < 0:
        raise ValueError(f"workers must be >= 0, got {workers}")
    out = Path(out_dir)
    ds = SyntheticDataset(split, num_objects, views=views, resolution=resolution, layout=layout,
                          elevation=elevation, seed=seed, shadows=shadows, supersample=supersample)
    _prepare(out, overwrite)
    info = {"format": DATASET_FORMAT, "version": VERSION, "split": split, "count": len(ds),
            "first_index": seed, "views": views, "layout": layout, "elevation": ds.elevation,
            "radius": ds.radius, "fov_deg": ds.fov_deg, "resolution": resolution, "shadows": shadows,
            "supersample": supersample,
            "depth_scale": DEPTH_SCALE, "objects": [ds.scene_name(i) for i in range(len(ds))],
            "complete": False}
    (out / "dataset.json").write_text(json.dumps(info, indent=1))
    rendered = torch.utils.data.DataLoader(_Objects(ds), batch_size=None, num_workers=workers,
                                           worker_init_fn=_one_thread if workers else None)
    for i, obj in enumerate(tqdm(rendered, desc=f"render {split}", unit="object", disable=not progress)):
        write_object(obj, out / ds.scene_name(i))
    info["complete"] = True
    (out / "dataset.json").write_text(json.dumps(info, indent=1))
    return out


# ----------------------------------------------------------------------------- reading
def _matrix(path: Path, where: str, value, rows: int, cols: int) -> torch.Tensor:
    try:
        m = torch.tensor(value, dtype=torch.float32)
    except (TypeError, ValueError):
        raise DatasetError(f"{path}: {where} must be a {rows}x{cols} list of numbers") from None
    if tuple(m.shape) != (rows, cols):
        raise DatasetError(f"{path}: {where} must be {rows}x{cols}, got shape {tuple(m.shape)}")
    if not torch.isfinite(m).all():
        raise DatasetError(f"{path}: {where} contains NaN or infinite values")
    return m


def _parse_cameras(path: Path) -> dict:
    doc = _read_json(path)
    if doc.get("format") != OBJECT_FORMAT:
        raise DatasetError(f"{path}: format is {doc.get('format')!r}, expected '{OBJECT_FORMAT}'")
    if not isinstance(doc.get("version"), int) or doc["version"] > VERSION:
        raise DatasetError(f"{path}: unsupported version {doc.get('version')!r} "
                           f"(this reader knows up to {VERSION})")
    for key in ("width", "height"):
        if not isinstance(doc.get(key), int) or doc[key] < 1:
            raise DatasetError(f"{path}: '{key}' must be a positive integer, got {doc.get(key)!r}")
    scale = doc.get("depth_scale")
    if not isinstance(scale, (int, float)) or not math.isfinite(scale) or scale <= 0:
        raise DatasetError(f"{path}: 'depth_scale' must be a positive number, got {scale!r}")
    views = doc.get("views")
    if not isinstance(views, list) or not views:
        raise DatasetError(f"{path}: 'views' must be a non-empty list")
    c2w, K, ids = [], [], []
    for k, v in enumerate(views):
        if not isinstance(v, dict) or not all(key in v for key in ("id", "rgb", "mask", "depth", "c2w", "K")):
            raise DatasetError(f"{path}: views[{k}] needs the keys id, rgb, mask, depth, c2w, K")
        c2w.append(_matrix(path, f"views[{k}].c2w", v["c2w"], 4, 4))
        K.append(_matrix(path, f"views[{k}].K", v["K"], 3, 3))
        ids.append(int(v["id"]))
    doc["cameras"] = Cameras(torch.stack(c2w), torch.stack(K), doc["width"], doc["height"])
    doc["view_ids"] = torch.tensor(ids, dtype=torch.long)
    return doc


def _load_png(path: Path, modes: tuple[str, ...], size: tuple[int, int]) -> np.ndarray:
    if not path.is_file():
        raise DatasetError(f"missing image: {path} does not exist")
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode not in modes:
                raise DatasetError(f"{path}: image mode {im.mode}, expected one of {', '.join(modes)}")
            if im.size != size:
                raise DatasetError(f"{path}: image is {im.size[0]}x{im.size[1]}, cameras.json says "
                                   f"{size[0]}x{size[1]}")
            return np.array(im)
    except (OSError, SyntaxError) as e:
        raise DatasetError(f"{path}: cannot read image ({e})") from None


class SyntheticFolderDataset(SceneDataset):
    """Reads a dataset written by :func:`write_synthetic_dataset` (the root, or one object folder).

    When ``dataset.json`` says the render did not complete, objects without a ``cameras.json``
    are recorded in ``skipped``; in a complete dataset a missing file is an error at load time.
    Files are read lazily in :meth:`load`; missing or malformed files raise
    :class:`~vantage.data.formats.common.DatasetError` naming the file.
    """

    format_name = "vantage"

    def __init__(self, path: str | Path) -> None:
        super().__init__()
        self.root = Path(path)
        if not self.root.is_dir():
            raise DatasetError(f"vantage synthetic dataset not found: {self.root} is not a folder")
        self.info: dict = {}
        if (self.root / "cameras.json").is_file():
            self.folders = [self.root]
        else:
            self.info = _read_json(self.root / "dataset.json")
            if self.info.get("format") != DATASET_FORMAT:
                raise DatasetError(f"{self.root / 'dataset.json'}: format is {self.info.get('format')!r}, "
                                   f"expected '{DATASET_FORMAT}'")
            names = self.info.get("objects")
            if not isinstance(names, list):
                names = sorted(p.name for p in self.root.iterdir() if p.is_dir())
            self.folders = [self.root / str(name) for name in names]
            if not self.info.get("complete", False):  # an interrupted render: keep the written objects
                written = [(f / "cameras.json").is_file() for f in self.folders]
                self.skipped += [Skipped(str(f / "cameras.json"), "missing (object not written)")
                                 for f, ok in zip(self.folders, written) if not ok]
                self.folders = [f for f, ok in zip(self.folders, written) if ok]
            if not self.folders:
                raise DatasetError(f"{self.root}: dataset.json lists no object folder with a cameras.json")
        self._meta: OrderedDict[int, dict] = OrderedDict()  # small LRU of parsed cameras.json

    @classmethod
    def detect(cls, path: Path) -> bool:
        """True for a vantage synthetic dataset root or a single object folder."""
        path = Path(path)
        return path.is_dir() and (_dataset_json(path) is not None or _is_object_dir(path))

    def __len__(self) -> int:
        return len(self.folders)

    def scene_name(self, index: int) -> str:
        return self.folders[self._check_index(index)].name

    def cameras_json(self, index: int) -> dict:
        """Parsed and validated ``cameras.json`` of scene ``index`` (with ``cameras``, ``view_ids``)."""
        index = self._check_index(index)
        if index not in self._meta:
            self._meta[index] = _parse_cameras(self.folders[index] / "cameras.json")
            if len(self._meta) > 256:
                self._meta.popitem(last=False)
        self._meta.move_to_end(index)
        return self._meta[index]

    def num_views(self, index: int) -> int:
        return len(self.cameras_json(index)["views"])

    def load(self, index: int, views: Sequence[int] | None = None) -> ObjectViews:
        index = self._check_index(index)
        doc, folder = self.cameras_json(index), self.folders[index]
        n = len(doc["views"])
        sel = list(range(n)) if views is None else [int(v) for v in views]
        if not sel or any(not 0 <= v < n for v in sel):
            raise IndexError(f"views {sel} out of range for {n} views of {folder}")
        size = (doc["width"], doc["height"])
        images, masks, depths = [], [], []
        for k in sel:
            v = doc["views"][k]
            rgb = _load_png(folder / v["rgb"], ("RGB",), size)
            images.append(torch.from_numpy(rgb).permute(2, 0, 1).float() / 127.5 - 1)
            masks.append(torch.from_numpy(_load_png(folder / v["mask"], ("L",), size)).float()[None] / 255)
            depth = _load_png(folder / v["depth"], ("I;16", "I"), size).astype(np.float64)
            depths.append(torch.from_numpy(depth * doc["depth_scale"]).float()[None])
        idx = torch.tensor(sel, dtype=torch.long)
        meta = {"split": doc.get("split"), "index": doc.get("index"), "seed": doc.get("object_seed"),
                "layout": doc.get("layout"), "parts": doc.get("object", {}).get("parts", [])}
        return ObjectViews(images=torch.stack(images), cameras=doc["cameras"][idx],
                           masks=torch.stack(masks), depth=torch.stack(depths),
                           view_ids=doc["view_ids"][idx], name=folder.name, meta=meta)
