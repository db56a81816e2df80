"""VIVID: EDM2 magnitude-preserving layers, the 20-D camera vector, the loss, guidance by a second network, the
reference fixtures (via `vantage convert vivid`), checkpoints and `vantage sample`."""

from __future__ import annotations

import json
import math

import pytest
import torch
from helpers import VIVID_TINY as TINY
from helpers import ring_pair as pair
from helpers import tiny_vivid as tiny
from PIL import Image
from reference import REF, load_reference
from safetensors.torch import save_file

from vantage.cameras import Cameras
from vantage.cli.main import main
from vantage.methods import build_method
from vantage.methods.base import ViewCond
from vantage.methods.vivid import VIVID
from vantage.methods.vivid_camera import camera_vector, normalize_camera_vector, plucker_maps
from vantage.nn.mp import MPConv, MPFourier, cosine_attention, mp_cat, mp_silu, mp_sum, normalize
from vantage.train.checkpoint import load_checkpoint, save_checkpoint

pytestmark = pytest.mark.usefixtures("single_thread")


# ------------------------------------------------------------------------------------ MP layers
def test_mp_layers_preserve_magnitude():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 32, 16, 16, generator=g)
    torch.manual_seed(1)
    for layer in (MPConv(32, 48, (3, 3)), MPConv(32, 16, (1, 1))):
        assert abs(layer(x).std().item() - 1) < 0.05
    v = torch.randn(4096, 64, generator=g)
    assert abs(MPConv(64, 64)(v).std().item() - 1) < 0.05
    assert abs(mp_silu(x).square().mean().sqrt().item() - 1) < 0.02
    y = torch.randn(x.shape, generator=g)
    assert abs(mp_sum(x, y, 0.3).std().item() - 1) < 0.02
    cat = mp_cat(x[:, :8], y, t=0.5)  # 8 + 32 channels, each part half the energy
    assert cat.shape[1] == 40 and abs(cat.square().mean().item() - 1) < 0.02
    assert abs(cat[:, :8].square().sum(1).mean() / cat[:, 8:].square().sum(1).mean() - 1) < 0.05
    assert abs(MPFourier(128)(torch.randn(4096, generator=g)).std().item() - 1) < 0.05
    assert torch.allclose(normalize(x).square().mean(dim=(1, 2, 3)), torch.ones(64), atol=1e-3)
    qkv, kv = torch.randn(2, 96, 4, 4, generator=g), torch.randn(2, 64, 2, 2, generator=g)
    out = cosine_attention(qkv, heads=2, kv=kv)
    # explicit joint attention per head over [own keys, cross keys], with unit-RMS q, k, v
    q, k, v = normalize(qkv.reshape(2, 2, 16, 3, 16), dim=2).unbind(3)
    xk, xv = normalize(kv.reshape(2, 2, 16, 2, 4), dim=2).unbind(3)
    k, v = torch.cat([k, xk], -1), torch.cat([v, xv], -1)
    w = (q.transpose(-1, -2) @ k / 4).softmax(-1)
    assert torch.allclose(out, (v @ w.transpose(-1, -2)).reshape(2, 32, 4, 4), atol=1e-5)


def test_forced_weight_normalisation():
    torch.manual_seed(0)
    conv = MPConv(8, 4, (3, 3))
    with torch.no_grad():
        conv.weight.mul_(5.0)
    x = torch.randn(2, 8, 6, 6)
    conv.eval()
    before = conv.weight.detach().clone()
    y_eval = conv(x)
    assert torch.equal(conv.weight, before)  # eval: the stored weight is left alone
    conv.train()
    y_train = conv(x)
    rms = conv.weight.detach().reshape(4, -1).square().mean(1).sqrt()
    assert torch.allclose(rms, torch.ones(4), atol=1e-3)  # forced onto the unit-RMS sphere
    assert torch.allclose(y_eval, y_train, atol=1e-3)  # the output does not depend on the weight scale (up to ε)
    y_train.square().mean().backward()  # one forward per backward (the stored weight changes in place)
    assert conv.weight.grad is not None and conv.weight.grad.abs().sum() > 0
    with torch.no_grad():
        assert torch.allclose(conv(x, gain=0.5), 0.5 * y_train, atol=1e-5)
        w = conv.normalized_weight()
    assert torch.allclose(w.reshape(4, -1).norm(dim=1), torch.ones(4), atol=1e-3)  # unit-norm filters


