"""A small CPU ray caster in torch for the embedded synthetic dataset.

Scenes are unions of up to a few solid primitives (:class:`Primitive`), each with its own
pose, size, colours and procedural texture. Every pixel of every view is one ray; all rays
of a batch of views go through one tensor pass (no Python loop over pixels):

1. rays from :class:`~vantage.cameras.Cameras` (optionally ``s x s`` supersampled);
2. per primitive: a bounding-sphere test selects the rays that can hit it, those rays are
   moved into the primitive's local frame and intersected analytically (sphere, ellipsoid,
   box, cylinder, cone/frustum, capsule) or by sphere tracing its exact distance function
   (torus); the nearest hit over all primitives wins;
3. the winning rays are shaded: procedural albedo in the primitive's local frame (so textures
   turn with the part), hemispheric ambient + one directional light + a Blinn highlight, and
   optionally a hard shadow (a second ray towards the light through every primitive);
4. composite on white, average supersamples.

Outputs follow :mod:`vantage.data.views`: images ``(N, 3, H, W)`` in [-1, 1], masks
``(N, 1, H, W)`` in [0, 1] and camera-z depth ``(N, 1, H, W)`` (0 = background). Every
operation is element-wise per ray, so results do not depend on how views are chunked, and
the renderer is deterministic.

Primitive sizes (local frame; the part's axis is local +z): sphere ``(r,)``; ellipsoid
``(a, b, c)`` semi-axes; box ``(hx, hy, hz)`` half extents; cylinder ``(r, h)``, z in [-h, h],
capped; cone ``(r_bottom, r_top, h)``, a frustum with radius r_bottom at z=-h and r_top at
z=+h (``r_top = 0``: a cone); torus ``(R, r)``, ring radius R in the xy-plane, tube radius r;
capsule ``(r, h)``, the segment z in [-h, h] swept by a ball of radius r.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from vantage.cameras import Cameras

__all__ = ["KINDS", "PATTERNS", "Primitive", "Lighting", "Rendered", "render"]

KINDS = ("sphere", "ellipsoid", "box", "cylinder", "cone", "torus", "capsule")
PATTERNS = ("solid", "stripes", "checks", "segments", "dots", "two_tone")
_EPS = 1e-4          # smallest ray parameter counted as a hit
_TORUS_TOL = 5e-4    # sphere-tracing hit tolerance (world units)
_TORUS_STEPS = 48
_SHADOW_OFFSET = 3e-3


@dataclass(frozen=True)
class Primitive:
    """One textured solid. All vectors are tuples of floats (JSON friendly).

    Attributes:
        kind: one of :data:`KINDS`; ``size`` as in the module docstring.
        center: ``(3,)`` world position of the local origin.
        rotation: ``(9,)`` row-major 3x3 local-to-world rotation (columns = local axes).
        color, color2: ``(3,)`` RGB in [0, 1]; ``color2`` is the pattern's second colour.
        pattern: one of :data:`PATTERNS`; ``pattern_axis`` ``(3,)`` local unit vector and
            ``pattern_freq`` (cycles per local unit; the number of sectors for "segments").
        mark_dir, mark_cos, mark_color: a spot (the "marked face"): local points whose
            direction from the local origin is within ``acos(mark_cos)`` of ``mark_dir`` get
            ``mark_color``; ``mark_cos > 1`` disables it.
    """

    kind: str
    size: tuple[float, ...]
    center: tuple[float, float, float] = (0.0, 0.0, 0.0)
    rotation: tuple[float, ...] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
    color: tuple[float, float, float] = (0.7, 0.3, 0.2)
    color2: tuple[float, float, float] = (0.2, 0.3, 0.7)
    pattern: str = "solid"
    pattern_axis: tuple[float, float, float] = (0.0, 0.0, 1.0)
    pattern_freq: float = 2.0
    mark_dir: tuple[float, float, float] = (1.0, 0.0, 0.0)
    mark_cos: float = 2.0
    mark_color: tuple[float, float, float] = (0.05, 0.05, 0.08)

    def __post_init__(self) -> None:
        sizes = {"sphere": 1, "ellipsoid": 3, "box": 3, "cylinder": 2, "cone": 3, "torus": 2, "capsule": 2}
        if self.kind not in sizes:
            raise ValueError(f"unknown primitive kind '{self.kind}'; known: {', '.join(KINDS)}")
        if len(self.size) != sizes[self.kind] or min(self.size) < 0:
            raise ValueError(f"{self.kind} needs {sizes[self.kind]} non-negative sizes, got {self.size}")
        if self.pattern not in PATTERNS:
            raise ValueError(f"unknown pattern '{self.pattern}'; known: {', '.join(PATTERNS)}")
        if len(self.rotation) != 9 or len(self.center) != 3:
            raise ValueError("rotation must have 9 entries (row-major 3x3) and center 3")

    @property
    def R(self) -> Tensor:
        """``(3, 3)`` local-to-world rotation."""
        return torch.tensor(self.rotation, dtype=torch.float32).reshape(3, 3)

    def bounding_radius(self) -> float:
        """Radius of a ball around ``center`` that contains the primitive."""
        s = self.size
        if self.kind in ("sphere", "ellipsoid"):
            return max(s)
        if self.kind == "box":
            return math.sqrt(sum(x * x for x in s))
        if self.kind in ("torus", "capsule"):
            return s[0] + s[1]
        return math.hypot(max(s[:-1]), s[-1])  # cylinder (r, h), cone (r0, r1, h)

    def to_dict(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()}

    @classmethod
    def from_dict(cls, d: dict) -> Primitive:
        return cls(**{k: (tuple(float(x) for x in v) if isinstance(v, list) else v) for k, v in d.items()})


@dataclass(frozen=True)
class Lighting:
    """World-fixed lighting. ``direction`` points from the scene towards the light."""

    direction: tuple[float, float, float] = (0.45, 0.3, 0.85)
    ambient: float = 0.45
    diffuse: float = 0.65
    specular: float = 0.25
    shininess: float = 32.0


@dataclass
class Rendered:
    """Renderer output for ``N`` views: ``images (N, 3, H, W)`` in [-1, 1] on white,
    ``masks (N, 1, H, W)`` in [0, 1], ``depth (N, 1, H, W)`` camera-z (0 = background)."""

    images: Tensor
    masks: Tensor
    depth: Tensor


# ----------------------------------------------------------------------------- intersection
# Ray batches are kept "structure of arrays": points and directions are (3, M) tensors, so that
# x, y and z are contiguous rows (much faster on CPU than (M, 3) with reductions over 3).
def _dot(a: Tensor, b: Tensor) -> Tensor:
    return a[0] * b[0] + a[1] * b[1] + a[2] * b[2]


def _vec(v: Sequence[float]) -> Tensor:
    return torch.tensor(v, dtype=torch.float32)[:, None]


def _roots(A: Tensor, B: Tensor, C: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Real roots ``t0 <= t1`` of ``A t^2 + 2 B t + C = 0`` and whether they exist."""
    disc = B * B - A * C
    s = disc.clamp_min(0).sqrt()
    A = torch.where(A.abs() < 1e-12, torch.full_like(A, 1e-12), A)
    ta, tb = (-B - s) / A, (-B + s) / A
    return torch.minimum(ta, tb), torch.maximum(ta, tb), disc >= 0


