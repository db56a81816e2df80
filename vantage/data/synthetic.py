"""The embedded synthetic multi-view dataset: procedural objects, fixed splits, on-the-fly views.

Objects
    1-4 primitives (:data:`vantage.data.render.KINDS`: sphere, ellipsoid, box, cylinder, cone,
    torus, capsule) with random sizes, orientations and placements (each part after the first
    is attached to the surface of an earlier one), per-part colours and textures (stripes,
    checks, sectors, dots, two-tone) and at least one "marked face" (a contrasting spot), so
    that front and back differ. Each object is centred (its bounding box) on the origin and
    scaled so that it fits in a ball of radius 0.55-0.8 around it: it fills most of the frame
    of the default cameras (distance 2.5, 40° field of view) without leaving it.

Determinism
    Object ``i`` of a split is generated from ``random.Random("vantage-synthetic/<object seed>")``
    with ``object seed = SPLITS[split].base + i``, using only ``random()`` (whose stream
    Python guarantees across versions), so it is the same object on every machine. Splits are
    disjoint ranges of object seeds (:data:`SPLITS`).

Camera layouts (:func:`layout_cameras`)
    ``ring``: ``views`` cameras at azimuth ``360° i / views``, fixed elevation (30°), radius
    2.5, 40° FOV, looking at the origin: the same for every object (NMR-like); the view id is
    the ring index. ``orbit``: the same circle but starting at a random azimuth per object.
    ``hemisphere``: random cameras on the upper hemisphere (elevation 5°-85°), per object
    (SRN-like). Random layouts are seeded by the object seed, so view ``k`` of an object never
    changes and asking for a subset of views renders exactly those.
"""

from __future__ import annotations

import colorsys
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from vantage.cameras import Cameras, hemisphere_cameras, orbit_cameras
from vantage.data.render import KINDS, PATTERNS, Lighting, Primitive, Rendered, render
from vantage.data.views import ObjectViews, SceneDataset

__all__ = ["SPLITS", "Split", "LAYOUTS", "BENCHMARK", "SyntheticObject", "make_object", "object_seed",
           "layout_cameras", "render_object", "support_point", "SyntheticDataset"]


@dataclass(frozen=True)
class Split:
    """A range of object seeds: objects ``base + 0 .. base + count - 1``."""

    base: int
    count: int


SPLITS: dict[str, Split] = {
    "train": Split(0, 1_000_000),
    "val": Split(10_000_000, 1_000),
    "test": Split(20_000_000, 1_000),
    "benchmark": Split(30_000_000, 100),
}
LAYOUTS = ("ring", "orbit", "hemisphere")
# The fixed evaluation setting: benchmark split, all 100 objects, 24-view ring at 30° elevation,
# radius 2.5, 40° FOV, shadows on, no supersampling. Only the resolution may change.
BENCHMARK = {"split": "benchmark", "num_objects": 100, "views": 24, "layout": "ring", "elevation": 30.0,
             "radius": 2.5, "fov_deg": 40.0, "shadows": True, "supersample": 1}


def object_seed(split: str, index: int) -> int:
    """The object seed of object ``index`` of ``split`` (raises on an unknown split / bad index)."""
    if split not in SPLITS:
        raise ValueError(f"unknown split '{split}'; known splits: {', '.join(SPLITS)}")
    sp = SPLITS[split]
    if not 0 <= index < sp.count:
        raise IndexError(f"split '{split}' has {sp.count} objects, index {index} is out of range")
    return sp.base + index


@dataclass(frozen=True)
class SyntheticObject:
    """A procedural object: its primitives (world coordinates) and where it came from."""

    parts: tuple[Primitive, ...]
    seed: int

    def to_dict(self) -> dict:
        return {"seed": self.seed, "parts": [p.to_dict() for p in self.parts]}

    @classmethod
    def from_dict(cls, d: dict) -> SyntheticObject:
        return cls(tuple(Primitive.from_dict(p) for p in d["parts"]), int(d["seed"]))


# ----------------------------------------------------------------------------- generation
def _unit(rng: random.Random) -> tuple[float, float, float]:
    z = 2 * rng.random() - 1
    a = 2 * math.pi * rng.random()
    s = math.sqrt(max(0.0, 1 - z * z))
    return (s * math.cos(a), s * math.sin(a), z)


