"""Target cameras for ``vantage sample``: partial arcs at any elevation, camera files, ``cameras.json`` entries.

* :func:`arc_targets`: ``n`` cameras on the circle through the input camera about world +z, at
  azimuths ``az_in + START … az_in + END`` (degrees, counter-clockwise seen from +z; ``END < START``
  runs clockwise), at the input's elevation or any elevation in ``(−90°, 90°)``, at the input's
  distance from the origin, looking at the origin, with the input's intrinsics. A span of ±360° is
  a full circle (``n`` views ``360°/n`` apart, END excluded); a shorter one is spanned inclusively
  (both ends are views). ``START:END = 0:360`` is :func:`vantage.sampling.inputs.orbit_targets`.
* :func:`read_cameras`: target cameras from a file, in vantage's convention (OpenCV camera-to-world,
  pixel intrinsics with pixel centres at +0.5, world +z up), in the order listed:

  - a ``vantage sample`` output's ``cameras.json`` (its ``frames``: ``c2w``, ``K``, ``width``/``height``);
  - a ``vantage data render`` object's ``cameras.json`` (its ``views``);
  - a nerfstudio ``transforms.json`` (``frames[i].transform_matrix``: OpenGL camera axes; intrinsics
    ``fl_x``/``fl_y``/``cx``/``cy``/``w``/``h`` or ``camera_angle_x``, top level or per frame, read by
    :class:`~vantage.data.formats.nerfstudio.NerfstudioDataset`'s own frame reader). The images need
    not exist when ``w`` and ``h`` are given.

  A folder stands for its ``cameras.json`` or ``transforms.json``.
* :func:`fit_cameras`: cameras of another image size brought to the model's ``R × R`` the way the input
  views are (:func:`vantage.sampling.inputs.fit_resolution`: centre crop to a square, then resize).
* :func:`choose_targets`: what ``vantage sample`` generates: the arc, a camera file or the object's
  own cameras (``--targets dataset``), with the views of the object that are ground truth for them.
  Targets that coincide with an input camera (within :func:`~vantage.sampling.inputs.match_views`'
  tolerance, 1e-3 of the scene scale) are snapped onto it exactly, so that the orbit copies the
  input there instead of generating it.
* :func:`camera_entry`: one camera as ``vantage sample`` writes it into ``cameras.json``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from torch import Tensor

from vantage.cameras import Cameras, cartesian_to_spherical
from vantage.data.formats.common import DatasetError, rigid_pose
from vantage.sampling.inputs import SampleInput, match_views, orbit_targets

__all__ = ["parse_arc", "arc_targets", "read_cameras", "fit_cameras", "choose_targets", "camera_entry"]


def parse_arc(text: str) -> tuple[float, float]:
    """``"START:END"`` in degrees (e.g. ``"-90:90"``) -> ``(start, end)``; ValueError otherwise."""
    parts = str(text).replace(" ", "").split(":")
    try:
        if len(parts) != 2:
            raise ValueError
        start, end = float(parts[0]), float(parts[1])
    except ValueError:
        raise ValueError(f"an arc is START:END in degrees, e.g. -90:90 or 0:180, got {text!r}") from None
    if not (math.isfinite(start) and math.isfinite(end)):
        raise ValueError(f"an arc needs finite angles, got {text!r}")
    return start, end


def arc_targets(input_camera: Cameras, n: int, *, start_deg: float = 0.0, end_deg: float = 360.0,
                elevation_deg: float | None = None) -> Cameras:
    """``(n,)`` cameras on the arc through ``input_camera`` (one camera; module docstring).

    Raises ValueError for ``n < 1``, a span longer than 360°, an empty arc (``START == END`` with
    ``n > 1``), an elevation outside ``(−90°, 90°)`` or an input camera at the origin.
    """
    if n < 1:
        raise ValueError(f"an orbit needs at least 1 view, got {n}")
    span = end_deg - start_deg
    if abs(span) > 360.0 + 1e-9:
        raise ValueError(f"an arc spans at most 360 degrees, got {start_deg:g}:{end_deg:g} ({span:g} degrees)")
    if span == 0 and n > 1:
        raise ValueError(f"the arc {start_deg:g}:{end_deg:g} is empty: {n} views need START != END")
    if elevation_deg is not None and not -90.0 < elevation_deg < 90.0:
        raise ValueError(f"the elevation must be in (-90, 90) degrees (at a pole every azimuth is the same camera), "
                         f"got {elevation_deg:g}")
    return orbit_targets(input_camera, n, elevation_deg=elevation_deg, arc_deg=span, start_deg=start_deg)


def _matrix(value: object, shape: tuple[int, int], where: str) -> Tensor:
    try:
        m = torch.tensor(value, dtype=torch.float64)
    except (TypeError, ValueError) as e:
        raise DatasetError(f"{where}: not a {shape[0]}x{shape[1]} list of numbers ({e})") from None
    if m.shape != shape or not torch.isfinite(m).all():
        raise DatasetError(f"{where}: expected a finite {shape[0]}x{shape[1]} matrix, got shape {tuple(m.shape)}")
    return m


def read_cameras(path: str | Path) -> tuple[Cameras, str]:
    """``(cameras (T,), format)`` of a camera file (module docstring); ``format`` is ``"vantage-sample"``,
    ``"vantage-synthetic-object"`` or ``"nerfstudio"``. Raises :class:`DatasetError` naming the file."""
    path = Path(path)
    if path.is_dir():
        found = [path / n for n in ("cameras.json", "transforms.json") if (path / n).is_file()]
        if not found:
            raise DatasetError(f"{path}: no cameras.json or transforms.json in this folder")
        path = found[0]
    if not path.is_file():
        raise DatasetError(f"camera file not found: {path}")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DatasetError(f"{path}: not valid JSON ({e})") from None
    entries = meta.get("frames", meta.get("views")) if isinstance(meta, dict) else None
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise DatasetError(f"{path}: expected a vantage cameras.json or a nerfstudio transforms.json (an object with "
                           f"a 'frames' list)")
    if not entries:
        raise DatasetError(f"{path}: no cameras (the frames list is empty)")
    if all("c2w" in e for e in entries):  # vantage's own convention
        fmt = "vantage-sample" if "frames" in meta else "vantage-synthetic-object"
        try:
            w, h = int(meta["width"]), int(meta["height"])
        except (KeyError, TypeError, ValueError):
            raise DatasetError(f"{path}: a vantage cameras.json needs integer 'width' and 'height'") from None
        c2w = torch.stack([rigid_pose(_matrix(e["c2w"], (4, 4), f"{path} entry {i} c2w"), f"{path} entry {i} c2w")
                           for i, e in enumerate(entries)])
        K = torch.stack([_matrix(e.get("K"), (3, 3), f"{path} entry {i} K") for i, e in enumerate(entries)])
        return Cameras(c2w.float(), K.float(), w, h), fmt
    from vantage.data.formats.nerfstudio import NerfstudioDataset

    c2ws, Ks, sizes = [], [], set()
    for i, fr in enumerate(entries):
        if "transform_matrix" not in fr:
            raise DatasetError(f"{path}: frames[{i}] has neither 'c2w' (vantage) nor 'transform_matrix' (nerfstudio)")
        fr = {"file_path": f"frame {i}", **fr}
        c2w_gl, K, size = NerfstudioDataset._frame_camera(path, meta, fr, i, path.parent / str(fr["file_path"]))
        c2ws.append(c2w_gl)
        Ks.append(K)
        sizes.add(size)
    if len(sizes) > 1:
        raise DatasetError(f"{path}: frames of different image sizes {sorted(sizes)}: one size per camera file")
    (w, h), = sizes
    return Cameras.from_opengl(torch.stack(c2ws).float(), torch.stack(Ks).float(), w, h), "nerfstudio"


def fit_cameras(cameras: Cameras, resolution: int, notes: list[str]) -> Cameras:
    """``cameras`` for ``resolution × resolution`` images: centre crop to a square, then resize (said in ``notes``)."""
    w, h = cameras.width, cameras.height
    if (w, h) == (resolution, resolution):
        return cameras
    if w != h:
        cameras = cameras.center_crop(min(w, h))
    notes.append(f"target cameras are for {w}x{h} images: "
                 + ("centre-cropped to a square and " if w != h else "") + f"scaled to the model's {resolution}x"
                 f"{resolution}")
    return cameras.resize(resolution, resolution)


def _evenly(n_have: int, n: int | None) -> list[int]:
    """Positions of at most ``n`` of ``n_have`` items, evenly spaced (all of them for None)."""
    return list(range(n_have)) if n is None or n >= n_have else [round(j * n_have / n) for j in range(n)]


def choose_targets(inp: SampleInput, resolution: int, *, n: int | None = None, dataset: bool = False,
                   arc: tuple[float, float] | None = None, elevation_deg: float | None = None,
                   cameras: str | Path | None = None, notes: list[str] | None = None
                   ) -> tuple[Cameras, list[int | None], str]:
    """``(targets (T,), ground-truth view per target or None, description)`` for ``vantage sample``.

    One of: ``cameras`` (a camera file, :func:`read_cameras`; at most ``n`` of them, evenly spaced),
    ``dataset`` (the object's views that are not inputs; at most ``n``) or the orbit (:func:`arc_targets`
    with ``n`` views, default 24, over ``arc`` (default the full circle) at ``elevation_deg``). An
    unposed input already sits at ``elevation_deg``, so its orbit runs through it. Raises ValueError
    (naming the options) for conflicting choices or ones the input cannot have.
    """
    notes = [] if notes is None else notes
    chosen = [f for f, on in (("--cameras", cameras is not None), ("--targets dataset", dataset),
                              ("--arc", arc is not None)) if on]
    if len(chosen) > 1:
        raise ValueError(f"{' and '.join(chosen)} choose the targets in different ways: give one of them")
    views, posed = inp.views, inp.posed
    if cameras is not None or dataset:
        if posed and elevation_deg is not None:
            raise ValueError(f"--elevation sets the orbit's elevation, but {chosen[0]} gives the target cameras")
        if dataset:
            if not posed:
                raise ValueError("--targets dataset needs posed views; this input has no cameras")
            others = [i for i in range(len(views)) if i not in inp.input_indices]
            if not others:
                raise ValueError(f"--targets dataset: scene '{inp.scene}' has no view besides the input(s)")
            others = [others[j] for j in _evenly(len(others), n)]
            return views.cameras[others], list(others), "dataset"
        cams, fmt = read_cameras(cameras)
        cams = fit_cameras(cams, resolution, notes)
        cams = cams[_evenly(len(cams), n)]
        ins = inp.inputs.cameras
        c2w, K = cams.c2w.clone(), cams.K.clone()
        for t, m in enumerate(match_views(inp.inputs, cams)):
            if m is not None:  # the input itself, exactly
                c2w[t], K[t] = ins.c2w[m], ins.K[m]
        cams = Cameras(c2w, K, cams.width, cams.height)
        truth = match_views(views, cams) if posed else [None] * len(cams)
        return cams, truth, f"{len(cams)} cameras from {cameras} ({fmt})"
    n = 24 if n is None else n
    start, end = (0.0, 360.0) if arc is None else arc
    input_cam = views.cameras[inp.input_index:inp.input_index + 1]
    cams = arc_targets(input_cam, n, start_deg=start, end_deg=end, elevation_deg=elevation_deg if posed else None)
    return cams, match_views(views, cams) if posed else [None] * n, "orbit" if arc is None else f"arc {start:g}:{end:g}"


def camera_entry(cams: Cameras, i: int) -> dict:
    """Camera ``i`` of ``cams`` as ``cameras.json`` stores it: ``c2w`` (OpenCV), ``K`` (pixels),
    ``transform_matrix`` (OpenGL, as nerfstudio), azimuth/elevation in degrees and radius."""
    polar, az, r = (float(v) for v in cartesian_to_spherical(cams.centers[i].double()))
    return {"c2w": cams.c2w[i].tolist(), "K": cams.K[i].tolist(), "transform_matrix": cams.to_opengl()[i].tolist(),
            "azimuth_deg": round(math.degrees(az), 6), "elevation_deg": round(90 - math.degrees(polar), 6),
            "radius": round(r, 6)}
