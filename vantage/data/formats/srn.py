"""SRN ShapeNet renders (cars, chairs): ``rgb/*.png`` + ``pose/*.txt`` + intrinsics per instance.

Layout (one instance)::

    <instance>/rgb/000000.png ...       RGB or RGBA (RGBA is composited on white)
    <instance>/pose/000000.txt ...      16 numbers: row-major 4x4 camera-to-world, OpenCV axes
    <instance>/intrinsics.txt           "f cx cy 0." / "bx by bz" / "scale" / "H W" [/ "world2cam"]
    <instance>/intrinsics/000000.txt    (alternative) per-view 3x3 (9 numbers) or 4x4 (16 numbers) K

The dataset root is an instance folder, a folder of instances (``cars_train/``), or a folder
holding ``<anything>_<split>/`` folders of instances (``srn_cars/cars_train``) with ``split=``.

``intrinsics.txt`` follows SRN's ``parse_intrinsics``: ``f, cx, cy`` are pixels of an ``H x W``
image (line 4) and are rescaled to the actual image size; a 5th line ``1`` means the pose files
hold world-to-camera matrices (they are then inverted). SRN's world is +y up (checked on the real
sample: every camera x axis has zero y component and every camera "up" has positive y); by
default (``up="+y"``) the world is rotated so that +y becomes +z, our convention. Pass
``up=None`` to keep the stored world frame.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

from vantage.cameras import Cameras
from vantage.data.formats.common import (
    IMAGE_EXTENSIONS,
    DatasetError,
    IndexedDataset,
    SceneEntry,
    find_dirs,
    image_size,
    list_files,
    load_image,
    parse_floats,
    read_lines,
    read_matrix,
    resize_views,
    rigid_pose,
    select_views,
    some_subdirs,
    subdirs,
    to_z_up,
)
from vantage.data.views import ObjectViews

__all__ = ["SRNDataset", "read_srn_intrinsics"]


def read_srn_intrinsics(path: Path) -> tuple[float, float, float, int, int, bool]:
    """Parse SRN's ``intrinsics.txt``: ``(f, cx, cy, height, width, world2cam_poses)``."""
    lines = read_lines(path)
    if len(lines) < 4:
        raise DatasetError(f"{path}: expected at least 4 lines ('f cx cy 0.', 'bx by bz', 'scale', 'H W'), "
                           f"found {len(lines)}")
    f, cx, cy = parse_floats(path, lines[0][0], lines[0][1], (3, 4))[:3]
    h, w = parse_floats(path, lines[3][0], lines[3][1], 2)
    if f <= 0 or h <= 0 or w <= 0:
        raise DatasetError(f"{path}: focal length and image size must be positive (f={f}, H={h}, W={w})")
    world2cam = False
    if len(lines) >= 5:
        world2cam = bool(int(parse_floats(path, lines[4][0], lines[4][1], 1)[0]))
    return f, cx, cy, int(h), int(w), world2cam


def _is_instance(p: Path) -> bool:
    return (p / "rgb").is_dir() and (p / "pose").is_dir()


