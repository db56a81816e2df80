"""Export posed views (generated orbits or dataset objects) to 3D reconstruction tools, each in its own convention.

* :mod:`~vantage.export.nerfstudio`: ``transforms.json`` for nerfstudio (OpenGL c2w, pixel intrinsics, masks).
* :mod:`~vantage.export.neus`: NeuS/IDR case folders (``cameras_sphere.npz`` with ``world_mat_i`` and
  ``scale_mat_i``, ``image/``, ``mask/``) and a reader.
* :mod:`~vantage.export.instant_ngp`: instant-ngp's ``transforms.json`` with ``scale``/``offset``/``aabb_scale``
  fitting the object into its unit cube, and a reader.
* :mod:`~vantage.export.common`: reading ``RUN_OR_DIR`` (a ``vantage sample`` folder or a dataset object) and
  the object's bounding sphere.

:func:`export` writes one :class:`~vantage.export.common.ExportSource` in one format plus ``export.json`` (what was
written, each view's role and source, the sphere, notes). See ``docs/export.md``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from vantage.data.views import ObjectViews
from vantage.export.common import ExportSource, load_source, read_sample_folder
from vantage.export.instant_ngp import read_instant_ngp, write_instant_ngp
from vantage.export.nerfstudio import write_nerfstudio_export
from vantage.export.neus import read_neus, write_neus

__all__ = ["EXPORT_FORMATS", "export", "ExportSource", "load_source", "read_sample_folder", "write_nerfstudio_export",
           "write_neus", "read_neus", "write_instant_ngp", "read_instant_ngp"]

#: output format -> one-line description (the CLI's choices).
EXPORT_FORMATS: dict[str, str] = {
    "nerfstudio": "transforms.json + images/ (+ masks/): OpenGL c2w, OPENCV pinhole intrinsics",
    "neus": "cameras_sphere.npz (world_mat_i, scale_mat_i) + image/ + mask/ (NeuS / IDR convention)",
    "instant-ngp": "transforms.json + images/ (RGBA with masks): scale/offset fit the object in the unit cube",
}

_CONVENTION = {
    "nerfstudio": "transform_matrix = c2w_opencv @ diag(1, -1, -1, 1) (OpenGL camera axes); fl_x, fl_y, cx, cy in "
                  "pixels with pixel centres at +0.5; world +z up",
    "neus": "world_mat_i = [[K_neus, 0], [0, 1]] @ w2c_i with K_neus = K shifted by -0.5 px (NeuS pixel centres at "
            "integers); scale_mat_i = diag(r, r, r, 1) + translation centre maps the unit sphere to the object",
    "instant-ngp": "transform_matrix = c2w_opencv @ diag(1, -1, -1, 1); pixel centres at +0.5; instant-ngp maps p to "
                   "cycle(scale * p + offset) with scale = 0.5 / radius, offset = 0.5 - scale * centre",
}


def export(source: ExportSource, fmt: str, out: str | Path, *, radius: float = 1.0,
           center: Sequence[float] | None = None, aabb_scale: int = 1, masks: bool = True,
           overwrite: bool = False) -> dict:
    """Write ``source`` in format ``fmt`` into ``out``; returns the ``export.json`` summary (also written).

    ``radius``/``center``: the object's bounding sphere (NeuS, instant-ngp); ``aabb_scale``: instant-ngp's;
    ``masks=False`` leaves known masks out. A non-empty ``out`` is refused unless ``overwrite``.
    """
    if fmt not in EXPORT_FORMATS:
        raise ValueError(f"unknown export format '{fmt}'; choose one of {', '.join(EXPORT_FORMATS)}")
    v = source.views
    views = ObjectViews(images=v.images, cameras=v.cameras, masks=v.masks if masks else None, view_ids=v.view_ids,
                        name=v.name, meta=v.meta)
    out = Path(out)
    notes = list(source.notes)
    info: dict = {}
    if fmt == "nerfstudio":
        path = write_nerfstudio_export(views, out, roles=source.roles, overwrite=overwrite)
        frames = json.loads(path.read_text())["frames"]
        files, mask_files = [fr["file_path"] for fr in frames], [fr.get("mask_path") for fr in frames]
        written = ["transforms.json", "images/"] + (["masks/"] if views.masks is not None else [])
    elif fmt == "neus":
        res = write_neus(views, out, radius=radius, center=center, overwrite=overwrite)
        files, mask_files, notes = res.images, list(res.masks), notes + res.notes
        written = ["cameras_sphere.npz", "image/", "mask/"]
        info = {"center": res.center, "radius": res.radius}
    else:
        res = write_instant_ngp(views, out, radius=radius, center=center, aabb_scale=aabb_scale, roles=source.roles,
                                overwrite=overwrite)
        files, notes = res.images, notes + res.notes
        mask_files = [f"{f} (alpha)" if views.masks is not None else None for f in files]
        written = ["transforms.json", "images/"]
        info = {"center": res.center, "radius": res.radius, "scale": res.scale, "offset": res.offset,
                "aabb_scale": aabb_scale}
    mask_state = ("known" if views.masks is not None else
                  "left out (--no-masks)" if v.masks is not None else "unknown")
    if fmt == "neus" and views.masks is None:
        mask_state += ": all-white placeholder masks written"
    summary = {"format": fmt, "source": str(source.path), "source_kind": source.kind, "scene": v.name,
               "views": len(v), "width": v.cameras.width, "height": v.cameras.height,
               "roles": {r: source.roles.count(r) for r in dict.fromkeys(source.roles)},
               "masks": mask_state, "convention": _CONVENTION[fmt], **info, "files": written + ["export.json"],
               "notes": notes,
               "frames": [{"file": files[i], "mask": mask_files[i], "role": source.roles[i],
                           "source": source.sources[i]} for i in range(len(v))]}
    (out / "export.json").write_text(json.dumps(summary, indent=2))
    return summary
