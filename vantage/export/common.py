"""What every exporter shares: the views to export, where they come from, and the object's bounding sphere.

* :func:`load_source` reads ``RUN_OR_DIR``: a ``vantage sample`` output folder (:func:`read_sample_folder`) or any
  dataset folder :func:`vantage.data.formats.open_dataset` reads (one object: ``object_`` by name or index).
* :class:`ExportSource`: the :class:`~vantage.data.views.ObjectViews` (images ``(N, 3, H, W)`` in ``[-1, 1]``,
  cameras ``(N,)`` in vantage's convention: OpenCV camera-to-world, pixel intrinsics with pixel centres at
  ``+0.5``, world +z up; masks ``(N, 1, H, W)`` in ``[0, 1]`` where known) with a role per view
  (``"generated"``, ``"input"``, ``"view"`` for a dataset view) and the file or view it came from.
* :func:`focus_point` (the point closest to every optical axis) and :func:`bounding_sphere` (that point, or a
  given centre, with a radius) place the object for NeuS's ``scale_mat`` and instant-ngp's ``scale``/``offset``.
* :func:`save_rgb`, :func:`save_grey`: 8-bit PNGs of ``(3, H, W)`` images in ``[-1, 1]`` and ``(1, H, W)`` masks.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image
from torch import Tensor

from vantage.cameras import Cameras
from vantage.data.formats.common import DatasetError, load_image, to_uint8
from vantage.data.views import ObjectViews

__all__ = ["ExportSource", "is_sample_folder", "read_sample_folder", "scene_index", "load_source", "focus_point",
           "bounding_sphere", "save_rgb", "save_grey", "mask_to_uint8"]

#: ``cameras.json`` of a ``vantage data render`` object folder also exists; it is not a sample folder.
_SYNTHETIC_OBJECT = "vantage-synthetic-object"


@dataclass
class ExportSource:
    """Views to export and where each came from.

    Attributes:
        views: the views (images ``(N, 3, H, W)`` in [-1, 1], cameras ``(N,)``, optional masks ``(N, 1, H, W)``).
        roles: per view ``"generated"`` (made by a model), ``"input"`` (an input view of ``vantage sample``,
            camera known or assumed) or ``"view"`` (a dataset view).
        sources: per view the file (relative to ``path``) or dataset view it came from.
        kind: ``"vantage-sample"`` or the dataset format name.
        path: the folder given.
        notes: things the user should know (printed by the CLI, kept in ``export.json``).
    """

    views: ObjectViews
    roles: list[str]
    sources: list[str]
    kind: str
    path: Path
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        n = len(self.views)
        if len(self.roles) != n or len(self.sources) != n:
            raise ValueError(f"ExportSource needs one role and one source per view ({n}), got {len(self.roles)} "
                             f"roles and {len(self.sources)} sources")


def _read_json(path: Path) -> object:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DatasetError(f"{path}: not valid JSON ({e})") from None


def is_sample_folder(path: Path) -> bool:
    """True for a folder with a ``cameras.json`` that is not a ``vantage data render`` object's."""
    meta_file = Path(path) / "cameras.json"
    if not meta_file.is_file():
        return False
    try:
        meta = json.loads(meta_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return True  # let read_sample_folder say what is wrong with it
    return not (isinstance(meta, dict) and meta.get("format") == _SYNTHETIC_OBJECT)


def read_sample_folder(path: str | Path) -> ExportSource:
    """Views of a ``vantage sample`` output folder (``cameras.json`` + ``frames/NNN.png``, inputs).

    Every frame is read (role ``"generated"`` when ``generated`` is true, ``"input"`` when it is a copy of an
    input view, ``"view"`` when the flag is absent), then each input view (``inputs``, or the single ``input``)
    whose camera is not already one of the frames' (an orbit's frame 0 is the input itself). Images are
    composited on white; cameras are vantage's (``c2w`` OpenCV camera-to-world, ``K`` pixels). An unposed input
    image has the camera the model assumed for it, which is also the frame the generated views were made in.
    """
    path = Path(path)
    meta_file = path / "cameras.json"
    meta = _read_json(meta_file)
    notes: list[str] = []
    try:
        w, h = int(meta["width"]), int(meta["height"])
        entries = [(e, "generated" if e.get("generated") else ("input" if "generated" in e else "view"), False)
                   for e in meta["frames"]]
        inputs = meta.get("inputs") or ([meta["input"]] if meta.get("input") and meta["input"].get("file") else [])
        entries += [(e, "input", True) for e in inputs]
        files, roles, c2w, K = [], [], [], []
        for e, role, is_input in entries:
            m = torch.tensor(e["c2w"], dtype=torch.float32)
            k = torch.tensor(e["K"], dtype=torch.float32)
            if m.shape != (4, 4) or k.shape != (3, 3):
                raise ValueError(f"entry for {e.get('file')!r} has c2w {tuple(m.shape)} and K {tuple(k.shape)}, "
                                 f"expected 4x4 and 3x3")
            if is_input and any(torch.allclose(m, other, atol=1e-5) for other in c2w):
                continue  # already a frame (an orbit's frame 0 is the input) or another input
            files.append(str(e["file"]))
            roles.append(role)
            c2w.append(m)
            K.append(k)
        if any(e.get("posed") is False for e in inputs):
            notes.append("the input image had no camera: it is exported with the camera the model assumed for it, "
                         "the frame the generated views were made in")
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise DatasetError(f"{meta_file}: not a `vantage sample` cameras.json (needs width, height and frames with "
                           f"file, c2w, K): {e}") from None
    if not files:
        raise DatasetError(f"{meta_file}: no frames (the 'frames' list is empty)")
    images = torch.stack([load_image(path / f, expected_size=(w, h), reference=meta_file)[0] for f in files])
    views = ObjectViews(images=images, cameras=Cameras(torch.stack(c2w), torch.stack(K), w, h), name=path.name,
                        meta={"format": "vantage-sample", "files": files})
    return ExportSource(views, roles, files, "vantage-sample", path, notes)


def scene_index(ds, name: str | None, path: Path) -> int:
    """Index of scene ``name`` (a name or an index, negative from the end) in dataset ``ds``; 0 for None."""
    if len(ds) == 0:
        raise DatasetError(f"{path}: the dataset holds no scene")
    if name is None:
        return 0
    names = [ds.scene_name(i) for i in range(len(ds))]
    if name in names:
        return names.index(name)
    if name.lstrip("-").isdigit() and -len(ds) <= int(name) < len(ds):
        return int(name) % len(ds)
    raise DatasetError(f"{path}: --object {name!r} not found; scenes: {', '.join(names[:10])}"
                       + (" ..." if len(names) > 10 else ""))


def load_source(path: str | Path, *, object_: str | None = None, format: str | None = None,
                purpose: str = "export") -> ExportSource:
    """The views at ``path``: a ``vantage sample`` folder (when ``format`` is None) or one object of a dataset.

    ``purpose`` names the command in the error for plain images (which have no cameras).
    """
    from vantage.data.formats import detect_format, open_dataset

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"input not found: {path}")
    if path.is_dir() and not any(path.iterdir()):
        raise DatasetError(f"{path}: the folder is empty; expected a `vantage sample` output folder (cameras.json + "
                           f"frames/) or a dataset folder")
    if format is None and path.is_dir() and is_sample_folder(path):
        return read_sample_folder(path)
    fmt = format or detect_format(path)
    if fmt == "images":
        raise DatasetError(f"{path}: plain images have no cameras; {purpose} needs posed views")
    ds = open_dataset(path, fmt)
    views = ds.load(scene_index(ds, object_, path))
    files = views.meta.get("files")
    sources = ([str(f) for f in files] if isinstance(files, list) and len(files) == len(views)
               else [f"view {int(v)}" for v in views.view_ids])
    return ExportSource(views, ["view"] * len(views), sources, fmt, path)


