"""Helpers shared by every dataset reader in :mod:`vantage.data.formats`.

Everything a reader needs more than once lives here, so that the readers stay small and their
errors read the same:

* :class:`DatasetError` (a ``ValueError``): bad input, always naming the file (and line) and
  saying what was expected.
* Text and array parsing: :func:`parse_floats`, :func:`read_matrix`, :func:`load_npy`,
  :func:`load_pickle` (a restricted unpickler that only rebuilds numpy arrays).
* Pose checks and world frames: :func:`rigid_pose`, :func:`similarity_to_rigid`,
  :func:`up_to_z_rotation`, :func:`to_z_up`.
* Images: :func:`image_size`, :func:`load_image` (RGBA composited on a background, ``[-1, 1]``),
  :func:`load_mask`, :func:`load_depth`, :func:`resize_views`, :func:`to_uint8`.
* Indexing: :class:`SceneEntry`, :class:`IndexedDataset` (the ``len``/``scene_name``/
  ``num_views`` plumbing and the ``strict`` skip-or-raise policy), :func:`select_views`,
  :func:`find_dirs`, :func:`list_files`.
"""

from __future__ import annotations

import io
import math
import os
import pickle
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from vantage.cameras import Cameras
from vantage.data.views import SceneDataset, Skipped

__all__ = [
    "DatasetError", "IMAGE_EXTENSIONS", "WHITE", "natural_key", "list_files", "subdirs", "some_subdirs",
    "find_dirs", "require_file",
    "parse_floats", "read_lines", "read_matrix", "load_npy", "load_pickle", "rigid_pose",
    "similarity_to_rigid", "up_to_z_rotation", "to_z_up", "image_size", "load_image", "load_mask",
    "load_depth", "resize_views",
    "resize_maps", "to_uint8", "select_views", "SceneEntry", "IndexedDataset",
]

IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".webp")
WHITE: tuple[float, float, float] = (1.0, 1.0, 1.0)


class DatasetError(ValueError):
    """Bad dataset input. The message names the file (and line) and says what was expected."""


# ---------------------------------------------------------------------------------- files
def natural_key(name: str) -> tuple:
    """Sort key that orders ``"2.png"`` before ``"10.png"`` (digit runs compare as numbers)."""
    return tuple((0, int(t), "") if t.isdigit() else (1, 0, t.lower()) for t in re.split(r"(\d+)", name) if t)


def require_file(path: Path, what: str) -> Path:
    """``path`` if it is a file, else a :class:`DatasetError` saying which ``what`` is missing."""
    if not path.is_file():
        raise DatasetError(f"missing {what}: {path} does not exist")
    return path


def list_files(folder: Path, extensions: Sequence[str], what: str) -> list[Path]:
    """Files of ``folder`` whose suffix (case-insensitive) is in ``extensions``, naturally sorted.

    Raises :class:`DatasetError` when the folder does not exist.
    """
    if not folder.is_dir():
        raise DatasetError(f"missing {what} folder: {folder} does not exist")
    exts = {e.lower() for e in extensions}
    files = [p for p in folder.iterdir()
             if p.is_file() and p.suffix.lower() in exts and not p.name.startswith(".")]
    return sorted(files, key=lambda p: natural_key(p.name))


def subdirs(folder: Path) -> list[Path]:
    """Child folders of ``folder`` (hidden ones excluded), naturally sorted."""
    with os.scandir(folder) as it:  # DirEntry.is_dir() needs no stat on most file systems
        names = [e.name for e in it if e.is_dir() and not e.name.startswith(".")]
    return [folder / n for n in sorted(names, key=natural_key)]


def some_subdirs(folder: Path, k: int = 5) -> list[Path]:
    """Up to ``k`` child folders of ``folder`` in directory order, without listing (or stat-ing)
    the rest: cheap format detection on folders of 800k objects."""
    out: list[Path] = []
    with os.scandir(folder) as it:
        for e in it:
            if e.is_dir() and not e.name.startswith("."):
                out.append(Path(e.path))
                if len(out) >= k:
                    break
    return out


