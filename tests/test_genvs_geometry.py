"""GeNVS's geometry: a known point in its frustum cell, analytic volume rendering, chunked rendering, importance
sampling, per-camera near/far (scene_radius) and masked mean-pooling over input views."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from helpers import genvs_batch as batch
from helpers import randomize, view_set
from helpers import tiny_genvs as tiny

from vantage.cameras import Cameras, orbit_cameras
from vantage.methods.genvs import GeNVSConfig
from vantage.nn.frustum import FrustumVolumes, depth_planes, sample_volumes, scene_near_far
from vantage.nn.volume_render import render_image, render_rays, sample_pdf

pytestmark = pytest.mark.usefixtures("single_thread")


# ---------------------------------------------------------------------------------------- geometry
@pytest.mark.parametrize("spacing", ["linear", "disparity"])
def test_a_known_point_lands_in_its_frustum_cell(spacing):
    cams = orbit_cameras(2, resolution=16)  # 16x16 images, volume on an 8x8 grid (2x2 pixels per cell)
    D, h = 6, 8
    vol = torch.zeros(2, 1, D, h, h)
    k, i, j = 4, 2, 5
    vol[0, 0, k, i, j] = 1.0
    vols = FrustumVolumes.from_cameras(vol, cams, torch.tensor([0, 1]), 2, 1.5, 3.5, spacing)
    z = depth_planes(1.5, 3.5, D, spacing)
    assert torch.all(z[1:] > z[:-1]) and 1.5 < z[0] and z[-1] < 3.5

    def world(row: int, u: float, v: float, depth: float) -> torch.Tensor:  # pixel (u, v) at camera-z depth
        p_cam = torch.linalg.inv(cams.K[row]) @ torch.tensor([u, v, 1.0]) * depth
        return cams.R[row] @ p_cam + cams.centers[row]

    u, v = (j + 0.5) * 16 / h, (i + 0.5) * 16 / h  # centre of cell (i, j) in image pixels
    pts = torch.stack([world(0, u, v, float(z[k])),  # the cell's centre
                       world(0, u + 2.0, v, float(z[k])),  # one cell to the right
                       world(0, u, v, float(z[k - 1])),  # one plane nearer
                       cams.centers[0] - 1.0 * cams.forward[0]])  # behind the camera
    uv, depth = cams[0].project(pts[:1])
    assert torch.allclose(uv[0], torch.tensor([u, v]), atol=1e-4) and abs(float(depth[0]) - float(z[k])) < 1e-4
    feats, inside = sample_volumes(vols, torch.stack([pts, pts]))
    assert feats.shape == (2, 4, 1) and inside.shape == (2, 4)
    assert torch.allclose(feats[0, :, 0], torch.tensor([1.0, 0.0, 0.0, 0.0]), atol=1e-5)
    assert inside[0].tolist() == [True, True, True, False]
    assert feats[1].abs().max() < 1e-6  # the other view's volume is empty


def test_constant_density_renders_the_analytic_opacity():
    cams = orbit_cameras(3, resolution=12)
    sigma0, near, far = 0.7, 1.5, 3.5
    feat, bg = torch.tensor([0.2, -0.4, 0.9, 2.0]), torch.tensor([1.0, 1.0, 1.0, 0.0])

    def field(pts):
        return torch.full(pts.shape[:2], sigma0), feat.expand(*pts.shape[:2], 4)

    g = torch.Generator().manual_seed(0)
    out = render_image(field, cams, near=near, far=far, n_coarse=7, n_fine=5, background=bg, chunk=50, generator=g)
    d_cam = torch.einsum("bij,hwj->bhwi", torch.linalg.inv(cams.K),
                         torch.cat([cams.pixel_grid(), torch.ones(12, 12, 1)], -1))
    expected = 1 - torch.exp(-sigma0 * (far - near) * d_cam.norm(dim=-1))  # ∫ over [near, far] in camera z
    assert out["opacity"].shape == (3, 1, 12, 12)
    assert torch.allclose(out["opacity"][:, 0], expected, atol=1e-5)
    a = out["opacity"]
    assert torch.allclose(out["features"], feat[None, :, None, None] * a + bg[None, :, None, None] * (1 - a), atol=1e-5)
    assert ((out["depth"] > near) & (out["depth"] < far)).all()
    # through the model's field: a decoder with a constant density, target camera = input camera
    m = tiny()
    last = m.field.mlp[-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.zero_()
        last.bias[0] = math.log(math.expm1(sigma0))  # softplus⁻¹(σ0)
    cams = orbit_cameras(2, resolution=16)
    views = view_set(torch.zeros(2, 1, 3, 16, 16), cams.reshape(2, 1), torch.ones(2, 1, dtype=torch.bool))
    r = m.render(views, cams)
    px = cams.resize(8, 8)
    d_cam = torch.einsum("bij,hwj->bhwi", torch.linalg.inv(px.K), torch.cat([px.pixel_grid(), torch.ones(8, 8, 1)], -1))
    expected = 1 - torch.exp(-sigma0 * (m.config.far - m.config.near) * d_cam.norm(dim=-1))
    assert torch.allclose(r["opacity"][:, 0], expected, atol=1e-5)
    assert r["features"].shape == (2, 6, 16, 16) and r["rgb"].shape == (2, 3, 8, 8)


def test_chunked_and_checkpointed_rendering_match_one_pass():
    m = randomize(tiny(), std=0.05)
    b = batch(2, model=m)
    base = m.render(b.cond, b.target.cameras[:, 0], generator=torch.Generator().manual_seed(0))
    (base["features"].square().mean() + base["depth"].mean()).backward()
    grads = [p.grad.clone() for p in m.encoder.parameters()]
    m.zero_grad()
    m.config.render_chunk, m.config.checkpoint_render = 7, True
    again = m.render(b.cond, b.target.cameras[:, 0], generator=torch.Generator().manual_seed(0))
    (again["features"].square().mean() + again["depth"].mean()).backward()
    for key in ("features", "rgb", "opacity", "depth"):
        assert torch.allclose(base[key], again[key], atol=1e-5), key
    assert all(torch.allclose(g, p.grad, atol=1e-6) for g, p in zip(grads, m.encoder.parameters()))


def test_sample_pdf_lands_in_the_weighted_bin_and_is_uniform_for_equal_weights():
    edges = torch.linspace(0.0, 1.0, 6)  # 5 bins of 0.2
    u = torch.cat([torch.linspace(0.001, 0.999, 101), torch.rand(500, generator=torch.Generator().manual_seed(0))])
    weights = torch.tensor([0.0, 0.0, 0.0, 5.0, 0.0], requires_grad=True)
    z = sample_pdf(edges, weights, u)
    assert z.shape == u.shape and not z.requires_grad  # no gradient into the sample positions
    assert ((z >= 0.6) & (z <= 0.8)).all()  # every sample in bin 3
    assert torch.allclose(z, 0.6 + 0.2 * u, atol=1e-3)  # linear inside the bin (inverse CDF)
    # equal weights over uneven bins: the CDF is uniform in bin index, linear inside each bin
    edges = torch.tensor([1.5, 1.6, 2.0, 2.2, 3.5])
    z = sample_pdf(edges[None].expand(2, 5), torch.ones(2, 4), u[None].expand(2, -1))
    k = (u * 4).floor().long().clamp(max=3)
    expected = edges[k] + (u * 4 - k) * (edges[k + 1] - edges[k])
    assert torch.allclose(z, expected.expand(2, -1), atol=1e-5)
    bins = torch.bucketize(z[0, 101:], edges[1:-1])  # the bin of each random sample
    assert (torch.bincount(bins, minlength=4) - 125).abs().max() < 40  # ~ a quarter of the 500 samples per bin


def test_render_image_keeps_chunks_within_the_limit_when_the_batch_is_larger():
    cams = orbit_cameras(5, resolution=4)
    sigma = torch.tensor([0.2, 0.5, 0.9, 1.3, 2.0])
    rays_per_call = []

    def field_of(idx):
        def field(pts):  # (b, P, 3), a different constant density per sample
            rays_per_call.append(pts.shape[0] * pts.shape[1] // 3)  # 3 coarse or 3 fine samples per ray
            return sigma[idx][:, None].expand(pts.shape[:2]), torch.zeros(*pts.shape[:2], 3)
        return field

    bg = torch.ones(3)
    kw = dict(near=1.5, far=3.5, n_coarse=3, n_fine=3, background=bg)
    ref = render_image(field_of(torch.arange(5)), cams, chunk=4096, **kw)
    rays_per_call.clear()
    out = render_image(field_of(torch.arange(5)), cams, chunk=2, subset=field_of, **kw)
    assert max(rays_per_call) <= 2  # before: chunk // B = 0 -> one ray of every sample, 5 rays per call
    for key in ref:
        assert torch.allclose(out[key], ref[key], atol=1e-6), key
    with pytest.raises(ValueError, match="subset"):
        render_image(field_of(torch.arange(5)), cams, chunk=2, **kw)
    # through the model: render_chunk = 1 < B = 2 gives the same render, one ray per field call
    m = randomize(tiny(), std=0.05).eval()
    b = batch(2, model=m)
    with torch.no_grad():
        base = m.render(b.cond, b.target.cameras[:, 0])
        seen = []
        forward = m.field.forward
        m.field.forward = lambda vols, pts: (seen.append(pts.shape[0] * pts.shape[1] // 6), forward(vols, pts))[1]
        m.config.render_chunk = 1
        again = m.render(b.cond, b.target.cameras[:, 0])
    assert max(seen) == 1
    for key in base:
        assert torch.allclose(base[key], again[key], atol=1e-5), key


def test_scene_radius_gives_each_camera_its_own_range_around_the_origin():
    radii = [1.2, 2.5, 4.0]  # 1.2: inside the constant near plane (1.5); 4.0: beyond the constant far plane (3.5)
    cams = Cameras.cat([orbit_cameras(1, radius=r, resolution=16, start_azimuth_deg=40.0 * i)
                        for i, r in enumerate(radii)])
    near, far = scene_near_far(cams, 0.8)
    assert torch.allclose(near, torch.tensor(radii) - 0.8, atol=1e-5)
    assert torch.allclose(far, torch.tensor(radii) + 0.8, atol=1e-5)
    assert float(scene_near_far(orbit_cameras(1, radius=0.5), 0.8)[0]) == pytest.approx(0.008)  # clamped
    m = tiny(scene_radius=0.8)
    views = view_set(torch.zeros(3, 1, 3, 16, 16), cams.reshape(3, 1), torch.ones(3, 1, dtype=torch.bool))
    vols = m.encode(views)
    assert torch.allclose(vols.near, near) and torch.allclose(vols.far, far)
    D = m.config.volume_depth
    vols.volumes = torch.arange(D, dtype=torch.float32)[None, None, :, None, None].expand(3, 1, D, 8, 8).clone()
    feats, inside = sample_volumes(vols, torch.zeros(3, 1, 3))  # the world origin in every camera
    assert inside.all() and torch.allclose(feats[:, 0, 0], torch.full((3,), (D - 1) / 2), atol=1e-4)  # mid-volume
    with pytest.raises(ValueError, match="inside the near plane"):
        tiny().check_inputs(views, cams)  # the constant range refuses the near camera
    # target rays: a constant density renders over each camera's own [near, far]
    sigma0 = 0.7
    last = m.field.mlp[-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.zero_()
        last.bias[0] = math.log(math.expm1(sigma0))
        r = m.render(views, cams)
    px = cams.resize(8, 8)
    d_cam = torch.einsum("bij,hwj->bhwi", torch.linalg.inv(px.K), torch.cat([px.pixel_grid(), torch.ones(8, 8, 1)], -1))
    expected = 1 - torch.exp(-sigma0 * 1.6 * d_cam.norm(dim=-1))  # far − near = 2 · 0.8 for every camera
    assert torch.allclose(r["opacity"][:, 0], expected, atol=1e-5)
    depth = r["depth"][:, 0].flatten(1)
    assert ((depth > near[:, None]) & (depth < far[:, None])).all()
    assert torch.isfinite(m.loss(batch(2, model=m), torch.Generator().manual_seed(0))["loss"])
    with pytest.raises(ValueError, match="scene_radius"):
        GeNVSConfig(scene_radius=0.0)
    behind = Cameras(cams.c2w.clone(), cams.K, 16, 16)
    behind.c2w[1, :3, 2] *= -1  # looks away from the origin
    with pytest.raises(ValueError, match="target camera 1 .* not in front of the camera"):
        m.check_inputs(views, behind)
    with pytest.raises(ValueError, match="not in front"):  # a missing (identity) pose
        m.check_inputs(views, Cameras(torch.eye(4).expand(3, 4, 4), cams.K, 16, 16))


def test_constant_near_far_path_is_unchanged_and_matches_per_sample_tensors():
    cams = orbit_cameras(2, resolution=6)
    g = torch.Generator().manual_seed(0)
    w = torch.randn(4, 5, generator=g)

    def field(pts):
        out = torch.cat([pts, torch.ones_like(pts[..., :1])], -1) @ w
        return F.softplus(out[..., 0]), out[..., 1:]

    o, d = torch.zeros(2, 3, 3), torch.randn(2, 3, 3, generator=g)
    z = render_rays(field, o, d, d.norm(dim=-1), near=1.5, far=3.5, n_coarse=4, n_fine=0, background=torch.ones(4))["z"]
    edges = torch.linspace(1.5, 3.5, 5)
    assert torch.equal(z, (edges[:-1] + 0.5 * (edges[1:] - edges[:-1])).expand(2, 3, 4))  # the float path's samples
    kw = dict(n_coarse=5, n_fine=4, background=torch.ones(4), chunk=7)
    const = render_image(field, cams, near=1.5, far=3.5, generator=torch.Generator().manual_seed(1), **kw)
    per = render_image(field, cams, near=torch.full((2,), 1.5), far=torch.full((2,), 3.5),
                       generator=torch.Generator().manual_seed(1), **kw)
    for key in const:
        assert torch.allclose(const[key], per[key], atol=1e-5), key
    with pytest.raises(ValueError, match=r"shape \(2,\)"):
        render_image(field, cams, near=torch.full((3,), 1.5), far=3.5, **kw)


def test_mean_pooling_ignores_padded_views():
    m = randomize(tiny(), std=0.05).eval()
    cams = orbit_cameras(6, resolution=16)
    g = torch.Generator().manual_seed(1)
    images = torch.rand(2, 2, 3, 16, 16, generator=g) * 2 - 1
    valid = torch.tensor([[True, False], [True, True]])
    set_cams = Cameras(cams.c2w[[0, 2, 1, 3]].reshape(2, 2, 4, 4), cams.K[:4].reshape(2, 2, 3, 3), 16, 16)
    target = cams[[4, 5]]
    with torch.no_grad():
        a = m.render(view_set(images, set_cams, valid), target)["features"]
        junk = images.clone()
        junk[0, 1] = torch.rand(3, 16, 16, generator=g)
        c2w = set_cams.c2w.clone()
        c2w[0, 1] = torch.eye(4)  # a padding slot's camera may be anything (collate uses the identity)
        b = m.render(view_set(junk, Cameras(c2w, set_cams.K, 16, 16), valid), target)["features"]
        alone = m.render(view_set(images[:1, :1], set_cams[:1, :1], valid[:1, :1]), target[:1])["features"]
        one = m.render(view_set(images[1:, :1], set_cams[1:, :1], valid[1:, :1]), target[1:])["features"]
    assert torch.equal(a, b)
    assert torch.allclose(a[:1], alone, atol=1e-5)
    assert not torch.allclose(a[1:], one, atol=1e-3)  # the second valid view changes the pooled field
