"""VIVID's optional epipolar attention bias (vantage.nn.epipolar): the distances (points on the target ray, cases
computed by hand, zero baseline, rays behind the source), the bias, and the model with the option on and off."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import VIVID_TINY as TINY
from helpers import ring_pair as pair
from helpers import tiny_vivid as tiny

from vantage.cameras import Cameras, intrinsics_from_fov
from vantage.methods import build_method
from vantage.methods.base import ViewCond
from vantage.methods.vivid_convert import ReferenceKeyError, infer_vivid_fields
from vantage.nn.epipolar import EpipolarBias, EpipolarDistances, epipolar_distances
from vantage.nn.mp import cosine_attention, normalize
from vantage.train.checkpoint import load_checkpoint

pytestmark = pytest.mark.usefixtures("single_thread")


def cam(R: torch.Tensor | None = None, centre=(0.0, 0.0, 0.0), res: int = 8, fov: float = 60.0) -> Cameras:
    c2w = torch.eye(4, dtype=torch.float64)
    if R is not None:
        c2w[:3, :3] = R
    c2w[:3, 3] = torch.tensor(centre, dtype=torch.float64)
    return Cameras(c2w[None].float(), intrinsics_from_fov(fov, res), res, res)


def rot_y(deg: float) -> torch.Tensor:
    a = math.radians(deg)
    return torch.tensor([[math.cos(a), 0, math.sin(a)], [0, 1, 0], [-math.sin(a), 0, math.cos(a)]],
                        dtype=torch.float64)


def grid(n: int) -> torch.Tensor:
    v, u = torch.meshgrid(torch.arange(n) + 0.5, torch.arange(n) + 0.5, indexing="ij")
    return torch.stack([u, v], -1).reshape(-1, 2).double()


def to_piece(q: torch.Tensor, a: torch.Tensor, b: torch.Tensor | None = None, direction=None) -> torch.Tensor:
    """Distance of points q (M, 2) to the segment a-b, or to the half-line from a along ``direction``."""
    d = (b - a) if b is not None else direction
    s = ((q - a) @ d) / (d @ d)
    s = s.clamp(0, 1) if b is not None else s.clamp_min(0)
    return (q - a - s[:, None] * d).norm(dim=-1)


def ray_points(target: Cameras, pixel: tuple[float, float], depths: list[float]) -> torch.Tensor:
    """World points (D, 3) at the given target depths on the ray of target pixel (u, v)."""
    d_cam = torch.linalg.inv(target.K[0].double()) @ torch.tensor([pixel[0], pixel[1], 1.0], dtype=torch.float64)
    lam = torch.tensor(depths, dtype=torch.float64)[:, None]
    return target.centers[0].double() + lam * (target.R[0].double() @ d_cam)


# ------------------------------------------------------------------------------------ distances
def test_points_on_the_target_ray_lie_on_its_epipolar_piece():
    src, tgt = pair(b=2, res=16)
    depths = [0.3, 0.8, 1.5, 2.5, 4.0, 10.0, 100.0]
    for b in range(2):
        for i, j in [(0, 0), (3, 12), (8, 8), (15, 2), (10, 15)]:
            pts = ray_points(tgt[b:b + 1], (j + 0.5, i + 0.5), depths).float()
            uv, z = src[b:b + 1].project(pts[None])
            front = z[0] > 0  # far points of some rays pass behind the source camera (the next test)
            assert front.sum() >= 5
            uv = uv[:, front]
            d = epipolar_distances(tgt[b:b + 1], src[b:b + 1], (16, 16), uv)[0, i * 16 + j]
            assert d.abs().max() < 1e-4, (b, i, j, d)
            # moved across the line by 2 pixels: 2/16 away
            u = torch.nn.functional.normalize(uv[0, -1] - uv[0, 0], dim=0)
            off = uv[0, 2:4] + 2.0 * torch.stack([u[1], -u[0]])
            d_off = epipolar_distances(tgt[b:b + 1], src[b:b + 1], (16, 16), off[None])[0, i * 16 + j]
            assert torch.allclose(d_off, torch.full_like(d_off, 2 / 16), atol=1e-4)
    # the same cameras given at 32 px: the same map-pixel geometry
    d16 = epipolar_distances(tgt, src, (8, 8))
    assert torch.allclose(epipolar_distances(tgt.resize(32), src.resize(32), (8, 8)), d16, atol=1e-5)
    assert d16.shape == (2, 64, 64) and torch.isfinite(d16).all() and (d16 >= 0).all()


def test_points_behind_the_source_camera_are_not_candidates():
    # the target camera is 1 behind the source, both looking roughly along +z: near points of its rays are behind
    # the source camera; they project onto the epipolar line, but on the part no seen point can come from
    src, tgt = cam(), cam(rot_y(8.0), centre=(0.3, -0.1, -1.0))
    i, j = 2, 5
    pts = ray_points(tgt, (j + 0.5, i + 0.5), [0.2, 0.5, 0.9, 1.5, 3.0, 20.0])
    uv, z = src.project(pts.float()[None])
    d = epipolar_distances(tgt, src, (8, 8), uv)[0, i * 8 + j]
    front, behind = z[0] > 0, z[0] < 0
    assert front.sum() >= 2 and behind.sum() >= 2
    assert d[front].max() < 1e-4
    assert d[behind].min() > 0.1
    # the whole ray behind the source camera (the target looks backwards from behind it): no candidates
    d = epipolar_distances(cam(rot_y(180.0), centre=(0.0, 0.0, -1.0)), src, (8, 8))
    assert torch.isinf(d).all() and not torch.isnan(d).any()


def test_cases_computed_by_hand():
    q, src = grid(8), cam()
    pixels = [(0, 0), (3, 2), (5, 7), (7, 4)]
    # rectified stereo: the target 0.5 to the right (+x): the point itself and the row to its right (disparity > 0)
    d = epipolar_distances(cam(centre=(0.5, 0.0, 0.0)), src, (8, 8))[0].double()
    for i, j in pixels:
        p = torch.tensor([j + 0.5, i + 0.5], dtype=torch.float64)
        expected = to_piece(q, p, direction=torch.tensor([1.0, 0.0], dtype=torch.float64)) / 8
        assert torch.allclose(d[i * 8 + j], expected, atol=1e-5), (i, j)
        right = (q[:, 1] == p[1]) & (q[:, 0] >= p[0])
        assert (d[i * 8 + j][right] < 1e-6).all()
    # moving forward (the target ahead along +z): from the epipole (the principal point) to the pixel itself
    c = torch.tensor([4.0, 4.0], dtype=torch.float64)
    d = epipolar_distances(cam(centre=(0.0, 0.0, 1.0)), src, (8, 8))[0].double()
    for i, j in pixels:
        p = torch.tensor([j + 0.5, i + 0.5], dtype=torch.float64)
        assert torch.allclose(d[i * 8 + j], to_piece(q, c, p) / 8, atol=1e-5), (i, j)
    # moving backward: from the pixel outwards, away from the principal point
    d = epipolar_distances(cam(centre=(0.0, 0.0, -1.0)), src, (8, 8))[0].double()
    for i, j in pixels:
        p = torch.tensor([j + 0.5, i + 0.5], dtype=torch.float64)
        assert torch.allclose(d[i * 8 + j], to_piece(q, p, direction=p - c) / 8, atol=1e-5), (i, j)


def test_zero_baseline_falls_back_to_the_homography_point():
    q, src = grid(8), cam()
    # identical cameras: the pixel itself; distances are pixel distances, 0 on the diagonal
    d = epipolar_distances(src, src, (8, 8))[0].double()
    assert torch.isfinite(d).all()
    assert torch.allclose(d, torch.cdist(q, q) / 8, atol=1e-5) and d.diagonal().abs().max() < 1e-6
    # float noise in the centre counts as no baseline
    near = Cameras(src.c2w.clone(), src.K, 8, 8)
    near.c2w[0, 0, 3] += 1e-7
    assert torch.allclose(epipolar_distances(near, src, (8, 8))[0].double(), d, atol=1e-6)
    # a pure rotation: the homography-mapped point K R K^-1 p
    tgt = cam(rot_y(10.0))
    K = src.K[0].double()
    H = K @ rot_y(10.0) @ torch.linalg.inv(K)
    d = epipolar_distances(tgt, src, (8, 8))[0].double()
    for i, j in [(0, 0), (3, 2), (6, 7)]:
        hp = H @ torch.tensor([j + 0.5, i + 0.5, 1.0], dtype=torch.float64)
        hp = hp[:2] / hp[2]
        assert torch.allclose(d[i * 8 + j], (q - hp).norm(dim=-1) / 8, atol=1e-5)
    # rotated by 180°: every ray points behind the source camera
    assert torch.isinf(epipolar_distances(cam(rot_y(180.0)), src, (8, 8))).all()
    # cameras without intrinsics are an error
    with pytest.raises(ValueError, match="intrinsics"):
        epipolar_distances(Cameras(src.c2w, torch.zeros(3, 3), 8, 8), src, (8, 8))


# ------------------------------------------------------------------------------------ the bias
def test_bias_values_and_gradients():
    bias = EpipolarBias(heads=2, strength=1.5, width=2.0)
    d = torch.tensor([[[0.0, 1 / 8, math.inf]]])  # map width 8: 0, 1 and inf map pixels
    out = bias(d, 8)
    assert out.shape == (1, 2, 1, 3)
    expected = torch.tensor([1.5, 1.5 * math.exp(-0.5 * (1 / 2) ** 2), 0.0])
    assert torch.allclose(out[0, 0, 0], expected) and torch.equal(out[0, 0], out[0, 1])
    out.sum().backward()
    assert torch.isfinite(bias.strength.grad).all() and torch.isfinite(bias.log_width.grad).all()
    assert (bias.strength.grad != 0).all() and (bias.log_width.grad != 0).all()
    with pytest.raises(ValueError, match="width"):
        EpipolarBias(2, width=0.0)


def test_cross_bias_goes_to_the_source_keys_only():
    g = torch.Generator().manual_seed(0)
    qkv, kv = torch.randn(2, 96, 4, 4, generator=g), torch.randn(2, 64, 4, 4, generator=g)
    bias = torch.randn(2, 2, 16, 16, generator=g)
    out = cosine_attention(qkv, heads=2, kv=kv, cross_bias=bias)
    q, k, v = normalize(qkv.reshape(2, 2, 16, 3, 16), dim=2).unbind(3)
    xk, xv = normalize(kv.reshape(2, 2, 16, 2, 16), dim=2).unbind(3)
    logits = torch.cat([q.transpose(-1, -2) @ k / 4, q.transpose(-1, -2) @ xk / 4 + bias], -1)
    w = logits.softmax(-1)
    assert torch.allclose(out, (torch.cat([v, xv], -1) @ w.transpose(-1, -2)).reshape(2, 32, 4, 4), atol=1e-5)
    assert torch.equal(cosine_attention(qkv, 2, kv), cosine_attention(qkv, 2, kv, None))
    with pytest.raises(ValueError, match="cross_bias"):
        cosine_attention(qkv, 2, kv, bias[:, :, :, :4])


# ------------------------------------------------------------------------------------ the model
def test_option_off_is_unchanged_and_on_changes_the_output():
    src, tgt = pair()
    cond = ViewCond(torch.rand(2, 3, 16, 16) * 2 - 1, src, tgt)
    x, sigma = torch.randn(2, 3, 16, 16), torch.tensor([0.4, 3.0])
    default, off = tiny(0), tiny(0, epipolar_bias=False)
    on, on0 = tiny(0, epipolar_bias=True), tiny(0, epipolar_bias=True, epipolar_strength=0.0)
    assert list(default.state_dict()) == list(off.state_dict())  # no new keys: old checkpoints load
    for m in (on, on0):
        missing, unexpected = m.load_state_dict(off.state_dict(), strict=False)
        assert not unexpected and missing and all(".epipolar." in k for k in missing)
    blocks = [n for n, b in on.net.unet.attention_blocks() if b.epipolar is not None]
    assert blocks == [n for n, _ in on.net.unet.attention_blocks()]  # every cross block of the denoiser
    assert not any("epipolar" in k for k in on.net.encoder.state_dict())
    with torch.no_grad():
        y_default, y_off = default.edm2_denoiser()(x, sigma, cond), off.edm2_denoiser()(x, sigma, cond)
        y_on, y_on0 = on.edm2_denoiser()(x, sigma, cond), on0.edm2_denoiser()(x, sigma, cond)
    assert torch.equal(y_default, y_off)
    assert (y_on - y_off).abs().max() > 1e-3 and torch.isfinite(y_on).all()
    assert torch.allclose(y_on0, y_off, atol=1e-5)  # strength 0 = no bias
    # identical source and target cameras are allowed
    with torch.no_grad():
        same = on.edm2_denoiser()(x, sigma, ViewCond(cond.images, src, src))
    assert torch.isfinite(same).all()
    # Plücker maps and the bias together
    with torch.no_grad():
        y = tiny(0, camera="plucker", epipolar_bias=True).edm2_denoiser()(x, sigma, cond)
    assert torch.isfinite(y).all()
    # the network called without the cameras' distances
    with pytest.raises(ValueError, match="epipolar"):
        on.net(x, sigma.log() / 4, cond.images, torch.zeros(2, 20))
    dist = EpipolarDistances(tgt, src)
    assert dist(8, 8) is dist(8, 8) and dist(8, 8).shape == (2, 64, 64)


def test_bad_configs_and_reference_weights():
    with pytest.raises(ValueError, match="epipolar_bias needs a conditional model"):
        build_method("vivid", {**TINY, "epipolar_bias": True, "conditional": False})
    with pytest.raises(ValueError, match="epipolar_width"):
        build_method("vivid", {**TINY, "epipolar_bias": True, "epipolar_width": 0.0})
    with pytest.raises(ReferenceKeyError, match="not weight-compatible"):
        infer_vivid_fields({"unet.dec.8x8_in0.epipolar_mixing": torch.zeros(4, 2)})


def test_gradient_reaches_the_bias_and_two_training_steps(tmp_path):
    from vantage.data import PairDataset, PairSampler, SyntheticDataset, collate_pairs
    from vantage.train import DataSpec, TrainConfig, Trainer, open_training_data, read_stats

    m = tiny(0, epipolar_bias=True).train()
    ds = SyntheticDataset(split="train", num_objects=2, views=6, resolution=16)
    pairs = PairDataset(ds, PairSampler(min_cond=1, max_cond=1), seed=0)
    batch = collate_pairs([pairs[i] for i in range(2)])
    loss = m.loss(batch, torch.Generator().manual_seed(1))["loss"]
    loss.backward()
    biases = [b.epipolar for _, b in m.net.unet.attention_blocks()]
    assert biases and all(b is not None for b in biases)
    for b in biases:
        for p in (b.strength, b.log_width):
            assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0

    torch.manual_seed(0)
    method = build_method("vivid", {**TINY, "epipolar_bias": True})
    data = DataSpec.parse("synthetic", options={"num_objects": 4, "views": 6})
    scenes = open_training_data(data, 16)
    cfg = TrainConfig(duration=2, batch=2, num_workers=0, progress=False, tensorboard=False, log_every=1,
                      ckpt_every=0, sample_every=0, ema_halflife="4img")
    result = Trainer(method, scenes, cfg, tmp_path / "run", data=data, preset="vivid", log=lambda s: None).fit()
    stats = read_stats(tmp_path / "run")
    assert result.step == 2 and [r["step"] for r in stats] == [1, 2]
    assert all(r["loss"] is not None and math.isfinite(r["loss"]) and r["skipped_steps"] == 0 for r in stats)
    back = load_checkpoint(tmp_path / "run")
    assert back.config.epipolar_bias and any(".epipolar.strength" in k for k in back.state_dict())


def test_sr_stage_and_command_line_settings():
    from vantage.methods import parse_overrides
    from vantage.methods.vivid import VIVIDConfig
    from vantage.methods.vivid_sr import SRCond, upsample_bilinear

    values = parse_overrides(["epipolar_bias=true", "epipolar_strength=0.5", "epipolar_width=2"], VIVIDConfig)
    assert values == {"epipolar_bias": True, "epipolar_strength": 0.5, "epipolar_width": 2.0}
    torch.manual_seed(0)
    sr = build_method("vivid-sr", {**TINY, "low_resolution": 8, "epipolar_bias": True, "epipolar_width": 2.0})
    assert all(torch.allclose(b.epipolar.log_width, torch.full((1,), math.log(2.0)))
               for _, b in sr.net.unet.attention_blocks())
    src, tgt = pair(b=1)
    x0 = torch.rand(1, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        out = sr.eval().edm2_denoiser()(torch.randn(1, 3, 16, 16), torch.tensor([0.5]),
                                        SRCond(x0, src, tgt, low_res=upsample_bilinear(x0[..., ::2, ::2], 16)))
    assert out.shape == (1, 3, 16, 16) and torch.isfinite(out).all()
