"""Camera convention: round trips of every conversion, geometry, trajectories, Zero-1-to-3 fixture."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from vantage.cameras import (
    Cameras,
    alternating_order,
    cartesian_to_spherical,
    hemisphere_cameras,
    intrinsics_from_fov,
    look_at,
    orbit_cameras,
    ring_cameras,
    spherical_to_cartesian,
    zero123_relative_pose,
)

SHARED = Path(__file__).resolve().parents[2] / "shared"
ZERO123 = SHARED / "fixtures" / "reference" / "zero123_pose.json"

angles = st.floats(min_value=-math.pi, max_value=math.pi, allow_nan=False)
coords = st.floats(min_value=-5.0, max_value=5.0, allow_nan=False)


def random_cameras(seed: int, n: int = 5, width: int = 32, height: int = 24) -> Cameras:
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(n, 4, generator=g, dtype=torch.float64)
    q = q / q.norm(dim=-1, keepdim=True)
    w, x, y, z = q.unbind(-1)
    R = torch.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w),
        2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w),
        2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)], -1).reshape(n, 3, 3)
    c2w = torch.eye(4, dtype=torch.float64).repeat(n, 1, 1)
    c2w[:, :3, :3] = R
    c2w[:, :3, 3] = torch.randn(n, 3, generator=g, dtype=torch.float64) * 3
    K = torch.zeros(n, 3, 3, dtype=torch.float64)
    K[:, 0, 0] = 20 + 30 * torch.rand(n, generator=g, dtype=torch.float64)
    K[:, 1, 1] = K[:, 0, 0] * (0.9 + 0.2 * torch.rand(n, generator=g, dtype=torch.float64))
    K[:, 0, 2] = width / 2 + torch.randn(n, generator=g, dtype=torch.float64)
    K[:, 1, 2] = height / 2 + torch.randn(n, generator=g, dtype=torch.float64)
    K[:, 2, 2] = 1
    return Cameras(c2w, K, width, height)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**31 - 1))
def test_every_conversion_round_trips(seed):
    cams = random_cameras(seed)
    w, h = cams.width, cams.height
    assert Cameras.from_opengl(cams.to_opengl(), cams.K, w, h).allclose(cams)
    assert Cameras.from_blender(cams.to_blender(), cams.K, w, h).allclose(cams)
    assert Cameras.from_nerfstudio(cams.to_nerfstudio(), cams.K, w, h).allclose(cams)
    assert Cameras.from_colmap(*cams.to_colmap(), cams.K, w, h).allclose(cams)
    assert Cameras.from_srn(cams.to_srn(), cams.K, w, h).allclose(cams)
    assert Cameras.from_w2c(cams.w2c, cams.K, w, h).allclose(cams)
    assert Cameras.from_nmr(*cams.to_nmr(), w, h).allclose(cams)
    assert Cameras.from_realestate10k(*cams.to_realestate10k(), w, h).allclose(cams)
    assert Cameras.from_zero123(cams.to_zero123(), cams.K, w, h).allclose(cams)


def test_opengl_axes_are_flipped_y_and_z():
    cams = orbit_cameras(3)
    gl = cams.to_opengl()
    assert torch.allclose(gl[:, :3, 0], cams.R[:, :, 0])
    assert torch.allclose(gl[:, :3, 1], -cams.R[:, :, 1])
    assert torch.allclose(gl[:, :3, 2], -cams.R[:, :, 2])
    assert torch.allclose(gl[:, :3, 3], cams.centers)


def test_look_at_points_at_target_with_image_down_towards_world_down():
    eye = torch.tensor([[0.0, -2.0, 1.0], [3.0, 0.5, -0.5]])
    c2w = look_at(eye)
    fwd = c2w[:, :3, 2]
    assert torch.allclose(fwd, -eye / eye.norm(dim=-1, keepdim=True), atol=1e-6)
    # image y (down) has a negative world-z component: "up" is up in the picture
    assert (c2w[:, 2, 1] < 0).all()
    # proper rotation
    assert torch.allclose(torch.linalg.det(c2w[:, :3, :3]), torch.ones(2), atol=1e-6)
    # camera on the pole still gets a valid frame
    polar = look_at(torch.tensor([0.0, 0.0, 2.0]))
    assert torch.allclose(torch.linalg.det(polar[:3, :3]), torch.tensor(1.0), atol=1e-6)


def test_target_projects_to_the_principal_point():
    cams = orbit_cameras(8, elevation_deg=20, resolution=32)
    uv, z = cams.project(torch.zeros(8, 1, 3))
    assert torch.allclose(uv, torch.full_like(uv, 16.0), atol=1e-4)
    assert torch.allclose(z, torch.full_like(z, 2.5), atol=1e-5)


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**31 - 1))
def test_rays_unproject_and_project_agree(seed):
    cams = random_cameras(seed, n=2, width=6, height=5)
    o, d = cams.rays()
    assert o.shape == d.shape == (2, 5, 6, 3)
    assert torch.allclose(d.norm(dim=-1), torch.ones(2, 5, 6, dtype=d.dtype))
    depth = 1.0 + torch.rand(2, 5, 6, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    pts = cams.unproject(depth)
    uv, z = cams.project(pts.reshape(2, -1, 3))
    assert torch.allclose(z, depth.reshape(2, -1), atol=1e-8)
    assert torch.allclose(uv, cams.pixel_grid().reshape(1, -1, 2).expand(2, -1, -1), atol=1e-6)
    # every unprojected point lies on its pixel's ray
    v = pts - o
    assert torch.allclose(torch.linalg.cross(v, d, dim=-1), torch.zeros_like(v), atol=1e-8)


def test_plucker_map_shape_and_moment():
    cams = orbit_cameras(2, resolution=8)
    p = cams.plucker()
    assert p.shape == (2, 6, 8, 8)
    d, m = p[:, :3], p[:, 3:]
    # moment is orthogonal to direction, and identical for any point on the line
    assert torch.allclose((d * m).sum(1), torch.zeros(2, 8, 8), atol=1e-6)
    o, dirs = cams.rays()
    shifted = torch.linalg.cross(o + 0.7 * dirs, dirs, dim=-1).movedim(-1, 1)
    assert torch.allclose(shifted, m, atol=1e-5)


def test_relative_pose():
    cams = random_cameras(3, n=4)
    ref = random_cameras(4, n=4)
    rel = cams.relative_to(ref)
    assert torch.allclose(ref.c2w @ rel, cams.c2w, atol=1e-8)
    eye = torch.eye(4, dtype=torch.float64).expand(4, 4, 4)
    assert torch.allclose(cams.relative_to(cams), eye, atol=1e-9)


@settings(max_examples=50, deadline=None)
@given(st.floats(0.05, math.pi - 0.05), angles, st.floats(0.1, 10.0))
def test_spherical_round_trip(polar, azimuth, radius):
    xyz = spherical_to_cartesian(torch.tensor(polar), torch.tensor(azimuth), torch.tensor(radius))
    back = cartesian_to_spherical(xyz.double())
    assert back[0].item() == pytest.approx(polar, abs=1e-5)
    assert back[2].item() == pytest.approx(radius, rel=1e-5)
    d = (back[1].item() - azimuth + math.pi) % (2 * math.pi) - math.pi
    assert abs(d) < 1e-4


def test_spherical_convention_polar_from_z_azimuth_atan2_y_x():
    s = cartesian_to_spherical(torch.tensor([[0.0, 2.0, 0.0], [0.0, 0.0, 3.0], [-1.0, 0.0, 0.0]]))
    assert torch.allclose(s[0], torch.tensor([math.pi / 2, math.pi / 2, 2.0]))
    assert torch.allclose(s[1], torch.tensor([0.0, 0.0, 3.0]))
    assert torch.allclose(s[2], torch.tensor([math.pi / 2, math.pi, 1.0]))


def test_resize_and_crop_keep_rays():
    cams = orbit_cameras(2, resolution=16)
    o, d = cams.rays()
    big = cams.resize(32)
    _, d2 = big.rays()
    # pixel (i, j) of the 16px image covers pixels 2i..2i+1 of the 32px one: mean direction matches
    avg = d2.reshape(2, 16, 2, 16, 2, 3).mean(dim=(2, 4))
    avg = avg / avg.norm(dim=-1, keepdim=True)
    assert torch.allclose(avg, d, atol=1e-3)
    crop = cams.crop(4, 2, 8, 10)
    _, d3 = crop.rays()
    assert crop.width == 8 and crop.height == 10
    assert torch.allclose(d3, d[:, 2:12, 4:12], atol=1e-6)
    with pytest.raises(ValueError, match="exceeds"):
        cams.crop(10, 0, 8, 8)


def test_intrinsics_from_fov():
    K = intrinsics_from_fov(90.0, 64)
    assert K[0, 0].item() == pytest.approx(32.0)
    assert K[0, 2].item() == pytest.approx(32.0)
    with pytest.raises(ValueError, match="fov_deg"):
        intrinsics_from_fov(0.0, 64)


def test_bad_matrices_get_clear_errors():
    with pytest.raises(ValueError, match=r"Cameras.c2w must have shape \(\.\.\., 4, 4\)"):
        Cameras(torch.eye(3), torch.eye(3), 8, 8)
    with pytest.raises(ValueError, match="not invertible"):
        Cameras.from_w2c(torch.zeros(4, 4), torch.eye(3), 8, 8)
    with pytest.raises(ValueError, match="NaN"):
        Cameras(torch.full((4, 4), float("nan")), torch.eye(3), 8, 8)
    with pytest.raises(ValueError, match="different image sizes"):
        Cameras.cat([orbit_cameras(1, resolution=8), orbit_cameras(1, resolution=16)])


def test_trajectories():
    ring = ring_cameras()
    assert ring.shape == (24,)
    az = ring.spherical()[:, 1]
    steps = torch.remainder(az.roll(-1) - az, 2 * math.pi)
    assert torch.allclose(steps, torch.full_like(steps, 2 * math.pi / 24), atol=1e-5)
    elev = 90 - torch.rad2deg(ring.spherical()[:, 0])
    assert torch.allclose(elev, torch.full_like(elev, 30.0), atol=1e-4)
    arc = orbit_cameras(5, arc_deg=90, start_azimuth_deg=10)
    deg = torch.rad2deg(arc.spherical()[:, 1])
    assert torch.allclose(deg, torch.tensor([10.0, 32.5, 55.0, 77.5, 100.0]), atol=1e-3)
    g = torch.Generator().manual_seed(0)
    hemi = hemisphere_cameras(200, generator=g)
    el = 90 - torch.rad2deg(hemi.spherical()[:, 0])
    assert (el >= 5 - 1e-3).all() and (el <= 85 + 1e-3).all()
    assert torch.allclose((hemi.forward * -hemi.centers / 2.5).sum(-1), torch.ones(200), atol=1e-5)
    again = hemisphere_cameras(200, generator=torch.Generator().manual_seed(0))
    assert torch.equal(hemi.c2w, again.c2w)


def test_alternating_order():
    order = alternating_order(10.0)
    assert order[:4] == [10.0, -10.0, 20.0, -20.0]
    assert order[-1] == 180.0 and len(order) == 35
    assert sorted(round(a % 360) for a in order) == list(range(10, 360, 10))
    with pytest.raises(ValueError):
        alternating_order(7.0)


def test_zero123_relative_pose_matches_reference():
    if not ZERO123.exists():
        pytest.skip(f"reference fixtures not found at {ZERO123} (../shared is absent in user checkouts)")
    data = json.loads(ZERO123.read_text())
    K = intrinsics_from_fov(49.1, 256).double()
    for pair in data["pairs"]:
        rt_c, rt_t = (torch.tensor(pair[k]["RT_world2cam_3x4"], dtype=torch.float64)
                      for k in ("cond", "target"))
        cond = Cameras.from_zero123(rt_c, K, 256, 256)
        tgt = Cameras.from_zero123(rt_t, K, 256, 256)
        T = zero123_relative_pose(cond, tgt)
        assert torch.allclose(T, torch.tensor(pair["T"], dtype=torch.float64), atol=1e-6), pair["index"]
        # Blender cameras converted to OpenCV look at the origin
        cos = torch.dot(cond.forward, -cond.centers / cond.centers.norm()).item()
        assert cos == pytest.approx(1.0, abs=1e-6)
        sph = torch.tensor(pair["cond"]["spherical_theta_azimuth_radius"], dtype=torch.float64)
        ours = cond.spherical()
        assert ours[0].item() == pytest.approx(sph[0].item(), abs=1e-6)
        assert ours[2].item() == pytest.approx(sph[2].item(), abs=1e-6)
