"""Inputs and target cameras for sampling from a trained model (what ``vantage sample`` reads).

:func:`load_input` turns a path into :class:`SampleInput`: the views of one object at the model's
resolution, which of them are the input views, and a list of notes saying what was done to them
(:func:`load_inputs` also takes several image files: one object, one input view per file):

* **An image file** (png/jpg/jpeg/webp): by default *preprocessed* like the training views
  (:func:`vantage.preprocess.preprocess_image`: the object is masked (alpha channel, or a threshold
  against a near-uniform background), recentred, scaled so that it fills ``object_fraction`` of the
  frame, composited on white and resized; ``SampleInput.preprocessing`` holds the parameters and the
  notes say what was done). When no object is found (a uniform image) or the background is not
  uniform and there is no alpha channel nor matting backend, or with ``preprocess=False``, the image
  is read as it is by :class:`~vantage.data.formats.images.ImageFolderDataset` (alpha composited on
  white; a non-square image padded to a square with white, then resized). It has no pose, so it gets
  the *default camera*: the model's training camera at azimuth 0 (for the synthetic data, the ring
  camera at 30° elevation, radius 2.5, 40° horizontal FOV; see ``MethodConfig.input_*``),
  looking at the origin with world +z up.
* **An object folder of any dataset format** (:func:`vantage.data.formats.open_dataset`): one scene
  (``scene`` picks one when the path holds several), all its views; view ``input_view`` is the
  input and the others may serve as ground truth. Views of another size are resized (a
  non-square view is centre-cropped first), with their intrinsics.
* **Several input views**: ``input_views`` (explicit positions, the first one is the reference
  the orbit runs through) or ``num_input_views`` (``K`` views evenly spaced over the object's views,
  starting at ``input_view``); several image files are all inputs unless chosen the same way.
  Several unposed images all get the default camera (a method that reads input poses cannot use
  them; ViewFusion's absolute-angle model does not).

Targets (:func:`orbit_targets`): ``n`` cameras on the circle through the input camera around the
world +z axis (azimuths ``az_in + 360°·k/n``, ``k = 0..n−1``), at the input's elevation (or a given
one) and distance from the origin, looking at the origin, with the input's intrinsics. Target 0
is the input camera itself when the elevation is unchanged. :func:`match_views` finds views of
the object whose cameras equal targets (ground truth).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from vantage.cameras import Cameras, look_at, spherical_to_cartesian
from vantage.data.formats import detect_format, open_dataset
from vantage.data.formats.common import IMAGE_EXTENSIONS, DatasetError, image_size, resize_views
from vantage.data.views import ObjectViews

__all__ = ["SampleInput", "load_input", "load_inputs", "choose_input_views", "orbit_targets", "match_views",
           "fit_resolution"]


@dataclass
class SampleInput:
    """One object to sample from.

    Attributes:
        views: :class:`ObjectViews` ``(N, 3, R, R)`` at the model's resolution ``R``.
        input_index: position of the (first) input view in ``views``: the reference the orbit runs through.
        posed: whether the cameras are real (False: the assumed default camera of an image).
        source: ``"image"``, ``"images"`` (several files) or the dataset format name.
        scene: the scene's name.
        notes: what was done to the input (resizing, compositing, assumed camera), for the user.
        input_indices: positions of all input views (None: ``[input_index]``); the first is ``input_index``.
        preprocessing: for each preprocessed image file, the parameters :func:`vantage.preprocess.preprocess_image`
            used (JSON-able; ``vantage.preprocess.reapply_preprocess`` repeats them); empty when none was.
    """

    views: ObjectViews
    input_index: int
    posed: bool
    source: str
    scene: str
    notes: list[str] = field(default_factory=list)
    input_indices: list[int] | None = None
    preprocessing: list[dict] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.input_indices is None:
            self.input_indices = [self.input_index]
        if not self.input_indices or self.input_indices[0] != self.input_index:
            raise ValueError(f"input_indices {self.input_indices} must start with input_index {self.input_index}")

    @property
    def input(self) -> ObjectViews:
        """The (first) input view, ``(1, 3, R, R)``."""
        return self.views.select([self.input_index])

    @property
    def inputs(self) -> ObjectViews:
        """All input views, ``(K, 3, R, R)``, in the order given."""
        return self.views.select(self.input_indices)


def fit_resolution(views: ObjectViews, resolution: int, notes: list[str]) -> ObjectViews:
    """``views`` at ``resolution`` x ``resolution``: centre-crop non-square views, then resize (say so in ``notes``)."""
    h, w = views.resolution
    if (h, w) == (resolution, resolution):
        return views
    cams, images, masks, depth = views.cameras, views.images, views.masks, views.depth
    if h != w:
        s = min(h, w)
        top, left = (h - s) // 2, (w - s) // 2
        cams = cams.crop(left, top, s, s)
        images = images[..., top:top + s, left:left + s]
        masks = None if masks is None else masks[..., top:top + s, left:left + s]
        depth = None if depth is None else depth[..., top:top + s, left:left + s]
        notes.append(f"views are {w}x{h}: centre-cropped to {s}x{s}")
    cams, images, masks, depth = resize_views(cams, images, masks, depth, size=resolution, where=views.name)
    notes.append(f"resized views from {w}x{h} to the model's {resolution}x{resolution}")
    return ObjectViews(images=images.clamp(-1, 1), cameras=cams, masks=masks, depth=depth,
                       view_ids=views.view_ids, name=views.name, meta=dict(views.meta))


def _scene_index(ds, scene: str | int | None, notes: list[str]) -> int:
    n = len(ds)
    if n == 0:
        raise DatasetError("the input dataset holds no scene")
    if scene is None:
        if n > 1:
            notes.append(f"the input holds {n} scenes; using the first, '{ds.scene_name(0)}' (choose with --scene)")
        return 0
    if isinstance(scene, int) or str(scene).lstrip("-").isdigit():
        i = int(scene)
        if not -n <= i < n:
            raise DatasetError(f"--scene {i}: the input holds {n} scenes")
        return i % n
    names = [ds.scene_name(i) for i in range(n)]
    if scene not in names:
        raise DatasetError(f"--scene {scene!r} not found; scenes: {', '.join(names[:10])}" + (" ..." if n > 10 else ""))
    return names.index(scene)


def choose_input_views(n: int, *, input_view: int = 0, input_views: Sequence[int] | None = None,
                       num_input_views: int | None = None, default_all: bool = False,
                       where: str = "the input") -> list[int]:
    """Positions (in ``[0, n)``) of the input views among ``n`` views (see the module docstring).

    ``input_views``: explicit positions (negative ones count from the end); ``num_input_views``: ``K``
    evenly spaced views from ``input_view`` on; neither: ``[input_view]`` (or all when ``default_all``).
    Raises :class:`DatasetError` for zero views, positions out of range, repeats, or both options."""
    if input_views is not None and num_input_views is not None:
        raise DatasetError("give --input-views or --num-input-views, not both")
    if not -n <= input_view < n:
        raise DatasetError(f"--input-view {input_view}: {where} has {n} views")
    if input_views is not None:
        picked = [int(i) for i in input_views]
        if not picked:
            raise DatasetError("zero input views: --input-views needs at least one view position")
        bad = [i for i in picked if not -n <= i < n]
        if bad:
            raise DatasetError(f"--input-views {','.join(map(str, bad))}: {where} has {n} views (0..{n - 1})")
        picked = [i % n for i in picked]
        if len(set(picked)) != len(picked):
            raise DatasetError(f"--input-views lists a view twice: {','.join(map(str, picked))}")
        return picked
    if num_input_views is not None:
        if num_input_views < 1:
            raise DatasetError(f"zero input views: --num-input-views must be >= 1, got {num_input_views}")
        if num_input_views > n:
            raise DatasetError(f"--num-input-views {num_input_views}: {where} has only {n} views")
        return [(input_view + round(j * n / num_input_views)) % n for j in range(num_input_views)]
    return list(range(n)) if default_all else [input_view % n]


def _preprocessed(path: Path, resolution: int, cam_opts: dict, object_fraction: float | None, matting: str,
                  notes: list[str]) -> tuple[ObjectViews, dict] | None:
    """The image at ``path`` preprocessed (:mod:`vantage.preprocess`) as a one-view :class:`ObjectViews`, or
    None (with a note) when no object is found or the mask would be unreliable: then it is used as it is."""
    from vantage.data.formats.images import default_camera
    from vantage.preprocess import SYNTHETIC_OBJECT_FRACTION, NoObjectError, describe, preprocess_image

    fraction = SYNTHETIC_OBJECT_FRACTION if object_fraction is None else object_fraction
    try:
        image, info = preprocess_image(path, resolution, fraction, matting=matting, name=path.name)
    except NoObjectError:
        notes.append(f"no object found in {path.name} (a uniform image?): not preprocessed, used as it is")
        return None
    m = info["mask"]
    if m["source"] == "threshold" and not m["uniform"] and matting == "auto":
        notes.append(f"the background of {path.name} is not uniform and it has no alpha channel: not preprocessed "
                     f"(used as it is); cut the object out (an RGBA image) or run `vantage preprocess` on it")
        return None
    lines = describe(info)
    notes += [f"preprocessed the image like the training views: {lines[0]}", *lines[1:]]
    w, h = info["size"]
    if (w, h) != (resolution, resolution):
        notes.append(f"resized the input image from {w}x{h} to the model's {resolution}x{resolution} (a square crop "
                     f"of {info['crop'][2]} px around the object)")
    views = ObjectViews(images=image[None], cameras=default_camera(resolution, resolution, **cam_opts),
                        masks=info.mask[None].float(), view_ids=torch.zeros(1, dtype=torch.long), name=path.stem,
                        meta={"format": "images", "posed": False, "files": [str(path)], "preprocess": dict(info)})
    return views, dict(info)


def load_input(path: str | Path, resolution: int, *, elevation_deg: float = 30.0, radius: float = 2.5,
               fov_deg: float = 40.0, scene: str | int | None = None, input_view: int = 0,
               input_views: Sequence[int] | None = None, num_input_views: int | None = None,
               format: str | None = None, preprocess: bool = True, object_fraction: float | None = None,
               matting: str = "auto") -> SampleInput:
    """Read an image file or an object folder (see the module docstring) at ``resolution``.

    ``elevation_deg``, ``radius`` and ``fov_deg`` define the default camera of unposed images;
    ``input_view``, ``input_views`` and ``num_input_views`` choose the input views
    (:func:`choose_input_views`). ``preprocess`` (image files only): mask, recentre and scale the object to
    ``object_fraction`` of the frame (default: the synthetic data's,
    :data:`vantage.preprocess.SYNTHETIC_OBJECT_FRACTION`) with ``matting`` (``auto``, ``alpha``,
    ``threshold``, ``rembg``) before use. Raises :class:`DatasetError` (a ``ValueError``) or
    ``FileNotFoundError`` with the path.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"input not found: {path}")
    notes: list[str] = []
    cam_opts = {"radius": radius, "fov_deg": fov_deg, "elevation_deg": elevation_deg}
    if path.is_file():
        if path.suffix.lower() not in IMAGE_EXTENSIONS:
            raise DatasetError(f"{path}: not an image ({', '.join(IMAGE_EXTENSIONS)}) or an object folder")
        from vantage.data.formats.images import ImageFolderDataset

        picked = choose_input_views(1, input_view=input_view, input_views=input_views,
                                    num_input_views=num_input_views, where=f"image {path.name}")
        done = _preprocessed(path, resolution, cam_opts, object_fraction, matting, notes) if preprocess else None
        if done is not None:
            notes.append(f"the image has no pose: assumed the default camera (azimuth 0, elevation "
                         f"{elevation_deg:g}°, radius {radius:g}, horizontal FOV {fov_deg:g}°, looking at the origin)")
            return SampleInput(done[0], 0, False, "image", done[0].name, notes, picked, [done[1]])
        w, h = image_size(path)
        ds = ImageFolderDataset(path, resolution=None if (w, h) == (resolution, resolution) else resolution,
                                **cam_opts)
        views = ds.load(0)
        if (w, h) != (resolution, resolution):
            notes.append(f"resized the input image from {w}x{h} to the model's {resolution}x{resolution}"
                         + (" (padded to a square with white first)" if w != h else ""))
        if views.masks is not None:
            notes.append("the image has an alpha channel: composited on white")
        notes.append(f"the image has no pose: assumed the default camera (azimuth 0, elevation {elevation_deg:g}°, "
                     f"radius {radius:g}, horizontal FOV {fov_deg:g}°, looking at the origin)")
        return SampleInput(views, 0, False, "image", views.name, notes, picked)

    fmt = format or detect_format(path)
    ds = open_dataset(path, fmt, **(cam_opts if fmt == "images" else {}))
    index = _scene_index(ds, scene, notes)
    if fmt == "images" and len(ds) > 1:
        notes.append("an image folder holds one scene per image; for several views of one object give the files "
                     "themselves (--input DIR/*.png)")
    views = fit_resolution(ds.load(index), resolution, notes)
    posed = bool(views.meta.get("posed", True)) and fmt != "images"
    picked = choose_input_views(len(views), input_view=input_view, input_views=input_views,
                                num_input_views=num_input_views, where=f"scene '{views.name}'")
    if not posed:
        notes.append("the views have no pose: assumed the default camera for every view")
    return SampleInput(views, picked[0], posed, fmt, views.name, notes, picked)


