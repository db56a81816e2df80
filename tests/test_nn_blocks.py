"""Building blocks of vantage.nn: embeddings, ray pose features, ResBlock, attention."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from vantage.cameras import Cameras
from vantage.nn import (
    Attention,
    ResBlock,
    ScalarEmbedder,
    SpatialEmbedder,
    attention_naive,
    fourier_features,
    group_norm,
    logsnr_to_cosine_time,
    ray_feature_channels,
    ray_pose_features,
    set_attention_impl,
    sinusoidal_embedding,
)

pytestmark = pytest.mark.usefixtures("single_thread")


def perturb_zero_init_(module: nn.Module, seed: int = 0) -> nn.Module:
    """Re-initialise every all-zero conv/linear (the zero-init layers) and randomise GroupNorm."""
    torch.manual_seed(seed)
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)) and not m.weight.any():
            m.reset_parameters()
        if isinstance(m, nn.GroupNorm):
            with torch.no_grad():
                m.weight.normal_(1.0, 0.1)
                m.bias.normal_(0.0, 0.1)
    return module


# ---------------------------------------------------------------------------- embeddings
def test_sinusoidal_embedding_orders_and_frequencies():
    x = torch.tensor([0.0, 3.0, 250.0])
    e = sinusoidal_embedding(x, 8)  # SR3 / ViewFusion: sin first, 10000^(-k/4)
    freqs = torch.tensor([10000.0 ** (-k / 4) for k in range(4)])
    assert torch.allclose(e[:, :4], torch.sin(x[:, None] * freqs), atol=1e-6)
    assert torch.allclose(e[:, 4:], torch.cos(x[:, None] * freqs), atol=1e-6)
    adm = sinusoidal_embedding(x, 8, order="cos_sin", scale=2.0)
    assert torch.allclose(adm[:, :4], torch.cos(2 * x[:, None] * freqs), atol=1e-5)
    ddpm = sinusoidal_embedding(x, 8, freq_shift=1.0)  # 10000^(-k/3): last frequency is 1e-4
    assert torch.allclose(ddpm[:, 3], torch.sin(x * 1e-4), atol=1e-6)
    odd = sinusoidal_embedding(x, 7)
    assert odd.shape == (3, 7) and (odd[:, -1] == 0).all()
    assert sinusoidal_embedding(torch.zeros(2, 3), 6).shape == (2, 3, 6)


def test_scalar_embedder_concatenates_inputs_in_order():
    emb = ScalarEmbedder(2, 8, 16, 4)
    x = torch.tensor([[0.3, 1.2], [0.9, 4.0]])
    enc = emb.encode(x)
    assert torch.allclose(enc[:, :8], sinusoidal_embedding(x[:, 0], 8))
    assert torch.allclose(enc[:, 8:], sinusoidal_embedding(x[:, 1], 8))
    assert emb(x).shape == (2, 4)
    with pytest.raises(ValueError, match=r"\(B, 2\)"):
        emb(torch.zeros(2, 3))


def test_fourier_features_layout():
    x = torch.tensor([[0.25, -0.5, 0.125]], dtype=torch.float64)
    f = fourier_features(x, 3)
    assert f.shape == (1, 3 * 7)
    assert torch.equal(f[0, :3], x[0])
    for k in range(3):
        for a in range(3):
            arg = 2.0 ** k * math.pi * x[0, a].item()
            assert f[0, 3 + 3 * k + a].item() == pytest.approx(math.sin(arg), abs=1e-12)
            assert f[0, 12 + 3 * k + a].item() == pytest.approx(math.cos(arg), abs=1e-12)
    assert fourier_features(x, 2, include_input=False).shape == (1, 12)


def test_ray_pose_features_channels_and_known_pixel():
    assert ray_feature_channels() == 144 == 3 * (1 + 2 * 15) + 3 * (1 + 2 * 8)
    # float64 cameras: the 2^14·π octave turns float32 rounding of 0.3 into a 3e-4 phase error
    c2w = torch.eye(4, dtype=torch.float64)
    c2w[:3, 3] = torch.tensor([0.3, -0.2, 1.5], dtype=torch.float64)
    K = torch.tensor([[10.0, 0.0, 4.0], [0.0, 10.0, 3.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    cams = Cameras(c2w[None], K[None], 8, 6)
    f = ray_pose_features(cams, origin_scale=2.0)
    assert f.shape == (1, 144, 6, 8) and f.dtype == torch.float32
    i, j = 1, 6  # pixel centre (u, v) = (6.5, 1.5): camera ray (0.25, -0.15, 1), identity rotation
    d = torch.tensor([0.25, -0.15, 1.0], dtype=torch.float64)
    d = d / d.norm()
    o = torch.tensor([0.15, -0.1, 0.75], dtype=torch.float64)  # origin / origin_scale
    px = f[0, :, i, j].double()
    assert torch.allclose(px[0:3], o, atol=1e-6)
    assert torch.allclose(px[93:96], d, atol=1e-6)
    for k in (0, 4, 14):
        assert torch.allclose(px[3 + 3 * k: 6 + 3 * k], torch.sin(2.0 ** k * math.pi * o), atol=1e-6)
        assert torch.allclose(px[48 + 3 * k: 51 + 3 * k], torch.cos(2.0 ** k * math.pi * o), atol=1e-6)
    for k in (0, 7):
        assert torch.allclose(px[96 + 3 * k: 99 + 3 * k], torch.sin(2.0 ** k * math.pi * d), atol=1e-6)
        assert torch.allclose(px[120 + 3 * k: 123 + 3 * k], torch.cos(2.0 ** k * math.pi * d), atol=1e-6)
    # origins are the same at every pixel; directions are not
    assert torch.allclose(f[0, :93, 0, 0], f[0, :93, 5, 7]) and not torch.allclose(f[0, 93:, 0, 0], f[0, 93:, 5, 7])
    assert ray_pose_features(Cameras.stack([cams, cams], 1)).shape == (1, 2, 144, 6, 8)


def test_logsnr_to_cosine_time():
    t = logsnr_to_cosine_time(torch.tensor([-30.0, 0.0, 20.0]))
    assert t[1].item() == pytest.approx(0.5, abs=1e-6)
    assert t[0].item() == pytest.approx((2 / math.pi) * math.atan(math.exp(10.0)), abs=1e-6)  # clipped at -20
    assert 0 < t[2].item() < 1e-4


# ---------------------------------------------------------------------------- ResBlock
def test_resblock_zero_init_is_skip_and_rescale():
    x = torch.randn(2, 16, 8, 8)
    blk = ResBlock(16, 16, emb_dim=8, groups=4)
    assert torch.equal(blk(x, torch.randn(2, 8)), x)
    blk = ResBlock(16, 32, emb_dim=8, groups=4, skip_rescale=True)
    assert torch.allclose(blk(x, torch.randn(2, 8)), blk.skip(x) / math.sqrt(2), atol=1e-6)
    down = ResBlock(16, 16, emb_dim=8, groups=4, resample="down")
    assert down(x, torch.randn(2, 8)).shape == (2, 16, 4, 4)
    up = ResBlock(16, 16, emb_dim=8, groups=4, resample="up")
    assert up(x, torch.randn(2, 8, 16, 16)).shape == (2, 16, 16, 16)


@pytest.mark.parametrize("mode", ["bias", "film"])
def test_resblock_spatial_embedding_generalises_vector(mode):
    blk = perturb_zero_init_(ResBlock(8, 16, emb_dim=6, emb_mode=mode, groups=4))
    x, e = torch.randn(2, 8, 5, 5), torch.randn(2, 6)
    const_map = e[:, :, None, None].expand(2, 6, 5, 5)
    assert torch.allclose(blk(x, e), blk(x, const_map), atol=1e-5)
    varying = const_map.clone()
    varying[:, :, 0, 0] += 1.0
    diff = (blk(x, varying) - blk(x, e)).abs().sum(1)[0]
    assert diff[0, 0] > 1e-4 and diff[4, 4] < diff[0, 0]  # a per-pixel signal acts locally first


def test_resblock_groupnorm_is_per_frame():
    """Frames stacked into the batch never share GroupNorm statistics."""
    blk = perturb_zero_init_(ResBlock(8, 8, emb_dim=4, groups=4))
    x, e = torch.randn(4, 8, 6, 6), torch.randn(4, 4)
    y = x.clone()
    y[0::2] = y[0::2] * 10 + 3  # change the statistics of frame 0 of each sample
    assert torch.allclose(blk(x, e)[1::2], blk(y, e)[1::2], atol=1e-6)


def test_group_norm_error_names_numbers():
    with pytest.raises(ValueError, match="48 channels are not divisible by 32 groups"):
        group_norm(48, 32)


# ---------------------------------------------------------------------------- attention
def test_sdpa_equals_naive_attention():
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(3, 4, 50, 16, generator=g) for _ in range(3))
    ref = attention_naive(q, k, v)
    out = torch.nn.functional.scaled_dot_product_attention(q, k, v)
    assert torch.allclose(out, ref, atol=1e-5)
    explicit = torch.softmax(q @ k.transpose(-1, -2) / 4.0, -1) @ v
    assert torch.allclose(ref, explicit, atol=1e-5)


@pytest.mark.parametrize("mode", ["self", "cross"])
def test_attention_module_sdpa_vs_naive(mode):
    attn = perturb_zero_init_(Attention(32, num_heads=4, groups=8, frames=2, mode=mode))
    x = torch.randn(4, 32, 6, 6)
    a = attn(x)
    b = set_attention_impl(attn, "naive")(x)
    assert attn.impl == "naive" and torch.allclose(a, b, atol=1e-5)


def test_cross_attention_attends_to_the_other_frame():
    attn = perturb_zero_init_(Attention(16, num_heads=2, groups=4, frames=2, mode="cross"))
    x = torch.randn(4, 16, 4, 4)
    out = attn(x)
    # manual: frame 0 of sample 1 (row 2) with keys/values from frame 1 (row 3)
    n = attn.norm(x)
    qkv = attn.qkv(n).reshape(4, 3, 2, 8, 16)
    q, k, v = qkv[2, 0].transpose(-1, -2), qkv[3, 1].transpose(-1, -2), qkv[3, 2].transpose(-1, -2)
    h = attention_naive(q, k, v).transpose(-1, -2).reshape(1, 16, 4, 4)
    assert torch.allclose(out[2:3], x[2:3] + attn.out(h), atol=1e-5)
    # self-attention of a frame ignores the other frame entirely
    self_attn = perturb_zero_init_(Attention(16, num_heads=2, groups=4, frames=2, mode="self"))
    y = x.clone()
    y[3] = torch.randn(16, 4, 4)
    assert torch.allclose(self_attn(x)[2], self_attn(y)[2], atol=1e-6)
    assert not torch.allclose(attn(x)[2], attn(y)[2], atol=1e-3)


def test_attention_argument_errors():
    with pytest.raises(ValueError, match="frames == 2"):
        Attention(16, groups=4, mode="cross")
    with pytest.raises(ValueError, match="heads"):
        Attention(16, num_heads=3, groups=4)
    with pytest.raises(ValueError, match="impl"):
        set_attention_impl(nn.Sequential(), "flash")


def test_spatial_embedder_level_sizes():
    maps = SpatialEmbedder(5, 7, 4)(torch.randn(2, 5, 32, 32))
    assert [tuple(m.shape) for m in maps] == [(2, 7, 32 // 2 ** l, 32 // 2 ** l) for l in range(4)]
