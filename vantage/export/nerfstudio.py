"""Export views as a nerfstudio dataset (``transforms.json``).

The files are those of :func:`vantage.data.formats.nerfstudio.write_nerfstudio` (nerfstudio's "data
conventions" page, https://docs.nerf.studio/quickstart/data_conventions.html, and its
``nerfstudio_dataparser.py``)::

    OUT/transforms.json
    OUT/images/frame_00000.png      8-bit RGB
    OUT/masks/frame_00000.png       8-bit grey, 255 = object, 0 = pixel left out of nerfstudio's loss (when known)

``transforms.json`` holds ``camera_model: "OPENCV"`` with zero distortion, ``w``, ``h``, the intrinsics
``fl_x, fl_y, cx, cy`` (top level when shared, per frame otherwise), ``orientation_override: "none"`` (the
dataparser keeps our world's orientation, +z up, instead of re-orienting the poses) and per frame
``file_path``, ``transform_matrix`` and ``mask_path``. The camera convention:

* ``transform_matrix = c2w @ diag(1, -1, -1, 1)``: our OpenCV camera-to-world with the camera's y and z axes
  flipped (OpenGL axes: x right, y up, z back); world coordinates unchanged.
* ``fl_x = K[0, 0]``, ``fl_y = K[1, 1]``, ``cx = K[0, 2]``, ``cy = K[1, 2]`` unchanged: nerfstudio puts pixel
  centres at +0.5 (its rays go through ``(j + 0.5, i + 0.5)``), like vantage.

Each frame also carries ``vantage_role`` (``generated``, ``input`` or ``view``), which nerfstudio ignores. The
export reads back with :class:`vantage.data.formats.nerfstudio.NerfstudioDataset` (``open_dataset`` detects it).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from vantage.data.formats.nerfstudio import write_nerfstudio
from vantage.data.views import ObjectViews

__all__ = ["write_nerfstudio_export"]


def write_nerfstudio_export(views: ObjectViews, out: str | Path, *, roles: Sequence[str] | None = None,
                            overwrite: bool = False) -> Path:
    """Write ``views`` as a nerfstudio dataset in ``out``; returns the path of ``transforms.json``.

    ``views``: images ``(N, 3, H, W)`` in [-1, 1], cameras ``(N,)`` (vantage's convention), optional masks
    ``(N, 1, H, W)`` (written as ``mask_path``); depth is not exported. ``roles``: one per view, stored as
    ``vantage_role``. A non-empty ``out`` is refused unless ``overwrite``.
    """
    if roles is not None and len(roles) != len(views):
        raise ValueError(f"roles has {len(roles)} entries for {len(views)} views")
    plain = ObjectViews(images=views.images, cameras=views.cameras, masks=views.masks, view_ids=views.view_ids,
                        name=views.name, meta=views.meta)
    path = write_nerfstudio(plain, out, overwrite=overwrite)
    meta = json.loads(path.read_text())
    meta["orientation_override"] = "none"
    if roles is not None:
        for fr, role in zip(meta["frames"], roles):
            fr["vantage_role"] = role
    path.write_text(json.dumps(meta, indent=2))
    return path
