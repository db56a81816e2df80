"""RealEstate10K: per-clip camera text files and (optionally) the clip's extracted frames.

Layout (the camera files are the official release; the frames layout is ours, documented in
docs/datasets.md)::

    <root>/[<split>/]<clip>.txt                         the official camera file of a clip
    <frames_dir>/<clip>/<timestamp>.png|.jpg|.jpeg      frames named by the file's timestamps
                                                        (default frames_dir: <root>/frames[/<split>])

The path may also be a single ``<clip>.txt``; in a folder, ``.txt`` files whose first line is
not a URL are skipped (recorded in ``skipped``). Camera file: line 1 is the video URL; every other
line has 19 numbers ``timestamp_us fx fy cx cy k1 k2 r11 r12 r13 t1 r21 r22 r23 t2 r31 r32 r33
t3``: intrinsics normalised by the frame width (fx, cx) and height (fy, cy), ``k1 k2`` (zero in
the dataset, ignored), and a row-major 3x4 OpenCV world-to-camera
(:meth:`Cameras.from_realestate10k`). The world frame is the clip's SLAM frame and is kept as
is (there is no "up").

Frames are centre-cropped to a square (side ``min(W, H)``) and resized to ``resolution``; the
intrinsics follow (:meth:`Cameras.center_crop`, :meth:`Cameras.resize`). ``view_ids`` are the
frame indices (line order in the camera file); ``meta["timestamps"]`` holds the timestamps.

Camera-only mode (``frames=False``): no frames are read; ``load`` returns all-zero images
(mid-grey in [-1, 1]) with ``meta["camera_only"] = True`` and the cameras the frames would
have, for pair sampling and tests (:meth:`RealEstate10KDataset.cameras` returns only those).
The frame size is then derived from the file: square pixels give ``W / H = fy / fx`` (16:9 for
the whole dataset), with a nominal height of 360.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from vantage.cameras import Cameras
from vantage.data.formats.common import (
    DatasetError,
    IndexedDataset,
    SceneEntry,
    image_size,
    load_image,
    parse_floats,
    read_lines,
    resize_views,
    rigid_pose,
    select_views,
)
from vantage.data.views import ObjectViews

__all__ = ["RealEstate10KDataset", "read_realestate10k", "NOMINAL_HEIGHT"]

#: Frame height assumed in camera-only mode (only the aspect ratio matters after the crop).
NOMINAL_HEIGHT = 360
FRAME_EXTENSIONS = (".png", ".jpg", ".jpeg")


def read_realestate10k(path: Path) -> tuple[str, np.ndarray, Tensor, Tensor]:
    """Parse one camera file: ``(url, timestamps (N,) int64, intrinsics_n (N, 4), w2c (N, 3, 4))``.

    Errors name the file and line: a line without 19 numbers, a non-rigid or singular pose,
    non-positive focal lengths, a file with no camera lines.
    """
    lines = read_lines(path)
    if not lines:
        raise DatasetError(f"{path}: empty camera file (expected the video URL, then one line per frame)")
    url = lines[0][1].strip()
    if not (url.startswith("http") or "youtube" in url):
        raise DatasetError(f"{path}:{lines[0][0]}: expected the video URL on the first line, "
                           f"found '{url[:80]}'")
    rows = lines[1:]
    if not rows:
        raise DatasetError(f"{path}: no camera lines after the URL")
    ts = np.empty(len(rows), dtype=np.int64)
    intr = torch.empty(len(rows), 4, dtype=torch.float64)
    w2c = torch.empty(len(rows), 3, 4, dtype=torch.float64)
    for k, (no, text) in enumerate(rows):
        v = parse_floats(path, no, text, 19)
        ts[k] = int(v[0])
        if v[1] <= 0 or v[2] <= 0:
            raise DatasetError(f"{path}:{no}: focal lengths must be positive, found fx={v[1]}, fy={v[2]}")
        intr[k] = torch.tensor(v[1:5], dtype=torch.float64)
        w2c[k] = rigid_pose(torch.tensor(v[7:19], dtype=torch.float64).reshape(3, 4), f"{path}:{no}")[:3]
    return url, ts, intr, w2c


def _is_camera_file(p: Path) -> bool:
    if not (p.is_file() and p.suffix == ".txt"):
        return False
    try:
        with p.open(encoding="utf-8") as f:
            first = f.readline().strip()
    except (OSError, UnicodeDecodeError):
        return False
    return first.startswith("http")


class RealEstate10KDataset(IndexedDataset):
    """RealEstate10K clips (see the module docstring).

    Args:
        path: a folder of ``<clip>.txt`` files (with ``split``: ``<path>/<split>/``), or one file.
        split: ``"train"``/``"test"`` subfolder of the official release.
        frames: read frames (``False``: camera-only mode).
        frames_dir: where the ``<clip>/`` frame folders are (default ``<path>/frames[/<split>]``).
        resolution: side of the square output frames.
        frame_size: ``(W, H)`` of the source frames in camera-only mode (default: from fy / fx
            with a height of 360).
        strict: raise on a malformed camera file (``False``: skip the clip and record why).
    """

    format_name = "realestate10k"

    def __init__(self, path: str | Path, *, split: str | None = None, frames: bool = True,
                 frames_dir: str | Path | None = None, resolution: int = 256,
                 frame_size: tuple[int, int] | None = None, strict: bool = True) -> None:
        super().__init__(strict)
        root = Path(path)
        if not root.exists():
            raise DatasetError(f"RealEstate10K path does not exist: {root}")
        self.frames, self.resolution, self.frame_size = frames, int(resolution), frame_size
        if root.is_file():
            files, base = [root], root.parent
        else:
            cam_dir = root / split if split else root
            if not cam_dir.is_dir():
                raise DatasetError(f"{root}: no '{split}' folder of camera files for split='{split}'")
            files, base = sorted(p for p in cam_dir.iterdir() if p.suffix == ".txt"), root
            if not files:
                raise DatasetError(f"{cam_dir}: no <clip>.txt camera files")
        self.frames_dir = Path(frames_dir) if frames_dir is not None else (
            base / "frames" / split if split else base / "frames")
        for f in files:
            if len(files) > 1 and not _is_camera_file(f):
                self.skip(f, "not a camera file (line 1 is not the video URL)")
                continue
            self.try_index(f, lambda f=f: self._index(f))
        hint = f" with frames in {self.frames_dir}/<clip>/; frames=False (CLI: -o frames=false) reads cameras only"
        self.require_entries(root, "<clip>.txt camera files" + (hint if frames else ""))

    @classmethod
    def detect(cls, path: Path) -> bool:
        path = Path(path)
        if path.is_file():
            return _is_camera_file(path)
        if not path.is_dir():
            return False
        for d in (path, *(path / s for s in ("train", "test"))):
            if d.is_dir():
                txt = sorted(d.glob("*.txt"))[:1]
                if txt and _is_camera_file(txt[0]):
                    return True
        return False

    def _index(self, f: Path) -> SceneEntry | None:
        url, ts, _, _ = read_realestate10k(f)
        positions = list(range(len(ts)))
        extra: dict = {"url": url}
        if self.frames:
            clip_dir = self.frames_dir / f.stem
            if not clip_dir.is_dir():
                self.skip(f, f"no frames folder {clip_dir}")
                return None
            stems = {p.stem: p.suffix for p in clip_dir.iterdir() if p.suffix.lower() in FRAME_EXTENSIONS}
            missing = [i for i in positions if str(ts[i]) not in stems]
            if missing:
                self.skip(f, f"{len(missing)} of {len(ts)} frames missing in {clip_dir} (left out), "
                             f"e.g. {ts[missing[0]]}")
            positions = [i for i in positions if str(ts[i]) in stems]
            extra["suffix"] = {str(ts[i]): stems[str(ts[i])] for i in positions}
        return SceneEntry(f.stem, f, positions, positions, extra)

    def _source_size(self, entry: SceneEntry, intr: Tensor, first_frame: Path | None) -> tuple[int, int]:
        if first_frame is not None:
            return image_size(first_frame)
        if self.frame_size is not None:
            return int(self.frame_size[0]), int(self.frame_size[1])
        aspect = float(intr[1] / intr[0])  # (fy / fx) = W / H for square pixels
        return max(1, round(NOMINAL_HEIGHT * aspect)), NOMINAL_HEIGHT

    def cameras(self, index: int, views: Sequence[int] | None = None) -> Cameras:
        """Cameras of clip ``index`` (positions ``views``), cropped and resized like the frames."""
        return self._load(index, views, images=False)[0]

    def load(self, index: int, views: Sequence[int] | None = None) -> ObjectViews:
        cams, imgs, entry, lines, ts = self._load(index, views, images=self.frames)
        s = self.resolution
        if imgs is None:
            imgs = torch.zeros(len(lines), 3, s, s)
        return ObjectViews(images=imgs, cameras=cams, view_ids=torch.tensor(lines), name=entry.name,
                           meta={"format": self.format_name, "path": str(entry.path), "posed": True,
                                 "url": entry.extra["url"], "timestamps": [int(t) for t in ts],
                                 "camera_only": not self.frames})

    def _load(self, index: int, views: Sequence[int] | None, images: bool):
        entry = self.entry(index)
        pos = select_views(len(entry.views), views, f"RealEstate10K clip {entry.path}")
        lines = [entry.views[p] for p in pos]
        _, ts, intr, w2c = read_realestate10k(entry.path)
        if len(ts) <= max(lines):
            raise DatasetError(f"{entry.path}: has {len(ts)} camera lines now, {max(lines) + 1} when indexed")
        ts, intr, w2c = ts[lines], intr[lines], w2c[lines]
        files = None
        if self.frames:
            clip_dir = self.frames_dir / entry.name
            files = [clip_dir / f"{t}{entry.extra['suffix'][str(t)]}" for t in ts]
        w, h = self._source_size(entry, intr[0], files[0] if files else None)
        cams = Cameras.from_realestate10k(intr.float(), w2c.float(), w, h)
        side = min(w, h)
        cams = cams.center_crop(side)
        imgs = None
        if images and files:
            left, top = (w - side) // 2, (h - side) // 2
            frames = [load_image(f, expected_size=(w, h), reference=files[0])[0]
                      [:, top:top + side, left:left + side] for f in files]
            imgs = torch.stack(frames)
        if imgs is None:
            cams = cams.resize(self.resolution, self.resolution)
        else:
            cams, imgs, _, _ = resize_views(cams, imgs, size=self.resolution, where=str(entry.path))
        return cams, imgs, entry, lines, ts
