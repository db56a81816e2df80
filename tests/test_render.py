"""The CPU ray caster: geometry against closed forms, depth/projection consistency, outputs."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from vantage.cameras import Cameras, look_at, ring_cameras
from vantage.data.render import KINDS, Primitive, _normal, render
from vantage.data.synthetic import SyntheticDataset, make_object

# one example per kind, rotated and moved off the origin so that the local frame matters
SIZES = {"sphere": (0.5,), "ellipsoid": (0.6, 0.3, 0.4), "box": (0.5, 0.3, 0.4), "cylinder": (0.35, 0.5),
         "cone": (0.5, 0.15, 0.45), "torus": (0.5, 0.15), "capsule": (0.25, 0.4)}
ROT = look_at(torch.tensor([0.3, -0.5, 0.8]))[:3, :3]  # some proper rotation
CENTER = (0.08, -0.05, 0.1)


def _prim(kind: str, **kw) -> Primitive:
    return Primitive(kind, SIZES[kind], center=CENTER, rotation=tuple(ROT.flatten().tolist()), **kw)


def _implicit(kind: str, q: torch.Tensor) -> torch.Tensor:
    """Signed distance (or a function with the same zero set and unit-order slope) at local q (P, 3)."""
    s = SIZES[kind]
    rho = q[:, :2].norm(dim=1)
    if kind == "sphere":
        return q.norm(dim=1) - s[0]
    if kind == "ellipsoid":
        return ((q / torch.tensor(s)).norm(dim=1) - 1) * min(s)
    if kind == "box":
        e = q.abs() - torch.tensor(s)
        return e.clamp_min(0).norm(dim=1) + e.amax(1).clamp_max(0)
    if kind == "cylinder":
        return torch.maximum(rho - s[0], q[:, 2].abs() - s[1])
    if kind == "cone":
        r0, r1, h = s
        rad = (r0 + r1) / 2 + (r1 - r0) / (2 * h) * q[:, 2]
        return torch.maximum((rho - rad) * math.cos(math.atan((r0 - r1) / (2 * h))), q[:, 2].abs() - h)
    if kind == "torus":
        return torch.hypot(rho - s[0], q[:, 2]) - s[1]
    return (q - torch.stack([0 * q[:, 0], 0 * q[:, 0], q[:, 2].clamp(-s[1], s[1])], 1)).norm(dim=1) - s[0]


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_hits_its_surface(kind):
    """Unprojected depth lies on the primitive's surface; normals match the implicit gradient."""
    cams = ring_cameras(6, elevation_deg=35.0, resolution=48)
    out = render([_prim(kind)], cams)
    assert out.masks.sum() > 200, "primitive barely visible"
    fg = out.depth[:, 0] > 0
    pts = cams.unproject(out.depth[:, 0])[fg].double()
    q = (pts - torch.tensor(CENTER, dtype=torch.float64)) @ ROT.double()
    err = _implicit(kind, q).abs()
    assert err.max() < 2e-3, f"{kind}: depth off the surface by {err.max():.2e}"
    # normals: compare with the numerical gradient of the implicit function
    q = q.float()
    h = 1e-3
    grad = torch.stack([(_implicit(kind, q + h * e) - _implicit(kind, q - h * e)) / (2 * h)
                        for e in torch.eye(3)], 1)
    grad = grad / grad.norm(dim=1, keepdim=True)
    n = _normal(_prim(kind), q.T.contiguous()).T
    cos = (n * grad).sum(1)
    assert (cos > 0.99).float().mean() > 0.97, f"{kind}: normals disagree with the surface gradient"


