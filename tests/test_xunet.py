"""The 3DiM X-UNet: shapes, zero-init, per-frame GroupNorm, cross-attention, weight sharing, pose dropout,
relative-pose invariance, frame pruning, SDPA vs naive, gradients, parameter counts, input errors."""

from __future__ import annotations

import math

import pytest
import torch
from test_nn_blocks import perturb_zero_init_

from vantage.cameras import Cameras, hemisphere_cameras
from vantage.nn import (
    Attention,
    UNetBackbone,
    XUNet,
    XUNetConfig,
    count_parameters,
    set_attention_impl,
    xunet_paper_config,
    xunet_param_count,
    xunet_small_config,
)

pytestmark = pytest.mark.usefixtures("single_thread")


def tiny(**kw) -> XUNetConfig:
    base = dict(resolution=16, ch=16, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(8,), num_heads=2,
                norm_groups=8, emb_ch=32, origin_scale=2.5)
    return XUNetConfig(**{**base, **kw})


def inputs(B: int = 3, res: int = 16, seed: int = 0, dtype: torch.dtype = torch.float32):
    g = torch.Generator().manual_seed(seed)
    cams = hemisphere_cameras(2 * B, generator=g, resolution=res)
    cams = Cameras(cams.c2w.to(dtype), cams.K.to(dtype), res, res)
    x_cond, x_noisy = torch.randn(B, 3, res, res, generator=g), torch.randn(B, 3, res, res, generator=g)
    logsnr = torch.linspace(-5.0, 5.0, B)
    return x_cond, x_noisy, logsnr, cams[:B], cams[B:]


def net_of(cfg: XUNetConfig, seed: int = 0) -> XUNet:
    torch.manual_seed(seed)
    return perturb_zero_init_(XUNet(cfg), seed).eval()


def random_rigid(seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(3, 3, generator=g, dtype=torch.float64))
    if torch.det(q) < 0:
        q[:, 0] = -q[:, 0]
    G = torch.eye(4, dtype=torch.float64)
    G[:3, :3], G[:3, 3] = q, torch.randn(3, generator=g, dtype=torch.float64)
    return G


def transformed(cams: Cameras, G: torch.Tensor) -> Cameras:
    return Cameras(G @ cams.c2w, cams.K, cams.width, cams.height)


@pytest.mark.parametrize("cfg", [
    tiny(),
    tiny(pose_mode="relative", attn_resolutions=(16, 8), dropout=0.1),
    tiny(resolution=32, ch_mult=(1, 2, 2), num_res_blocks=2, attn_resolutions=(8,), ray_octaves_origin=4),
    tiny(attn_resolutions=()),
])
def test_shapes_and_zero_init(cfg):
    net = XUNet(cfg)
    x_cond, x_noisy, logsnr, cc, ct = inputs(res=cfg.resolution)
    out = net(x_cond, x_noisy, logsnr, cc, ct)
    assert out.shape == (3, 3, cfg.resolution, cfg.resolution)
    assert torch.equal(out, torch.zeros_like(out))  # zero-initialised output conv
    assert perturb_zero_init_(net)(x_cond, x_noisy, logsnr, cc, ct).abs().max() > 1e-3


def test_target_independent_of_condition_without_attention():
    """GroupNorm is per frame: with no attention layers the target never sees the conditioning frame."""
    net = net_of(tiny(attn_resolutions=(), prune_cond_frame=False))
    x_cond, x_noisy, logsnr, cc, ct = inputs()
    ref = net(x_cond, x_noisy, logsnr, cc, ct)
    other_cams = inputs(seed=5)[3]
    out = net(10 * x_cond + 3, x_noisy, logsnr, other_cams, ct)
    assert torch.allclose(out, ref, atol=1e-6)


def test_target_depends_on_condition_through_cross_attention():
    net = net_of(tiny())
    x_cond, x_noisy, logsnr, cc, ct = inputs()
    ref = net(x_cond, x_noisy, logsnr, cc, ct)
    assert (net(10 * x_cond, x_noisy, logsnr, cc, ct) - ref).abs().amax(dim=(1, 2, 3)).min() > 1e-4