# ------------------------------------------------------------------------------------ geometry
def focus_point(cameras: Cameras) -> Tensor | None:
    """``(3,)`` the point closest (least squares) to every camera's optical axis, or None when they are parallel.

    Minimises ``sum_i |(I - d_i d_i^T)(x - o_i)|^2`` over ``x`` for camera centres ``o_i`` and unit viewing
    directions ``d_i`` (camera +z); the normal matrix ``sum_i (I - d_i d_i^T)`` is singular when every axis is
    parallel (one camera, or a pure translation), and None is returned.
    """
    o = cameras.centers.reshape(-1, 3).double()
    d = cameras.forward.reshape(-1, 3).double()
    d = d / d.norm(dim=-1, keepdim=True)
    proj = torch.eye(3, dtype=torch.float64) - d[:, :, None] * d[:, None, :]  # (N, 3, 3)
    a = proj.sum(0)
    if float(torch.linalg.eigvalsh(a)[0]) < 1e-6 * len(o):
        return None
    b = torch.einsum("nij,nj->i", proj, o)
    return torch.linalg.solve(a, b)


def bounding_sphere(cameras: Cameras, radius: float = 1.0,
                    center: Sequence[float] | None = None) -> tuple[Tensor, float, list[str]]:
    """``(centre (3,) float64, radius, notes)`` of the sphere the object is assumed to lie in.

    The centre is ``center`` when given, else :func:`focus_point` (the world origin, with a note, when the
    optical axes are parallel). ``radius`` is in world units: vantage's synthetic objects and ``vantage sample``
    orbits fit in the unit sphere at the origin, hence the default 1. A note is added when a camera lies inside
    the sphere (NeuS and instant-ngp expect the cameras outside the object's bound).
    """
    if not radius > 0:
        raise ValueError(f"radius must be positive, got {radius}")
    notes: list[str] = []
    if center is not None:
        c = torch.as_tensor([float(v) for v in center], dtype=torch.float64)
        if c.shape != (3,):
            raise ValueError(f"center must have 3 coordinates, got {list(center)}")
    else:
        c = focus_point(cameras)
        if c is None:
            c = torch.zeros(3, dtype=torch.float64)
            notes.append("the cameras' optical axes are parallel (no point closest to all of them): the object is "
                         "assumed at the world origin; pass --center x,y,z to place it")
    dist = (cameras.centers.reshape(-1, 3).double() - c).norm(dim=-1)
    inside = int((dist < radius).sum())
    if inside:
        notes.append(f"{inside} camera(s) lie inside the bounding sphere (centre {[round(float(v), 4) for v in c]}, "
                     f"radius {radius:g}; nearest camera at {float(dist.min()):.4g}): pass a smaller --radius")
    return c, float(radius), notes


# ------------------------------------------------------------------------------------ images
def save_rgb(image: Tensor, path: Path) -> None:
    """Write a ``(3, H, W)`` image in [-1, 1] as an 8-bit RGB PNG (:func:`to_uint8`: rounded, clipped)."""
    Image.fromarray(to_uint8(image)).save(path)


def mask_to_uint8(mask: Tensor) -> Tensor:
    """``(1, H, W)`` mask in [0, 1] -> ``(H, W)`` uint8 ``round(255 * mask)``."""
    return (mask[0].detach().float().cpu().clamp(0, 1) * 255).round().to(torch.uint8)


def save_grey(mask: Tensor, path: Path, *, channels: int = 1) -> None:
    """Write a ``(1, H, W)`` mask in [0, 1] as an 8-bit PNG, grey (``channels=1``) or grey as RGB (3)."""
    m = mask_to_uint8(mask).numpy()
    img = Image.fromarray(m)
    (img.convert("RGB") if channels == 3 else img).save(path)
