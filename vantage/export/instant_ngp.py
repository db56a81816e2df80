"""Export views as an instant-ngp NeRF dataset (``transforms.json``), and read one back.

instant-ngp (Müller et al. 2022, https://github.com/NVlabs/instant-ngp, ``docs/nerf_dataset_tips.md`` and
``src/nerf_loader.cu``) reads the NeRF-synthetic ``transforms.json``::

    OUT/transforms.json
    OUT/images/000.png      8-bit RGB, or RGBA with alpha = round(255 * mask) when the object mask is known

Top level: ``camera_angle_x``/``camera_angle_y`` (radians), ``fl_x, fl_y, cx, cy, w, h`` (per frame instead, with
``w``/``h``, when the views' intrinsics differ), ``aabb_scale``, ``scale``, ``offset``; per frame ``file_path``,
``transform_matrix`` and ``vantage_role`` (ignored by instant-ngp). Conventions (``K``, ``c2w`` are vantage's):

* ``transform_matrix = c2w @ diag(1, -1, -1, 1)`` (OpenGL camera axes, world unchanged: world +z up, as in
  NeRF's Blender scenes).
* ``fl_x = K[0, 0]``, ``fl_y = K[1, 1]``, ``cx = K[0, 2]``, ``cy = K[1, 2]``: instant-ngp puts pixel centres at
  +0.5 (it samples ``uv = (pixel + 0.5) / resolution`` against ``principal_point = cx / w``), like vantage.
  ``camera_angle_x = 2 atan(w / (2 fl_x))`` (instant-ngp prefers ``fl_x`` when both are present).
* instant-ngp maps a position ``p`` of the json's world into its unit cube ``[0, 1]^3`` with
  ``p_ngp = cycle(scale * p + offset)``, ``cycle(x, y, z) = (y, z, x)`` (``nerf_loader.h``,
  ``nerf_position_to_ngp``; its default ``scale = 0.33``, ``offset = [0.5, 0.5, 0.5]``). For an object in the
  sphere of centre ``c`` and radius ``r`` we write::

      scale  = 0.5 / r              # the sphere's diameter becomes the cube's side
      offset = 0.5 - scale * c      # the centre goes to the cube's centre (0.5, 0.5, 0.5)

  so the bounding sphere is inscribed in the unit cube. ``aabb_scale`` (a power of two, 1..128) lets rays march
  beyond the cube; 1 (the default) suits an object on a plain background.

:func:`read_instant_ngp` reads such a file (frames in instant-ngp's natural file order); :func:`nerf_to_ngp` and
:func:`ngp_to_nerf` apply and undo instant-ngp's ``scale``/``offset``/axis cycle on camera matrices.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from vantage.cameras import Cameras
from vantage.data.formats.common import DatasetError, natural_key, require_file, rigid_pose, to_uint8
from vantage.data.views import ObjectViews
from vantage.export.common import bounding_sphere, mask_to_uint8
from vantage.outputs import prepare_output_dir

__all__ = ["NgpExport", "write_instant_ngp", "read_instant_ngp", "ngp_scale_offset", "nerf_to_ngp", "ngp_to_nerf",
           "nerf_position_to_ngp", "AABB_SCALES"]

AABB_SCALES = tuple(2 ** k for k in range(8))  # 1, 2, 4, ..., 128


@dataclass
class NgpExport:
    """What :func:`write_instant_ngp` wrote: the json path, image files, scale/offset, the sphere, and notes."""

    transforms: Path
    images: list[str]
    scale: float
    offset: list[float]
    center: list[float]
    radius: float
    notes: list[str] = field(default_factory=list)


def ngp_scale_offset(center: Sequence[float] | Tensor, radius: float) -> tuple[float, list[float]]:
    """``(scale, offset)`` placing the sphere ``(center, radius)`` inscribed in instant-ngp's unit cube."""
    scale = 0.5 / float(radius)
    return scale, [0.5 - scale * float(c) for c in center]


def nerf_position_to_ngp(p: Tensor, scale: float, offset: Sequence[float]) -> Tensor:
    """``(..., 3)`` json-world positions -> instant-ngp cube coordinates ``cycle(scale * p + offset)``."""
    q = p.double() * scale + torch.as_tensor(offset, dtype=torch.float64)
    return q[..., [1, 2, 0]]


