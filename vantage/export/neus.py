"""Export views in NeuS's data convention, and read such a case back.

NeuS (Wang et al. 2021, https://github.com/Totoro97/NeuS, README "Data Convention"; the cameras follow IDR's
``DATA_CONVENTION.md``) reads a case folder::

    CASE/cameras_sphere.npz     world_mat_i, scale_mat_i (and camera_mat_i) for every view i
    CASE/image/000.png          8-bit RGB, view i (names sort in view order)
    CASE/mask/000.png           8-bit, white (255) = object; all white when the object's mask is unknown

Conventions (``K`` and ``c2w`` are vantage's: pixel intrinsics with pixel centres at ``+0.5``, OpenCV
camera-to-world):

* NeuS puts pixel centres at integer coordinates (its rays go through ``(j, i)``; its COLMAP preprocessing sets
  ``cx = (W - 1) / 2``), so its intrinsics are ``K_neus = S @ K`` with ``S = [[1, 0, -0.5], [0, 1, -0.5],
  [0, 0, 1]]``: the principal point moves by half a pixel.
* ``world_mat_i = [[K_neus, 0], [0, 1]] @ w2c_i`` (4x4): the projection from world to pixels, OpenCV camera axes,
  ``w2c_i = inverse(c2w_i)``. ``camera_mat_i = [[K_neus, 0], [0, 1]]``.
* ``scale_mat_i = [[r, 0, 0, cx], [0, r, 0, cy], [0, 0, r, cz], [0, 0, 0, 1]]`` (the same for every view) maps
  NeuS's unit sphere onto the object's bounding sphere (centre ``c``, radius ``r``): NeuS renders in the
  coordinates ``x_neus = (x_world - c) / r`` by using ``P_i = world_mat_i @ scale_mat_i``.

:func:`read_neus` decomposes ``world_mat_i`` (an RQ decomposition, no OpenCV needed) back into ``K`` and
``c2w`` in the world of the export (not NeuS's normalised one).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from vantage.cameras import Cameras
from vantage.data.formats.common import DatasetError, load_image, load_mask, natural_key, require_file
from vantage.data.views import ObjectViews
from vantage.export.common import bounding_sphere, save_grey, save_rgb
from vantage.outputs import prepare_output_dir

__all__ = ["NeusExport", "write_neus", "read_neus", "neus_world_mats", "scale_matrix", "decompose_projection",
           "PIXEL_SHIFT"]

#: ``K_neus = PIXEL_SHIFT @ K``: vantage's pixel centres at +0.5 -> NeuS's at integer coordinates.
PIXEL_SHIFT = torch.tensor([[1.0, 0.0, -0.5], [0.0, 1.0, -0.5], [0.0, 0.0, 1.0]], dtype=torch.float64)


@dataclass
class NeusExport:
    """What :func:`write_neus` wrote: the npz path, image and mask files, the sphere, and notes."""

    cameras_file: Path
    images: list[str]
    masks: list[str]
    center: list[float]
    radius: float
    masks_known: bool
    notes: list[str] = field(default_factory=list)


def _intrinsics4(K: Tensor) -> Tensor:
    """``(N, 3, 3)`` vantage intrinsics -> ``(N, 4, 4)`` NeuS ``camera_mat`` (pixel centres at integers)."""
    out = torch.eye(4, dtype=torch.float64).repeat(K.shape[0], 1, 1)
    out[:, :3, :3] = PIXEL_SHIFT @ K.double()
    return out


def neus_world_mats(cameras: Cameras) -> Tensor:
    """``(N, 4, 4)`` float64 ``world_mat_i = [[K_neus, 0], [0, 1]] @ w2c_i`` of ``cameras`` ``(N,)``."""
    w2c = torch.linalg.inv(cameras.c2w.reshape(-1, 4, 4).double())
    return _intrinsics4(cameras.K.reshape(-1, 3, 3)) @ w2c


def scale_matrix(center: Sequence[float] | Tensor, radius: float) -> Tensor:
    """``(4, 4)`` float64 ``scale_mat``: ``diag(r, r, r, 1)`` with translation ``center``."""
    m = torch.diag(torch.tensor([radius, radius, radius, 1.0], dtype=torch.float64))
    m[:3, 3] = torch.as_tensor(center, dtype=torch.float64)
    return m


def decompose_projection(P: Tensor) -> tuple[Tensor, Tensor]:
    """Split a ``(3|4, 4)`` projection ``P ~ K [R | t]`` into ``(K (3, 3), w2c (4, 4))``, both float64.

    ``P`` may carry any non-zero scale (and sign). The left 3x3 block ``M = K R`` is RQ-decomposed (via the QR
    decomposition of the row-reversed, transposed ``M``) into an upper-triangular ``K`` with a positive diagonal
    and a rotation ``R`` (after flipping ``P``'s sign when ``det(M) < 0``); ``t = K^-1 P[:, 3]`` and ``K`` is
    normalised to ``K[2, 2] = 1``.
    """
    P = torch.as_tensor(P, dtype=torch.float64)[:3, :4]
    M = P[:, :3]
    det = float(torch.linalg.det(M))
    if abs(det) < 1e-12:
        raise ValueError("projection matrix is singular (det of its left 3x3 block ~ 0)")
    if det < 0:
        P, M = -P, -M
    flip = torch.flip(torch.eye(3, dtype=torch.float64), dims=[0])
    q, r = torch.linalg.qr((flip @ M).T)
    K = flip @ r.T @ flip
    R = flip @ q.T
    signs = torch.diag(torch.sign(torch.diagonal(K)))
    K, R = K @ signs, signs @ R
    t = torch.linalg.solve(K, P[:, 3])
    w2c = torch.eye(4, dtype=torch.float64)
    w2c[:3, :3], w2c[:3, 3] = R, t
    return K / K[2, 2], w2c


def write_neus(views: ObjectViews, out: str | Path, *, radius: float = 1.0, center: Sequence[float] | None = None,
               overwrite: bool = False) -> NeusExport:
    """Write ``views`` as a NeuS case folder ``out`` (see the module docstring).

    ``views``: images ``(N, 3, H, W)`` in [-1, 1], cameras ``(N,)``, optional masks ``(N, 1, H, W)`` in [0, 1]
    (written as ``round(255 * mask)``; without masks every mask is all white, and a note says so). The bounding
    sphere is ``center`` (default: the point closest to all optical axes) and ``radius`` (world units).
    """
    c, r, notes = bounding_sphere(views.cameras, radius, center)
    n = len(views)
    digits = max(3, len(str(n - 1)))
    out = prepare_output_dir(out, overwrite, what="NeuS case")
    (out / "image").mkdir(exist_ok=True)
    (out / "mask").mkdir(exist_ok=True)
    world = neus_world_mats(views.cameras)
    cam = _intrinsics4(views.cameras.K.reshape(-1, 3, 3))
    scale = scale_matrix(c, r)
    arrays: dict[str, np.ndarray] = {}
    images, masks = [], []
    white = torch.ones(1, *views.images.shape[-2:])
    for i in range(n):
        name = f"{i:0{digits}d}.png"
        save_rgb(views.images[i], out / "image" / name)
        save_grey(white if views.masks is None else views.masks[i], out / "mask" / name, channels=3)
        images.append(f"image/{name}")
        masks.append(f"mask/{name}")
        arrays[f"world_mat_{i}"] = world[i].numpy()
        arrays[f"scale_mat_{i}"] = scale.numpy()
        arrays[f"camera_mat_{i}"] = cam[i].numpy()
    np.savez(out / "cameras_sphere.npz", **arrays)
    if views.masks is None:
        notes.append("no object masks are known for these views: mask/ holds all-white masks (NeuS's 'unmasked' "
                     "setting); train with confs/womask.conf")
    ours = {Path(f).name for f in images}
    stale = sorted({p.name for d in ("image", "mask") for p in (out / d).glob("*.png")} - ours)
    if stale:
        notes.append(f"{len(stale)} older PNG file(s) in image/ or mask/ ({', '.join(stale[:3])}...) are not part of "
                     f"this export but NeuS reads every PNG there: remove them")
    return NeusExport(out / "cameras_sphere.npz", images, masks, [float(v) for v in c], r, views.masks is not None,
                      notes)


def read_neus(path: str | Path) -> ObjectViews:
    """Read a NeuS case folder: images, masks ``(N, 1, H, W)`` and cameras in vantage's convention.

    ``world_mat_i`` is decomposed (:func:`decompose_projection`) into ``K_neus`` and ``w2c``; ``K = S^-1 K_neus``
    moves the principal point back by half a pixel. ``meta["scale_mat"]`` holds ``scale_mat_0`` (4x4 list).
    """
    root = Path(path)
    npz = require_file(root / "cameras_sphere.npz", "NeuS cameras_sphere.npz")
    try:
        with np.load(npz, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (OSError, ValueError) as e:
        raise DatasetError(f"{npz}: cannot read as an .npz archive ({e})") from None
    images = sorted((p for p in (root / "image").glob("*.png")), key=lambda p: natural_key(p.name))
    masks = sorted((p for p in (root / "mask").glob("*.png")), key=lambda p: natural_key(p.name))
    n = sum(k.startswith("world_mat_") and not k.startswith("world_mat_inv") for k in arrays)
    if not images:
        raise DatasetError(f"{root / 'image'}: no PNG images (expected image/000.png, ...)")
    if n != len(images) or (masks and len(masks) != n):
        raise DatasetError(f"{npz}: {n} world_mat_i entries, but {len(images)} images in image/ and {len(masks)} masks "
                           f"in mask/ (expected one of each per view)")
    Ks, c2ws = [], []
    for i in range(n):
        for key in (f"world_mat_{i}", f"scale_mat_{i}"):
            if key not in arrays or arrays[key].shape not in ((4, 4), (3, 4)):
                raise DatasetError(f"{npz}: '{key}' is missing or not a 4x4 matrix (found "
                                   f"{None if key not in arrays else arrays[key].shape})")
        try:
            K_neus, w2c = decompose_projection(torch.from_numpy(arrays[f"world_mat_{i}"]))
        except ValueError as e:
            raise DatasetError(f"{npz}: world_mat_{i}: {e}") from None
        Ks.append(torch.linalg.solve(PIXEL_SHIFT, K_neus))
        c2ws.append(torch.linalg.inv(w2c))
    first = images[0]
    imgs = [load_image(first)[0]]
    h, w = imgs[0].shape[-2:]
    imgs += [load_image(p, expected_size=(w, h), reference=first)[0] for p in images[1:]]
    m = torch.stack([load_mask(p, expected_size=(w, h), reference=first) for p in masks]) if masks else None
    cams = Cameras(torch.stack(c2ws).float(), torch.stack(Ks).float(), w, h)
    return ObjectViews(images=torch.stack(imgs), cameras=cams, masks=m, name=root.name,
                       meta={"format": "neus", "path": str(root), "files": [p.name for p in images],
                             "scale_mat": arrays["scale_mat_0"].tolist()})