# ------------------------------------------------------------------------------------ camera vector
def test_camera_vector_by_hand():
    K_src = torch.tensor([[20.0, 0, 8], [0, 21.0, 7.5], [0, 0, 1]])
    K_tgt = torch.tensor([[18.0, 0, 8.5], [0, 18.0, 8], [0, 0, 1]])
    src_c2w = torch.eye(4)
    src_c2w[:3, 3] = torch.tensor([0.0, 0.0, -2.0])
    tgt_c2w = torch.eye(4)  # rotated 90° about the camera y axis, moved by (1, 0, -1)
    tgt_c2w[:3, :3] = torch.tensor([[0.0, 0, 1], [0, 1, 0], [-1, 0, 0]])
    tgt_c2w[:3, 3] = torch.tensor([1.0, 0.0, -1.0])
    src, tgt = Cameras(src_c2w[None], K_src, 16, 16), Cameras(tgt_c2w[None], K_tgt, 16, 16)
    v = camera_vector(src, tgt, 16)[0]
    # target -> source: the source frame is the world shifted by (0, 0, -2): rotation unchanged, t = (1, 0, 1)
    expected = [0, 0, 1, 1, 0, 1, 0, 0, -1, 0, 0, 1, 20, 21, 8, 7.5, 18, 18, 8.5, 8]
    assert torch.allclose(v, torch.tensor(expected, dtype=torch.float32), atol=1e-6)
    # the same cameras given at 32 px are rescaled to the network's 16 px
    assert torch.allclose(camera_vector(src.resize(32), tgt.resize(32), 16)[0], v, atol=1e-5)
    # standardisation: (v - mean)/std, 0 where std = 0
    mean, std = [0.5] * 20, [2.0] * 18 + [0.0, 0.0]
    n = normalize_camera_vector(v[None], mean, std)[0]
    assert torch.allclose(n[:18], (v[:18] - 0.5) / 2) and (n[18:] == 0).all()
    # an identical pair (zero baseline, same rotation) is allowed: the identity
    same = camera_vector(tgt, tgt)[0]
    assert torch.allclose(same[:12], torch.eye(4)[:3].reshape(12), atol=1e-6)
    with pytest.raises(ValueError, match="intrinsics"):
        camera_vector(Cameras(src_c2w[None], torch.zeros(3, 3), 16, 16), tgt)