def _first(*cands: tuple[Tensor, Tensor]) -> Tensor:
    """Smallest candidate ``t > eps`` among ``(t, valid)`` pairs; inf where none."""
    inf = torch.tensor(float("inf"))
    out = None
    for t, ok in cands:
        t = torch.where(ok & (t > _EPS), t, inf)
        out = t if out is None else torch.minimum(out, t)
    return out


def _cap(o: Tensor, d: Tensor, z: float, r: float) -> tuple[Tensor, Tensor]:
    """Crossing of the plane ``z`` and whether it is inside the disc of radius ``r``."""
    dz = torch.where(d[2].abs() < 1e-12, torch.full_like(d[2], 1e-12), d[2])
    t = (z - o[2]) / dz
    x, y = o[0] + t * d[0], o[1] + t * d[1]
    return t, x * x + y * y <= r * r


def _intersect(p: Primitive, o: Tensor, d: Tensor) -> Tensor:
    """Ray parameter ``(M,)`` of the first hit of local rays ``o, d (3, M)`` (unit d); inf = miss."""
    s = p.size
    if p.kind in ("sphere", "ellipsoid"):
        inv_a = 1.0 / _vec(s * 3 if p.kind == "sphere" else s)
        os, ds = o * inv_a, d * inv_a
        t0, t1, ok = _roots(_dot(ds, ds), _dot(os, ds), _dot(os, os) - 1)
        return _first((t0, ok), (t1, ok))
    if p.kind == "box":
        h = _vec(s)
        inv = 1.0 / torch.where(d.abs() < 1e-12, torch.full_like(d, 1e-12), d)
        ta, tb = (-h - o) * inv, (h - o) * inv
        lo, hi = torch.minimum(ta, tb), torch.maximum(ta, tb)
        tn = torch.maximum(torch.maximum(lo[0], lo[1]), lo[2])
        tf = torch.minimum(torch.minimum(hi[0], hi[1]), hi[2])
        ok = tf >= tn
        return _first((tn, ok), (tf, ok))
    if p.kind == "torus":
        return _torus(o, d, s[0], s[1])
    cands = []
    if p.kind == "capsule":  # two end balls + the side of the cylinder between them
        r0 = r1 = s[0]
        h = s[1]
        b_d = _dot(o, d)
        for zc in (-h, h):
            oc2 = _dot(o, o) - 2 * zc * o[2] + zc * zc
            t0, t1, ok = _roots(torch.ones_like(b_d), b_d - zc * d[2], oc2 - r0 * r0)
            cands += [(t0, ok), (t1, ok)]
    elif p.kind == "cone":
        r0, r1, h = s
    else:
        r0 = r1 = s[0]
        h = s[1]
    # lateral surface: radius k(z) = (r0 + r1) / 2 + b z on z in [-h, h]
    b = (r1 - r0) / (2 * h) if h > 0 else 0.0
    k = (r0 + r1) / 2 + b * o[2]
    A = d[0] * d[0] + d[1] * d[1] - (b * b) * d[2] * d[2]
    B = o[0] * d[0] + o[1] * d[1] - k * b * d[2]
    C = o[0] * o[0] + o[1] * o[1] - k * k
    t0, t1, ok = _roots(A, B, C)
    cands += [(t, ok & ((o[2] + t * d[2]).abs() <= h)) for t in (t0, t1)]
    if p.kind != "capsule":
        cands += [_cap(o, d, -h, r0), _cap(o, d, h, r1)]
    return _first(*cands)