def test_sphere_matches_closed_form_per_pixel():
    """Mask and depth of a sphere equal the analytic ray-sphere solution on pixel-centre rays."""
    c, r = torch.tensor([0.1, 0.05, -0.05], dtype=torch.float64), 0.6
    cams = Cameras.from_look_at(torch.tensor([[0.4, -2.6, 0.9], [-2.0, 1.0, 1.5]]), fov_deg=45.0, width=40,
                                height=32)
    out = render([Primitive("sphere", (r,), center=tuple(c.tolist()))], cams)
    o, d = (t.double() for t in cams.rays())
    oc = o - c
    b = (oc * d).sum(-1)
    disc = b * b - ((oc * oc).sum(-1) - r * r)
    hit = disc > 0
    t = -b - disc.clamp_min(0).sqrt()
    z = t * (d * cams.forward.double()[:, None, None, :]).sum(-1)
    safe = disc.abs().sqrt() > 2e-3  # away from the silhouette
    assert torch.equal(out.masks[:, 0].bool()[safe], hit[safe])
    torch.testing.assert_close(out.depth[:, 0].double()[safe & hit], z[safe & hit], atol=1e-4, rtol=0)
    assert (out.depth[:, 0][~hit & safe] == 0).all()


def test_projection_into_another_view_agrees_with_its_depth():
    """Unproject view A's foreground with its depth, project into B: where B sees the point,
    B's depth there equals the projected camera-z."""
    ds = SyntheticDataset("test", 6, views=24, resolution=64, layout="ring")
    rels, checked, visible = [], 0, 0
    for i in range(len(ds)):
        o = ds.load(i, views=[0, 3])
        A, B = o.cameras[0], o.cameras[1]
        dA, dB = o.depth[0, 0], o.depth[1, 0]
        uv, z = B.project(A.unproject(dA)[dA > 0])
        grid = (uv / torch.tensor([B.width, B.height]) * 2 - 1)[None, None]
        db = F.grid_sample(dB[None, None], grid, align_corners=False)[0, 0, 0]
        full = F.grid_sample(o.masks[1][None], grid, align_corners=False)[0, 0, 0] > 0.999
        rel = (db - z).abs() / z
        vis = full & (rel < 0.03)
        checked += int(full.sum())
        visible += int(vis.sum())
        rels.append(rel[vis])
    rel = torch.cat(rels)
    assert checked > 1000 and visible / checked > 0.7, f"only {visible}/{checked} points agree within 3%"
    assert rel.median() < 1.5e-3, f"median relative depth error {rel.median():.2e}"


def test_outputs_mask_depth_background_consistent():
    obj = make_object(123)
    out = render(obj, ring_cameras(8, resolution=32))
    assert out.images.shape == (8, 3, 32, 32) and out.masks.shape == out.depth.shape == (8, 1, 32, 32)
    assert out.images.min() >= -1 and out.images.max() <= 1
    fg = out.masks[:, 0] > 0.5
    assert torch.equal(fg, out.depth[:, 0] > 0)
    assert ((out.masks == 0) | (out.masks == 1)).all()
    rgb01 = (out.images + 1) / 2
    assert (rgb01.permute(0, 2, 3, 1)[~fg] == 1).all(), "background must be exactly white"
    assert (rgb01.amin(1)[fg] < 0.97).all(), "object pixels must not be white"
    assert (out.depth[:, 0][fg] > 2.5 - 1).all() and (out.depth[:, 0][fg] < 2.5 + 1).all()


def test_deterministic_and_independent_of_chunking():
    obj = make_object(7)
    cams = ring_cameras(6, resolution=24)
    a = render(obj, cams)
    b = render(obj, cams, max_rays=24 * 24 * 2)  # 2 views per chunk
    c = render(obj.parts, cams[2:3])
    for x, y in ((a.images, b.images), (a.masks, b.masks), (a.depth, b.depth)):
        assert torch.equal(x, y)
    torch.testing.assert_close(c.images[0], a.images[2], atol=1e-6, rtol=0)


def test_any_resolution_and_non_square():
    obj = make_object(11)
    fractions = []
    for res in (16, 17, 64, 256):
        out = render(obj, ring_cameras(2, resolution=res))
        assert out.images.shape == (2, 3, res, res)
        fractions.append(out.masks.mean().item())
    assert max(fractions) - min(fractions) < 0.03, f"coverage changes with resolution: {fractions}"
    cams = Cameras.from_look_at(torch.tensor([[2.5, 0.0, 1.0]]), fov_deg=40.0, width=40, height=24)
    out = render(obj, cams)
    assert out.images.shape == (1, 3, 24, 40) and out.depth.shape == (1, 1, 24, 40)


