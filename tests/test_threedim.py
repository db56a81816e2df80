"""3DiM: config and presets, the training loss (finite, overfits a fixed batch), pose dropout, the
single-view denoiser with and without CFG, sampling σ's, preview, and an orbit with a tiny X-UNet."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from helpers import pair_batch as batch
from helpers import randomize

from vantage.cameras import orbit_cameras
from vantage.data.formats import open_dataset
from vantage.data.pairs import PairDataset, collate_pairs
from vantage.data.testing import ToyDataset
from vantage.methods import all_presets, build_method, method_from_json
from vantage.methods.base import ViewCond, config_from_dict
from vantage.methods.threedim import ThreeDiM, ThreeDiMConfig, xunet_config
from vantage.nn.xunet import xunet_param_count
from vantage.sampling import autoregressive_orbit

#: a tiny X-UNet (about 0.2M parameters) that runs a training step in ~0.1 s on a CPU
TINY = dict(resolution=16, ch=16, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(8,), num_heads=2, emb_ch=32,
            norm_groups=8, ray_octaves_origin=4, ray_octaves_dir=2, default_sampler="euler", default_steps=3,
            preview_steps=2, preview_count=2)


def tiny(**over) -> ThreeDiM:
    torch.manual_seed(0)
    return build_method("3dim", {**TINY, **over})


def test_presets_and_config():
    presets = all_presets()
    for name in ("3dim-shapes32", "3dim-shapes64", "3dim-shapes64-relative", "3dim-srn128"):
        assert presets[name][0] == "3dim"
    srn = config_from_dict(ThreeDiMConfig, presets["3dim-srn128"][1])
    assert (srn.resolution, srn.ch, srn.ch_mult, srn.num_res_blocks, srn.attn_resolutions, srn.pose_mode) == (
        128, 256, (1, 2, 2, 4), 3, (8, 16, 32), "absolute")
    assert (srn.default_guidance, srn.default_steps, srn.logsnr_min, srn.logsnr_max, srn.pose_dropout) == (
        3.0, 256, -20.0, 20.0, 0.1)
    assert 400e6 < xunet_param_count(xunet_config(srn)) < 520e6  # paper: ~471M
    small = config_from_dict(ThreeDiMConfig, presets["3dim-shapes32"][1])
    assert xunet_param_count(xunet_config(small)) * 4 <= 20 * 2**20  # the default model fits 20 MB in fp32
    assert config_from_dict(ThreeDiMConfig, presets["3dim-shapes64-relative"][1]).pose_mode == "relative"
    with pytest.raises(ValueError, match="pose_mode"):
        ThreeDiMConfig(pose_mode="sideways")
    with pytest.raises(ValueError, match="pose_dropout"):
        ThreeDiMConfig(pose_dropout=1.0)
    m = tiny()
    again = method_from_json(m.to_json())
    assert isinstance(again, ThreeDiM) and again.config == m.config
    assert m.pair_sampler().min_cond == m.pair_sampler().max_cond == 1 and m.pair_sampler().mode == "random"


def test_loss_finite_and_overfits_a_fixed_batch():
    m = tiny()
    b = batch()
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)
    losses = []
    for _ in range(20):
        out = m.loss(b, torch.Generator().manual_seed(1))  # the same t, ε and dropout mask every step
        assert set(out) >= {"loss", "pose_dropped"} and torch.isfinite(out["loss"])
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        losses.append(float(out["loss"].detach()))
    assert losses[-1] < 0.6 * losses[0], losses


def test_loss_draws_the_noise_level_and_rejects_wrong_sizes():
    m = tiny()
    b = batch()
    l1 = m.loss(b, torch.Generator().manual_seed(1))["loss"]
    l2 = m.loss(b, torch.Generator().manual_seed(1))["loss"]
    l3 = m.loss(b, torch.Generator().manual_seed(2))["loss"]
    assert torch.equal(l1, l2) and not torch.equal(l1, l3)
    with pytest.raises(ValueError, match="16x16"):
        m.loss(batch(res=8))


def test_pose_dropout_is_fresh_each_step_at_the_configured_rate():
    m = tiny(pose_dropout=0.1)
    g = torch.Generator().manual_seed(0)
    first, second = m.pose_dropout_mask(512, g), m.pose_dropout_mask(512, g)  # two consecutive steps
    assert not torch.equal(first, second)
    assert not torch.equal(m.pose_dropout_mask(512, torch.Generator().manual_seed(1)),
                           m.pose_dropout_mask(512, torch.Generator().manual_seed(2)))
    n = 40000
    rate = float(m.pose_dropout_mask(n, torch.Generator().manual_seed(3)).float().mean())
    assert abs(rate - 0.1) < 5 * math.sqrt(0.1 * 0.9 / n)
    assert not tiny(pose_dropout=0.0).pose_dropout_mask(1000, g).any()
    # the loss hands its mask to the network
    seen = []
    net_forward = m.net.forward
    m.net.forward = lambda *a, drop_pose=None: (seen.append(drop_pose), net_forward(*a, drop_pose=drop_pose))[1]
    m.config.pose_dropout = 0.5
    out = m.loss(batch(8), torch.Generator().manual_seed(4))
    assert seen[-1] is not None and seen[-1].dtype == torch.bool and seen[-1].shape == (8,)
    assert float(out["pose_dropped"]) == float(seen[-1].float().mean())


def _cond(B: int = 2, elevation: float = 30.0) -> ViewCond:
    cams = orbit_cameras(4, resolution=16, elevation_deg=elevation)
    g = torch.Generator().manual_seed(5)
    return ViewCond(torch.rand(B, 3, 16, 16, generator=g) * 2 - 1, cams[:B], cams[2:2 + B])


def test_single_view_denoiser_cfg_and_pose_drop():
    m = randomize(tiny()).eval()
    plain = m.single_view_denoiser(clip_x0=False)
    c = _cond()
    x = torch.randn(2, 3, 16, 16) * 2
    s = torch.tensor([2.0, 0.5])
    with torch.no_grad():
        d = plain(x, s, c)
        assert torch.equal(m.single_view_denoiser(0.0, clip_x0=False)(x, s, c), d)  # CFG weight 0 = plain
        assert torch.equal(plain(x, torch.zeros(2), c), x)  # D(x, 0) = x
        drop = torch.ones(2, dtype=torch.bool)
        d_u = plain(x, s, ViewCond(c.images, c.source, c.target, drop))
        other = _cond(elevation=60.0)  # different cameras, same images
        d_u2 = plain(x, s, ViewCond(c.images, other.source, other.target, drop))
        assert torch.allclose(d_u, d_u2, atol=1e-6)  # pose dropped: cameras are ignored
        assert not torch.allclose(d, plain(x, s, ViewCond(c.images, other.source, other.target)), atol=1e-4)
        w = 3.0
        guided = m.single_view_denoiser(w, clip_x0=False)(x, s, c)
        assert torch.allclose(guided, d_u + (1 + w) * (d - d_u), atol=1e-5)  # (1+w)ε_c − wε_u
        clipped = m.single_view_denoiser(w)(x, s, c)
        assert clipped.abs().max() <= 1.0 and torch.allclose(clipped, guided.clamp(-1, 1))
        # the unguided denoiser clips by default too (config.clip_x0), as the paper's sampler does
        assert torch.allclose(m.single_view_denoiser()(x, s, c), d.clamp(-1, 1))


def test_heun_samples_on_an_edm_grid():
    """Heun's trapezoidal correction of the step from σ = e^10 to ~20 blows up the change of x̂0 over that step;
    the VP methods give Heun EDM's grid from σ = 80 instead (the other samplers keep the uniform-t grid). With
    the exact denoiser of N(0, s²) data (x̂0 = x·s²/(σ² + s²)) the probability-flow ODE maps noise to samples
    of std s: Heun gets that on its grid and not on the uniform-t one."""
    from vantage.diffusion.samplers import get_sampler
    from vantage.methods.vp_view import HEUN_SIGMA_MAX

    m = tiny()
    t_grid, heun = m.sampling_sigmas(16), m.sampling_sigmas(16, "heun")
    assert math.isclose(float(t_grid[0]), math.exp(10), rel_tol=1e-4)
    assert math.isclose(float(heun[0]), HEUN_SIGMA_MAX, rel_tol=1e-6) and heun[-1] == 0 and heun.shape == (17,)
    assert math.isclose(float(heun[-2]), float(t_grid[-2]), rel_tol=1e-5) and (heun[1:] < heun[:-1]).all()
    assert m.sampling_sigmas(1, "heun").tolist() == [HEUN_SIGMA_MAX, 0.0]  # one step: from σ_max to 0
    for name in ("ddpm", "ddim", "euler", "euler_ancestral", "dpmpp_2m", "lms", "dpm_2"):
        assert torch.equal(m.sampling_sigmas(16, name), t_grid), name

    s = 0.5
    def den(x, sigma, cond=None):  # noqa: E306
        return x * s**2 / (sigma**2 + s**2)

    g = torch.Generator().manual_seed(0)
    noise = torch.randn(20000, generator=g, dtype=torch.float64)
    stds = {}
    for label, sig in (("heun grid", heun), ("uniform t", t_grid)):
        sig = sig.double()
        stds[label] = float(get_sampler("heun")(den, noise * sig[0], sig).std())
    assert abs(stds["heun grid"] / s - 1) < 0.05, stds
    assert abs(stds["uniform t"] / s - 1) > 0.5, stds


def test_sampling_sigmas_preview_and_orbit():
    m = randomize(tiny(), std=0.02)
    sig = m.sampling_sigmas(8)
    assert sig.shape == (9,) and sig[-1] == 0 and (sig[1:] < sig[:-1]).all()
    assert math.isclose(float(sig[0]), math.exp(10), rel_tol=1e-4)  # logSNR = −20 at t = 1
    b = batch()
    prev = m.preview(b, torch.Generator().manual_seed(0))
    assert prev.shape == (2, 3, 16, 16) and torch.isfinite(prev).all() and prev.abs().max() <= 1
    assert m.training  # preview restores the mode
    obj = ToyDataset(1, 8, 16).load(0)
    res = autoregressive_orbit(m, obj.select([0]), obj.cameras[:4], strategy="stochastic", steps=2, seed=0)
    assert res.images.shape == (1, 4, 3, 16, 16) and torch.isfinite(res.images).all()
    assert res.generated[0].tolist() == [False, True, True, True]  # view 0 is the input
    assert res.nfe == 3 * 2


SRN = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "real" / "srn_format"


@pytest.mark.skipif(not SRN.is_dir(), reason="SRN-format fixture not available")
def test_trains_and_samples_on_srn_format_data():
    m = randomize(tiny(), std=0.02)
    scenes = open_dataset(SRN, resolution=16)  # the real 128x128 SRN layout, read at the model's size
    pairs = PairDataset(scenes, m.pair_sampler(), samples_per_scene=2)
    b = collate_pairs([pairs[i] for i in range(2)])
    out = m.loss(b, torch.Generator().manual_seed(0))
    assert torch.isfinite(out["loss"])
    obj = scenes.load(0)
    res = autoregressive_orbit(m, obj.select([0]), obj.cameras[1:3], order="alternating", steps=2, seed=1)
    assert res.generated.all() and torch.isfinite(res.images).all()


def test_v_prediction_loss_target_and_denoiser_agree():
    """With ``prediction="v"`` the loss target is v = sqrt(ᾱ)ε − sqrt(1−ᾱ)x0 and the denoiser inverts it:
    a network that outputs the true v gives zero loss and recovers x0 exactly (even at λ = −20, where
    ε-prediction would amplify errors by e^10)."""
    from vantage.diffusion.losses import vp_training_inputs

    m = tiny(prediction="v")
    assert ThreeDiMConfig().prediction == "eps"  # the paper's objective stays the default
    with pytest.raises(ValueError, match="prediction"):
        ThreeDiMConfig(prediction="x0")
    b = batch()
    x_cond, cam_cond, x0, cam_tgt = m._unpack(b)
    tr = vp_training_inputs(x0, m.schedule, noise_cond="logsnr", prediction="v",
                            generator=torch.Generator().manual_seed(1))
    oracle_v = tr.target.clone()
    m.net.forward = lambda *a, drop_pose=None: oracle_v  # the perfect v-network for this draw
    assert float(m.loss(b, torch.Generator().manual_seed(1))["loss"]) < 1e-12
    # the denoiser: x_σ = x0 + σ ε with σ from the same λ; the perfect v gives back x0
    lam = tr.noise_input.double()
    sigma = torch.exp(-lam / 2)
    eps = (tr.x_in.double() - torch.sigmoid(lam).sqrt().view(-1, 1, 1, 1) * x0.double()) / \
        torch.sigmoid(-lam).sqrt().view(-1, 1, 1, 1)
    x_sigma = x0.double() + sigma.view(-1, 1, 1, 1) * eps
    den = m.single_view_denoiser(None, clip_x0=False)
    m.net.forward = lambda *a, drop_pose=None: oracle_v.double()
    x0_hat = den(x_sigma, sigma, ViewCond(x_cond, cam_cond, cam_tgt))
    torch.testing.assert_close(x0_hat, x0.double(), atol=1e-6, rtol=0)