def load_inputs(paths: Sequence[str | Path], resolution: int, *, input_view: int = 0,
                input_views: Sequence[int] | None = None, num_input_views: int | None = None,
                **options) -> SampleInput:
    """:func:`load_input` of one path, or several image files as the views of one unposed object.

    Each file is read (preprocessed, or composited, padded and resized to ``resolution`` as one image would
    be; the notes name the file) and gets the default camera; by default every file is an input view
    (``input_views`` / ``num_input_views`` choose others, see :func:`choose_input_views`).
    ``options`` go to :func:`load_input` (camera of unposed images, ``preprocess``, ``object_fraction``,
    ``matting``; ``scene``/``format`` only for one path).
    """
    paths = [Path(p) for p in paths]
    if not paths:
        raise DatasetError("zero input views: give at least one --input")
    if len(paths) == 1:
        return load_input(paths[0], resolution, input_view=input_view, input_views=input_views,
                          num_input_views=num_input_views, **options)
    for opt in ("scene", "format"):
        if options.pop(opt, None) is not None:
            raise DatasetError(f"--{opt} applies to one object folder, not to {len(paths)} image files")
    for p in paths:
        if not p.exists():
            raise FileNotFoundError(f"input not found: {p}")
        if not p.is_file() or p.suffix.lower() not in IMAGE_EXTENSIONS:
            raise DatasetError(f"{p}: several --input paths must all be image files "
                               f"({', '.join(IMAGE_EXTENSIONS)}); give an object folder on its own")
    resolved = [p.resolve() for p in paths]
    twice = sorted({str(p) for p, r in zip(paths, resolved) if resolved.count(r) > 1})
    if twice:
        raise DatasetError(f"the same image is given twice: {', '.join(twice)}")
    singles = [load_input(p, resolution, **options) for p in paths]
    notes: list[str] = []
    for p, one in zip(paths, singles):
        notes += [f"{p.name}: {n}" for n in one.notes if "has no pose" not in n]
    notes.append(f"the {len(paths)} images have no pose: each is given the default camera (azimuth 0, elevation "
                 f"{options.get('elevation_deg', 30.0):g}°); the orbit runs through the first")
    views = ObjectViews(images=torch.cat([o.views.images for o in singles]),
                        cameras=Cameras.cat([o.views.cameras for o in singles]),
                        masks=torch.cat([o.views.masks for o in singles])
                        if all(o.views.masks is not None for o in singles) else None,
                        name=paths[0].stem, meta={"format": "images", "posed": False, "files": [str(p) for p in paths]})
    picked = choose_input_views(len(paths), input_view=input_view, input_views=input_views,
                                num_input_views=num_input_views, default_all=True, where=f"the {len(paths)} images")
    return SampleInput(views, picked[0], False, "images", views.name, notes, picked,
                       [info for one in singles for info in one.preprocessing])