def find_dirs(root: Path, is_item: Callable[[Path], bool]) -> list[Path]:
    """``[root]`` when ``root`` itself is an item, else the child folders of ``root`` (see
    :func:`subdirs`); the caller decides what to do with children that are not items."""
    return [root] if is_item(root) else subdirs(root)


# ---------------------------------------------------------------------------------- numbers
def parse_floats(path: Path | str, line_no: int, text: str,
                 expected_count: int | Sequence[int] | None = None) -> list[float]:
    """The whitespace-separated numbers of one line of ``path`` (``line_no`` is 1-based).

    ``expected_count`` (one count or several allowed ones) is checked; every error names the
    file and line, what was found and what was expected.
    """
    tokens = text.replace(",", " ").split()
    values = []
    for tok in tokens:
        try:
            values.append(float(tok))
        except ValueError:
            raise DatasetError(f"{path}:{line_no}: '{tok}' is not a number "
                               f"(line: '{text.strip()[:200]}')") from None
    if expected_count is not None:
        allowed = (expected_count,) if isinstance(expected_count, int) else tuple(expected_count)
        if len(values) not in allowed:
            want = " or ".join(str(a) for a in allowed)
            raise DatasetError(f"{path}:{line_no}: expected {want} numbers, found {len(values)}: "
                               f"'{text.strip()[:200]}'")
    if not all(math.isfinite(v) for v in values):
        raise DatasetError(f"{path}:{line_no}: NaN or infinite value in '{text.strip()[:200]}'")
    return values


