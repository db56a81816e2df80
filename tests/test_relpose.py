"""relpose (Zero-1-to-3-style relative-pose model): presets and config, the relative pose vector (a hand-computed
case, invariance to a rotation about the orbit axis), conditioning dropout (drop -> output independent of pose
and image), the guidance path, loss, preview and orbit, and a tiny checkpoint through `vantage sample`."""

from __future__ import annotations

import json
import math

import pytest
import torch
from helpers import pair_batch as batch
from helpers import randomize

from vantage.cameras import Cameras, spherical_to_cartesian
from vantage.cli.main import main
from vantage.data.testing import ToyDataset
from vantage.methods import all_presets, build_method, method_from_json
from vantage.methods.base import ViewCond, config_from_dict
from vantage.methods.relpose import RelPose, RelPoseConfig, relative_pose
from vantage.nn.unet import count_parameters
from vantage.sampling import autoregressive_orbit
from vantage.train.checkpoint import load_checkpoint, save_checkpoint

pytestmark = pytest.mark.usefixtures("single_thread")

#: a tiny relpose (about 0.1M parameters)
TINY = dict(resolution=16, ch=16, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(8,), num_heads=2, emb_ch=32,
            norm_groups=8, encoder_ch=8, image_emb_dim=16, pose_emb_dim=16, default_sampler="euler",
            default_steps=2, preview_steps=2, preview_count=2)


def tiny(**over) -> RelPose:
    torch.manual_seed(0)
    return build_method("relpose", {**TINY, **over})


def cams(polar_deg, azimuth_deg, radius, res: int = 16) -> Cameras:
    """Cameras ``(n,)`` at the given spherical positions (degrees), looking at the origin."""
    p, a, r = (torch.as_tensor(v, dtype=torch.float64).reshape(-1) for v in (polar_deg, azimuth_deg, radius))
    eye = spherical_to_cartesian(torch.deg2rad(p), torch.deg2rad(a), r)
    return Cameras.from_look_at(eye, fov_deg=40.0, width=res)