def test_concat_cond_feeds_the_condition_pixels_to_the_target_frame():
    """``concat_cond``: the target frame sees ``[x_noisy, x_cond]`` at its input even without attention,
    pixel-aligned (a change of one condition pixel changes the target output near that pixel first)."""
    cfg = tiny(attn_resolutions=(), concat_cond=True, prune_cond_frame=False)
    net = net_of(cfg)
    assert net.backbone.conv_in.weight.shape[1] == 6
    assert xunet_param_count(cfg) > xunet_param_count(tiny(attn_resolutions=(), prune_cond_frame=False))
    x_cond, x_noisy, logsnr, cc, ct = inputs()
    ref = net(x_cond, x_noisy, logsnr, cc, ct)
    assert (net(10 * x_cond, x_noisy, logsnr, cc, ct) - ref).abs().amax(dim=(1, 2, 3)).min() > 1e-4
    # the two frames still share every weight, and pruning the condition frame stays exact
    a, b = net_of(tiny(concat_cond=True)), XUNet(tiny(concat_cond=True, prune_cond_frame=False))
    b.load_state_dict(a.state_dict())
    assert torch.allclose(a(*inputs()), b.eval()(*inputs()), atol=1e-6)


def test_pruning_the_condition_frame_is_exact():
    cfg = tiny(attn_resolutions=(8,))
    a, b = net_of(cfg), XUNet(tiny(attn_resolutions=(8,), prune_cond_frame=False))
    b.load_state_dict(a.state_dict())
    args = inputs()
    assert torch.allclose(a(*args), b.eval()(*args), atol=1e-6)


def test_weights_are_shared_between_frames():
    """Parameters = one single-frame UNet + the cross-attention layers + embedders (nothing per frame)."""
    cfg = tiny(ch_mult=(1, 2, 2), attn_resolutions=(8, 4))
    net = XUNet(cfg)
    single = UNetBackbone(in_channels=3, out_channels=3, resolution=16, ch=16, ch_mult=cfg.ch_mult, num_res_blocks=1,
                          attn_resolutions=cfg.attn_resolutions, mid_attention=True, mid_res_blocks=1, num_heads=2,
                          groups=8, emb_dim=32, resample="resblock", skip_rescale=True, frames=1)
    cross = sum(count_parameters(m) for m in net.modules() if isinstance(m, Attention) and m.mode == "cross")
    n_cross = sum(1 for m in net.modules() if isinstance(m, Attention) and m.mode == "cross")
    assert n_cross == 7  # levels 8 and 4: 1 down + 2 up blocks each, plus the middle; nothing at 16
    embedders = count_parameters(net.noise_embed) + count_parameters(net.pose_embed)
    assert count_parameters(net) == count_parameters(single) + cross + embedders


def test_pose_dropout_removes_camera_dependence_per_sample():
    net = net_of(tiny())
    x_cond, x_noisy, logsnr, cc, ct = inputs()
    _, _, _, cc2, ct2 = inputs(seed=9)
    drop = torch.tensor([True, False, True])
    a = net(x_cond, x_noisy, logsnr, cc, ct, drop_pose=drop)
    b = net(x_cond, x_noisy, logsnr, cc2, ct2, drop_pose=drop)
    assert torch.allclose(a[drop], b[drop], atol=1e-6)
    assert (a[~drop] - b[~drop]).abs().max() > 1e-4
    # not dropping equals drop_pose=None
    assert torch.allclose(net(x_cond, x_noisy, logsnr, cc, ct, drop_pose=torch.zeros(3, dtype=torch.bool)),
                          net(x_cond, x_noisy, logsnr, cc, ct), atol=1e-6)


@pytest.mark.parametrize("mode", ["relative", "absolute"])
def test_relative_pose_is_invariant_to_a_global_rigid_transform(mode):
    net = net_of(tiny(pose_mode=mode))
    x_cond, x_noisy, logsnr, cc, ct = inputs(dtype=torch.float64)  # float64: see ray_pose_features
    G = random_rigid(3)
    a = net(x_cond, x_noisy, logsnr, cc, ct)
    b = net(x_cond, x_noisy, logsnr, transformed(cc, G), transformed(ct, G))
    if mode == "relative":
        assert torch.allclose(a, b, atol=1e-5)
    else:
        assert (a - b).abs().max() > 1e-3


def test_relative_mode_puts_the_condition_camera_at_identity():
    net = XUNet(tiny(pose_mode="relative"))
    _, _, _, cc, ct = inputs()
    frames = net.frame_cameras(cc, ct)
    assert torch.equal(frames.c2w[:, 0], torch.eye(4, dtype=torch.float64).expand(3, 4, 4))
    assert torch.allclose(frames.c2w[:, 1].float(), ct.relative_to(cc), atol=1e-5)


