"""GeNVS: frustum projection, volume rendering, pooling, the RGB loss pairing, EDM preconditioning, the
conditioning cache, training, checkpoints and `vantage sample`, and the errors a user can make."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from helpers import pair_batch, randomize

from vantage.cameras import Cameras, hemisphere_cameras, orbit_cameras
from vantage.data.mirror import mirror_cameras, mirror_view_set
from vantage.data.testing import ToyDataset
from vantage.data.views import ViewSet
from vantage.diffusion.samplers import get_sampler
from vantage.diffusion.schedules import sample_lognormal_sigma
from vantage.methods import all_presets, build_method, method_from_json
from vantage.methods.base import ViewCond, config_from_dict
from vantage.methods.genvs import GeNVS, GeNVSConfig
from vantage.nn.frustum import FrustumVolumes, depth_planes, sample_volumes, scene_near_far
from vantage.nn.unet import count_parameters
from vantage.nn.volume_render import render_image, render_rays, sample_pdf
from vantage.sampling import autoregressive_orbit
from vantage.sampling.strategies import STRATEGIES, ViewSetCond, make_strategy

pytestmark = pytest.mark.usefixtures("single_thread")

#: about 0.1M parameters; a training step takes a few tens of ms on a CPU
TINY = dict(resolution=16, encoder_ch=8, encoder_ch_mult=(1, 2), volume_channels=4, volume_depth=8,
            volume_resolution=8, mlp_hidden=16, feature_channels=6, samples_stratified=6, samples_importance=6,
            render_resolution=8, ch=16, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(8,), num_heads=2,
            norm_groups=4, default_sampler="euler", default_steps=2, preview_steps=2, preview_count=2)


def tiny(**over) -> GeNVS:
    torch.manual_seed(0)
    return build_method("genvs", {**TINY, **over})


def batch(n: int = 2, seed: int = 0, res: int = 16, model: GeNVS | None = None):
    return pair_batch(n, seed, res, (model or tiny()).pair_sampler())


def view_set(images: torch.Tensor, cams: Cameras, valid: torch.Tensor) -> ViewSet:
    return ViewSet(images=images, cameras=cams, valid=valid, view_ids=torch.zeros_like(valid, dtype=torch.long))


# ---------------------------------------------------------------------------------------- config
def test_presets_and_config():
    presets = all_presets()
    for name in ("genvs-shapes32", "genvs-shapes64", "genvs-srn128"):
        assert presets[name][0] == "genvs" and presets[name][2]
    with torch.device("meta"):
        small = build_method("genvs-shapes32")
    assert 2.0e6 < count_parameters(small) < 2.6e6  # comparable to 3dim-shapes32 (2.4M)
    srn = config_from_dict(GeNVSConfig, presets["genvs-srn128"][1])
    assert (srn.resolution, srn.volume_channels, srn.volume_depth, srn.samples_stratified,
            srn.samples_importance, srn.sigma_data, srn.cond_dropout) == (128, 16, 64, 64, 64, 0.5, 0.1)
    m = tiny()
    assert isinstance(method_from_json(m.to_json()), GeNVS) and method_from_json(m.to_json()).config == m.config
    assert (m.pair_sampler().min_cond, m.pair_sampler().max_cond) == (1, 2)
    assert "genvs-pooled" in STRATEGIES
    with pytest.raises(ValueError, match="near < far"):
        GeNVSConfig(near=3.0, far=2.0)
    with pytest.raises(ValueError, match="near < far"):
        GeNVSConfig(near=0.0)
    with pytest.raises(ValueError, match="depth_spacing"):
        GeNVSConfig(depth_spacing="log")
    with pytest.raises(ValueError, match="background"):
        GeNVSConfig(background=(2.0, 1.0, 1.0))


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


# ---------------------------------------------------------------------------------------- training
def test_rgb_loss_pairs_each_render_with_its_own_target():
    m = randomize(tiny(), std=0.05)
    b = batch(2)
    first = m.loss(b, torch.Generator().manual_seed(3))
    swapped = b.target.images.flip(0)
    b.target.images = swapped
    second = m.loss(b, torch.Generator().manual_seed(3))
    assert float((first["rgb"] - second["rgb"]).abs()) > 1e-4  # all-pairs broadcasting would be symmetric
    rgb, tgt = torch.rand(2, 3, 8, 8), torch.rand(2, 3, 16, 16)
    expected = (rgb - F.avg_pool2d(tgt, 2)).square().mean(dim=(1, 2, 3))
    assert torch.allclose(m.rgb_loss(rgb, tgt), expected, atol=1e-6)
    with pytest.raises(ValueError, match="pairs renders"):
        m.rgb_loss(rgb, tgt[:, None])  # (B, 1, 3, H, W): the re-implementation's broadcasting


def test_edm_preconditioning_and_loss_weighting():
    m = tiny()
    den = m.single_view_denoiser()
    seen = {}

    def fake_net(x_in, c_noise, concat=None):
        seen.update(x_in=x_in, c_noise=c_noise, concat=concat)
        return torch.ones_like(x_in)

    m.net.forward = fake_net
    cams = orbit_cameras(4, resolution=16)
    cond = ViewCond(torch.zeros(2, 3, 16, 16), cams[:2], cams[2:])
    x, sigma = torch.randn(2, 3, 16, 16), torch.tensor([0.5, 2.0])
    out = den(x, sigma, cond)
    c_skip = torch.tensor([0.5, 0.25 / 4.25])
    c_out = torch.tensor([0.5 * 0.5 / math.sqrt(0.5), 2.0 * 0.5 / math.sqrt(4.25)])
    c_in = torch.tensor([1 / math.sqrt(0.5), 1 / math.sqrt(4.25)])
    assert torch.allclose(seen["c_noise"], torch.tensor([math.log(0.5) / 4, math.log(2.0) / 4]))
    assert torch.allclose(seen["x_in"], x * c_in[:, None, None, None], atol=1e-6)
    assert seen["concat"].shape == (2, 6, 16, 16)
    assert torch.allclose(out, c_skip[:, None, None, None] * x + c_out[:, None, None, None], atol=1e-6)
    # the loss: λ(σ) = (σ² + σ_d²)/(σ σ_d)² times the MSE; with F ≡ 0 the denoiser is c_skip·x
    m = tiny(rgb_loss_weight=0.0)
    b = batch(2, model=m)
    g = torch.Generator().manual_seed(5)
    got = m.loss(b, torch.Generator().manual_seed(5))
    s = sample_lognormal_sigma(2, -1.2, 1.2, generator=g)
    eps = torch.randn(2, 3, 16, 16, generator=g)
    x0 = b.target.images[:, 0]
    d = (0.25 / (s * s + 0.25))[:, None, None, None] * (x0 + s[:, None, None, None] * eps)
    lam = (s * s + 0.25) / (s * 0.5) ** 2
    assert torch.allclose(got["diffusion"], (lam * (d - x0).square().mean(dim=(1, 2, 3))).mean(), rtol=1e-5)
    assert torch.allclose(got["loss"], got["diffusion"])


def test_dropout_mask_is_fresh_each_step_and_zeroes_the_conditioning():
    m = tiny(cond_dropout=0.1)
    g = torch.Generator().manual_seed(0)
    assert not torch.equal(m.dropout_mask(512, g), m.dropout_mask(512, g))
    n = 20000
    rate = float(m.dropout_mask(n, torch.Generator().manual_seed(1)).float().mean())
    assert abs(rate - 0.1) < 5 * math.sqrt(0.1 * 0.9 / n)
    seen = []
    forward = m.net.forward
    m.net.forward = lambda x, c, concat=None: (seen.append(concat), forward(x, c, concat=concat))[1]
    m.config.cond_dropout = 0.5
    out = m.loss(batch(8, model=m), torch.Generator().manual_seed(2))
    dropped = seen[-1].flatten(1).abs().amax(1) == 0
    assert float(out["cond_dropped"]) == float(dropped.float().mean()) and 0 < int(dropped.sum()) < 8


def test_diffusion_loss_alone_trains_the_encoder_and_the_field():
    m = randomize(tiny(rgb_loss_weight=0.0, cond_dropout=0.0), std=0.05)
    out = m.loss(batch(2, model=m), torch.Generator().manual_seed(0))
    assert torch.equal(out["loss"], out["diffusion"])
    out["loss"].backward()
    for part in (m.encoder, m.field, m.net):
        grads = [p.grad for p in part.parameters()]
        assert all(g is not None for g in grads), type(part).__name__
        assert sum(float(g.abs().sum()) for g in grads) > 0, type(part).__name__
    assert float(m.encoder.head.weight.grad.abs().sum()) > 0 and float(m.field.mlp[0].weight.grad.abs().sum()) > 0


def test_mirror_augmentation_keeps_the_geometry_exact():
    cams = Cameras.cat([orbit_cameras(3, resolution=16, elevation_deg=25.0),
                        hemisphere_cameras(3, generator=torch.Generator().manual_seed(0), resolution=16)])
    cams.K[1, 0, 2] += 1.7  # an off-centre principal point and a skew must stay valid too
    cams.K[2, 0, 1] = 0.3
    mir = mirror_cameras(cams)
    assert torch.allclose(torch.linalg.det(mir.R), torch.ones(6), atol=1e-5)  # proper rotations
    assert torch.allclose(mir.R @ mir.R.transpose(-1, -2), torch.eye(3).expand(6, 3, 3), atol=1e-5)
    pts = (torch.rand(50, 3, generator=torch.Generator().manual_seed(1)) - 0.5) * 1.2  # inside the scene
    flip = torch.tensor([-1.0, 1.0, 1.0])
    for i in range(6):  # a known point projects to mirrored pixel coordinates in every mirrored view
        uv, z = cams[i].project(pts)
        uv_m, z_m = mir[i].project(pts * flip)
        assert torch.allclose(uv_m[:, 0], 16 - uv[:, 0], atol=1e-4) and torch.allclose(uv_m[:, 1], uv[:, 1], atol=1e-4)
        assert torch.allclose(z_m, z, atol=1e-5)
    assert mirror_cameras(mir).allclose(cams)
    # the frustum volumes agree: a volume flipped left-right under the mirrored camera reads the same features
    vol = torch.rand(6, 2, 5, 8, 8, generator=torch.Generator().manual_seed(2))
    idx = torch.arange(6)
    a = sample_volumes(FrustumVolumes.from_cameras(vol, cams, idx, 6, 1.5, 3.5), pts.expand(6, -1, -1))
    b = sample_volumes(FrustumVolumes.from_cameras(vol.flip(-1), mir, idx, 6, 1.5, 3.5), (pts * flip).expand(6, -1, -1))
    assert torch.equal(a[1], b[1]) and torch.allclose(a[0], b[0], atol=1e-5)
    # a whole sample is mirrored: images flipped, cameras mirrored; the other sample untouched
    vs = view_set(torch.rand(2, 2, 3, 16, 16), cams[:4].reshape(2, 2), torch.ones(2, 2, dtype=torch.bool))
    out = mirror_view_set(vs, torch.tensor([True, False]))
    assert torch.equal(out.images[0], vs.images[0].flip(-1)) and torch.equal(out.images[1], vs.images[1])
    assert out.cameras[0].allclose(mir[:2]) and out.cameras[1].allclose(cams[2:4])


def test_augment_flip_mirrors_inputs_and_target_together():
    m = randomize(tiny(augment_flip=1.0), std=0.05)
    b = batch(2, model=m)
    got = m.loss(b, torch.Generator().manual_seed(4))
    assert float(got["flipped"]) == 1.0
    g = torch.Generator().manual_seed(4)
    torch.rand(2, generator=g)  # the flip draw comes first
    mirrored = type(b)(mirror_view_set(b.cond, torch.ones(2, dtype=torch.bool)),
                       mirror_view_set(b.target, torch.ones(2, dtype=torch.bool)), b.scene_index, b.target_in_cond)
    m.config.augment_flip = 0.0
    expected = m.loss(mirrored, g)
    assert "flipped" not in expected
    for key in ("loss", "diffusion", "rgb", "opacity"):
        assert torch.allclose(got[key], expected[key], atol=1e-6), key
    m.config.augment_flip = 0.5
    _, flip = m.augment(batch(64, model=m), torch.Generator().manual_seed(0))
    assert 16 < int(flip.sum()) < 48
    with pytest.raises(ValueError, match="augment_flip"):
        GeNVSConfig(augment_flip=1.5)


def test_loss_decreases_on_a_fixed_batch():
    m = tiny()
    b = batch(4, model=m)
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)
    losses = []
    for _ in range(15):
        out = m.loss(b, torch.Generator().manual_seed(1))
        assert torch.isfinite(out["loss"])
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        losses.append(float(out["loss"].detach()))
    assert losses[-1] < 0.7 * losses[0], losses


# ---------------------------------------------------------------------------------------- sampling
def counted_model() -> tuple[GeNVS, list[int], object, ViewSet]:
    """A tiny GeNVS whose encoder calls are recorded (batch size of each), a toy object and its first two views."""
    m = randomize(tiny(), std=0.05).eval()
    calls: list[int] = []
    m.encoder.register_forward_hook(lambda mod, args, out: calls.append(args[0].shape[0]))
    obj = ToyDataset(1, 8, 16).load(0)
    views = view_set(obj.images[None, :2], obj.cameras[None, :2], torch.tensor([[True, True]]))
    return m, calls, obj, views


def test_encoder_runs_once_per_sampling_loop():
    m, calls, obj, views = counted_model()
    cams = obj.cameras
    cond = ViewSetCond(views, cams[[4]])
    sigmas = m.sampling_sigmas(4)
    for name, guidance in (("single", None), ("stochastic", 2.0)):
        calls.clear()
        den = m.single_view_denoiser(guidance)
        strat = make_strategy(name, den, generator=torch.Generator().manual_seed(0))
        x = get_sampler("heun")(strat, torch.randn(1, 3, 16, 16) * float(sigmas[0]), sigmas, cond)
        assert torch.isfinite(x).all() and strat.calls == 7
        assert len(calls) == den.renders == (1 if name == "single" else 2)  # one per distinct view
    calls.clear()
    res = autoregressive_orbit(m, obj.select([0]), cams[[2, 3, 5]], strategy="genvs-pooled", steps=3, seed=0,
                               sampler="heun", strategy_options={"max_views": 2})
    assert res.images.shape == (1, 3, 3, 16, 16) and torch.isfinite(res.images).all()
    assert calls == [1, 2, 2]  # one encoder run per generated view: the input, then input + latest
    assert res.nfe == 3 * 5
    strat = make_strategy("genvs-pooled", m.single_view_denoiser())
    strat(torch.zeros(1, 3, 16, 16), torch.ones(1), cond)
    assert strat.last_cond.views.valid.sum() == 2
    assert m.render_conditioning(strat.last_cond)["rgb"].shape == (1, 3, 16, 16)


def test_fixed_input_views_are_encoded_once_across_targets(tmp_path):
    from vantage.cli.sample_outputs import write_field_renders

    m, calls, obj, views = counted_model()
    cams = obj.cameras
    den = m.single_view_denoiser()
    with torch.no_grad():
        feats = [den.prepare(ViewSetCond(views, cams[[t]])) for t in (3, 4, 5)]  # one set, three targets
        assert calls == [2] and den.renders == 3 and den.volume_cache.encodes == 1
        calls.clear()
        direct = m.render(views, cams[[4]])["features"]
        assert calls == [2] and torch.allclose(feats[1], direct, atol=1e-6)
        calls.clear()
        # a batch holding the same set three times (and a padding slot that differs) is encoded once, and hits
        padded = view_set(torch.cat([obj.images[None, :2], torch.rand(1, 1, 3, 16, 16)], 1),
                          Cameras.cat([cams[:2], cams[6:7]])[None], torch.tensor([[True, True, False]]))
        trio = ViewSetCond(ViewSet(images=padded.images.expand(3, -1, -1, -1, -1), cameras=padded.cameras[[0, 0, 0]],
                                   valid=padded.valid.expand(3, -1), view_ids=padded.view_ids.expand(3, -1)),
                           cams[[1, 6, 7]])
        batched = den.prepare(trio)
        assert calls == [] and torch.allclose(batched[1:2], den.prepare(ViewSetCond(views, cams[[6]])), atol=1e-6)
        fresh = m.single_view_denoiser()
        fresh.prepare(trio)
        assert calls == [2]  # three copies of one set: one encoder call of its two views
    calls.clear()
    res = autoregressive_orbit(m, obj.select([0, 1]), cams[[3, 4, 5]], strategy="genvs-pooled", steps=2, seed=0,
                               sampler="euler", autoregressive=False)
    assert calls == [2] and torch.isfinite(res.images).all()  # fixed views: one encoding for three targets
    calls.clear()
    files = write_field_renders(tmp_path, m, obj.select([0, 1]), cams[2:7], fps=2.0, chunk=2)
    assert calls == [2] and len(files) == 3  # five cameras in three chunks, one encoding


def test_pooled_strategy_keeps_the_input_and_the_latest_view():
    m = tiny()
    strat = make_strategy("genvs-pooled", m.single_view_denoiser(), generator=torch.Generator().manual_seed(0),
                          max_views=3)
    valid = torch.tensor([[True] * 6, [True, True, False, False, False, False]])
    idx = strat.select(valid)
    assert idx.shape == (2, 3) and idx[0, 0] == 0 and idx[0, -1] == 5 and 0 < idx[0, 1] < 5
    assert idx[1].tolist() == [0, 1, -1]
    with pytest.raises(TypeError, match="GeNVS"):
        make_strategy("genvs-pooled", lambda x, s, c: x)
    # as many inputs as max_views (or more): the latest generated view is still kept, with a warning
    valid = torch.tensor([[True] * 6])
    for keep_first in (3, 5):
        strat = make_strategy("genvs-pooled", m.single_view_denoiser(), max_views=3, keep_first=keep_first)
        with pytest.warns(UserWarning, match="the first 2 inputs and the latest view are kept"):
            assert strat.select(valid).tolist() == [[0, 1, 5]]
    strat = make_strategy("genvs-pooled", m.single_view_denoiser(), max_views=1, keep_first=2)
    assert strat.select(valid).tolist() == [[0]]  # one view: the input, as before


def test_max_cond_views_option():
    from vantage.sampling.strategy_choice import choose_strategy

    m = tiny()
    choice = choose_strategy(m, None, input_views=2, max_views=3)
    assert choice.name == "genvs-pooled" and choice.options == {"keep_first": 2, "max_views": 3}
    assert choose_strategy(m, None, input_views=2).options == {"keep_first": 2}  # default: the config's
    names = {"max_views": "--max-cond-views", "strategy": "--strategy"}
    with pytest.raises(ValueError, match="--max-cond-views .* needs --strategy genvs-pooled"):
        choose_strategy(m, "single", max_views=2, names=names)
    with pytest.raises(ValueError, match="--max-cond-views is a number of views and must be >= 1, got 0"):
        choose_strategy(m, None, max_views=0, names=names)


def test_render_conditioning_and_guidance():
    m = randomize(tiny(), std=0.05).eval()
    cams = orbit_cameras(4, resolution=16)
    cond = ViewCond(torch.rand(2, 3, 16, 16) * 2 - 1, cams[:2], cams[2:])
    r = m.render_conditioning(cond)
    assert r["rgb"].shape == (2, 3, 16, 16) and r["depth"].shape == r["opacity"].shape == (2, 1, 16, 16)
    assert r["rgb"].abs().max() <= 1 and (r["depth"][r["opacity"] >= 0.5] > 1.5).all()
    x, s = torch.randn(2, 3, 16, 16), torch.tensor([1.0, 3.0])
    with torch.no_grad():
        d_c = m.single_view_denoiser()(x, s, cond)
        d_u = m.single_view_denoiser()(x, s, ViewCond(cond.images, cond.source, cond.target,
                                                      torch.ones(2, dtype=torch.bool)))
        guided = m.single_view_denoiser(2.0)(x, s, cond)
    assert torch.allclose(guided, d_u + 3.0 * (d_c - d_u), atol=1e-5)


def test_checkpoint_round_trip_and_vantage_sample(tmp_path, capsys):
    from vantage.cli.main import main
    from vantage.train.checkpoint import load_checkpoint, save_checkpoint

    m = randomize(tiny(), std=0.05)
    run = tmp_path / "run"
    save_checkpoint(run, 1, config={**m.to_json(), "step": 1}, weights=m.state_dict(), training_state={})
    back = load_checkpoint(run)
    assert isinstance(back, GeNVS) and back.config == m.config
    assert all(torch.equal(a, b) for a, b in zip(m.state_dict().values(), back.state_dict().values()))
    data = tmp_path / "obj"
    assert main(["data", "render", "--out", str(data), "--objects", "1", "--views", "3", "--resolution", "16",
                 "--split", "val"]) == 0
    out = tmp_path / "sample"
    assert main(["sample", "--checkpoint", str(run), "--input", str(data), "--orbit", "3", "--strategy", "single",
                 "--steps", "2", "--out", str(out), "--device", "cpu"]) == 0
    summary = json.loads((out / "sample.json").read_text())
    assert summary["method"] == "genvs" and summary["strategy"] == "single" and summary["views"] == 3
    assert "genvs" in capsys.readouterr().out
    # without --strategy: GeNVS's own pooled set conditioning, every input kept; the inputs' field is rendered
    out2 = tmp_path / "pooled"
    assert main(["sample", "--checkpoint", str(run), "--input", str(data), "--orbit", "3", "--input-views", "0,1",
                 "--steps", "1", "--out", str(out2), "--device", "cpu"]) == 0
    summary = json.loads((out2 / "sample.json").read_text())
    assert summary["strategy"] == "genvs-pooled" and summary["strategy_options"]["keep_first"] == 2
    from PIL import Image

    for kind in ("rgb", "depth"):
        files = sorted((out2 / "field" / kind).iterdir())
        assert len(files) == 3 and Image.open(files[0]).size == (16, 16)
    assert Image.open(out2 / "field" / "field.gif").n_frames == 3
    assert main(["sample", "--checkpoint", str(run), "--input", str(data), "--orbit", "2", "--strategy",
                 "genvs-pooled", "--steps", "1", "--out", str(tmp_path / "x"), "--device", "cpu"]) == 0
    # --max-cond-views: the pooled set size; with 2 inputs and K = 2 the latest view replaces the second input
    capsys.readouterr()
    out3 = tmp_path / "k2"
    assert main(["sample", "--checkpoint", str(run), "--input", str(data), "--orbit", "4", "--input-views", "0,1",
                 "--max-cond-views", "2", "--steps", "1", "--out", str(out3), "--device", "cpu"]) == 0
    summary = json.loads((out3 / "sample.json").read_text())
    assert summary["strategy_options"] == {"keep_first": 2, "max_views": 2}
    assert "the first 1 inputs and the latest view are kept" in capsys.readouterr().out
    assert main(["sample", "--checkpoint", str(run), "--input", str(data), "--strategy", "single", "--max-cond-views",
                 "2", "--out", str(tmp_path / "bad"), "--device", "cpu"]) != 0
    assert "--max-cond-views sets how many views" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------- errors
def test_errors_name_what_is_wrong():
    m = tiny()
    cams = orbit_cameras(4, resolution=16)
    views = view_set(torch.zeros(2, 1, 3, 16, 16), cams[:2].reshape(2, 1), torch.ones(2, 1, dtype=torch.bool))
    den = m.single_view_denoiser()
    x, s = torch.zeros(2, 3, 16, 16), torch.ones(2)
    inside = Cameras(torch.eye(4).expand(2, 4, 4), cams.K[:2], 16, 16)  # identity pose: camera at the origin
    with pytest.raises(ValueError, match="inside the near plane"):
        den(x, s, ViewSetCond(views, inside))
    with pytest.raises(ValueError, match="input camera 0 .* inside the near plane"):
        den(x, s, ViewSetCond(view_set(views.images, inside.reshape(2, 1), views.valid), cams[2:]))
    with pytest.raises(ValueError, match="posed input views"):
        m.check_inputs(type("Unposed", (), {"images": views.images, "cameras": None})(), cams[2:])
    with pytest.raises(TypeError, match="ViewCond or ViewSetCond"):
        den(x, s, None)
    big = orbit_cameras(4, resolution=32)
    with pytest.raises(ValueError, match="16x16 images but the input views are 3x32x32"):
        den(torch.zeros(2, 3, 32, 32), s, ViewCond(torch.zeros(2, 3, 32, 32), big[:2], big[2:]))
    with pytest.raises(ValueError, match="configured for 3x16x16"):
        m.loss(batch(2, res=8))
    far = tiny(far=2.0)  # the scene centre (depth 2.5) lies beyond the far plane
    with pytest.raises(ValueError, match="beyond the far plane"):
        far.loss(batch(2, model=far))
    for check in (True, False):  # NaN fails every comparison: refused by an explicit finiteness check
        m.config.check_cameras = check
        nan = Cameras(cams.c2w[2:].clone(), cams.K[2:], 16, 16)
        nan.c2w[1, 0, 3] = float("nan")
        with pytest.raises(ValueError, match=r"target camera 1 has a non-finite pose \(c2w\)"):
            den(x, s, ViewSetCond(views, nan))
        inf = Cameras(cams.c2w[:2].clone(), cams.K[:2].clone(), 16, 16).reshape(2, 1)
        inf.K[0, 0, 0, 0] = float("inf")  # Cameras() validates its tensors; in-place changes bypass that
        with pytest.raises(ValueError, match=r"input camera 0 has a non-finite intrinsics \(K\)"):
            den(x, s, ViewSetCond(view_set(views.images, inf, views.valid), cams[2:]))