def read_lines(path: Path) -> list[tuple[int, str]]:
    """Non-blank lines of a text file as ``(1-based line number, text)``."""
    require_file(path, "text file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise DatasetError(f"{path}: not a UTF-8 text file ({e})") from None
    return [(i + 1, line) for i, line in enumerate(text.splitlines()) if line.strip()]


_SHAPES_BY_COUNT = {16: (4, 4), 12: (3, 4), 9: (3, 3)}


def read_matrix(path: Path, shapes: Sequence[tuple[int, int]] = ((4, 4), (3, 4))) -> Tensor:
    """A matrix stored as text (any line layout, row-major) reshaped by its number count.

    ``shapes`` lists the accepted shapes (16 numbers -> 4x4, 12 -> 3x4, 9 -> 3x3). Returns a
    float64 tensor.
    """
    lines = read_lines(path)
    values: list[float] = []
    for no, text in lines:
        values += parse_floats(path, no, text)
    counts = [r * c for r, c in shapes]
    if len(values) not in counts:
        want = " or ".join(f"{r * c} ({r}x{c})" for r, c in shapes)
        raise DatasetError(f"{path}: expected {want} numbers, found {len(values)}")
    return torch.tensor(values, dtype=torch.float64).reshape(_SHAPES_BY_COUNT[len(values)])


def load_npy(path: Path, shapes: Sequence[tuple[int, ...]] | None = None) -> Tensor:
    """A ``.npy`` array (no pickles) checked against the allowed ``shapes`` (``None``: any) as a
    float64 tensor; NaN/inf are errors."""
    require_file(path, "array file")
    try:
        arr = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise DatasetError(f"{path}: cannot read as a .npy array ({e})") from None
    if shapes is not None and tuple(arr.shape) not in [tuple(s) for s in shapes]:
        want = " or ".join("x".join(map(str, s)) for s in shapes)
        raise DatasetError(f"{path}: expected an array of shape {want}, found {tuple(arr.shape)}")
    out = torch.from_numpy(np.asarray(arr, dtype=np.float64))
    if not torch.isfinite(out).all():
        raise DatasetError(f"{path}: contains NaN or infinite values")
    return out


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickler that only rebuilds numpy arrays/scalars and builtin containers (no code)."""

    _ALLOWED = {("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "_reconstruct"),
                ("numpy._core.multiarray", "_reconstruct"), ("numpy.core.multiarray", "scalar"),
                ("numpy._core.multiarray", "scalar")}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self._ALLOWED or (module == "numpy.dtypes" and name.endswith("DType")):
            if module.startswith("numpy.core."):
                module = "numpy._core." + module[len("numpy.core."):]
            mod = __import__(module, fromlist=[name])
            return getattr(mod, name)
        raise pickle.UnpicklingError(f"refusing to load '{module}.{name}' (only numpy arrays are allowed)")


def load_pickle(path: Path) -> Any:
    """Load a pickle that may only contain numpy arrays, numbers and builtin containers."""
    require_file(path, "pickle file")
    try:
        return _ArrayUnpickler(io.BytesIO(path.read_bytes())).load()
    except Exception as e:  # noqa: BLE001 - any failure is a bad file
        raise DatasetError(f"{path}: cannot read as a pickle of numpy arrays ({e})") from None


# ---------------------------------------------------------------------------------- poses
def rigid_pose(m: Tensor, where: str, *, tol: float = 1e-3) -> Tensor:
    """Check a ``(3|4, 4)`` pose and return it as a float64 ``(4, 4)``.

    Raises :class:`DatasetError` (naming ``where``) when it is not finite, not invertible, its
    bottom row is not ``[0, 0, 0, 1]``, or its rotation block is not orthonormal within ``tol``.
    """
    m = torch.as_tensor(m, dtype=torch.float64)
    if m.shape == (3, 4):
        m = torch.cat([m, torch.tensor([[0.0, 0.0, 0.0, 1.0]], dtype=torch.float64)])
    if m.shape != (4, 4):
        raise DatasetError(f"{where}: expected a 3x4 or 4x4 pose matrix, found shape {tuple(m.shape)}")
    if not torch.isfinite(m).all():
        raise DatasetError(f"{where}: pose contains NaN or infinite values")
    if not torch.allclose(m[3], torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=torch.float64), atol=1e-6):
        raise DatasetError(f"{where}: pose bottom row must be [0, 0, 0, 1], found {m[3].tolist()}")
    rot = m[:3, :3]
    det = float(torch.linalg.det(rot))
    if abs(det) < 1e-9:
        raise DatasetError(f"{where}: pose is not invertible (rotation block has determinant {det:.3g})")
    err = float((rot.T @ rot - torch.eye(3, dtype=torch.float64)).abs().max())
    if err > tol or det < 0:
        raise DatasetError(f"{where}: pose is not a rigid transform (rotation block is not a proper "
                           f"rotation: max |R^T R - I| = {err:.3g}, det = {det:.3g})")
    return m


def similarity_to_rigid(w2c: Tensor, where: str) -> Tensor:
    """Turn a world-to-camera similarity ``[[s R, t], [0, 1]]`` (uniform ``s > 0``) into the rigid
    ``[[R, t / s], [0, 1]]`` that projects every point to the same pixel (dividing camera
    coordinates by ``s`` does not move their projection). Returns float64 ``(4, 4)``."""
    w2c = torch.as_tensor(w2c, dtype=torch.float64)
    if w2c.shape == (3, 4):
        w2c = torch.cat([w2c, torch.tensor([[0.0, 0.0, 0.0, 1.0]], dtype=torch.float64)])
    if not torch.isfinite(w2c).all():
        raise DatasetError(f"{where}: pose contains NaN or infinite values")
    det = float(torch.linalg.det(w2c[:3, :3]))
    if det <= 1e-12:
        raise DatasetError(f"{where}: pose is not invertible or mirrored "
                           f"(rotation block determinant {det:.3g})")
    s = det ** (1.0 / 3.0)
    out = w2c.clone()
    out[:3, :] = w2c[:3, :] / s
    return rigid_pose(out, where)


_UP_ROTATIONS = {  # rows map source coordinates to a world whose +z is the source's ``up``
    "+z": [[1, 0, 0], [0, 1, 0], [0, 0, 1]],
    "-z": [[1, 0, 0], [0, -1, 0], [0, 0, -1]],
    "+y": [[1, 0, 0], [0, 0, -1], [0, 1, 0]],  # pixelNeRF's ShapeNet world rotation (x, y, z) -> (x, -z, y)
    "-y": [[1, 0, 0], [0, 0, 1], [0, -1, 0]],
    "+x": [[0, 0, -1], [0, 1, 0], [1, 0, 0]],
    "-x": [[0, 0, 1], [0, 1, 0], [-1, 0, 0]],
}


def up_to_z_rotation(up: str) -> Tensor:
    """``(4, 4)`` rotation of the world taking the source axis ``up`` ("+y", "-z", ...) to +z."""
    if up not in _UP_ROTATIONS:
        raise ValueError(f"up must be one of {sorted(_UP_ROTATIONS)} or None, got {up!r}")
    m = torch.eye(4, dtype=torch.float64)
    m[:3, :3] = torch.tensor(_UP_ROTATIONS[up], dtype=torch.float64)
    return m


def to_z_up(cameras: Cameras, up: str | None) -> Cameras:
    """Rotate the world of ``cameras`` so that the source axis ``up`` becomes +z (``None``: as is)."""
    if up is None or up == "+z":
        return cameras
    rot = up_to_z_rotation(up).to(cameras.c2w)
    return Cameras(rot @ cameras.c2w, cameras.K, cameras.width, cameras.height)


# ---------------------------------------------------------------------------------- images
def image_size(path: Path) -> tuple[int, int]:
    """``(width, height)`` of an image file, reading only its header."""
    require_file(path, "image")
    try:
        with Image.open(path) as im:
            return im.size
    except (OSError, ValueError) as e:
        raise DatasetError(f"{path}: cannot read as an image ({e})") from None


def _read_rgba(path: Path) -> tuple[np.ndarray, bool]:
    """``(H, W, 4)`` float32 in [0, 1] and whether the file had an alpha channel."""
    require_file(path, "image")
    try:
        with Image.open(path) as im:
            im.load()
            has_alpha = im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info)
            if im.mode in ("I;16", "I;16B", "I;16L", "I"):
                arr = np.asarray(im, dtype=np.float32) / 65535.0
                rgba = np.concatenate([np.repeat(arr[..., None], 3, -1), np.ones_like(arr)[..., None]], -1)
                return rgba.astype(np.float32), False
            rgba = np.asarray(im.convert("RGBA"), dtype=np.float32) / 255.0
    except (OSError, ValueError) as e:
        raise DatasetError(f"{path}: cannot read as an image ({e})") from None
    return rgba, has_alpha


def _check_size(path: Path, size: tuple[int, int], expected: tuple[int, int] | None,
                reference: Path | str | None) -> None:
    if expected is not None and tuple(size) != tuple(expected):
        ref = f" like {reference}" if reference is not None else ""
        raise DatasetError(f"{path}: image is {size[0]}x{size[1]} but {expected[0]}x{expected[1]} was "
                           f"expected{ref} (all views of a scene must have one size)")


def load_image(path: Path, *, expected_size: tuple[int, int] | None = None,
               reference: Path | str | None = None,
               background: Sequence[float] = WHITE) -> tuple[Tensor, Tensor | None]:
    """Load an image as ``(3, H, W)`` float in [-1, 1] and its alpha ``(1, H, W)`` in [0, 1].

    RGBA (straight alpha) is composited over ``background`` (RGB in [0, 1], white by default):
    ``rgb * a + background * (1 - a)``; alpha is ``None`` for images without one. When
    ``expected_size`` ``(W, H)`` is given a different size is an error naming this file and
    ``reference`` (the file that set the size).
    """
    rgba, has_alpha = _read_rgba(path)
    h, w = rgba.shape[:2]
    _check_size(path, (w, h), expected_size, reference)
    rgb, alpha = rgba[..., :3], rgba[..., 3:]
    bg = np.asarray(background, dtype=np.float32).reshape(1, 1, 3)
    rgb = rgb * alpha + bg * (1.0 - alpha)
    img = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1) * 2.0 - 1.0
    a = torch.from_numpy(np.ascontiguousarray(alpha)).permute(2, 0, 1) if has_alpha else None
    return img, a


def load_mask(path: Path, *, expected_size: tuple[int, int] | None = None,
              reference: Path | str | None = None) -> Tensor:
    """A mask image as ``(1, H, W)`` float in [0, 1] (grey level / 255; alpha if it has one)."""
    require_file(path, "mask")
    try:
        with Image.open(path) as im:
            im.load()
            arr = np.asarray(im.getchannel("A") if im.mode in ("RGBA", "LA") else im.convert("L"),
                             dtype=np.float32) / 255.0
    except (OSError, ValueError) as e:
        raise DatasetError(f"{path}: cannot read as a mask image ({e})") from None
    _check_size(path, (arr.shape[1], arr.shape[0]), expected_size, reference)
    return torch.from_numpy(arr)[None]


def load_depth(path: Path, scale: float, *, expected_size: tuple[int, int] | None = None,
               reference: Path | str | None = None, offset: float = 0.0,
               invalid: int | None = None) -> Tensor:
    """A depth map as ``(1, H, W)`` float: ``value * scale + offset`` (0 stays 0 = background).

    PNG files must be single-channel 16-bit (or 8-bit); ``.npy`` files hold ``(H, W)`` or
    ``(H, W, 1)`` numbers. Pixels equal to ``invalid`` (e.g. 65535) also become 0.
    """
    require_file(path, "depth map")
    if path.suffix.lower() == ".npy":
        arr = load_npy(path).numpy()
    else:
        try:
            with Image.open(path) as im:
                im.load()
                if im.mode not in ("I;16", "I;16B", "I;16L", "I", "L"):
                    raise DatasetError(f"{path}: a depth PNG must be single-channel 16-bit, "
                                       f"found mode {im.mode}")
                arr = np.asarray(im).astype(np.float64)
        except (OSError, ValueError) as e:
            if isinstance(e, DatasetError):
                raise
            raise DatasetError(f"{path}: cannot read as a depth image ({e})") from None
    arr = np.asarray(arr, dtype=np.float64).squeeze()
    if arr.ndim != 2:
        raise DatasetError(f"{path}: depth must be an (H, W) array, found shape {arr.shape}")
    _check_size(path, (arr.shape[1], arr.shape[0]), expected_size, reference)
    zero = arr == 0
    if invalid is not None:
        zero |= arr == invalid
    depth = np.where(zero, 0.0, arr * scale + offset)
    return torch.from_numpy(depth.astype(np.float32))[None]


def resize_views(cameras: Cameras, images: Tensor, masks: Tensor | None = None, depth: Tensor | None = None,
                 *, size: int | tuple[int, int] | None = None,
                 where: str = "") -> tuple[Cameras, Tensor, Tensor | None, Tensor | None]:
    """Resize ``images (N, 3, H, W)``, ``masks``/``depth (N, 1, H, W)`` and the cameras to ``size``.

    ``size`` is a side (square output; a non-square source is an error naming ``where``) or
    ``(W, H)``. Images and masks use antialiased bilinear resampling (corner-aligned, matching
    :meth:`Cameras.resize`); depth uses nearest so that object edges do not blend with 0.
    """
    if size is None:
        return cameras, images, masks, depth
    h, w = images.shape[-2:]
    if isinstance(size, int):
        if w != h:
            raise DatasetError(f"{where}: cannot resize {w}x{h} images to a square {size}x{size} "
                               f"without distortion; crop them first")
        size = (size, size)
    if (w, h) == tuple(size):
        return cameras, images, masks, depth

    cams = cameras.resize(size[0], size[1])
    return cams, resize_maps(images, size), resize_maps(masks, size), resize_maps(depth, size, nearest=True)


def resize_maps(t: Tensor | None, size: tuple[int, int], *, nearest: bool = False) -> Tensor | None:
    """Resize ``(N, C, H, W)`` maps to ``size = (W, H)``: antialiased bilinear (corner-aligned, as
    :meth:`Cameras.resize` assumes) or nearest (depth). ``None`` passes through."""
    if t is None:
        return None
    if nearest:
        return F.interpolate(t, size=(size[1], size[0]), mode="nearest-exact")
    return F.interpolate(t, size=(size[1], size[0]), mode="bilinear", align_corners=False, antialias=True)


def to_uint8(image: Tensor) -> np.ndarray:
    """``(3, H, W)`` in [-1, 1] -> ``(H, W, 3)`` uint8 (rounded, clipped)."""
    arr = ((image.detach().float().cpu().clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8)
    return arr.permute(1, 2, 0).numpy()


# ---------------------------------------------------------------------------------- indexing
def select_views(n: int, views: Sequence[int] | Tensor | None, where: str) -> list[int]:
    """Positions to load: ``range(n)`` for ``None``, else ``views`` checked against ``n``."""
    if views is None:
        return list(range(n))
    out = [int(v) for v in (views.tolist() if isinstance(views, Tensor) else views)]
    bad = [v for v in out if not -n <= v < n]
    if bad:
        raise IndexError(f"{where} has {n} views, view positions {bad} are out of range")
    if not out:
        raise ValueError(f"{where}: asked to load an empty list of views")
    return [v % n for v in out]


@dataclass
class SceneEntry:
    """One indexed scene: its name, folder/file, per-view records and source view ids."""

    name: str
    path: Path
    views: list = field(default_factory=list)
    view_ids: list[int] = field(default_factory=list)
    extra: dict = field(default_factory=dict)


class IndexedDataset(SceneDataset):
    """A :class:`SceneDataset` over a list of :class:`SceneEntry` built while indexing.

    ``strict=True`` re-raises a :class:`DatasetError` found while indexing an item; with
    ``strict=False`` the item is skipped and the error recorded in ``skipped``.
    """

    def __init__(self, strict: bool = True) -> None:
        super().__init__()
        self.strict = strict
        self.entries: list[SceneEntry] = []

    def __len__(self) -> int:
        return len(self.entries)

    def scene_name(self, index: int) -> str:
        return self.entries[self._check_index(index)].name

    def num_views(self, index: int) -> int:
        return len(self.entries[self._check_index(index)].views)

    def entry(self, index: int) -> SceneEntry:
        """The :class:`SceneEntry` of scene ``index``."""
        return self.entries[self._check_index(index)]

    def skip(self, path: Path | str, reason: str) -> None:
        """Record a skipped item."""
        self.skipped.append(Skipped(str(path), reason))

    def try_index(self, path: Path, fn: Callable[[], SceneEntry | None]) -> None:
        """Run ``fn`` (returns an entry, or ``None`` after recording a skip) under the strict policy."""
        try:
            entry = fn()
        except DatasetError as e:
            if self.strict:
                raise
            self.skip(path, str(e))
            return
        if entry is not None:
            if not entry.views:
                self.skip(path, "no views")
            else:
                self.entries.append(entry)

    def require_entries(self, root: Path, layout: str) -> None:
        """Raise when indexing found nothing (naming the root, the layout and the first skips)."""
        if self.entries:
            return
        why = "; ".join(str(s) for s in self.skipped[:3])
        raise DatasetError(f"{root}: no {self.format_name} scenes found (expected {layout})"
                           + (f"; skipped: {why}" if why else ""))