def _torus_sdf(o: Tensor, d: Tensor, t: Tensor, R: float, r: float) -> Tensor:
    """Exact signed distance to the torus at ``o + t d`` (``t`` broadcasts against ``o[0]``)."""
    return torch.hypot(torch.hypot(o[0] + t * d[0], o[1] + t * d[1]) - R, o[2] + t * d[2]) - r


def _torus(o: Tensor, d: Tensor, R: float, r: float) -> Tensor:
    """Torus hits: sphere tracing inside the bounding sphere; the few grazing rays still
    undecided after :data:`_TORUS_STEPS` steps are finished by dense sampling + bisection."""
    out = torch.full_like(o[0], float("inf"))
    b = _dot(o, d)
    disc = b * b - (_dot(o, o) - (R + r) ** 2)
    sq = disc.clamp_min(0).sqrt()
    idx = torch.nonzero((disc > 0) & (-b + sq > 0)).squeeze(1)
    t, tmax = (-b - sq)[idx].clamp_min(0), (-b + sq)[idx]
    o, d = o.index_select(1, idx), d.index_select(1, idx)
    for step in range(_TORUS_STEPS):
        dist = _torus_sdf(o, d, t, R, r)
        t = t + dist  # never crosses the surface: the distance is exact
        if step % 8 == 7:
            hit = (dist < _TORUS_TOL) & (t <= tmax)
            out[idx[hit]] = t[hit]
            keep = torch.nonzero(~hit & (t <= tmax)).squeeze(1)
            idx, t, tmax = idx[keep], t[keep], tmax[keep]
            o, d = o.index_select(1, keep), d.index_select(1, keep)
            if idx.numel() == 0:
                break
    if idx.numel():
        o, d = o[:, :, None], d[:, :, None]
        ts = t[:, None] + (tmax - t)[:, None] * torch.linspace(0, 1, 129)[1:] ** 2  # (m, 128), dense near t
        inside = _torus_sdf(o, d, ts, R, r) < 0
        first = inside.float().argmax(1, keepdim=True)
        hi = ts.gather(1, first)[:, 0]
        lo = torch.where(first[:, 0] > 0, ts.gather(1, (first - 1).clamp_min(0))[:, 0], t)
        for _ in range(16):
            mid = (lo + hi) / 2
            neg = _torus_sdf(o[:, :, 0], d[:, :, 0], mid, R, r) < 0
            lo, hi = torch.where(neg, lo, mid), torch.where(neg, mid, hi)
        hit = inside.any(1)
        out[idx[hit]] = lo[hit]
    return out