class SRNDataset(IndexedDataset):
    """SRN instances (see the module docstring for the layout).

    Args:
        path: an instance folder, a folder of instances, or a folder of ``*_<split>`` folders.
        split: with a folder of split folders, which one (``train``/``val``/``test``).
        resolution: resize the (square) images to this side; intrinsics follow.
        up: the stored world's up axis, rotated to +z (``"+y"`` for SRN); ``None`` keeps it.
        strict: raise on a malformed instance (``False``: skip it and record why in ``skipped``).
    """

    format_name = "srn"

    def __init__(self, path: str | Path, *, split: str | None = None, resolution: int | None = None,
                 up: str | None = "+y", strict: bool = True) -> None:
        super().__init__(strict)
        root = Path(path)
        if not root.is_dir():
            raise DatasetError(f"SRN dataset folder does not exist: {root}")
        if split is not None:
            matches = [p for p in subdirs(root) if p.name == split or p.name.endswith("_" + split)]
            if not matches:
                raise DatasetError(f"{root}: no '<name>_{split}' or '{split}' folder for split='{split}'")
            root = matches[0]
        self.root, self.resolution, self.up = root, resolution, up
        for d in find_dirs(root, _is_instance):
            if not _is_instance(d):
                self.skip(d, "not an SRN instance (needs rgb/ and pose/ folders)")
                continue
            self.try_index(d, lambda d=d: self._index(d))
        self.require_entries(root, "instance folders with rgb/*.png and pose/*.txt")

    @classmethod
    def detect(cls, path: Path) -> bool:
        path = Path(path)
        if not path.is_dir():
            return False
        if _is_instance(path):
            return True
        for child in some_subdirs(path):
            if _is_instance(child) or any(_is_instance(g) for g in some_subdirs(child, 3)):
                return True
        return False

    def _index(self, d: Path) -> SceneEntry | None:
        rgb = list_files(d / "rgb", IMAGE_EXTENSIONS, "rgb")
        poses = {p.stem: p for p in list_files(d / "pose", (".txt",), "pose")}
        if not poses:
            self.skip(d, "no pose/*.txt files")
            return None
        if not rgb:
            self.skip(d, "no rgb/*.png files")
            return None
        per_view_k = (d / "intrinsics").is_dir()
        if not per_view_k:
            read_srn_intrinsics(d / "intrinsics.txt")  # validate now, errors name the file
        views, missing = [], []
        for img in rgb:
            if img.stem in poses:
                views.append(img)
            else:
                missing.append(img.name)
        if missing:
            self.skip(d, f"{len(missing)} image(s) without a pose/<name>.txt, left out: "
                         f"{', '.join(missing[:5])}")
        view_ids = [int(v.stem) if v.stem.isdigit() else i for i, v in enumerate(views)]
        return SceneEntry(d.name, d, views, view_ids, {"per_view_intrinsics": per_view_k})

    @staticmethod
    def _shared_k(entry: SceneEntry, size: tuple[int, int]) -> tuple[Tensor | None, bool]:
        """``(K (3, 3) rescaled to the image size, world2cam)`` from ``intrinsics.txt``, or
        ``(None, False)`` when the instance has per-view ``intrinsics/*.txt``."""
        if entry.extra["per_view_intrinsics"]:
            return None, False
        w, h = size
        f, cx, cy, sh, sw, world2cam = read_srn_intrinsics(entry.path / "intrinsics.txt")
        k = torch.tensor([[f * w / sw, 0.0, cx * w / sw], [0.0, f * h / sh, cy * h / sh], [0.0, 0.0, 1.0]],
                         dtype=torch.float64)
        return k, world2cam

    @staticmethod
    def _view_k(entry: SceneEntry, img: Path) -> Tensor:
        path = entry.path / "intrinsics" / f"{img.stem}.txt"
        k = read_matrix(path, ((3, 3), (4, 4)))[:3, :3]
        if k[0, 0] <= 0 or k[1, 1] <= 0:
            raise DatasetError(f"{path}: focal lengths must be positive, found {k[0, 0]:.4g}, {k[1, 1]:.4g}")
        return k

    def load(self, index: int, views: Sequence[int] | None = None) -> ObjectViews:
        entry = self.entry(index)
        pos = select_views(len(entry.views), views, f"SRN instance {entry.path}")
        first = entry.views[pos[0]]
        size = image_size(first)
        shared_k, world2cam = self._shared_k(entry, size)
        images, alphas, c2ws, Ks = [], [], [], []
        for p in pos:
            img_path = entry.views[p]
            img, alpha = load_image(img_path, expected_size=size, reference=first)
            pose_path = entry.path / "pose" / f"{img_path.stem}.txt"
            m = rigid_pose(read_matrix(pose_path, ((4, 4), (3, 4))), str(pose_path))
            c2ws.append(torch.linalg.inv(m) if world2cam else m)
            Ks.append(shared_k if shared_k is not None else self._view_k(entry, img_path))
            images.append(img)
            alphas.append(alpha)
        cams = Cameras.from_srn(torch.stack(c2ws).float(), torch.stack(Ks).float(), size[0], size[1])
        cams = to_z_up(cams, self.up)
        masks = torch.stack(alphas) if all(a is not None for a in alphas) else None
        cams, imgs, masks, _ = resize_views(cams, torch.stack(images), masks, size=self.resolution,
                                            where=str(entry.path))
        return ObjectViews(images=imgs, cameras=cams, masks=masks,
                           view_ids=torch.tensor([entry.view_ids[p] for p in pos]), name=entry.name,
                           meta={"format": self.format_name, "path": str(entry.path), "posed": True,
                                 "world_up_source": self.up})
