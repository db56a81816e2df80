"""NMR / DVR ShapeNet renders: 24 views on a ring per object, ``cameras.npz`` per object.

Layout (the DVR "NMR_Dataset" release, as read by pixelNeRF's ``DVRDataset``)::

    <root>/<class_id>/<object_id>/image/0000.png .. 0023.png   64x64 RGB, white background
    <root>/<class_id>/<object_id>/mask/0000.png ...             (optional) object masks
    <root>/<class_id>/<object_id>/cameras.npz                   world_mat_<i>, camera_mat_<i>
                                                                 [, scale_mat_<i>, world_mat_inv_<i>]
    <root>/<class_id>/softras_train.lst | softras_val.lst | softras_test.lst   object ids, one a line
    <root>/<class_id>/train.lst | val.lst | test.lst                          (DVR's own split lists)

The root may also be one class folder or one object folder.

Conventions (see docs/datasets.md for the references): ``world_mat_i`` is a world-to-camera
with OpenCV axes (pixelNeRF inverts it and flips camera y/z to get its OpenGL pose);
``camera_mat_i`` holds intrinsics for image coordinates normalised to [-1, 1]
(``diag(2.1875, 2.1875, 1, 1)`` for NMR: pixelNeRF's focal = ``camera_mat[0, 0] * W / 2``,
principal point at the image centre), read by :meth:`Cameras.from_nmr`. When ``scale_mat_i`` is
present, DVR projects with ``camera_mat @ world_mat @ scale_mat``; the effective world-to-camera
``world_mat @ scale_mat`` is a similarity and is turned into the rigid pose with the same
projections (:func:`similarity_to_rigid`). The NMR world is +y up (ShapeNet / neural mesh
renderer ``get_points_from_angles``); by default it is rotated to +z up with pixelNeRF's
``(x, y, z) -> (x, -z, y)``. ``view_ids`` are the ring indices (0..23, from the file names).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from vantage.cameras import Cameras
from vantage.data.formats.common import (
    IMAGE_EXTENSIONS,
    DatasetError,
    IndexedDataset,
    SceneEntry,
    image_size,
    list_files,
    load_image,
    load_mask,
    require_file,
    resize_views,
    select_views,
    similarity_to_rigid,
    some_subdirs,
    subdirs,
    to_z_up,
)
from vantage.data.views import ObjectViews

__all__ = ["NMRDataset"]


def _is_object(p: Path) -> bool:
    return (p / "cameras.npz").is_file() and (p / "image").is_dir()


def _open_npz(path: Path) -> np.lib.npyio.NpzFile:
    require_file(path, "cameras.npz")
    try:
        return np.load(path, allow_pickle=False)
    except Exception as e:  # noqa: BLE001 - zipfile/pickle/OS errors alike mean a bad file
        raise DatasetError(f"{path}: cannot read as an .npz archive ({e})") from None


class NMRDataset(IndexedDataset):
    """NMR/DVR ShapeNet objects (see the module docstring for the layout).

    Args:
        path: the dataset root (class folders), one class folder, or one object folder.
        split: ``"train"``/``"val"``/``"test"`` to read ``<class>/<list_prefix><split>.lst``;
            ``None`` takes every object folder found on disk.
        list_prefix: prefix of the split lists (``"softras_"``: pixelNeRF/SoftRas lists,
            ``""``: DVR's ``train.lst``).
        classes: restrict to these class ids.
        resolution: resize the images to this side; intrinsics follow.
        up: the stored world's up axis, rotated to +z (``"+y"`` for NMR); ``None`` keeps it.
        strict: raise on a malformed object (``False``: skip it and record why).
    """

    format_name = "nmr"

    def __init__(self, path: str | Path, *, split: str | None = None, list_prefix: str = "softras_",
                 classes: Sequence[str] | None = None, resolution: int | None = None, up: str | None = "+y",
                 strict: bool = True) -> None:
        super().__init__(strict)
        root = Path(path)
        if not root.is_dir():
            raise DatasetError(f"NMR dataset folder does not exist: {root}")
        self.root, self.resolution, self.up = root, resolution, up
        if _is_object(root):
            class_dirs, objects = [], [(root.parent.name, root)]
        else:
            class_dirs = [root] if any(_is_object(c) for c in some_subdirs(root)) else subdirs(root)
            if classes is not None:
                class_dirs = [c for c in class_dirs if c.name in set(classes)]
            objects = self._objects(class_dirs, split, list_prefix)
        for cls, obj in objects:
            if not _is_object(obj):
                self.skip(obj, "not an NMR object (needs image/ and cameras.npz)" if obj.is_dir()
                          else "listed in the split file but the folder does not exist")
                continue
            self.try_index(obj, lambda c=cls, o=obj: self._index(c, o))
        self.require_entries(root, "<class>/<object>/image/*.png with <object>/cameras.npz")

    def _objects(self, class_dirs: list[Path], split: str | None, prefix: str) -> list[tuple[str, Path]]:
        out: list[tuple[str, Path]] = []
        found_list = False
        for c in class_dirs:
            if split is None:
                out += [(c.name, o) for o in subdirs(c)]
                continue
            lst = c / f"{prefix}{split}.lst"
            if not lst.is_file():
                self.skip(c, f"no split list {lst.name}")
                continue
            found_list = True
            names = [line.strip() for line in lst.read_text().splitlines() if line.strip()]
            out += [(c.name, c / n) for n in names]
        if split is not None and not found_list:
            raise DatasetError(f"{self.root}: no class folder has a split list '{prefix}{split}.lst'")
        return out

    @classmethod
    def detect(cls, path: Path) -> bool:
        path = Path(path)
        if not path.is_dir():
            return False
        if _is_object(path):
            return True
        for child in some_subdirs(path):
            if _is_object(child) or any(_is_object(g) for g in some_subdirs(child, 3)):
                return True
        return False

    def _index(self, cls: str, obj: Path) -> SceneEntry | None:
        images = list_files(obj / "image", IMAGE_EXTENSIONS, "image")
        bad = [p.name for p in images if not p.stem.isdigit()]
        if bad:
            raise DatasetError(f"{obj / 'image'}: image names must be ring indices like 0000.png, "
                               f"found {bad[:3]}")
        with _open_npz(obj / "cameras.npz") as cams:
            keys = set(cams.files)
        missing = [p.name for p in images if f"world_mat_{int(p.stem)}" not in keys
                   or f"camera_mat_{int(p.stem)}" not in keys]
        if missing:
            raise DatasetError(f"{obj / 'cameras.npz'}: no world_mat_<i>/camera_mat_<i> for image(s) "
                               f"{', '.join(missing[:5])} (keys found: {', '.join(sorted(keys)[:6])} ...)")
        has_masks = (obj / "mask").is_dir()
        return SceneEntry(f"{cls}/{obj.name}", obj, images, [int(p.stem) for p in images],
                          {"class_id": cls, "masks": has_masks})

    def load(self, index: int, views: Sequence[int] | None = None) -> ObjectViews:
        entry = self.entry(index)
        pos = select_views(len(entry.views), views, f"NMR object {entry.path}")
        first = entry.views[pos[0]]
        size = image_size(first)
        npz = entry.path / "cameras.npz"
        images, masks, w2cs, cam_mats = [], [], [], []
        with _open_npz(npz) as cams:
            for p in pos:
                img_path, i = entry.views[p], entry.view_ids[p]
                img, _ = load_image(img_path, expected_size=size, reference=first)
                images.append(img)
                if entry.extra["masks"]:
                    masks.append(load_mask(entry.path / "mask" / img_path.name, expected_size=size,
                                           reference=first))
                where = f"{npz} [world_mat_{i}]"
                wm = self._array(cams, f"world_mat_{i}", ((4, 4), (3, 4)), npz)
                if f"scale_mat_{i}" in cams.files:
                    sm = self._array(cams, f"scale_mat_{i}", ((4, 4),), npz)
                    wm = torch.cat([wm, torch.tensor([[0.0, 0.0, 0.0, 1.0]], dtype=torch.float64)]) \
                        if wm.shape == (3, 4) else wm
                    wm, where = wm @ sm, f"{npz} [world_mat_{i} @ scale_mat_{i}]"
                w2cs.append(similarity_to_rigid(wm, where))
                cm = self._array(cams, f"camera_mat_{i}", ((4, 4), (3, 3), (3, 4)), npz)
                if cm[0, 0] <= 0 or cm[1, 1] <= 0:
                    raise DatasetError(f"{npz} [camera_mat_{i}]: expected positive focal lengths, found "
                                       f"{cm[0, 0].item():.4g}, {cm[1, 1].item():.4g}")
                cam_mats.append(cm[:3, :3])
        cameras = Cameras.from_nmr(torch.stack(w2cs).float(), torch.stack(cam_mats).float(), size[0], size[1])
        cameras = to_z_up(cameras, self.up)
        m = torch.stack(masks) if masks else None
        cameras, imgs, m, _ = resize_views(cameras, torch.stack(images), m, size=self.resolution,
                                           where=str(entry.path))
        return ObjectViews(images=imgs, cameras=cameras, masks=m,
                           view_ids=torch.tensor([entry.view_ids[p] for p in pos]), name=entry.name,
                           meta={"format": self.format_name, "path": str(entry.path), "posed": True,
                                 "class_id": entry.extra["class_id"], "world_up_source": self.up})

    @staticmethod
    def _array(cams: np.lib.npyio.NpzFile, key: str, shapes: Sequence[tuple[int, int]],
               npz: Path) -> torch.Tensor:
        arr = np.asarray(cams[key], dtype=np.float64)
        if tuple(arr.shape) not in [tuple(s) for s in shapes]:
            want = " or ".join("x".join(map(str, s)) for s in shapes)
            raise DatasetError(f"{npz} [{key}]: expected shape {want}, found {tuple(arr.shape)}")
        if not np.isfinite(arr).all():
            raise DatasetError(f"{npz} [{key}]: contains NaN or infinite values")
        return torch.from_numpy(arr)
