"""Zero-1-to-3 Objaverse renders: one folder per object with ``NNN.png`` + ``NNN.npy``.

Layout (``views_release/`` of Zero-1-to-3, written by its ``objaverse-rendering/scripts/
blender_script.py``)::

    <root>/<uid>/000.png .. 011.png    RGBA (512x512 as rendered; 256x256 in some copies)
    <root>/<uid>/000.npy .. 011.npy    3x4 world-to-camera, Blender camera axes (y up, z back)

The root may also be one object folder. Conventions: the ``.npy`` holds
``[R_world2bcam | -R_world2bcam @ location]`` taken from the Blender camera's ``matrix_world``
(:meth:`Cameras.from_zero123`); the world is Blender's (+z up, already ours). Intrinsics are not
stored: the script sets a 35 mm lens on a 32 mm sensor (horizontal fit), i.e. a horizontal FOV
of ``2 atan(16 / 35) = 49.13°`` (the paper's "49.1°"); the principal point is the image centre.
RGBA is composited on white (straight alpha) and the alpha is returned as the mask.

:class:`RenderFolderDataset` is the shared machinery for "a folder of numbered renders per
object" layouts; :mod:`vantage.data.formats.gso` builds on it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

from vantage.cameras import Cameras, intrinsics_from_fov
from vantage.data.formats.common import (
    DatasetError,
    IndexedDataset,
    SceneEntry,
    find_dirs,
    image_size,
    list_files,
    load_image,
    load_npy,
    resize_views,
    rigid_pose,
    select_views,
    some_subdirs,
    subdirs,
    to_z_up,
)
from vantage.data.views import ObjectViews

__all__ = ["ZERO123_FOV_DEG", "RenderFolderDataset", "Zero123Dataset", "numbered_images"]

#: Horizontal field of view of the Zero-1-to-3 renders: 35 mm lens, 32 mm sensor width.
ZERO123_FOV_DEG: float = math.degrees(2 * math.atan(16.0 / 35.0))

_NUMBERED = re.compile(r"^\d+$")


def numbered_images(folder: Path) -> list[Path]:
    """``NNN.png``/``.jpg``/``.webp`` files of ``folder`` whose stem is only digits, in order."""
    files = list_files(folder, (".png", ".jpg", ".jpeg", ".webp"), "object")
    return [p for p in files if _NUMBERED.match(p.stem)]


class RenderFolderDataset(IndexedDataset):
    """Objects as folders of numbered renders. Subclasses implement :meth:`_index_object` (an
    entry, or ``None`` after recording a skip) and :meth:`_cameras`.

    Args:
        path: a folder of object folders, or one object folder.
        resolution: resize the (square) renders to this side; intrinsics follow.
        up: the stored world's up axis, rotated to +z (``"+z"``: Blender's, nothing to do).
        num_views: when every object has views ``0..num_views-1`` named ``NNN.png`` (3 digits),
            skip listing each object folder while indexing (fast for 800k objects; a missing
            file is then reported when the object is loaded).
        strict: raise on a malformed object (``False``: skip it and record why).
    """

    def __init__(self, path: str | Path, *, resolution: int | None = None, up: str | None = "+z",
                 num_views: int | None = None, strict: bool = True) -> None:
        super().__init__(strict)
        root = Path(path)
        if not root.is_dir():
            raise DatasetError(f"{self.format_name} dataset folder does not exist: {root}")
        self.root, self.resolution, self.up, self.fixed_views = root, resolution, up, num_views
        if num_views is not None:
            dirs = [root] if (root / "000.png").is_file() else subdirs(root)
            for d in dirs:
                views = [d / f"{i:03d}.png" for i in range(num_views)]
                self.entries.append(SceneEntry(d.name, d, views, list(range(num_views)), {}))
        else:
            for d in find_dirs(root, self._is_object):
                if not self._is_object(d):
                    self.skip(d, f"not a {self.format_name} object folder (no NNN.png renders)")
                    continue
                self.try_index(d, lambda d=d: self._index_object(d))
        self.require_entries(root, "object folders of NNN.png renders with their cameras")

    @staticmethod
    def _is_object(p: Path) -> bool:
        return any(p.glob("[0-9]*.png"))

    def _index_object(self, d: Path) -> SceneEntry | None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _cameras(self, entry: SceneEntry, pos: list[int],
                 size: tuple[int, int]) -> Cameras:  # pragma: no cover - abstract
        raise NotImplementedError

    def _extra(self, entry: SceneEntry, pos: list[int], size: tuple[int, int]) -> dict[str, Tensor]:
        """Extra per-view maps (e.g. ``depth``); none by default."""
        return {}

    def load(self, index: int, views: Sequence[int] | None = None) -> ObjectViews:
        entry = self.entry(index)
        pos = select_views(len(entry.views), views, f"{self.format_name} object {entry.path}")
        first = entry.views[pos[0]]
        size = image_size(first)
        images, alphas = [], []
        for p in pos:
            img, alpha = load_image(entry.views[p], expected_size=size, reference=first)
            images.append(img)
            alphas.append(alpha)
        cams = to_z_up(self._cameras(entry, pos, size), self.up)
        masks = torch.stack(alphas) if all(a is not None for a in alphas) else None
        extra = self._extra(entry, pos, size)
        cams, imgs, masks, depth = resize_views(cams, torch.stack(images), masks, extra.get("depth"),
                                                size=self.resolution, where=str(entry.path))
        return ObjectViews(images=imgs, cameras=cams, masks=masks, depth=depth,
                           view_ids=torch.tensor([entry.view_ids[p] for p in pos]), name=entry.name,
                           meta={"format": self.format_name, "path": str(entry.path), "posed": True,
                                 "world_up_source": self.up, **entry.extra})


class Zero123Dataset(RenderFolderDataset):
    """Zero-1-to-3 Objaverse renders (see the module docstring).

    Args:
        path, resolution, up, num_views, strict: see :class:`RenderFolderDataset`.
        fov_deg: horizontal field of view of the renders (not stored in the data).
    """

    format_name = "zero123"

    def __init__(self, path: str | Path, *, fov_deg: float = ZERO123_FOV_DEG, **kwargs) -> None:
        self.fov_deg = fov_deg
        super().__init__(path, **kwargs)

    @classmethod
    def detect(cls, path: Path) -> bool:
        path = Path(path)
        if not path.is_dir():
            return False
        for d in [path, *some_subdirs(path)]:
            npy = d / "000.npy"
            if (d / "000.png").is_file() and npy.is_file():
                try:
                    load_npy(npy, ((3, 4),))
                    return True
                except DatasetError:
                    return False
        return False

    def _index_object(self, d: Path) -> SceneEntry | None:
        images = numbered_images(d)
        missing = [p.name for p in images if not (d / f"{p.stem}.npy").is_file()]
        if missing:
            raise DatasetError(f"{d}: render(s) without a camera file NNN.npy: {', '.join(missing[:5])}")
        return SceneEntry(d.name, d, images, [int(p.stem) for p in images], {})

    def _cameras(self, entry: SceneEntry, pos: list[int], size: tuple[int, int]) -> Cameras:
        w2c = []
        for p in pos:
            npy = entry.path / f"{entry.views[p].stem}.npy"
            arr = load_npy(npy, ((3, 4), (4, 4)))
            if arr.shape == (4, 4):
                raise DatasetError(f"{npy}: Zero-1-to-3 cameras are 3x4 world-to-camera matrices, found "
                                   f"a 4x4 (a Blender matrix_world as in ViewFusion's renders? read it "
                                   f"with format 'gso')")
            w2c.append(rigid_pose(arr, str(npy)))
        K = intrinsics_from_fov(self.fov_deg, size[0], size[1]).to(torch.float64)
        return Cameras.from_zero123(torch.stack(w2c).float(), K.float(), size[0], size[1])
