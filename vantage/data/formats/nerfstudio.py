"""nerfstudio ``transforms.json``: read a scene, and write any :class:`ObjectViews` as one.

Layout (nerfstudio's data conventions page and its ``nerfstudio_dataparser.py``)::

    <scene>/transforms.json
    <scene>/<file_path>            images (relative to the json's folder); RGBA composited on white
    <scene>/<mask_path>            (optional, every frame or none) single-channel; 0 = background
    <scene>/<depth_file_path>      (optional) 16-bit PNG (or .npy): z-depth = value * depth_unit_scale_factor

``transforms.json``: ``camera_model`` (``OPENCV``/``PINHOLE``/``SIMPLE_PINHOLE``; the default
is a pinhole), intrinsics ``fl_x, fl_y, cx, cy, w, h`` at the top level or per frame (a frame's
value wins), optional distortion ``k1 k2 k3 k4 p1 p2`` (must be 0: we do not undistort), the
NeRF-synthetic ``camera_angle_x`` instead of ``fl_x``, and ``frames[i].transform_matrix``: a
4x4 camera-to-world with OpenGL camera axes (x right, y up, z back), world +z up. nerfstudio puts
pixel centres at +0.5 like us, so ``cx, cy`` carry over unchanged. Frames are sorted by file name
(as nerfstudio does); ``view_ids`` are the positions in that order.

Depth: nerfstudio's dataparser multiplies depth PNG values by its config option
``depth_unit_scale_factor`` (default ``1e-3``: millimetres to metres); it does not read it from
``transforms.json``. :func:`write_nerfstudio` writes millimetre PNGs (factor ``1e-3`` by default,
matching nerfstudio's default) and records the factor as a top-level
``"depth_unit_scale_factor"`` key (ignored by nerfstudio, read by this reader, default ``1e-3``).

The path may be the json file, a scene folder, or a folder of scene folders.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from vantage.cameras import Cameras
from vantage.data.formats.common import (
    DatasetError,
    IndexedDataset,
    SceneEntry,
    image_size,
    load_depth,
    load_image,
    load_mask,
    natural_key,
    require_file,
    resize_views,
    rigid_pose,
    select_views,
    some_subdirs,
    subdirs,
    to_uint8,
    to_z_up,
)
from vantage.data.views import ObjectViews
from vantage.outputs import prepare_output_dir

__all__ = ["NerfstudioDataset", "write_nerfstudio", "DEFAULT_DEPTH_UNIT_SCALE_FACTOR"]

#: nerfstudio's default ``depth_unit_scale_factor``: depth PNG values are millimetres.
DEFAULT_DEPTH_UNIT_SCALE_FACTOR = 1e-3
_MODELS = ("OPENCV", "PINHOLE", "SIMPLE_PINHOLE")
_DISTORTION = ("k1", "k2", "k3", "k4", "p1", "p2")


def _load_json(path: Path) -> dict:
    require_file(path, "transforms.json")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DatasetError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("frames"), list) or not meta["frames"]:
        raise DatasetError(f"{path}: expected an object with a non-empty 'frames' list")
    return meta


class NerfstudioDataset(IndexedDataset):
    """Scenes in nerfstudio's ``transforms.json`` format (see the module docstring).

    Args:
        path: a ``transforms.json``, a scene folder, or a folder of scene folders.
        resolution: resize the images to this side (square images only); intrinsics follow.
        up: the stored world's up axis, rotated to +z (nerfstudio's world is +z up already).
        strict: raise on a malformed scene (``False``: skip it and record why).
    """

    format_name = "nerfstudio"

    def __init__(self, path: str | Path, *, resolution: int | None = None, up: str | None = "+z",
                 strict: bool = True) -> None:
        super().__init__(strict)
        root = Path(path)
        if not root.exists():
            raise DatasetError(f"nerfstudio path does not exist: {root}")
        self.resolution, self.up = resolution, up
        if root.is_file():
            jsons = [root]
        elif (root / "transforms.json").is_file():
            jsons = [root / "transforms.json"]
        else:
            jsons = []
            for d in subdirs(root):
                if (d / "transforms.json").is_file():
                    jsons.append(d / "transforms.json")
                else:
                    self.skip(d, "no transforms.json")
        for j in jsons:
            self.try_index(j, lambda j=j: self._index(j))
        self.require_entries(root, "transforms.json with its images")

    @classmethod
    def detect(cls, path: Path) -> bool:
        path = Path(path)
        if path.is_file():
            with path.open(encoding="utf-8", errors="ignore") as f:
                return path.suffix == ".json" and '"frames"' in f.read(1 << 20)
        return path.is_dir() and ((path / "transforms.json").is_file()
                                  or any((d / "transforms.json").is_file() for d in some_subdirs(path)))

    def _index(self, path: Path) -> SceneEntry:
        meta = _load_json(path)
        frames = []
        for i, fr in enumerate(meta["frames"]):
            if not isinstance(fr, dict) or "file_path" not in fr or "transform_matrix" not in fr:
                raise DatasetError(f"{path}: frames[{i}] needs 'file_path' and 'transform_matrix'")
            frames.append({**fr, "_index": i})
        frames.sort(key=lambda fr: natural_key(str(fr["file_path"])))
        for key in ("mask_path", "depth_file_path"):
            n = sum(key in fr for fr in frames)
            if 0 < n < len(frames):
                raise DatasetError(f"{path}: '{key}' is given for {n} of {len(frames)} frames (all or none)")
        model = meta.get("camera_model", "PINHOLE")
        if model not in _MODELS:
            raise DatasetError(f"{path}: camera_model '{model}' is not supported (expected one of {_MODELS}; "
                               f"fisheye/equirectangular images would need resampling)")
        scale = float(meta.get("depth_unit_scale_factor", DEFAULT_DEPTH_UNIT_SCALE_FACTOR))
        name = path.parent.name if path.name == "transforms.json" else path.stem
        return SceneEntry(name, path, frames, list(range(len(frames))), {"meta": meta, "depth_scale": scale})

    @staticmethod
    def _frame_camera(path: Path, meta: dict, fr: dict, i: int,
                      img: Path) -> tuple[torch.Tensor, torch.Tensor, tuple[int, int]]:
        """``(c2w_gl (4, 4), K (3, 3), (W, H))`` of frame ``i`` (frame keys override top-level ones)."""
        where = f"{path} frames[{i}] ({fr['file_path']})"

        def get(key: str):
            return fr.get(key, meta.get(key))

        for k in _DISTORTION:
            if abs(float(get(k) or 0.0)) > 0:
                raise DatasetError(f"{where}: distortion {k}={get(k)} is not supported; undistort the images "
                                   f"first (e.g. ns-process-data / COLMAP image_undistorter)")
        w, h = get("w"), get("h")
        if w is None or h is None:
            w, h = image_size(img)
        fx, fy = get("fl_x"), get("fl_y")
        if fx is None and get("camera_angle_x") is not None:
            fx = 0.5 * float(w) / math.tan(0.5 * float(get("camera_angle_x")))
        if fx is None:
            raise DatasetError(f"{where}: no focal length (fl_x or camera_angle_x) in the frame "
                               f"or at the top level")
        fy = fx if fy is None else fy
        cx = get("cx") if get("cx") is not None else float(w) / 2
        cy = get("cy") if get("cy") is not None else float(h) / 2
        try:
            m = torch.tensor(fr["transform_matrix"], dtype=torch.float64)
        except (TypeError, ValueError) as e:
            raise DatasetError(f"{where}: transform_matrix is not a 4x4 list of numbers ({e})") from None
        c2w_gl = rigid_pose(m, f"{where} transform_matrix")
        K = torch.tensor([[float(fx), 0.0, float(cx)], [0.0, float(fy), float(cy)], [0.0, 0.0, 1.0]],
                         dtype=torch.float64)
        return c2w_gl, K, (int(w), int(h))

    def load(self, index: int, views: Sequence[int] | None = None) -> ObjectViews:
        entry = self.entry(index)
        pos = select_views(len(entry.views), views, f"nerfstudio scene {entry.path}")
        meta, base = entry.extra["meta"], entry.path.parent
        images, alphas, masks, depths, c2ws, Ks = [], [], [], [], [], []
        size, first = None, None
        for p in pos:
            fr = entry.views[p]
            img_path = base / fr["file_path"]
            c2w, K, fsize = self._frame_camera(entry.path, meta, fr, fr["_index"], img_path)
            if size is None:
                size, first = fsize, img_path
            elif fsize != size:
                raise DatasetError(f"{img_path}: image is {fsize[0]}x{fsize[1]} but {first} is "
                                   f"{size[0]}x{size[1]} (one size per scene; scene {entry.path})")
            img, alpha = load_image(img_path, expected_size=size, reference=first)
            images.append(img)
            alphas.append(alpha)
            c2ws.append(c2w)
            Ks.append(K)
            if "mask_path" in fr:
                masks.append(load_mask(base / fr["mask_path"], expected_size=size, reference=first))
            if "depth_file_path" in fr:
                depths.append(load_depth(base / fr["depth_file_path"], entry.extra["depth_scale"],
                                         expected_size=size, reference=first))
        cams = Cameras.from_opengl(torch.stack(c2ws).float(), torch.stack(Ks).float(), size[0], size[1])
        cams = to_z_up(cams, self.up)
        if masks:
            m = torch.stack(masks)
        else:
            m = torch.stack(alphas) if all(a is not None for a in alphas) else None
        d = torch.stack(depths) if depths else None
        cams, imgs, m, d = resize_views(cams, torch.stack(images), m, d, size=self.resolution,
                                        where=str(entry.path))
        meta_out = {"format": self.format_name, "path": str(entry.path), "posed": True,
                    "files": [entry.views[p]["file_path"] for p in pos]}
        return ObjectViews(images=imgs, cameras=cams, masks=m, depth=d, view_ids=torch.tensor(pos),
                           name=entry.name, meta=meta_out)


def write_nerfstudio(objects: ObjectViews, out_dir: str | Path, *,
                     depth_unit_scale_factor: float = DEFAULT_DEPTH_UNIT_SCALE_FACTOR,
                     overwrite: bool = False) -> Path:
    """Write ``objects`` as a nerfstudio scene; returns the path of ``transforms.json``.

    Files: ``images/frame_00000.png`` (RGB), ``masks/frame_00000.png`` (8-bit, ``round(255 *
    mask)``; nerfstudio treats non-zero as foreground) when ``objects.masks`` is set, and
    ``depth/frame_00000.png`` (16-bit, ``round(depth / depth_unit_scale_factor)``, 0 =
    background) when ``objects.depth`` is set. ``transform_matrix`` is the OpenGL camera-to-world;
    intrinsics go to the top level when shared, per frame otherwise; ``camera_model`` is
    ``OPENCV`` with zero distortion. An existing non-empty ``out_dir`` is refused
    (:class:`~vantage.outputs.OutputExistsError`) unless ``overwrite=True`` (files are then
    replaced one by one); depth beyond ``65535 * depth_unit_scale_factor`` is an error.
    """
    if depth_unit_scale_factor <= 0:
        raise ValueError(f"depth_unit_scale_factor must be positive, got {depth_unit_scale_factor}")
    cams = objects.cameras
    if (cams.K[..., 0, 1].abs() > 1e-9).any():
        raise ValueError("cameras with skew (K[0, 1] != 0) cannot be written to transforms.json")
    if objects.depth is not None:
        top = float(objects.depth.max())
        if top / depth_unit_scale_factor > 65535:
            raise ValueError(f"depth up to {top:.4g} does not fit a 16-bit PNG with depth_unit_scale_factor="
                             f"{depth_unit_scale_factor} (max {65535 * depth_unit_scale_factor:.4g}); "
                             f"use a larger factor")
    out = prepare_output_dir(out_dir, overwrite, what="nerfstudio scene")
    (out / "images").mkdir(exist_ok=True)
    if objects.masks is not None:
        (out / "masks").mkdir(exist_ok=True)
    if objects.depth is not None:
        (out / "depth").mkdir(exist_ok=True)
    c2w_gl = cams.to_opengl().double()
    intr = [(float(k[0, 0]), float(k[1, 1]), float(k[0, 2]), float(k[1, 2])) for k in cams.K.double()]
    shared = all(np.allclose(i, intr[0], rtol=0, atol=1e-9) for i in intr)
    meta: dict = {"camera_model": "OPENCV", "w": cams.width, "h": cams.height,
                  "k1": 0.0, "k2": 0.0, "p1": 0.0, "p2": 0.0}
    if shared:
        meta.update(dict(zip(("fl_x", "fl_y", "cx", "cy"), intr[0])))
    if objects.depth is not None:
        meta["depth_unit_scale_factor"] = depth_unit_scale_factor
    frames = []
    for i in range(len(objects)):
        name = f"frame_{i:05d}.png"
        Image.fromarray(to_uint8(objects.images[i])).save(out / "images" / name)
        fr: dict = {"file_path": f"images/{name}", "transform_matrix": c2w_gl[i].tolist()}
        if not shared:
            fr.update(dict(zip(("fl_x", "fl_y", "cx", "cy"), intr[i])))
        if objects.masks is not None:
            m = (objects.masks[i, 0].float().clamp(0, 1) * 255).round().to(torch.uint8).numpy()
            Image.fromarray(m).save(out / "masks" / name)
            fr["mask_path"] = f"masks/{name}"
        if objects.depth is not None:
            d = (objects.depth[i, 0].double() / depth_unit_scale_factor).round().clamp(0, 65535)
            Image.fromarray(d.numpy().astype(np.uint16)).save(out / "depth" / name)
            fr["depth_file_path"] = f"depth/{name}"
        frames.append(fr)
    meta["frames"] = frames
    path = out / "transforms.json"
    path.write_text(json.dumps(meta, indent=2))
    return path
