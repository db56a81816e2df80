"""The ADM/SR3 UNet family: shapes, conditioning modes, zero-init, gradients, the ViewFusion fixture."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from test_nn_blocks import perturb_zero_init_

from vantage.methods.viewfusion_convert import map_reference_state
from vantage.nn import UNet, UNetConfig, count_parameters, viewfusion_unet_config

FIXTURE = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "reference" / "viewfusion_unet.safetensors"

pytestmark = pytest.mark.usefixtures("single_thread")


TINY = dict(resolution=16, ch=16, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(8,), num_heads=2,
            norm_groups=8)


def _run(cfg: UNetConfig, B: int = 2, **kw) -> torch.Tensor:
    net = UNet(cfg)
    x = torch.randn(B, cfg.in_channels, cfg.resolution, cfg.resolution)
    return net(x, torch.rand(B) * 1000, **kw)


@pytest.mark.parametrize("extra", [
    dict(),                                                                  # ADM-like, FiLM
    dict(emb_mode="bias", block_emb_act=False, qkv_bias=False, zero_init=False),  # SR3-like
    dict(resample="resblock", skip_rescale=True, head_channels=8),          # BigGAN up/down, 3DiM residuals
    dict(ch_mult=(1, 2, 2), attn_resolutions=(16, 4), mid_attention=False, dropout=0.1, out_channels=6),
])
def test_shapes(extra):
    cfg = UNetConfig(**{**TINY, **extra})
    assert _run(cfg).shape == (2, cfg.out_channels, 16, 16)


def test_conditioning_inputs_shapes_and_effect():
    cfg = UNetConfig(**TINY, concat_channels=3, cond_dim=4, cond_embed="linear", spatial_channels=5)
    net = perturb_zero_init_(UNet(cfg))
    B = 2
    x, t = torch.randn(B, 3, 16, 16), torch.tensor([10.0, 500.0])
    concat, vec, sp = torch.randn(B, 3, 16, 16), torch.randn(B, 4), torch.randn(B, 5, 16, 16)
    out = net(x, t, cond_vec=vec, spatial=sp, concat=concat)
    assert out.shape == (B, 3, 16, 16)
    for kw in (dict(cond_vec=vec + 1), dict(spatial=sp + 1), dict(concat=concat + 1)):
        args = dict(cond_vec=vec, spatial=sp, concat=concat) | kw
        assert not torch.allclose(net(x, t, **args), out, atol=1e-4)
    # per-level maps given directly equal the strided-conv path
    maps = net.spatial_embed(sp)
    assert torch.allclose(net(x, t, cond_vec=vec, spatial=maps, concat=concat), out, atol=1e-6)


def test_input_errors_name_the_tensor():
    net = UNet(UNetConfig(**TINY, cond_dim=2))
    x = torch.randn(2, 3, 16, 16)
    with pytest.raises(ValueError, match=r"x must have shape \(2, 3, 16, 16\)"):
        net(torch.randn(2, 3, 8, 8), torch.zeros(2), cond_vec=torch.zeros(2, 2))
    with pytest.raises(ValueError, match=r"cond_vec is required"):
        net(x, torch.zeros(2))
    with pytest.raises(ValueError, match=r"emb_input must have shape \(2,\)"):
        net(x, torch.zeros(3), cond_vec=torch.zeros(2, 2))
    with pytest.raises(ValueError, match="spatial_channels == 0"):
        net(x, torch.zeros(2), cond_vec=torch.zeros(2, 2), spatial=torch.zeros(2, 1, 16, 16))
    with pytest.raises(ValueError, match="not divisible by 2"):
        UNet(UNetConfig(**{**TINY, "resolution": 18, "ch_mult": (1, 2, 2)}))


def test_zero_init_outputs_exactly_zero():
    out = _run(UNetConfig(**TINY, spatial_channels=2), spatial=torch.randn(2, 2, 16, 16))
    assert torch.equal(out, torch.zeros_like(out))
    out = _run(UNetConfig(**TINY, zero_init=False))
    assert out.abs().max() > 0


def test_gradient_reaches_every_parameter():
    cfg = UNetConfig(**TINY, cond_dim=1, spatial_channels=2, resample="resblock")
    net = perturb_zero_init_(UNet(cfg))
    out = net(torch.randn(2, 3, 16, 16), torch.rand(2), cond_vec=torch.rand(2, 1), spatial=torch.randn(2, 2, 16, 16))
    out.square().mean().backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None or not p.grad.any()]
    assert not missing


def test_viewfusion_paper_config_structure():
    with torch.device("meta"):  # nothing allocated
        net = UNet(viewfusion_unet_config())
    # levels 64/32/16/8 with channels 64/128/192/320; attention at 16 and in the middle only
    attn_sizes = sorted({m.norm.num_channels for m in net.modules() if type(m).__name__ == "Attention"})
    assert attn_sizes == [192, 320]
    assert net.embed.mlp[0].in_features == 64 and net.embed.mlp[0].out_features == 256
    assert net.embed.mlp[2].out_features == 64
    assert count_parameters(net) == 33_947_206


@pytest.mark.skipif(not FIXTURE.exists(), reason="reference fixtures not available")
def test_matches_viewfusion_reference_unet():
    """The reference ViewFusion UNet (small fixture config) is expressible and numerically equal."""
    from safetensors.torch import load_file

    d = load_file(str(FIXTURE))
    cfg = UNetConfig(resolution=32, in_channels=6, out_channels=6, ch=16, ch_mult=(1, 2, 2), num_res_blocks=1,
                     attn_resolutions=(16,), num_heads=1, norm_groups=8, emb_freq_dim=8, emb_hidden_dim=64,
                     emb_dim=16, cond_dim=1, cond_embed="sinusoidal", emb_mode="bias", block_emb_act=False,
                     resample="conv", zero_init=False, qkv_bias=False)
    net = UNet(cfg).eval()
    assert count_parameters(net) == 263_526
    state = {k[len("state."):]: v for k, v in d.items() if k.startswith("state.")}
    net.load_state_dict(map_reference_state(state, net.state_dict(), where="fixture"), strict=True)
    with torch.no_grad():
        out = net(d["in.unet_x"], d["in.unet_gamma"], cond_vec=d["in.unet_angle"])
    assert torch.allclose(out, d["out.unet_raw"], atol=1e-5)