def nerf_to_ngp(c2w_gl: Tensor, scale: float, offset: Sequence[float]) -> Tensor:
    """``(..., 4, 4)`` OpenGL c2w -> instant-ngp's ``(..., 3, 4)`` camera matrix (``nerf_matrix_to_ngp``).

    Columns 1 and 2 are negated (back to a camera looking along its +z), the position becomes
    ``scale * t + offset``, and the rows are cycled ``(x, y, z) <- (y, z, x)``.
    """
    m = c2w_gl[..., :3, :4].double().clone()
    m[..., :, 1:3] = -m[..., :, 1:3]
    m[..., :, 3] = m[..., :, 3] * scale + torch.as_tensor(offset, dtype=torch.float64)
    return m[..., [1, 2, 0], :]


def ngp_to_nerf(m: Tensor, scale: float, offset: Sequence[float]) -> Tensor:
    """Inverse of :func:`nerf_to_ngp` (``ngp_matrix_to_nerf``): ``(..., 3, 4)`` -> OpenGL c2w ``(..., 4, 4)``."""
    m = m[..., [2, 0, 1], :].double().clone()
    m[..., :, 1:3] = -m[..., :, 1:3]
    m[..., :, 3] = (m[..., :, 3] - torch.as_tensor(offset, dtype=torch.float64)) / scale
    bottom = torch.zeros(*m.shape[:-2], 1, 4, dtype=m.dtype)
    bottom[..., 0, 3] = 1.0
    return torch.cat([m, bottom], dim=-2)


def _intrinsics(K: Tensor, w: int, h: int) -> dict:
    fx, fy, cx, cy = (float(K[0, 0]), float(K[1, 1]), float(K[0, 2]), float(K[1, 2]))
    return {"camera_angle_x": 2 * math.atan(w / (2 * fx)), "camera_angle_y": 2 * math.atan(h / (2 * fy)),
            "fl_x": fx, "fl_y": fy, "cx": cx, "cy": cy, "w": w, "h": h}


def write_instant_ngp(views: ObjectViews, out: str | Path, *, radius: float = 1.0,
                      center: Sequence[float] | None = None, aabb_scale: int = 1,
                      roles: Sequence[str] | None = None, overwrite: bool = False) -> NgpExport:
    """Write ``views`` as an instant-ngp dataset in ``out`` (see the module docstring).

    ``views``: images ``(N, 3, H, W)`` in [-1, 1], cameras ``(N,)``, optional masks ``(N, 1, H, W)`` (alpha).
    The bounding sphere is ``center`` (default: the point closest to all optical axes) and ``radius``.
    """
    if aabb_scale not in AABB_SCALES:
        raise ValueError(f"aabb_scale must be a power of two from 1 to 128, got {aabb_scale}")
    if roles is not None and len(roles) != len(views):
        raise ValueError(f"roles has {len(roles)} entries for {len(views)} views")
    cams = views.cameras
    if (cams.K[..., 0, 1].abs() > 1e-9).any():
        raise ValueError("cameras with skew (K[0, 1] != 0) cannot be written to transforms.json")
    c, r, notes = bounding_sphere(cams, radius, center)
    scale, offset = ngp_scale_offset(c, r)
    out = prepare_output_dir(out, overwrite, what="instant-ngp dataset")
    (out / "images").mkdir(exist_ok=True)
    w, h = cams.width, cams.height
    intr = [_intrinsics(k, w, h) for k in cams.K.double()]
    shared = all(all(abs(a[k] - intr[0][k]) < 1e-9 for k in a) for a in intr)
    meta: dict = {**(intr[0] if shared else {"w": w, "h": h}), "aabb_scale": aabb_scale, "scale": scale,
                  "offset": offset}
    c2w_gl = cams.to_opengl().double()
    frames, files = [], []
    digits = max(3, len(str(len(views) - 1)))
    for i in range(len(views)):
        name = f"images/{i:0{digits}d}.png"
        rgb = to_uint8(views.images[i])
        if views.masks is not None:
            Image.fromarray(np.dstack([rgb, mask_to_uint8(views.masks[i]).numpy()]), "RGBA").save(out / name)
        else:
            Image.fromarray(rgb).save(out / name)
        fr: dict = {"file_path": name, "transform_matrix": c2w_gl[i].tolist()}
        if not shared:
            fr.update(intr[i])
        if roles is not None:
            fr["vantage_role"] = roles[i]
        frames.append(fr)
        files.append(name)
    meta["frames"] = frames
    path = out / "transforms.json"
    path.write_text(json.dumps(meta, indent=2))
    if views.masks is None:
        notes.append("no object masks are known: the images are opaque RGB, so instant-ngp must explain the white "
                     "background with density; add \"white_transparent\": true to transforms.json to treat pure "
                     "white pixels as transparent")
    return NgpExport(path, files, scale, offset, [float(v) for v in c], r, notes)