def _normal(p: Primitive, q: Tensor) -> Tensor:
    """Outward unit normals ``(3, M)`` at local surface points ``q (3, M)``."""
    s = p.size
    zero = torch.zeros_like(q[0])
    if p.kind == "sphere":
        n = q
    elif p.kind == "ellipsoid":
        n = q / _vec(s) ** 2
    elif p.kind == "box":
        rel = q.abs() / _vec(s)
        n = torch.nn.functional.one_hot(rel.argmax(0), 3).T.to(q) * q.sign()
    elif p.kind == "torus":
        scale = s[0] / torch.hypot(q[0], q[1]).clamp_min(1e-9)
        n = torch.stack([q[0] - q[0] * scale, q[1] - q[1] * scale, q[2]])
    elif p.kind == "capsule":
        n = torch.stack([q[0], q[1], q[2] - q[2].clamp(-s[1], s[1])])
    else:  # cylinder / cone: side or cap, whichever constraint is active
        r0, r1, h = (s[0], s[0], s[1]) if p.kind == "cylinder" else s
        b = (r1 - r0) / (2 * h)
        rho = torch.hypot(q[0], q[1])
        side_val = (rho - ((r0 + r1) / 2 + b * q[2])) / math.sqrt(1 + b * b)
        inv = 1.0 / rho.clamp_min(1e-9)
        side = torch.stack([q[0] * inv, q[1] * inv, torch.full_like(rho, -b)])
        cap = torch.stack([zero, zero, q[2].sign()])
        n = torch.where(side_val > q[2].abs() - h, side, cap)
    return n / _dot(n, n).sqrt().clamp_min(1e-12)


def _albedo(p: Primitive, q: Tensor) -> Tensor:
    """Procedural colour ``(3, M)`` at local points ``q (3, M)``."""
    f = p.pattern_freq
    axis = p.pattern_axis
    if p.pattern == "stripes":
        second = torch.frac(f * _dot(q, axis) + 1000.0) < 0.5
    elif p.pattern == "checks":
        second = (torch.floor(f * q[0]) + torch.floor(f * q[1]) + torch.floor(f * q[2])).remainder(2) > 0.5
    elif p.pattern == "segments":
        ang = torch.atan2(q[1], q[0]) / (2 * math.pi) + 0.5
        second = torch.floor(ang * round(f)).remainder(2) > 0.5
    elif p.pattern == "dots":
        g = f * q
        g = g - g.round()
        second = _dot(g, g) < 0.09
    elif p.pattern == "two_tone":
        second = _dot(q, axis) > 0
    else:
        second = torch.zeros_like(q[0], dtype=torch.bool)
    c = torch.where(second, _vec(p.color2), _vec(p.color))
    if p.mark_cos <= 1.0:
        cosang = _dot(q, p.mark_dir) / _dot(q, q).sqrt().clamp_min(1e-9)
        c = torch.where(cosang > p.mark_cos, _vec(p.mark_color), c)
    return c