def test_sdpa_equals_naive_attention_in_the_network():
    net = net_of(tiny(attn_resolutions=(16, 8)))
    args = inputs()
    a = net(*args)
    b = set_attention_impl(net, "naive")(*args)
    assert torch.allclose(a, b, atol=1e-5)


def test_batch_independence():
    net = net_of(tiny())
    x_cond, x_noisy, logsnr, cc, ct = inputs()
    full = net(x_cond, x_noisy, logsnr, cc, ct)
    one = net(x_cond[1:2], x_noisy[1:2], logsnr[1:2], cc[1:2], ct[1:2])
    assert torch.allclose(full[1:2], one, atol=1e-5)


def test_gradient_reaches_every_parameter():
    net = perturb_zero_init_(XUNet(tiny(attn_resolutions=(16, 8))))
    out = net(*inputs())
    out.square().mean().backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None or not p.grad.any()]
    assert not missing


def test_fresh_network_gradient_only_reaches_output_conv_first():
    """Zero-init: at step 0 the loss gradient is non-zero only for the output conv (then flows on)."""
    net = XUNet(tiny())
    net(*inputs()).sub(1.0).square().mean().backward()
    nonzero = {n for n, p in net.named_parameters() if p.grad is not None and p.grad.any()}
    assert nonzero == {"backbone.conv_out.weight", "backbone.conv_out.bias"}


def test_logsnr_changes_the_output_and_scalar_broadcasts():
    net = net_of(tiny())
    x_cond, x_noisy, _, cc, ct = inputs()
    a = net(x_cond, x_noisy, torch.full((3,), -2.0), cc, ct)
    assert torch.allclose(net(x_cond, x_noisy, torch.tensor(-2.0), cc, ct), a, atol=1e-6)
    assert (net(x_cond, x_noisy, torch.full((3,), 4.0), cc, ct) - a).abs().max() > 1e-4


def test_input_errors_name_tensor_and_shape():
    net = XUNet(tiny())
    x_cond, x_noisy, logsnr, cc, ct = inputs()
    with pytest.raises(ValueError, match=r"x_cond must have shape \(B, 3, 16, 16\), got \(3, 3, 8, 8\)"):
        net(x_cond[..., :8, :8], x_noisy, logsnr, cc, ct)
    with pytest.raises(ValueError, match=r"x_noisy must have shape \(3, 3, 16, 16\)"):
        net(x_cond, x_noisy[:2], logsnr, cc, ct)
    with pytest.raises(ValueError, match=r"logsnr must have shape \(3,\)"):
        net(x_cond, x_noisy, logsnr[:2], cc, ct)
    with pytest.raises(ValueError, match=r"cam_target must have batch shape \(3,\)"):
        net(x_cond, x_noisy, logsnr, cc, ct[:2])
    with pytest.raises(ValueError, match="cam_cond has image size 32x32"):
        net(x_cond, x_noisy, logsnr, cc.resize(32), ct)
    with pytest.raises(ValueError, match=r"drop_pose must be a bool tensor of shape \(3,\)"):
        net(x_cond, x_noisy, logsnr, cc, ct, drop_pose=torch.zeros(3))
    with pytest.raises(ValueError, match="pose_mode"):
        XUNet(tiny(pose_mode="world"))


def test_paper_and_small_parameter_counts():
    paper = xunet_param_count(xunet_paper_config())  # on the meta device: nothing allocated
    assert abs(paper - 471e6) / 471e6 < 0.05, paper  # paper: ~471M
    small = xunet_param_count(xunet_small_config(64))
    assert 2e6 <= small <= 5e6 and small * 4 <= 20 * 2 ** 20  # <= 20 MB as fp32 safetensors
    assert 2e6 <= xunet_param_count(xunet_small_config(32)) <= 5e6


def test_paper_config_layout():
    cfg = xunet_paper_config()
    assert (cfg.resolution, cfg.ch, cfg.ch_mult, cfg.num_res_blocks) == (128, 256, (1, 2, 2, 4), 3)
    with torch.device("meta"):
        net = XUNet(cfg)
    attn_channels = sorted({m.norm.num_channels for m in net.modules() if isinstance(m, Attention)})
    assert attn_channels == [512, 1024]  # levels 32 (512 ch) and 16 (1024 ch); 8 is not a level at 128 px
    assert math.isclose(net.pose_embed.convs[3].stride[0], 8)