def _read_rgba(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """``(H, W, 3)`` uint8 colour as stored (not composited) and ``(H, W)`` alpha or None."""
    require_file(path, "image")
    try:
        with Image.open(path) as im:
            im.load()
            has_alpha = im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info)
            arr = np.asarray(im.convert("RGBA"))
    except (OSError, ValueError) as e:
        raise DatasetError(f"{path}: cannot read as an image ({e})") from None
    return arr[..., :3], (arr[..., 3] if has_alpha else None)


def read_instant_ngp(path: str | Path) -> ObjectViews:
    """Read an instant-ngp ``transforms.json`` (file or folder) into vantage's convention.

    Frames are sorted by ``file_path`` (natural order, as instant-ngp does). Images are the stored RGB (alpha is
    not composited); alpha, when every image has one, becomes ``masks``. ``transform_matrix`` is the OpenGL c2w in
    the json's world; ``meta`` holds ``scale``, ``offset`` (instant-ngp's defaults when absent) and ``aabb_scale``,
    which :func:`nerf_to_ngp` applies and :func:`ngp_to_nerf` undoes.
    """
    path = Path(path)
    path = path / "transforms.json" if path.is_dir() else path
    require_file(path, "instant-ngp transforms.json")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DatasetError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("frames"), list) or not meta["frames"]:
        raise DatasetError(f"{path}: expected an object with a non-empty 'frames' list")
    frames = sorted(meta["frames"], key=lambda fr: natural_key(str(fr.get("file_path", ""))))
    images, alphas, c2ws, Ks, size = [], [], [], [], None
    for fr in frames:
        where = f"{path} frame {fr.get('file_path')!r}"
        if "file_path" not in fr or "transform_matrix" not in fr:
            raise DatasetError(f"{where}: needs 'file_path' and 'transform_matrix'")
        img_path = path.parent / fr["file_path"]
        if not img_path.suffix and not img_path.exists():
            img_path = img_path.with_suffix(".png")
        rgb, alpha = _read_rgba(img_path)
        if size is None:
            size = (rgb.shape[1], rgb.shape[0])
        elif (rgb.shape[1], rgb.shape[0]) != size:
            raise DatasetError(f"{img_path}: image is {rgb.shape[1]}x{rgb.shape[0]}, the first is {size[0]}x{size[1]}")

        def get(key: str, fr=fr):
            return fr.get(key, meta.get(key))

        w, h = size
        fx = get("fl_x")
        if fx is None and get("camera_angle_x") is not None:
            fx = 0.5 * w / math.tan(0.5 * float(get("camera_angle_x")))
        if fx is None:
            raise DatasetError(f"{where}: no focal length (fl_x or camera_angle_x)")
        fy = get("fl_y") if get("fl_y") is not None else fx
        cx = get("cx") if get("cx") is not None else w / 2
        cy = get("cy") if get("cy") is not None else h / 2
        Ks.append(torch.tensor([[float(fx), 0.0, float(cx)], [0.0, float(fy), float(cy)], [0.0, 0.0, 1.0]],
                               dtype=torch.float64))
        try:
            m = torch.tensor(fr["transform_matrix"], dtype=torch.float64)
        except (TypeError, ValueError) as e:
            raise DatasetError(f"{where}: transform_matrix is not a 4x4 list of numbers ({e})") from None
        c2ws.append(rigid_pose(m, f"{where} transform_matrix"))
        images.append(torch.from_numpy(rgb.copy()).permute(2, 0, 1).float() / 127.5 - 1.0)
        alphas.append(alpha)
    masks = None
    if all(a is not None for a in alphas):
        masks = torch.stack([torch.from_numpy(a.copy()).float()[None] / 255.0 for a in alphas])
    cams = Cameras.from_opengl(torch.stack(c2ws).float(), torch.stack(Ks).float(), size[0], size[1])
    info = {"format": "instant-ngp", "path": str(path), "files": [fr["file_path"] for fr in frames],
            "scale": float(meta.get("scale", 0.33)), "offset": meta.get("offset", [0.5, 0.5, 0.5]),
            "aabb_scale": int(meta.get("aabb_scale", 1)), "roles": [fr.get("vantage_role") for fr in frames]}
    if not isinstance(info["offset"], list):
        info["offset"] = [float(info["offset"])] * 3
    return ObjectViews(images=torch.stack(images), cameras=cams, masks=masks, name=path.parent.name, meta=info)
