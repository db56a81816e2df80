"""A plain folder of images, for inference on your own pictures (no cameras).

Layout::

    <folder>/<anything>.png | .jpg | .jpeg | .webp      (naturally sorted: 2.png before 10.png)

The path may also be a single image file. By default every image is its own scene with one view
(the usual "one photo in, novel views out"); ``one_scene=True`` makes the folder a single scene
whose views are the images (unordered, unposed inputs of a multi-view model).

No camera is known, so every view gets the same default camera: on the +x axis at
``DEFAULT_RADIUS`` (2.0) from the origin, at ``elevation_deg`` (0) above the xy-plane, looking at
the origin with world +z up, horizontal FOV ``DEFAULT_FOV_DEG`` (Zero-1-to-3's 49.13°); i.e.
azimuth 0 of our spherical convention, which relative-pose models take as the input view.
``meta["posed"]`` is ``False``: the cameras are placeholders, not measurements.

RGBA images are composited on white and their alpha becomes the mask. All images must have one
size (a mismatch names both files and sizes) unless ``resolution`` is set: then each image is
padded to a square with the background colour (the object stays whole) and resized.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

from vantage.cameras import Cameras, spherical_to_cartesian
from vantage.data.formats.common import (
    IMAGE_EXTENSIONS,
    WHITE,
    DatasetError,
    IndexedDataset,
    SceneEntry,
    image_size,
    list_files,
    load_image,
    resize_maps,
    select_views,
)
from vantage.data.formats.zero123 import ZERO123_FOV_DEG
from vantage.data.views import ObjectViews

__all__ = ["ImageFolderDataset", "default_camera", "DEFAULT_RADIUS", "DEFAULT_FOV_DEG"]

#: Distance of the default camera from the origin (Zero-1-to-3 renders use 1.5..2.2).
DEFAULT_RADIUS: float = 2.0
#: Horizontal field of view of the default camera (Zero-1-to-3's render FOV).
DEFAULT_FOV_DEG: float = ZERO123_FOV_DEG


def default_camera(width: int, height: int, *, radius: float = DEFAULT_RADIUS,
                   fov_deg: float = DEFAULT_FOV_DEG, elevation_deg: float = 0.0) -> Cameras:
    """The ``(1,)`` placeholder camera of an unposed image (see the module docstring)."""
    polar = torch.tensor([math.radians(90.0 - elevation_deg)])
    eye = spherical_to_cartesian(polar, torch.zeros(1), torch.full((1,), radius))
    return Cameras.from_look_at(eye, fov_deg=fov_deg, width=width, height=height)


def _pad_square(img: Tensor, alpha: Tensor | None,
                background: Sequence[float]) -> tuple[Tensor, Tensor | None]:
    """Pad ``(3, H, W)`` (and alpha) to a centred square with the background colour."""
    _, h, w = img.shape
    s = max(h, w)
    top, left = (s - h) // 2, (s - w) // 2
    out = torch.tensor([c * 2 - 1 for c in background], dtype=img.dtype).view(3, 1, 1).repeat(1, s, s)
    out[:, top:top + h, left:left + w] = img
    if alpha is not None:
        a = torch.zeros(1, s, s, dtype=alpha.dtype)
        a[:, top:top + h, left:left + w] = alpha
        alpha = a
    return out, alpha


class ImageFolderDataset(IndexedDataset):
    """Images without cameras (see the module docstring).

    Args:
        path: a folder of images or one image file.
        one_scene: the folder is one scene of many views (default: one scene per image).
        resolution: pad each image to a square and resize it to this side (allows mixed sizes).
        radius, fov_deg, elevation_deg: the default camera.
        background: RGB in [0, 1] that RGBA images are composited on (white).
    """

    format_name = "images"

    def __init__(self, path: str | Path, *, one_scene: bool = False, resolution: int | None = None,
                 radius: float = DEFAULT_RADIUS, fov_deg: float = DEFAULT_FOV_DEG,
                 elevation_deg: float = 0.0, background: Sequence[float] = WHITE) -> None:
        super().__init__(strict=True)
        root = Path(path)
        if not root.exists():
            raise DatasetError(f"image path does not exist: {root}")
        if root.is_file():
            if root.suffix.lower() not in IMAGE_EXTENSIONS:
                raise DatasetError(f"{root}: not an image ({', '.join(IMAGE_EXTENSIONS)} expected)")
            files = [root]
        else:
            files = list_files(root, IMAGE_EXTENSIONS, "image")
            others = sorted(p.name for p in root.iterdir() if p not in files and not p.name.startswith("."))
            if others:
                self.skip(root, f"{len(others)} non-image entr(y/ies) ignored: {', '.join(others[:5])}")
        if not files:
            raise DatasetError(f"{root}: no images found (expected {', '.join(IMAGE_EXTENSIONS)} files)")
        self.resolution, self.background = resolution, tuple(background)
        self.camera_options = {"radius": radius, "fov_deg": fov_deg, "elevation_deg": elevation_deg}
        if resolution is None:
            ref, ref_size = files[0], image_size(files[0])
            for f in files[1:]:
                size = image_size(f)
                if size != ref_size:
                    raise DatasetError(f"images of different sizes: {f} is {size[0]}x{size[1]} but {ref} "
                                       f"is {ref_size[0]}x{ref_size[1]}; pass resolution=<side> to pad "
                                       f"and resize")
        if one_scene:
            self.entries.append(SceneEntry(root.name if root.is_dir() else root.stem, root, files,
                                           list(range(len(files)))))
        else:
            self.entries += [SceneEntry(f.stem, f, [f], [i]) for i, f in enumerate(files)]

    @classmethod
    def detect(cls, path: Path) -> bool:
        path = Path(path)
        if path.is_file():
            return path.suffix.lower() in IMAGE_EXTENSIONS
        return path.is_dir() and any(p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()
                                     for p in path.iterdir())

    def load(self, index: int, views: Sequence[int] | None = None) -> ObjectViews:
        entry = self.entry(index)
        pos = select_views(len(entry.views), views, f"image scene {entry.path}")
        images, alphas = [], []
        first = entry.views[pos[0]]
        size = None if self.resolution is not None else image_size(first)
        for p in pos:
            img, alpha = load_image(entry.views[p], expected_size=size, reference=first,
                                    background=self.background)
            if self.resolution is not None:
                img, alpha = _pad_square(img, alpha, self.background)
                s = (self.resolution, self.resolution)
                img = resize_maps(img[None], s)[0]
                alpha = None if alpha is None else resize_maps(alpha[None], s)[0]
            images.append(img)
            alphas.append(alpha)
        imgs = torch.stack(images)
        h, w = imgs.shape[-2:]
        cam = default_camera(w, h, **self.camera_options)
        cams = Cameras(cam.c2w.expand(len(pos), 4, 4).clone(), cam.K.expand(len(pos), 3, 3).clone(), w, h)
        masks = torch.stack(alphas) if all(a is not None for a in alphas) else None
        return ObjectViews(images=imgs, cameras=cams, masks=masks,
                           view_ids=torch.tensor([entry.view_ids[p] for p in pos]), name=entry.name,
                           meta={"format": self.format_name, "posed": False,
                                 "files": [str(entry.views[p]) for p in pos]})