def rotate_z(c: Cameras, deg: float) -> Cameras:
    """The cameras with the whole scene rotated by ``deg`` about world +z (the orbit axis)."""
    a = math.radians(deg)
    R = torch.eye(4, dtype=c.c2w.dtype)
    R[:2, :2] = torch.tensor([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    return Cameras(R @ c.c2w, c.K, c.width, c.height)


def _cond(B: int = 2, azimuths=(0.0, 40.0), targets=(90.0, 200.0), seed: int = 5) -> ViewCond:
    g = torch.Generator().manual_seed(seed)
    return ViewCond(torch.rand(B, 3, 16, 16, generator=g) * 2 - 1, cams([60.0] * B, azimuths[:B], [2.5] * B),
                    cams([50.0] * B, targets[:B], [2.5] * B))


def test_presets_and_config():
    presets = all_presets()
    for name in ("relpose-shapes32", "relpose-shapes64"):
        method, overrides, description = presets[name]
        assert method == "relpose" and description
        config_from_dict(RelPoseConfig, overrides)
    ours = count_parameters(build_method("relpose-shapes32"))
    theirs = count_parameters(build_method("3dim-shapes32"))
    assert 0.75 < ours / theirs < 1.25 and ours * 4 <= 20 * 2**20  # about 3dim-shapes32's size
    c = RelPoseConfig()
    assert (c.cond_dropout, c.cond_drop, c.prediction, c.default_guidance) == (0.1, "all", "eps", 2.0)
    for bad, match in ((dict(cond_drop="image"), "cond_drop"), (dict(cond_dropout=1.0), "cond_dropout"),
                       (dict(prediction="x0"), "prediction"), (dict(encoder_ch=20), "encoder_ch"),
                       (dict(resolution=20), "resolution")):
        with pytest.raises(ValueError, match=match):
            RelPoseConfig(**bad)
    m = tiny()
    again = method_from_json(json.loads(json.dumps(m.to_json())))
    assert isinstance(again, RelPose) and again.config == m.config
    assert m.pair_sampler().min_cond == m.pair_sampler().max_cond == 1


def test_relative_pose_hand_computed():
    src = cams([60.0, 80.0], [0.0, 350.0], [2.5, 2.0])
    tgt = cams([45.0, 80.0], [90.0, 10.0], [3.0, 2.0])
    T = relative_pose(src, tgt)
    assert T.dtype == torch.float32 and T.shape == (2, 4)
    s20 = math.sin(math.radians(20.0))
    want = torch.tensor([[-math.pi / 12, 1.0, 0.0, 0.5],  # polar 60 -> 45 (from +z), azimuth +90, radius +0.5
                         [0.0, s20, math.cos(math.radians(20.0)), 0.0]])  # 350 -> 10: +20, across the seam
    torch.testing.assert_close(T, want, atol=1e-5, rtol=0)
    back = relative_pose(tgt[:1], src[:1])  # the other way round: azimuth −90
    torch.testing.assert_close(back, torch.tensor([[math.pi / 12, -1.0, 0.0, -0.5]]), atol=1e-5, rtol=0)


def test_invariant_to_a_rotation_about_the_orbit_axis():
    m = randomize(tiny()).eval()
    c = _cond()
    turned = ViewCond(c.images, rotate_z(c.source, 73.0), rotate_z(c.target, 73.0))
    torch.testing.assert_close(relative_pose(turned.source, turned.target), relative_pose(c.source, c.target),
                               atol=1e-5, rtol=0)
    den = m.single_view_denoiser(clip_x0=False)
    x, s = torch.randn(2, 3, 16, 16), torch.tensor([1.5, 0.3])
    with torch.no_grad():
        torch.testing.assert_close(den(x, s, turned), den(x, s, c), atol=1e-5, rtol=0)
        # a different relative pose (another target azimuth) changes the prediction
        other = ViewCond(c.images, c.source, cams([50.0, 50.0], [120.0, 300.0], [2.5, 2.5]))
        assert not torch.allclose(den(x, s, other), den(x, s, c), atol=1e-4)


@pytest.mark.parametrize("mode", ["all", "pose"])
def test_dropout_removes_the_conditioning(mode):
    m = randomize(tiny(cond_drop=mode)).eval()
    den = m.single_view_denoiser(clip_x0=False)
    c = _cond()
    x, s = torch.randn(2, 3, 16, 16), torch.tensor([1.5, 0.3])
    drop = torch.ones(2, dtype=torch.bool)
    other_pose = _cond(azimuths=(10.0, 100.0), targets=(30.0, 330.0))  # same images, other cameras
    other_image = _cond(seed=9)  # same cameras, other images
    with torch.no_grad():
        d = den(x, s, c)
        d_u = den(x, s, ViewCond(c.images, c.source, c.target, drop))
        assert not torch.allclose(d, d_u, atol=1e-4)
        # dropped: independent of the pose
        torch.testing.assert_close(den(x, s, ViewCond(c.images, other_pose.source, other_pose.target, drop)), d_u)
        d_u_img = den(x, s, ViewCond(other_image.images, c.source, c.target, drop))
        if mode == "all":  # ... and of the image (Zero-1-to-3's null branch)
            torch.testing.assert_close(d_u_img, d_u)
        else:  # 3DiM-style: the image still conditions
            assert not torch.allclose(d_u_img, d_u, atol=1e-4)
        # a per-row mask: only row 0 dropped
        mixed = den(x, s, ViewCond(c.images, c.source, c.target, torch.tensor([True, False])))
        torch.testing.assert_close(mixed, torch.stack([d_u[0], d[1]]))


def test_dropout_mask_is_fresh_each_step_and_reaches_the_network():
    m = tiny(cond_dropout=0.1)
    g = torch.Generator().manual_seed(0)
    assert not torch.equal(m.cond_dropout_mask(512, g), m.cond_dropout_mask(512, g))
    n = 40000
    rate = float(m.cond_dropout_mask(n, torch.Generator().manual_seed(3)).float().mean())
    assert abs(rate - 0.1) < 5 * math.sqrt(0.1 * 0.9 / n)
    assert not tiny(cond_dropout=0.0).cond_dropout_mask(1000, g).any()
    seen = []
    forward = m.net.forward
    m.net.forward = lambda *a, drop=None: (seen.append(drop), forward(*a, drop=drop))[1]
    m.config.cond_dropout = 0.5
    out = m.loss(batch(8), torch.Generator().manual_seed(4))
    assert seen[-1].dtype == torch.bool and seen[-1].shape == (8,)
    assert float(out["cond_dropped"]) == float(seen[-1].float().mean())


def test_guidance_path():
    m = randomize(tiny()).eval()
    plain = m.single_view_denoiser(clip_x0=False)
    c = _cond()
    x, s = torch.randn(2, 3, 16, 16) * 2, torch.tensor([2.0, 0.5])
    with torch.no_grad():
        d = plain(x, s, c)
        d_u = plain(x, s, ViewCond(c.images, c.source, c.target, torch.ones(2, dtype=torch.bool)))
        assert torch.equal(m.single_view_denoiser(0.0, clip_x0=False)(x, s, c), d)
        assert torch.equal(plain(x, torch.zeros(2), c), x)  # D(x, 0) = x
        w = 2.0
        guided = m.single_view_denoiser(w, clip_x0=False)(x, s, c)
        torch.testing.assert_close(guided, d_u + (1 + w) * (d - d_u), atol=1e-4, rtol=1e-5)  # (1+w)ε_c − wε_u
        clipped = m.single_view_denoiser(w)(x, s, c)
        assert torch.allclose(clipped, guided.clamp(-1, 1))


def test_loss_preview_and_orbit():
    m = tiny(prediction="v")
    b = batch()
    l1 = m.loss(b, torch.Generator().manual_seed(1))
    assert set(l1) == {"loss", "cond_dropped"} and torch.isfinite(l1["loss"])
    assert torch.equal(l1["loss"], m.loss(b, torch.Generator().manual_seed(1))["loss"])
    with pytest.raises(ValueError, match="16x16"):
        m.loss(batch(res=8))
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)
    losses = []
    for _ in range(12):  # the same t, ε and mask every step: the loss must fall
        out = m.loss(b, torch.Generator().manual_seed(1))["loss"]
        opt.zero_grad()
        out.backward()
        opt.step()
        losses.append(float(out.detach()))
    assert losses[-1] < 0.7 * losses[0], losses
    sig = m.sampling_sigmas(8)
    assert sig.shape == (9,) and sig[-1] == 0 and (sig[1:] < sig[:-1]).all()
    assert math.isclose(float(sig[0]), math.exp(10), rel_tol=1e-4)
    prev = m.preview(b, torch.Generator().manual_seed(0))
    assert prev.shape == (2, 3, 16, 16) and torch.isfinite(prev).all() and m.training
    obj = ToyDataset(1, 8, 16).load(0)
    res = autoregressive_orbit(m, obj.select([0]), obj.cameras[:4], strategy="stochastic", steps=2, seed=0)
    assert res.images.shape == (1, 4, 3, 16, 16) and torch.isfinite(res.images).all()
    assert res.generated[0].tolist() == [False, True, True, True] and res.nfe == 3 * 2


def test_checkpoint_round_trip_and_vantage_sample(tmp_path, capsys):
    m = randomize(tiny(), std=0.02)
    run = tmp_path / "run"
    save_checkpoint(run, 1, config={**m.to_json(), "step": 1}, weights=m.state_dict(), training_state={})
    back = load_checkpoint(run)
    assert isinstance(back, RelPose) and back.config == m.config and not back.training
    for k, v in m.state_dict().items():
        assert torch.equal(back.state_dict()[k], v), k
    data = tmp_path / "synth"
    assert main(["data", "render", "--out", str(data), "--objects", "1", "--views", "4", "--resolution", "16",
                 "--split", "val"]) == 0
    for strategy in ("single", "stochastic"):
        out = tmp_path / strategy
        assert main(["sample", "--checkpoint", str(run), "--input", str(data), "--orbit", "4", "--out", str(out),
                     "--strategy", strategy, "--steps", "2", "--guidance", "1", "--device", "cpu"]) == 0
        said = capsys.readouterr().out
        assert "model: relpose" in said
        summary = json.loads((out / "sample.json").read_text())
        assert summary["method"] == "relpose" and summary["strategy"] == strategy and summary["views"] == 4
        assert summary["nfe"] == 3 * 2 and sorted(summary["psnr"]) == ["1", "2", "3"]  # 3 generated views with truth
        assert sorted(p.name for p in (out / "frames").iterdir()) == [f"{i:03d}.png" for i in range(4)]