def _cast(parts: Sequence[Primitive], o: Tensor, d: Tensor, any_hit: bool = False) -> tuple[Tensor, Tensor]:
    """Nearest hit ``(t (M,), part index (M,))`` of world rays ``o, d (3, M)`` (inf / -1 = miss)."""
    t_best = torch.full_like(d[0], float("inf"))
    part = torch.full_like(d[0], -1, dtype=torch.long)
    for i, p in enumerate(parts):
        oc = o - _vec(p.center)
        b = _dot(oc, d)
        disc = b * b - (_dot(oc, oc) - p.bounding_radius() ** 2)
        cand = (disc > 0) & (-b + disc.clamp_min(0).sqrt() > 0)
        if any_hit:
            cand &= part < 0
        idx = torch.nonzero(cand).squeeze(1)
        if idx.numel() == 0:
            continue
        Rt = p.R.T
        t = _intersect(p, Rt @ oc.index_select(1, idx), Rt @ d.index_select(1, idx))
        cur = t_best[idx]
        better = t < cur
        t_best[idx] = torch.where(better, t, cur)
        part[idx] = torch.where(better, i, part[idx])
    return t_best, part


def _pixel_dirs(cams: Cameras, ss: int) -> tuple[Tensor, Tensor]:
    """Unit world directions ``(3, N*Hs*Ws)`` (Hs = H*ss) and the depth factor ``(N*Hs*Ws,)``.

    The depth factor is ``1 / |K^-1 [u, v, 1]|``: camera-z per unit of ray length.
    """
    h, w = cams.height * ss, cams.width * ss
    v, u = torch.meshgrid((torch.arange(h, dtype=torch.float32) + 0.5) / ss,
                          (torch.arange(w, dtype=torch.float32) + 0.5) / ss, indexing="ij")
    pix = torch.stack([u.reshape(-1), v.reshape(-1), torch.ones(h * w)])  # (3, P)
    d_cam = torch.linalg.inv(cams.K.float()) @ pix  # (N, 3, P)
    inv_norm = d_cam.square().sum(1, keepdim=True).rsqrt()
    d_world = cams.R.float() @ (d_cam * inv_norm)  # (N, 3, P)
    return d_world.permute(1, 0, 2).reshape(3, -1), (d_cam[:, 2:] * inv_norm).reshape(-1)


