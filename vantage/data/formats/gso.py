"""Google Scanned Objects (GSO) renders as used for zero-shot novel-view evaluation.

There is no official GSO render set; papers render GSO meshes with their own Blender scripts.
Three layouts are common and all are read here (per object folder, detected per object):

1. **Zero-1-to-3 style** (renders of GSO with Zero-1-to-3's ``blender_script.py``)::

       <root>/<object>/000.png ..   RGBA
       <root>/<object>/000.npy ..   3x4 world-to-camera, Blender camera axes

2. **ViewFusion (interpolated) style** (``Wi-sc/ViewFusion`` ``objaverse-rendering/scripts/
   blender_script.py``, used for its ``gso_renderings_elevation60`` / ABO renders): same names,
   but ``NNN.npy`` is the 4x4 Blender ``cam.matrix_world``, i.e. a camera-to-world with Blender
   (OpenGL) camera axes.

3. **SyncDreamer style** (``liuyuan-pal/SyncDreamer``: ``eval_examples/<name>-gt/``, the "GT
   renderings for the GSO dataset" download, ``blender_script.py`` / ``render_batch.py``)::

       <root>/<name>-gt/000.png .. 015.png               RGBA 256x256
       <root>/<name>-gt/000-depth.png .. 015-depth.png   (optional) uint16 z-depth
       <root>/<name>-gt/meta.pkl                         (optional) [K, azimuths, elevations,
                                                          distances, poses (N, 3, 4)]

   ``meta.pkl`` poses are OpenCV world-to-camera (``diag(1, -1, -1) @ R_world2bcam``). Without
   a ``meta.pkl`` the folder uses SyncDreamer's fixed evaluation cameras
   (``meta_info/camera-16.pkl``): 16 views, azimuth ``22.5° * i`` from +x towards +y,
   elevation 30°, distance 1.5, looking at the origin with +z up, ``K = [[280, 0, 128],
   [0, 280, 128], [0, 0, 1]]`` at 256x256 (35 mm lens, 32 mm sensor). Depth PNGs decode as
   ``v / 65535 * (2.4 - 0.6) + 0.6`` (SyncDreamer ``read_depth_objaverse``); values outside
   ``(0.63, 2.37)`` are background (0 here).

All worlds are Blender's (+z up, ours). The FOV of layouts 1 and 2 (not stored) defaults to
Zero-1-to-3's 49.13°.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from vantage.cameras import Cameras, intrinsics_from_fov, spherical_to_cartesian
from vantage.data.formats.common import (
    DatasetError,
    SceneEntry,
    load_depth,
    load_npy,
    load_pickle,
    rigid_pose,
    some_subdirs,
)
from vantage.data.formats.zero123 import ZERO123_FOV_DEG, RenderFolderDataset, numbered_images

__all__ = ["GSODataset", "syncdreamer_cameras", "SYNCDREAMER_DEPTH_RANGE"]

#: SyncDreamer's depth PNG encoding: (min, max) of the uint16 range and the valid open interval.
SYNCDREAMER_DEPTH_RANGE: tuple[float, float] = (0.6, 2.4)
SYNCDREAMER_DEPTH_VALID: tuple[float, float] = (0.63, 2.37)


def syncdreamer_cameras(n: int = 16, *, elevation_deg: float = 30.0, distance: float = 1.5,
                        resolution: int = 256, fov_deg: float = ZERO123_FOV_DEG) -> Cameras:
    """SyncDreamer's fixed evaluation cameras (``meta_info/camera-16.pkl`` for the defaults).

    ``n`` views at azimuth ``360° i / n`` (from +x towards +y), one elevation and distance,
    looking at the origin with world +z up; ``(n,)`` cameras of ``resolution`` pixels.
    """
    az = torch.arange(n, dtype=torch.float64) * (2 * math.pi / n)
    polar = torch.full_like(az, math.radians(90.0 - elevation_deg))
    eye = spherical_to_cartesian(polar, az, torch.full_like(az, distance))
    return Cameras.from_look_at(eye, fov_deg=fov_deg, width=resolution)


class GSODataset(RenderFolderDataset):
    """GSO renders in the Zero-1-to-3, ViewFusion or SyncDreamer layout (module docstring).

    Args:
        path, resolution, up, num_views, strict: see
            :class:`~vantage.data.formats.zero123.RenderFolderDataset`.
        fov_deg: horizontal FOV for layouts without stored intrinsics.
        npy_pose: how to read ``NNN.npy``: ``"auto"`` (3x4 = Zero-1-to-3 world-to-camera, 4x4 =
            ViewFusion ``matrix_world``), ``"w2c"`` or ``"c2w"`` (both Blender camera axes).
        depth: read SyncDreamer ``NNN-depth.png`` when present.
    """

    format_name = "gso"

    def __init__(self, path: str | Path, *, fov_deg: float = ZERO123_FOV_DEG, npy_pose: str = "auto",
                 depth: bool = True, **kwargs) -> None:
        if npy_pose not in ("auto", "w2c", "c2w"):
            raise ValueError(f"npy_pose must be 'auto', 'w2c' or 'c2w', got {npy_pose!r}")
        self.fov_deg, self.npy_pose, self.read_depth = fov_deg, npy_pose, depth
        super().__init__(path, **kwargs)

    @classmethod
    def detect(cls, path: Path) -> bool:
        path = Path(path)
        if not path.is_dir():
            return False
        for d in [path, *some_subdirs(path)]:
            if not (d / "000.png").is_file():
                continue
            if (d / "meta.pkl").is_file() or (d / "000-depth.png").is_file() or d.name.endswith("-gt"):
                return True
            if (d / "000.npy").is_file():
                try:
                    return load_npy(d / "000.npy", ((3, 4), (4, 4))).shape == (4, 4)
                except DatasetError:
                    return False
        return False

    def _index_object(self, d: Path) -> SceneEntry | None:
        images = numbered_images(d)
        ids = [int(p.stem) for p in images]
        has_npy = [(d / f"{p.stem}.npy").is_file() for p in images]
        if any(has_npy):
            if not all(has_npy):
                missing = [p.name for p, h in zip(images, has_npy) if not h]
                raise DatasetError(f"{d}: render(s) without a camera file NNN.npy: {', '.join(missing[:5])}")
            layout = "npy"
        elif (d / "meta.pkl").is_file():
            layout = "syncdreamer-meta"
            self._syncdreamer_meta(d, len(images))  # validate now
        else:
            layout = "syncdreamer-fixed"
            if max(ids) >= 16:
                raise DatasetError(f"{d}: renders without camera files are read with SyncDreamer's fixed 16 "
                                   f"cameras, but view {max(ids)} exists (expected 000.png .. 015.png)")
        return SceneEntry(d.name, d, images, ids, {"layout": layout})

    @staticmethod
    def _syncdreamer_meta(d: Path, n_images: int) -> tuple[Tensor, Tensor]:
        path = d / "meta.pkl"
        meta = load_pickle(path)
        if not isinstance(meta, (list, tuple)) or len(meta) != 5:
            raise DatasetError(f"{path}: expected a list [K, azimuths, elevations, distances, poses]")
        K = np.asarray(meta[0], dtype=np.float64)
        poses = np.asarray(meta[4], dtype=np.float64)
        if K.shape != (3, 3) or poses.ndim != 3 or poses.shape[1:] != (3, 4):
            raise DatasetError(f"{path}: expected K of shape 3x3 and poses of shape (N, 3, 4), found "
                               f"{K.shape} and {poses.shape}")
        if poses.shape[0] < n_images:
            raise DatasetError(f"{path}: {poses.shape[0]} poses for {n_images} renders")
        return torch.from_numpy(K), torch.from_numpy(poses)

    def _cameras(self, entry: SceneEntry, pos: list[int], size: tuple[int, int]) -> Cameras:
        ids = [entry.view_ids[p] for p in pos]
        layout = entry.extra["layout"] if entry.extra else "npy"
        w, h = size
        if layout == "syncdreamer-fixed":
            if w != h:
                raise DatasetError(f"{entry.views[pos[0]]}: SyncDreamer renders are square, found {w}x{h}")
            return syncdreamer_cameras(16, resolution=w, fov_deg=self.fov_deg)[torch.tensor(ids)]
        if layout == "syncdreamer-meta":
            K, poses = self._syncdreamer_meta(entry.path, len(entry.views))
            w2c = [rigid_pose(poses[i], f"{entry.path / 'meta.pkl'} [pose {i}]") for i in ids]
            return Cameras.from_w2c(torch.stack(w2c).float(), K.float(), w, h)
        mats = []
        for p in pos:
            npy = entry.path / f"{entry.views[p].stem}.npy"
            arr = load_npy(npy, ((3, 4), (4, 4)))
            kind = self.npy_pose if self.npy_pose != "auto" else ("w2c" if arr.shape == (3, 4) else "c2w")
            mats.append(rigid_pose(arr, str(npy)) if kind == "w2c" else rigid_pose(arr, str(npy)).inverse())
        K = intrinsics_from_fov(self.fov_deg, w, h)
        return Cameras.from_zero123(torch.stack(mats).float(), K, w, h)

    def _extra(self, entry: SceneEntry, pos: list[int], size: tuple[int, int]) -> dict[str, Tensor]:
        if not self.read_depth:
            return {}
        files = [entry.path / f"{entry.views[p].stem}-depth.png" for p in pos]
        if not all(f.is_file() for f in files):
            return {}
        lo, hi = SYNCDREAMER_DEPTH_RANGE
        vlo, vhi = SYNCDREAMER_DEPTH_VALID
        maps = []
        for f in files:
            d = load_depth(f, (hi - lo) / 65535.0, offset=lo, expected_size=size,
                           reference=entry.views[pos[0]])
            maps.append(torch.where((d > vlo) & (d < vhi), d, torch.zeros_like(d)))
        return {"depth": torch.stack(maps)}