def _rotation(rng: random.Random) -> torch.Tensor:
    """``(3, 3)`` float64: upright with a random yaw (35%), on its side (25%) or uniformly random."""
    yaw = 2 * math.pi * rng.random()
    cz, sz = math.cos(yaw), math.sin(yaw)
    Rz = torch.tensor([[cz, -sz, 0.0], [sz, cz, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    mode = rng.random()
    if mode < 0.35:
        return Rz
    if mode < 0.6:
        return Rz @ torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]], dtype=torch.float64)
    # uniform random rotation from a uniform unit quaternion (Shoemake)
    u1, u2, u3 = rng.random(), rng.random(), rng.random()
    a, b = math.sqrt(1 - u1), math.sqrt(u1)
    w, x, y, z = (a * math.sin(2 * math.pi * u2), a * math.cos(2 * math.pi * u2),
                  b * math.sin(2 * math.pi * u3), b * math.cos(2 * math.pi * u3))
    return torch.tensor([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                         [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                         [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]],
                        dtype=torch.float64)


def _size(kind: str, rng: random.Random, scale: float) -> tuple[float, ...]:
    def u(lo: float, hi: float) -> float:
        return scale * (lo + (hi - lo) * rng.random())

    if kind == "sphere":
        return (u(0.35, 0.6),)
    if kind in ("ellipsoid", "box"):
        return (u(0.18, 0.55), u(0.18, 0.55), u(0.18, 0.55))
    if kind == "cylinder":
        return (u(0.15, 0.45), u(0.15, 0.6))
    if kind == "cone":
        r0 = u(0.25, 0.55)
        return (r0, 0.0 if rng.random() < 0.5 else r0 * (0.2 + 0.45 * rng.random()), u(0.2, 0.6))
    if kind == "torus":
        R = u(0.3, 0.5)
        return (R, R * (0.2 + 0.25 * rng.random()))
    return (u(0.1, 0.3), u(0.15, 0.5))  # capsule


def _colors(rng: random.Random) -> tuple[tuple[float, ...], tuple[float, ...], tuple[float, ...]]:
    hue = rng.random()
    c1 = colorsys.hsv_to_rgb(hue, 0.45 + 0.45 * rng.random(), 0.5 + 0.4 * rng.random())
    c2 = colorsys.hsv_to_rgb((hue + 0.25 + 0.5 * rng.random()) % 1.0, 0.3 + 0.6 * rng.random(),
                             0.25 + 0.65 * rng.random())
    if rng.random() < 0.5:
        mark = (0.06, 0.06, 0.08)
    else:
        mark = colorsys.hsv_to_rgb((hue + 0.5) % 1.0, 0.9, 0.95)
    return c1, c2, mark


def support_point(p: Primitive, u: Tensor) -> Tensor:
    """Farthest point of ``p`` (local frame) in local unit directions ``u (M, 3)`` -> ``(M, 3)``.

    Exact for the convex kinds; the convex hull's for the torus. Used to size and place parts.
    """
    s = p.size
    ez = u.new_tensor([0.0, 0.0, 1.0])
    rho = torch.cat([u[:, :2], torch.zeros_like(u[:, :1])], 1)
    n = rho.norm(dim=1, keepdim=True)
    rho = torch.where(n > 1e-9, rho / n.clamp_min(1e-9), u.new_tensor([1.0, 0.0, 0.0]))
    sz = torch.where(u[:, 2:] >= 0, 1.0, -1.0).to(u)
    if p.kind == "sphere":
        return s[0] * u
    if p.kind == "ellipsoid":
        a2 = u.new_tensor(s) ** 2
        return a2 * u / (a2 * u * u).sum(1, keepdim=True).sqrt()
    if p.kind == "box":
        return u.new_tensor(s) * torch.where(u >= 0, 1.0, -1.0).to(u)
    if p.kind == "cylinder":
        return s[0] * rho + s[1] * sz * ez
    if p.kind == "cone":
        bottom, top = s[0] * rho - s[2] * ez, s[1] * rho + s[2] * ez
        return torch.where(((top - bottom) * u).sum(1, keepdim=True) > 0, top, bottom)
    if p.kind == "torus":
        return s[0] * rho + s[1] * u
    return s[1] * sz * ez + s[0] * u  # capsule


_DIRS = None


def _directions() -> torch.Tensor:
    """``(134, 3)`` float64 fixed unit directions (Fibonacci sphere + the 6 axes) for extent estimates."""
    global _DIRS
    if _DIRS is None:
        n = 128
        i = torch.arange(n, dtype=torch.float64) + 0.5
        z = 1 - 2 * i / n
        a = math.pi * (1 + 5 ** 0.5) * i
        r = (1 - z * z).sqrt()
        fib = torch.stack([r * a.cos(), r * a.sin(), z], 1)
        eye = torch.eye(3, dtype=torch.float64)
        _DIRS = torch.cat([fib, eye, -eye])
    return _DIRS


def _hull_points(kind: str, size: tuple[float, ...], R: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """``(134, 3)`` world points on the part's (convex hull) surface, one per fixed direction."""
    u = _directions() @ R  # world directions in local coordinates
    return support_point(Primitive(kind, size), u) @ R.T + c


def make_object(seed: int) -> SyntheticObject:
    """The procedural object with ``seed`` (see the module docstring for what is drawn)."""
    rng = random.Random(f"vantage-synthetic/{int(seed)}")
    r = rng.random()
    n_parts = 1 if r < 0.15 else 2 if r < 0.5 else 3 if r < 0.8 else 4
    marked = int(rng.random() * n_parts)
    specs = []  # (kind, size, R, center) before normalisation
    for k in range(n_parts):
        kind = KINDS[int(rng.random() * len(KINDS))]
        size = _size(kind, rng, 1.0 if k == 0 else 0.45 + 0.4 * rng.random())
        R = _rotation(rng)
        center = torch.zeros(3, dtype=torch.float64)
        if k > 0:  # attach to the surface of an earlier part
            pk, ps, pR, pc = specs[int(rng.random() * k)]
            u = torch.tensor(_unit(rng), dtype=torch.float64)
            reach = (support_point(Primitive(pk, ps), (u @ pR)[None]) @ pR.T)[0] @ u
            center = pc + u * reach * (0.65 + 0.4 * rng.random())
        specs.append((kind, size, R, center))
    pts = torch.cat([_hull_points(*s) for s in specs])
    mid = (pts.amin(0) + pts.amax(0)) / 2
    radius = (pts - mid).norm(dim=1).max().item()
    scale = (0.55 + 0.25 * rng.random()) / radius
    parts = []
    for k, (kind, size, R, center) in enumerate(specs):
        c1, c2, mark = _colors(rng)
        pattern = PATTERNS[int(rng.random() * len(PATTERNS))]
        freq = (6 + 2 * int(rng.random() * 4)) if pattern == "segments" else (1.5 + 2.5 * rng.random())
        has_mark = k == marked or rng.random() < 0.3
        parts.append(Primitive(
            kind=kind, size=tuple(round(s * scale, 6) for s in size),
            center=tuple(round(float(x), 6) for x in (center - mid) * scale),
            rotation=tuple(float(x) for x in R.flatten()),
            color=tuple(round(x, 4) for x in c1), color2=tuple(round(x, 4) for x in c2),
            pattern=pattern, pattern_axis=_unit(rng), pattern_freq=round(freq / scale, 4),
            mark_dir=_unit(rng), mark_cos=round(math.cos(math.radians(25 + 20 * rng.random())), 4)
            if has_mark else 2.0, mark_color=tuple(round(x, 4) for x in mark)))
    return SyntheticObject(tuple(parts), int(seed))


# ----------------------------------------------------------------------------- cameras
def layout_cameras(layout: str, views: int, resolution: int, seed: int = 0, *, elevation: float = 30.0,
                   radius: float = 2.5, fov_deg: float = 40.0) -> Cameras:
    """``(views,)`` cameras of ``layout`` for the object with object seed ``seed``.

    ``ring`` ignores ``seed``; ``orbit`` uses it for the start azimuth and ``hemisphere`` for
    the positions (``torch.Generator`` seeded with ``seed``). Square images of side ``resolution``.
    """
    if views < 1:
        raise ValueError(f"need at least one view, got {views}")
    if layout == "ring":
        return orbit_cameras(views, elevation_deg=elevation, radius=radius, fov_deg=fov_deg,
                             resolution=resolution)
    if layout == "orbit":
        start = random.Random(f"vantage-synthetic-orbit/{int(seed)}").random() * 360.0
        return orbit_cameras(views, elevation_deg=elevation, radius=radius, fov_deg=fov_deg,
                             resolution=resolution, start_azimuth_deg=start)
    if layout == "hemisphere":
        gen = torch.Generator().manual_seed(int(seed))
        return hemisphere_cameras(views, generator=gen, radius=radius, fov_deg=fov_deg, resolution=resolution)
    raise ValueError(f"unknown camera layout '{layout}'; choose one of {', '.join(LAYOUTS)}")


def render_object(obj: SyntheticObject, cameras: Cameras, *, shadows: bool = True,
                  supersample: int = 1, lighting: Lighting | None = None) -> Rendered:
    """Render ``obj`` from ``cameras (N,)``: see :func:`vantage.data.render.render`."""
    return render(obj.parts, cameras, shadows=shadows, supersample=supersample, lighting=lighting)


# ----------------------------------------------------------------------------- dataset
class SyntheticDataset(SceneDataset):
    """Objects of a split, rendered on the fly (nothing is written to disk).

    Args:
        split: ``train`` | ``val`` | ``test`` | ``benchmark`` (:data:`SPLITS`).
        num_objects: how many objects (default: the rest of the split after ``seed``).
        views: views per object.
        resolution: image side in pixels (16..256; other sizes work but are not tested).
        layout: ``ring`` | ``orbit`` | ``hemisphere`` (see the module docstring).
        elevation: camera elevation in degrees for ``ring`` / ``orbit``.
        seed: offset of the first object within the split: object ``i`` of this dataset is
            object ``seed + i`` of the split (``vantage data render --seed``).
        radius, fov_deg: camera distance from the origin and horizontal field of view.
        shadows, supersample: renderer options (see :func:`vantage.data.render.render`).

    The ``benchmark`` split is fixed (:data:`BENCHMARK`): only ``resolution`` (and
    ``num_objects``, to take a prefix) may differ from it.

    ``load(i)`` returns :class:`ObjectViews` with images ``(N, 3, H, W)`` in [-1, 1], masks and
    depth ``(N, 1, H, W)``, cameras ``(N,)``, ``view_ids`` = positions in the layout (the ring
    index for ``ring``) and ``meta`` = ``{"split", "index", "seed", "layout", "parts"}``.
    """

    format_name = "synthetic"

    def __init__(self, split: str = "train", num_objects: int | None = None, views: int = 24,
                 resolution: int = 64, layout: str = "ring", elevation: float = 30.0, seed: int = 0, *,
                 radius: float = 2.5, fov_deg: float = 40.0, shadows: bool = True,
                 supersample: int = 1) -> None:
        super().__init__()
        if split not in SPLITS:
            raise ValueError(f"unknown split '{split}'; known splits: {', '.join(SPLITS)}")
        if layout not in LAYOUTS:
            raise ValueError(f"unknown camera layout '{layout}'; choose one of {', '.join(LAYOUTS)}")
        available = SPLITS[split].count - int(seed)
        if seed < 0 or available <= 0:
            raise ValueError(f"seed (first object index) must be in [0, {SPLITS[split].count}) for split "
                             f"'{split}', got {seed}")
        num_objects = available if num_objects is None else int(num_objects)
        if not 0 < num_objects <= available:
            raise ValueError(f"split '{split}' has {SPLITS[split].count} objects; cannot take {num_objects} "
                             f"starting at index {seed}")
        if resolution < 1 or views < 1 or supersample < 1:
            raise ValueError("resolution, views and supersample must be positive")
        if split == "benchmark":
            given = {"views": views, "layout": layout, "elevation": float(elevation), "radius": radius,
                     "fov_deg": fov_deg, "shadows": shadows, "supersample": supersample}
            wrong = {k: v for k, v in given.items() if v != BENCHMARK[k]}
            if wrong or seed != 0:
                raise ValueError(f"the benchmark split is fixed ({BENCHMARK}); only resolution and "
                                 f"num_objects may change, got {wrong or {'seed': seed}}")
        self.split, self.num_objects, self.views = split, num_objects, int(views)
        self.resolution, self.layout, self.elevation = int(resolution), layout, float(elevation)
        self.seed, self.radius, self.fov_deg = int(seed), float(radius), float(fov_deg)
        self.shadows, self.supersample = bool(shadows), int(supersample)

    def __len__(self) -> int:
        return self.num_objects

    def object_seed(self, index: int) -> int:
        return object_seed(self.split, self.seed + self._check_index(index))

    def scene_name(self, index: int) -> str:
        return f"{self.split}-{self.seed + self._check_index(index):06d}"

    def num_views(self, index: int) -> int:
        return self.views

    def object(self, index: int) -> SyntheticObject:
        """The :class:`SyntheticObject` behind scene ``index``."""
        return make_object(self.object_seed(index))

    def cameras(self, index: int) -> Cameras:
        """All ``(views,)`` cameras of scene ``index`` (no rendering)."""
        return layout_cameras(self.layout, self.views, self.resolution, self.object_seed(index),
                              elevation=self.elevation, radius=self.radius, fov_deg=self.fov_deg)

    def load(self, index: int, views: Sequence[int] | None = None) -> ObjectViews:
        index = self._check_index(index)
        cams = self.cameras(index)
        ids = torch.arange(self.views) if views is None else torch.as_tensor(list(views), dtype=torch.long)
        if ids.numel() == 0 or ids.min() < 0 or ids.max() >= self.views:
            raise IndexError(f"views {ids.tolist()} out of range for {self.views} views")
        cams = cams[ids]
        obj = self.object(index)
        out = render_object(obj, cams, shadows=self.shadows, supersample=self.supersample)
        meta = {"split": self.split, "index": self.seed + index, "seed": obj.seed, "layout": self.layout,
                "parts": [p.to_dict() for p in obj.parts]}
        return ObjectViews(images=out.images, cameras=cams, masks=out.masks, depth=out.depth, view_ids=ids,
                           name=self.scene_name(index), meta=meta)