def _render_chunk(parts: Sequence[Primitive], cams: Cameras, ss: int, shadows: bool,
                  light: Lighting) -> tuple[Tensor, Tensor, Tensor]:
    """Colour ``(N, 3, Hs, Ws)`` in [0, 1] on white, alpha and depth ``(N, Hs, Ws)``."""
    n = len(cams)
    d, zfac = _pixel_dirs(cams, ss)
    hs, ws = cams.height * ss, cams.width * ss
    o = cams.centers.float().T[:, :, None].expand(3, n, hs * ws).reshape(3, -1)
    t, part = _cast(parts, o, d)
    hit_idx = torch.nonzero(part >= 0).squeeze(1)
    th, dh, ph = t[hit_idx], d.index_select(1, hit_idx), part[hit_idx]
    x = o.index_select(1, hit_idx) + th * dh
    normal, albedo = torch.empty_like(x), torch.empty_like(x)
    for i, p in enumerate(parts):
        sel = torch.nonzero(ph == i).squeeze(1)
        if sel.numel():
            R = p.R
            q = R.T @ (x.index_select(1, sel) - _vec(p.center))
            normal[:, sel] = R @ _normal(p, q)
            albedo[:, sel] = _albedo(p, q)
    L = torch.tensor(light.direction)
    L = L / L.norm()
    lam = _dot(normal, L).clamp_min(0)
    half = L[:, None] - dh
    spec = (_dot(normal, half) / _dot(half, half).sqrt()).clamp_min(0) ** light.shininess * (lam > 0)
    lit = torch.ones_like(lam)
    if shadows:
        sidx = torch.nonzero(lam > 0).squeeze(1)
        origin = x.index_select(1, sidx) + _SHADOW_OFFSET * normal.index_select(1, sidx)
        _, blocker = _cast(parts, origin, L[:, None].expand(3, len(sidx)), any_hit=True)
        lit[sidx] = (blocker < 0).float()
    amb = light.ambient * (0.75 + 0.25 * normal[2])
    shade = albedo * (amb + light.diffuse * lam * lit) + light.specular * spec * lit
    rgb = torch.ones(3, n * hs * ws)
    rgb[:, hit_idx] = shade.clamp(0, 1)
    alpha = torch.zeros_like(t)
    alpha[hit_idx] = 1.0
    depth = torch.zeros_like(t)
    depth[hit_idx] = th * zfac[hit_idx]
    return (rgb.reshape(3, n, hs, ws).permute(1, 0, 2, 3), alpha.reshape(n, hs, ws),
            depth.reshape(n, hs, ws))


def render(parts: Sequence[Primitive], cameras: Cameras, *, shadows: bool = True, supersample: int = 1,
           lighting: Lighting | None = None, max_rays: int = 1 << 19) -> Rendered:
    """Render the union of ``parts`` from every camera of ``cameras`` (shape ``(N,)``).

    Args:
        parts: primitives in world coordinates (an object with a ``parts`` attribute works too).
        cameras: ``(N,)`` cameras (any size, any intrinsics; OpenCV axes).
        shadows: cast hard shadows from the light (one extra ray per lit pixel).
        supersample: ``s``: render ``s x s`` rays per pixel and average (anti-aliasing).
            Depth is the mean over the samples that hit, so ``mask > 0`` iff ``depth > 0``.
        lighting: :class:`Lighting` (default: light from above-front-right, world fixed).
        max_rays: views are processed in chunks of at most this many rays (memory bound;
            results do not depend on it).

    Returns:
        :class:`Rendered` with images ``(N, 3, H, W)`` in [-1, 1], masks and depth ``(N, 1, H, W)``.
    """
    parts = list(getattr(parts, "parts", parts))
    if not parts:
        raise ValueError("render needs at least one primitive")
    cameras = cameras.to("cpu") if cameras.c2w.ndim == 3 else cameras.to("cpu").reshape(-1)
    ss = int(supersample)
    if ss < 1:
        raise ValueError(f"supersample must be >= 1, got {supersample}")
    light = lighting or Lighting()
    n, h, w = len(cameras), cameras.height, cameras.width
    per_view = h * w * ss * ss
    chunk = max(1, max_rays // per_view)
    rgbs, alphas, depths = [], [], []
    with torch.no_grad():
        for start in range(0, n, chunk):
            rgb, alpha, depth = _render_chunk(parts, cameras[start:start + chunk], ss, shadows, light)
            if ss > 1:
                m = rgb.shape[0]
                rgb = rgb.reshape(m, 3, h, ss, w, ss).mean((3, 5))
                hits = alpha.reshape(m, h, ss, w, ss).sum((2, 4))
                depth = depth.reshape(m, h, ss, w, ss).sum((2, 4)) / hits.clamp_min(1)
                alpha = hits / (ss * ss)
            rgbs.append(rgb)
            alphas.append(alpha)
            depths.append(depth)
    images = torch.cat(rgbs) * 2 - 1
    return Rendered(images.contiguous(), torch.cat(alphas)[:, None], torch.cat(depths)[:, None])