def test_supersampling_softens_edges():
    obj = make_object(3)
    cams = ring_cameras(3, resolution=32)
    a, b = render(obj, cams), render(obj, cams, supersample=2)
    soft = (b.masks > 0) & (b.masks < 1)
    assert soft.any(), "supersampled mask has no partial pixels"
    assert torch.equal(b.masks > 0, b.depth > 0)
    assert (a.masks - b.masks).abs().mean() < 0.05
    with pytest.raises(ValueError, match="supersample"):
        render(obj, cams, supersample=0)


def test_shadows_darken_only_occluded_points():
    # a slab floating above a ball: the light (from above) casts its shadow on the ball
    parts = [Primitive("sphere", (0.4,), color=(0.8, 0.8, 0.8)),
             Primitive("box", (0.6, 0.6, 0.05), center=(0.0, 0.0, 0.7), color=(0.8, 0.2, 0.2))]
    cams = Cameras.from_look_at(torch.tensor([[0.0, -2.5, -0.3]]), fov_deg=50.0, width=48)
    lit, shadowed = render(parts, cams, shadows=False), render(parts, cams, shadows=True)
    assert torch.equal(lit.masks, shadowed.masks) and torch.equal(lit.depth, shadowed.depth)
    diff = lit.images - shadowed.images
    assert diff.min() >= -1e-6, "a shadow never brightens"
    assert (diff.amax(1) > 0.1).sum() > 30, "expected a visible shadow on the ball"


def test_shading_varies_over_a_sphere():
    out = render([Primitive("sphere", (0.6,), color=(0.6, 0.6, 0.6))], ring_cameras(1, resolution=48))
    fg = out.masks[0, 0] > 0
    lum = out.images[0].mean(0)[fg]
    assert lum.max() - lum.min() > 0.5, "shading should reveal the curvature"


def test_primitive_validation():
    with pytest.raises(ValueError, match="unknown primitive kind"):
        Primitive("pyramid", (1.0,))
    with pytest.raises(ValueError, match="needs 2"):
        Primitive("torus", (1.0,))
    with pytest.raises(ValueError, match="pattern"):
        Primitive("sphere", (1.0,), pattern="plaid")
    p = _prim("cone", pattern="stripes")
    assert Primitive.from_dict(p.to_dict()) == p


def test_torus_has_no_missed_grazing_rays():
    """Sphere tracing slows down near grazing rays; none of them may come out as a false miss
    (a white sliver inside the silhouette). Reference: dense sampling along each ray in float64."""
    R, r = 0.55, 0.2
    cams = ring_cameras(4, elevation_deg=12.0, resolution=96)
    out = render([Primitive("torus", (R, r))], cams, shadows=False)
    o, d = (x.reshape(-1, 3).double() for x in cams.rays())
    b = (o * d).sum(1)
    sq = (b * b - ((o * o).sum(1) - (R + r) ** 2)).clamp_min(0).sqrt()
    ref = torch.zeros(len(b), dtype=torch.bool)
    for idx in torch.nonzero(sq > 0).squeeze(1).split(4096):
        ts = (-b - sq)[idx, None] + (2 * sq)[idx, None] * torch.linspace(0, 1, 1025, dtype=torch.float64)
        p = o[idx, None] + ts[..., None] * d[idx, None]
        ref[idx] = ((torch.hypot(p[..., :2].norm(dim=-1) - R, p[..., 2]) - r) < 0).any(1)
    mask = out.masks.reshape(-1) > 0
    assert (ref & ~mask).sum() <= 2, f"{int((ref & ~mask).sum())} rays miss the torus"
    assert (mask & ~ref).sum() <= 0.002 * len(ref), "too many hits outside the torus"