def test_plucker_camera_and_bad_inputs():
    m = tiny(camera="plucker")
    src, tgt = pair()
    maps = plucker_maps(src, tgt, 16)
    assert maps.shape == (2, 12, 16, 16)
    assert torch.allclose(maps[0, :6], maps[1, :6], atol=1e-5)  # the source rays in their own frame
    x = torch.randn(2, 3, 16, 16)
    images = torch.rand(2, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        out = m.single_view_denoiser(1.0)(x, torch.tensor([0.5, 3.0]), ViewCond(images, src, tgt))
    assert out.shape == x.shape and torch.isfinite(out).all()
    v = tiny()
    with pytest.raises(ValueError, match="16x16"):
        v.single_view_denoiser(1.0)(x, 1.0, ViewCond(torch.zeros(2, 3, 8, 8), src, tgt))
    with pytest.raises(ValueError, match="dropout"):
        v.single_view_denoiser(1.0)(x, 1.0, ViewCond(images, src, tgt, torch.tensor([True, False])))
    with pytest.raises(ValueError, match="camera must be"):
        build_method("vivid", {**TINY, "camera": "rays"})
    with pytest.raises(ValueError, match="20 numbers"):
        build_method("vivid", {**TINY, "camera_mean": (0.0,) * 3, "camera_std": (1.0,) * 3})


@pytest.mark.parametrize("preset", ["vivid-shapes32", "vivid-shapes32-uncond", "vivid-shapes64", "vivid-shapes-sr64"])
def test_shapes_presets_statistics_are_those_of_the_ring(preset):
    """The hard-coded ``_shapes_stats`` of the synthetic presets equal ``camera_statistics`` over the pairs these
    presets train on: every ordered pair of distinct views (the pair sampler's ``random`` mode) of the synthetic
    data's default 24-view ring, at the preset's resolution. A change to the ring, the camera vector or the
    statistics code makes this fail."""
    from vantage.data import SyntheticDataset
    from vantage.methods import all_presets, method_class
    from vantage.methods.vivid_camera import camera_statistics

    method, values, _ = all_presets()[preset]
    cfg = method_class(method).config_class(**values)  # the config only: no network
    sampler = cfg.pair_sampler()
    assert (sampler.mode, sampler.min_cond, sampler.max_cond, sampler.target_in_pool_prob) == ("random", 1, 1, 0.0)
    cams = SyntheticDataset(split="train", num_objects=1, resolution=cfg.resolution).cameras(0)
    assert len(cams) == 24
    src, tgt = zip(*[(i, j) for i in range(24) for j in range(24) if i != j])
    mean, std = camera_statistics([(cams[list(src)], cams[list(tgt)])], cfg.resolution)
    assert cfg.camera_mean == pytest.approx(mean, abs=1e-9) and cfg.camera_std == pytest.approx(std, abs=1e-9)
    assert (cfg.input_elevation_deg, cfg.input_radius, cfg.input_fov_deg) == (30.0, 2.5, 40.0)  # the same ring


# ------------------------------------------------------------------------------------ training
def test_loss_decreases_on_a_tiny_config():
    from vantage.data import PairDataset, PairSampler, SyntheticDataset, collate_pairs

    m = tiny().train()
    ds = SyntheticDataset(split="train", num_objects=4, views=6, resolution=16)
    pairs = PairDataset(ds, PairSampler(min_cond=1, max_cond=1), seed=0)
    batch = collate_pairs([pairs[i] for i in range(4)])

    def loss() -> torch.Tensor:
        return m.loss(batch, torch.Generator().manual_seed(3))["loss"]

    opt = torch.optim.Adam(m.parameters(), lr=1e-2, betas=(0.9, 0.99))
    first = loss().item()
    for _ in range(12):
        opt.zero_grad()
        out = loss()
        out.backward()
        opt.step()
    assert math.isfinite(first) and loss().item() < first - 0.1


# ------------------------------------------------------------------------------------ guidance
def test_guidance_by_a_second_network(tmp_path):
    main_net, guide = tiny(0), tiny(1, conditional=False)
    src, tgt = pair()
    cond = ViewCond(torch.rand(2, 3, 16, 16) * 2 - 1, src, tgt)
    x, sigma = torch.randn(2, 3, 16, 16), torch.tensor([0.3, 5.0])
    with torch.no_grad():
        d = main_net.edm2_denoiser()(x, sigma, cond)
        d_g = guide.edm2_denoiser()(x, sigma, cond)
        guided = main_net.single_view_denoiser(2.0, guide=guide)(x, sigma, cond)
        assert torch.allclose(guided, d_g + 2.0 * (d - d_g), atol=1e-5)
        # the interval: only the second sample's σ = 5 is inside (1, 10)
        part = main_net.single_view_denoiser(2.0, guide=guide, interval=(1.0, 10.0))(x, sigma, cond)
        assert torch.allclose(part[0], d[0], atol=1e-6) and torch.allclose(part[1], guided[1], atol=1e-5)
        # the unconditional guide ignores the source view and the cameras
        other = ViewCond(torch.zeros(2, 3, 16, 16), tgt, src)
        assert torch.allclose(guide.edm2_denoiser()(x, sigma, other), d_g, atol=1e-6)
    assert main_net.single_view_denoiser(1.0, guide=guide) is not None
    assert type(main_net.single_view_denoiser()).__name__ == "EDM2Denoiser"  # default weight, no guide: unguided
    with pytest.raises(ValueError, match="needs a guide network"):
        main_net.single_view_denoiser(2.0)
    with pytest.raises(ValueError, match="works at 32x32"):
        main_net.single_view_denoiser(1.5, guide=tiny(2, resolution=32, conditional=False))
    # a guide given as a checkpoint (config field), moved along with the model
    run = tmp_path / "guide"
    save_checkpoint(run, 1, config={**guide.to_json(), "step": 1}, weights=guide.state_dict(), training_state={})
    main_net.config.guide_checkpoint = str(run)
    with torch.no_grad():
        assert torch.allclose(main_net.single_view_denoiser(2.0)(x, sigma, cond), guided, atol=1e-5)
    main_net.config.guide_checkpoint = str(tmp_path / "missing")
    with pytest.raises(ValueError, match="not found"):
        main_net.single_view_denoiser(2.0)


# ------------------------------------------------------------------------------------ reference fixtures
@pytest.mark.parametrize("name", ["vivid_precond", "vivid_precond_extra"])
def test_reference_fixture_through_convert(name, tmp_path, capsys):
    d = load_reference(name)
    info = json.loads((REF / f"{name}.json").read_text())
    weights = tmp_path / "ref.safetensors"
    save_file({k: v.contiguous() for k, v in d.items() if k.startswith("state.")}, str(weights))
    cph = str(info["net_config"]["channels_per_head"])
    assert main(["convert", "vivid", str(weights), "--out", str(tmp_path / "run"), "--set",
                 f"channels_per_head={cph}"]) == 0
    m = load_checkpoint(tmp_path / "run")
    assert sum(p.numel() for p in m.state_dict().values()) == info["num_parameters"]
    src = Cameras.from_w2c(d["in.src_w2c"], d["in.src_K"], 16, 16)
    tgt = Cameras.from_w2c(d["in.tgt_w2c"], d["in.tgt_K"], 16, 16)
    cond = ViewCond(d["in.src"], src, tgt)
    _, label, _ = m.conditioning(cond)
    assert torch.allclose(label, d["in.geometry"], atol=1e-4)  # the standardised 20-D vector
    with torch.no_grad():
        D, logvar = m.edm2_denoiser()(d["in.dst"], d["in.sigma"], cond, return_logvar=True)
        c_noise = d["in.sigma"].log() / 4
        feats = m.net.features(d["in.src"], c_noise, d["in.geometry"])
    assert (D - d["out.D_x"]).abs().max() < 1e-5
    assert (logvar - d["out.logvar"]).abs().max() < 1e-5
    assert len(feats) == len(info["xattn_blocks_in_order"])
    assert [f"unet.{n}" for n, _ in m.net.unet.attention_blocks()] == info["xattn_blocks_in_order"]
    for i, f in enumerate(feats):
        assert (f - d[f"out.feature.{i}"]).abs().max() < 1e-5
    capsys.readouterr()
    # a wrong head width does not change shapes, but a wrong structure is named
    bad = tmp_path / "bad.safetensors"
    save_file({k[6:]: v.contiguous() for k, v in d.items() if k.startswith("state.") and "x_attn_kv" not in k},
              str(bad))
    code = main(["convert", "vivid", str(bad), "--out", str(tmp_path / "bad"), "--set", f"channels_per_head={cph}"])
    assert code == 2
    assert "missing keys" in capsys.readouterr().err


def test_convert_rejects_other_weights(tmp_path, capsys):
    other = tmp_path / "other.safetensors"
    save_file({"downs.0.weight": torch.zeros(8, 6, 3, 3)}, str(other))
    assert main(["convert", "vivid", str(other), "--out", str(tmp_path / "o")]) == 2
    assert "VIVID state dict" in capsys.readouterr().err


# ------------------------------------------------------------------------------------ checkpoints and sampling
def test_checkpoint_round_trip_and_sample(tmp_path, capsys):
    m = tiny()
    run = tmp_path / "run"
    save_checkpoint(run, 1, config={**m.to_json(), "step": 1}, weights=m.state_dict(), training_state={})
    back = load_checkpoint(run)
    assert type(back) is VIVID and back.config == m.config
    src, tgt = pair()
    cond = ViewCond(torch.rand(2, 3, 16, 16), src, tgt)
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(back.edm2_denoiser()(x, 2.0, cond), m.edm2_denoiser()(x, 2.0, cond))
    sig = m.sampling_sigmas(32)
    assert sig.shape == (33,) and abs(sig[0].item() - 80) < 1e-3 and abs(sig[-2].item() - 0.002) < 1e-6
    img = tmp_path / "in.png"
    Image.new("RGB", (16, 16), (200, 40, 40)).save(img)
    out = tmp_path / "out"
    assert main(["sample", "--checkpoint", str(run), "--input", str(img), "--orbit", "2", "--out", str(out),
                 "--strategy", "single", "--steps", "2", "--device", "cpu"]) == 0
    summary = json.loads((out / "sample.json").read_text())
    assert summary["views"] == 2 and summary["strategy"] == "single" and summary["sampler"] == "heun"
    assert len(list((out / "frames").iterdir())) == 2


def test_posthoc_ema_checkpoint_samples(tmp_path, capsys):
    """A VIVID run that keeps EDM2's two EMAs (train.ema_posthoc), reconstructed at σ_rel 0.08 by `vantage ema`,
    samples with `vantage sample` like any checkpoint."""
    from helpers import VIVID_TINY_SET

    run = tmp_path / "run"
    assert main(["train", "vivid", "--data", "synthetic", "-o", "num_objects=4", "-o", "views=4", "--out", str(run),
                 "--steps", "3", "--batch", "2", "--device", "cpu", *VIVID_TINY_SET, "--set", "train.ema=power",
                 "--set", "train.ema_posthoc=true", "--set", "train.ema_posthoc_every=1", "--set",
                 "train.num_workers=0", "--set", "train.sample_every=0", "--set", "train.progress=false"]) == 0
    out = tmp_path / "ema008"
    assert main(["ema", str(run), "--sigma-rel", "0.08", "--out", str(out)]) == 0
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["method"] == "vivid" and cfg["step"] == 3 and cfg["posthoc_ema"]["sigma_rel"] == 0.08
    assert {s["sigma_rel"] for s in cfg["posthoc_ema"]["snapshots"]} == {0.05, 0.1}
    assert type(load_checkpoint(out)) is VIVID
    img = tmp_path / "in.png"
    Image.new("RGB", (16, 16), (200, 40, 40)).save(img)
    assert main(["sample", "--checkpoint", str(out), "--input", str(img), "--orbit", "2", "--out",
                 str(tmp_path / "orbit"), "--strategy", "single", "--steps", "2", "--device", "cpu"]) == 0
    assert len(list((tmp_path / "orbit" / "frames").iterdir())) == 2