def orbit_targets(input_camera: Cameras, n: int, *, elevation_deg: float | None = None,
                  arc_deg: float = 360.0, start_deg: float = 0.0) -> Cameras:
    """``(n,)`` cameras on the orbit through ``input_camera`` ``(1,)`` or ``()`` (module docstring).

    ``arc_deg`` degrees of azimuth from ``start_deg`` (relative to the input camera's): a full turn
    (±360) gives ``n`` evenly spaced views with the end left out; a partial arc spans ``[start, start + arc]``
    inclusively. Without ``elevation_deg``, a start at a multiple of 360 reproduces the input camera exactly."""
    if n < 1:
        raise ValueError(f"an orbit needs at least 1 view, got {n}")
    cam = input_camera.flatten()[:1]
    polar, az0, r = (float(v) for v in cam.spherical()[0].double())
    if r < 1e-6:
        raise ValueError("the input camera sits at the origin: cannot orbit around it")
    if elevation_deg is not None:
        polar = math.radians(90.0 - elevation_deg)
    full = abs(abs(arc_deg) - 360.0) < 1e-9
    step = arc_deg / n if full or n == 1 else arc_deg / (n - 1)
    az = torch.tensor([az0 + math.radians(start_deg + k * step) for k in range(n)], dtype=torch.float64)
    eye = spherical_to_cartesian(torch.full_like(az, polar), az, torch.full_like(az, r)).to(cam.c2w.dtype)
    c2w = look_at(eye)
    if elevation_deg is None and start_deg % 360.0 == 0:
        c2w[0] = cam.c2w[0]  # exactly the input camera (no round-off)
    return Cameras(c2w, cam.K.expand(n, 3, 3).clone(), cam.width, cam.height)


def match_views(views: ObjectViews, targets: Cameras, *, atol: float = 1e-3) -> list[int | None]:
    """For each target camera, the position of a view of ``views`` with the same camera, or None.

    Poses are compared entrywise with ``atol`` times the scene scale (largest camera distance,
    at least 1); intrinsics within ``atol`` times the image width."""
    scale = max(1.0, float(views.cameras.centers.norm(dim=-1).max()))
    dc = (views.cameras.c2w[None] - targets.c2w[:, None]).abs().flatten(-2).amax(-1)  # (T, N)
    dk = (views.cameras.K[None] - targets.K[:, None]).abs().flatten(-2).amax(-1)
    ok = (dc <= atol * scale) & (dk <= atol * views.cameras.width)
    return [int(row.nonzero()[0]) if row.any() else None for row in ok]
