"""ViewFusion-composable: the reference fixture through our code path (conversion, composition, loss,
sampling path), ragged batching, invariances, the mean ablation, errors, the convert command and training."""

from __future__ import annotations

import json
import math

import pytest
import torch
from reference import REF, load_reference

from vantage.cameras import Cameras, ring_cameras
from vantage.data.views import ViewSet
from vantage.methods import all_presets, build_method
from vantage.methods.base import ViewCond
from vantage.methods.viewfusion import ViewFusion, composed_strategy
from vantage.methods.viewfusion_compose import target_angle
from vantage.methods.viewfusion_convert import reference_unet_key, vantage_unet_key
from vantage.nn.unet import count_parameters
from vantage.sampling.strategies import SingleView, ViewSetCond

pytestmark = pytest.mark.usefixtures("single_thread")

FIXTURE_CFG = dict(resolution=32, ch=16, ch_mult=(1, 2, 2), num_res_blocks=1, attn_resolutions=(16,), norm_groups=8,
                   input_range="unit")
TINY = dict(resolution=16, ch=8, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(8,), norm_groups=4,
            preview_steps=2, preview_count=2, default_steps=4)


def _tiny(**over) -> ViewFusion:
    torch.manual_seed(0)
    return build_method("viewfusion", {**TINY, **over}).eval()


def _views(images: torch.Tensor, valid: torch.Tensor, cams: Cameras | None = None) -> ViewSet:
    B, N, _, H, W = images.shape
    if cams is None:
        ring = ring_cameras(24, resolution=W)
        idx = torch.arange(B * N).reshape(B, N) % 24
        cams = Cameras(ring.c2w[idx], ring.K[idx], W, H)
    return ViewSet(images=images, cameras=cams, valid=valid, view_ids=torch.zeros(B, N, dtype=torch.long))


def _targets(indices: list[int], res: int) -> Cameras:
    return ring_cameras(24, resolution=res)[torch.tensor(indices)]


# ------------------------------------------------------------------------------------ reference fixture
@pytest.fixture(scope="module")
def ref():
    d = load_reference("viewfusion_unet")
    torch.set_num_threads(1)
    m = build_method("viewfusion", FIXTURE_CFG).eval()
    ignored = m.load_reference_state({k: v for k, v in d.items() if k.startswith("state.")}, "fixture")
    assert ignored == []
    valid = torch.arange(3)[None] < d["in.view_count"].long()[:, None]
    cams = Cameras(torch.eye(4).repeat(2, 3, 1, 1), ring_cameras(24, resolution=32).K[0].repeat(2, 3, 1, 1), 32, 32)
    views = _views(2 * d["in.y_cond"] - 1, valid, cams)  # our images are in [-1, 1]
    return d, m, views, _targets([5, 17], 32)


def test_fixture_config_is_inferred_from_the_weights(ref):
    d, m, _, _ = ref
    fields = ViewFusion.reference_config_fields({k: v for k, v in d.items() if k.startswith("state.")}, 32)
    assert fields == dict(ch=16, ch_mult=(1, 2, 2), num_res_blocks=1, attn_resolutions=(16,), mid_attention=True,
                          emb_freq_dim=8, emb_hidden_dim=64, emb_dim=16, angle_mode="absolute")
    assert count_parameters(m) == 263_526
    keys = [k[len("state."):] for k in d if k.startswith("state.")]
    assert all(vantage_unet_key(reference_unet_key(k)) == k for k in keys)


def test_reference_raw_outputs_and_composed_noise(ref):
    d, m, views, target = ref
    angle, _ = m.angles(views, target)  # ring views 5 and 17: 2π·5/24, 2π·17/24
    assert torch.allclose(angle, d["in.angle"].flatten(), atol=1e-6)
    gamma = d["in.gamma"].flatten().double()
    # the reference's noisy [0, 1] target y = sqrt(γ)·y0 + sqrt(1 − γ)·ε, in our σ-space: x = 2·y/sqrt(γ) − 1, σ = 2σ'
    x = (2 * d["in.y_noisy"].double() / gamma.sqrt()[:, None, None, None] - 1).float()
    sigma = (2 * ((1 - gamma) / gamma).sqrt()).float()
    with torch.no_grad():
        comp = m.compose(x, sigma, views, target)
    assert torch.allclose(comp.raw, d["out.unet_raw"], atol=1e-5)
    assert torch.allclose(comp.eps, d["out.noise_hat"], atol=1e-5)
    assert comp.batch_index.tolist() == [0, 1, 1, 1] and comp.view_index.tolist() == [0, 0, 1, 2]
    assert torch.equal(comp.weights[0, 0], torch.ones(3, 32, 32)) and not comp.weights[0, 1:].any()


def test_reference_loss(ref):
    d, m, views, target = ref
    g = torch.Generator().manual_seed(42)  # the reference seeds its global RNG with 42: t, then u
    gamma, _ = m.schedule.sample_sr3_gamma(2, torch.Generator().manual_seed(42))
    assert torch.allclose(gamma, d["in.gamma"].flatten(), atol=1e-7)
    with torch.no_grad():
        out = m.training_loss(2 * d["in.y_0"] - 1, views, target, g, noise=d["in.noise"])
    assert out["loss"].item() == pytest.approx(d["out.loss"].item(), abs=1e-5)
    assert out["views"].item() == 2.0


def test_reference_sampling_path_weights_and_posterior_mean(ref):
    d, m, views, target = ref
    t = d["pmv.t"].long()
    ac, betas = m.schedule.alphas_cumprod, m.schedule.betas
    sig = ((1 - ac[t]) / ac[t]).sqrt()
    y_t = d["in.y_noisy"].double()
    x = (2 * y_t * (1 + sig**2).sqrt()[:, None, None, None] - 1).float()
    den = m.set_denoiser()
    cond = ViewSetCond(views, target)
    with torch.no_grad():
        x0, w = den(x, (2 * sig).float(), cond, return_weights=True)
    assert torch.allclose(den.last.raw, d["pmv.unet_raw"], atol=1e-5)
    assert torch.allclose(w, d["pmv.weights_softmax"], atol=1e-5) and den.last_weights is w
    prev = torch.cat([torch.ones(1, dtype=torch.float64), ac[:-1]])[t]
    c1 = (betas[t] * prev.sqrt() / (1 - ac[t]))[:, None, None, None]
    c2 = ((1 - prev) * (1 - betas[t]).sqrt() / (1 - ac[t]))[:, None, None, None]

    def mean(x0_ours):
        return c1 * (x0_ours.double() + 1) / 2 + c2 * y_t

    assert torch.allclose(mean(x0), d["pmv.model_mean"].double(), atol=1e-5)
    # the reference clamps its [0, 1]-range x̂0 to [-1, 1]; clamping to the data range differs here
    with torch.no_grad():
        x0_data = m.set_denoiser(clip_x0="data")(x, (2 * sig).float(), cond)
    assert (x0 < -1).any() and not torch.allclose(mean(x0_data), d["pmv.model_mean"].double(), atol=1e-3)


def test_sampling_sigmas_follow_the_schedule_and_range():
    m = _tiny(sample_timesteps=1000, sample_beta_start=1e-4, sample_beta_end=0.09)
    s = m.sampling_sigmas(1000)
    a = m.sample_schedule.alphas_cumprod
    assert s.shape == (1001,) and s[-1] == 0
    assert torch.allclose(s[:-1].double(), ((1 - a) / a).sqrt().flip(0), rtol=1e-6)
    unit = _tiny(input_range="unit")
    assert torch.allclose(unit.sampling_sigmas(10), 2 * _tiny().sampling_sigmas(10))
    assert unit.set_denoiser().sigma_max == pytest.approx(2 * unit.schedule.sigma_max)


# ------------------------------------------------------------------------------------ composition
def _random_case(B=3, N=4, res=16, seed=1):
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(B, N, 3, res, res, generator=g) * 2 - 1
    valid = torch.tensor([[True, False, True, False], [False, False, False, True], [True, True, True, True]])[:B, :N]
    x = torch.randn(B, 3, res, res, generator=g) * 2
    sigma = torch.tensor([0.3, 2.0, 7.0])[:B]
    return images, valid, x, sigma


def _perturbed(m: ViewFusion) -> ViewFusion:
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return m


def test_ragged_packing_equals_a_naive_padded_loop():
    m = _perturbed(_tiny(max_rows=2))
    images, valid, x, sigma = _random_case()
    target = _targets([1, 7, 13], 16)
    views = _views(images, valid)
    with torch.no_grad():
        comp = m.compose(x, sigma, views, target)
        angle, _ = m.angles(views, target)
        gamma = 1 / (1 + sigma.double() ** 2)
        for b in range(3):
            z = (x[b:b + 1] * gamma[b].sqrt()).float()
            eps_i, logit_i = [], []
            for n in range(4):
                if valid[b, n]:
                    out = m.net(torch.cat([images[b, n:n + 1], z], 1), gamma[b:b + 1].float(),
                                cond_vec=angle[b:b + 1, None])
                    eps_i.append(out[:, :3])
                    logit_i.append(out[:, 3:])
            w = torch.softmax(torch.cat(logit_i), dim=0)
            assert torch.allclose(comp.eps[b], (w * torch.cat(eps_i)).sum(0), atol=1e-5)
            assert torch.allclose(comp.weights[b, valid[b]], w, atol=1e-6)
            assert not comp.weights[b, ~valid[b]].any()
    assert torch.allclose(comp.weights.sum(1), torch.ones(3, 3, 16, 16), atol=1e-6)


def test_permutation_invariance_and_padding_never_matters():
    m = _perturbed(_tiny())
    images, valid, x, sigma = _random_case()
    target = _targets([2, 9, 20], 16)
    views = _views(images, valid)
    with torch.no_grad():
        base = m.compose(x, sigma, views, target)
        perm = torch.tensor([3, 1, 0, 2])
        pv = _views(images[:, perm], valid[:, perm], views.cameras[:, perm])
        permuted = m.compose(x, sigma, pv, target)
        junk = images.clone()
        junk[~valid] = float("nan")  # padding slots are never read
        padded = ViewSet(images=torch.cat([junk, torch.full_like(junk[:, :2], 1e6)], 1),
                         cameras=Cameras.cat([views.cameras, views.cameras[:, :2]], 1),
                         valid=torch.cat([valid, torch.zeros(3, 2, dtype=torch.bool)], 1),
                         view_ids=torch.zeros(3, 6, dtype=torch.long))
        more = m.compose(x, sigma, padded, target)
    assert torch.allclose(permuted.eps, base.eps, atol=1e-5)
    assert torch.allclose(permuted.weights, base.weights[:, perm], atol=1e-6)
    assert torch.allclose(more.eps, base.eps, atol=1e-6) and not more.weights[:, 4:].any()
    assert torch.isfinite(more.eps).all()


def test_mean_composition_ablation():
    m = _perturbed(_tiny(composition="mean"))
    images, valid, x, sigma = _random_case()
    with torch.no_grad():
        comp = m.compose(x, sigma, _views(images, valid), _targets([0, 1, 2], 16))
    for b in range(3):
        rows = comp.batch_index == b
        assert torch.allclose(comp.eps[b], comp.raw[rows, :3].mean(0), atol=1e-6)
        assert torch.allclose(comp.weights[b, valid[b]], torch.full((int(rows.sum()), 3, 16, 16), 1 / rows.sum()))


def test_one_view_set_equals_the_single_view_denoiser_and_strategies():
    m = _perturbed(_tiny())
    images, _, x, sigma = _random_case()
    target = _targets([4, 5, 6], 16)
    one = _views(images[:, :1], torch.ones(3, 1, dtype=torch.bool))
    single = m.single_view_denoiser()
    with torch.no_grad():
        a = m.set_denoiser()(x, sigma, ViewSetCond(one, target))
        b = single(x, sigma, ViewCond(images[:, 0], one.cameras[:, 0], target))
        c = SingleView(single)(x, sigma, ViewSetCond(_views(images, torch.ones(3, 4, dtype=torch.bool)), target))
        d0 = m.compose(x, sigma, one, target)
    assert torch.equal(a, b) and torch.allclose(a, c, atol=1e-6)
    assert torch.equal(d0.weights, torch.ones_like(d0.weights))
    assert torch.allclose(a, (x - sigma[:, None, None, None] * d0.eps).clamp(-1, 1), atol=1e-5)
    assert single.sigma_max == m.set_denoiser().sigma_max


def test_relative_mode_uses_the_reference_view_and_relative_angle():
    m = _perturbed(_tiny(angle_mode="relative"))
    assert m.net.config.in_channels == 9
    images, valid, x, sigma = _random_case()
    views = _views(images, valid)
    target = _targets([3, 10, 17], 16)
    angle, ref = m.angles(views, target)
    assert ref.tolist() == [0, 3, 0]
    # rotating every camera about world +z changes no relative angle, so nothing changes
    rot = torch.eye(4)
    c, s = math.cos(0.7), math.sin(0.7)
    rot[:2, :2] = torch.tensor([[c, -s], [s, c]])
    turned = _views(images, valid, Cameras(rot @ views.cameras.c2w, views.cameras.K, 16, 16))
    with torch.no_grad():
        base = m.compose(x, sigma, views, target)
        moved = m.compose(x, sigma, turned, Cameras(rot @ target.c2w, target.K, 16, 16))
    assert torch.allclose(moved.eps, base.eps, atol=1e-4)
    assert torch.allclose(m.angles(turned, Cameras(rot @ target.c2w, target.K, 16, 16))[0], angle, atol=1e-5)


def test_angle_convention():
    ring = ring_cameras(24, resolution=16)
    assert torch.allclose(target_angle(ring), 2 * math.pi / 24 * torch.arange(24).float(), atol=1e-5)
    flipped = target_angle(ring, direction=-1, offset_deg=90.0)
    expect = torch.remainder(math.pi / 2 - 2 * math.pi / 24 * torch.arange(24).double(), 2 * math.pi).float()
    assert ((flipped >= 0) & (flipped < 2 * math.pi)).all()
    diff = torch.remainder(flipped.double() - expect.double() + math.pi, 2 * math.pi) - math.pi  # circular
    assert diff.abs().max() < 1e-5


def test_bad_input_errors():
    m = _tiny()
    images, valid, x, sigma = _random_case()
    target = _targets([0, 1, 2], 16)
    bad = valid.clone()
    bad[1] = False
    with pytest.raises(ValueError, match=r"sample\(s\) \[1\] have no valid conditioning view"):
        m.compose(x, sigma, _views(images, bad), target)
    with pytest.raises(ValueError, match=r"noisy target x must be \(B, 3, 16, 16\)"):
        m.compose(torch.zeros(3, 3, 8, 8), sigma, _views(images, valid), target)
    with pytest.raises(ValueError, match=r"conditioning views must be \(B=2, N, 3, 16, 16\)"):
        m.compose(x[:2], sigma[:2], _views(images, valid), target)
    with pytest.raises(ValueError, match="target cameras must have shape"):
        m.compose(x, sigma, _views(images, valid), target[:2])
    with pytest.raises(ValueError, match="no classifier-free guidance"):
        m.set_denoiser(guidance=3.0)
    with pytest.raises(TypeError, match="needs cond: ViewSetCond"):
        m.set_denoiser()(x, sigma, None)
    with pytest.raises(ValueError, match="no unconditional branch"):
        m.single_view_denoiser()(x, sigma, ViewCond(images[:, 0], target, target, torch.ones(3, dtype=torch.bool)))
    with pytest.raises(ValueError, match="composition must be one of"):
        build_method("viewfusion", {**TINY, "composition": "max"})
    with pytest.raises(ValueError, match="input_range must be one of"):
        build_method("viewfusion", {**TINY, "input_range": "0-255"})
    with pytest.raises(TypeError, match="composed_strategy needs"):
        composed_strategy(lambda *a: a)


# ------------------------------------------------------------------------------------ presets, training, sampling
def test_presets():
    presets = all_presets()
    assert {"viewfusion-nmr64", "viewfusion-shapes64", "viewfusion-shapes32"} <= set(presets)
    with torch.device("meta"):
        paper = build_method("viewfusion-nmr64")
        counts = {p: count_parameters(build_method(p)) for p in ("viewfusion-shapes64", "viewfusion-shapes32")}
    c = paper.config
    assert (c.resolution, c.ch, c.ch_mult, c.num_res_blocks, c.attn_resolutions, c.norm_groups) == \
        (64, 64, (1, 2, 3, 5), 3, (16,), 32)
    assert (c.timesteps, c.beta_start, c.beta_end, c.max_views, c.target_in_pool_prob) == (2000, 1e-6, 1e-2, 6, 0.1)
    assert count_parameters(paper) == 33_947_206
    assert paper.net.embed.mlp[0].in_features == 64 and paper.net.embed.mlp[0].out_features == 256
    assert counts == {"viewfusion-shapes64": 4_139_494, "viewfusion-shapes32": 1_437_190}
    ps = paper.pair_sampler()
    assert (ps.min_cond, ps.max_cond, ps.target_in_pool_prob, ps.shuffle) == (1, 6, 0.1, True)


def test_loss_gradients_reach_every_parameter():
    m = _perturbed(_tiny()).train()
    images, valid, _, _ = _random_case()
    g = torch.Generator().manual_seed(0)
    out = m.training_loss(images[:, 0], _views(images, valid), _targets([0, 8, 16], 16), g)
    out["loss"].backward()
    assert out["loss"] > 0 and out["views"].item() == pytest.approx(7 / 3)
    assert not [n for n, p in m.named_parameters() if p.grad is None or not p.grad.any()]


def test_two_training_steps_and_preview(tmp_path):
    from vantage.train import DataSpec, TrainConfig, Trainer, load_checkpoint, open_training_data, read_stats

    m = _tiny()
    data = DataSpec.parse("synthetic", options={"num_objects": 4, "views": 8})
    cfg = TrainConfig(duration=2, batch=2, num_workers=0, progress=False, tensorboard=False, log_every=1,
                      ckpt_every=0, sample_every=2, ema_halflife="4img")
    Trainer(m, open_training_data(data, 16), cfg, tmp_path / "run", data=data, preset="viewfusion",
            log=lambda s: None).fit()
    stats = read_stats(tmp_path / "run")
    assert [r["step"] for r in stats] == [1, 2] and all(r["loss"] > 0 and 1 <= r["views"] <= 6 for r in stats)
    back = load_checkpoint(tmp_path / "run")
    assert isinstance(back, ViewFusion) and back.config == m.config
    assert (tmp_path / "run" / "samples" / "step-000002.png").is_file()


def _write_nmr_object(d, ring: Cameras, seed: int) -> None:
    """One object in the NMR/DVR layout (``image/NNNN.png`` + ``cameras.npz``, stored world +y up), as
    ``tests/test_formats_nmr.py`` writes it."""
    import numpy as np
    from PIL import Image

    from vantage.data.formats.common import up_to_z_rotation

    (d / "image").mkdir(parents=True)
    world_mat, camera_mat = Cameras(up_to_z_rotation("+y").T.float() @ ring.c2w, ring.K, 16, 16).to_nmr()
    rng = np.random.default_rng(seed)
    for i in range(len(ring)):
        img = np.full((16, 16, 3), 255, np.uint8)
        img[4:12, 4:12] = rng.integers(0, 255, (8, 8, 3))
        Image.fromarray(img).save(d / "image" / f"{i:04d}.png")
    np.savez(d / "cameras.npz", **{f"world_mat_{i}": world_mat[i].double().numpy() for i in range(len(ring))},
             **{f"camera_mat_{i}": camera_mat[i].double().numpy() for i in range(len(ring))})


def test_vantage_train_on_an_nmr_folder(tmp_path, capsys):
    """The issue's "NMR-format data": ``vantage train --data <NMR folder>`` with a tiny config."""
    from vantage.cli.main import main
    from vantage.data.formats import open_dataset
    from vantage.train import load_checkpoint, read_stats

    ring = ring_cameras(24, resolution=16, radius=2.732, fov_deg=2 * math.degrees(math.atan(1 / 2.1875)))
    for seed, name in enumerate(("02958343/car1", "03001627/chair1")):
        _write_nmr_object(tmp_path / "nmr" / name, ring, seed)
    run = tmp_path / "run"
    tiny = ["--set", "resolution=16", "--set", "ch=8", "--set", "ch_mult=[1,2]", "--set", "attn_resolutions=[8]",
            "--set", "norm_groups=4", "--set", "preview_steps=2", "--set", "preview_count=2"]
    assert main(["train", "viewfusion-shapes32", "--data", str(tmp_path / "nmr"), "--out", str(run), "--steps", "2",
                 "--batch", "2", "--set", "train.log_every=1", "--set", "train.num_workers=0",
                 "--set", "train.progress=false", "--set", "train.tensorboard=false", *tiny]) == 0
    capsys.readouterr()
    data = json.loads((run / "config.json").read_text())["data"]
    assert data["format_name"] == "nmr" and data["num_scenes"] == 2
    stats = read_stats(run)
    assert [r["step"] for r in stats] == [1, 2]
    assert all(math.isfinite(r["loss"]) and r["loss"] > 0 and r["skipped_steps"] == 0 for r in stats)
    assert (run / "checkpoints" / "step-000002" / "model.safetensors").is_file()
    back = load_checkpoint(run)
    assert isinstance(back, ViewFusion) and back.config.resolution == 16
    # the angle comes from the NMR cameras: ring view i is 2πi/24, as on the synthetic ring
    obj = open_dataset(tmp_path / "nmr").load(0, views=[0, 5, 17])
    angle, _ = back.angles(_views(obj.images[None, :1], torch.ones(1, 1, dtype=torch.bool), obj.cameras[None, :1]),
                           obj.cameras[1:2])
    assert angle.item() == pytest.approx(2 * math.pi * 5 / 24, abs=1e-4)


def test_autoregressive_orbit_composes_the_growing_set():
    from vantage.sampling import autoregressive_orbit

    m = _perturbed(_tiny())
    ring = ring_cameras(24, resolution=16)
    images = torch.rand(1, 1, 3, 16, 16) * 2 - 1
    inputs = ViewSet(images=images, cameras=ring[torch.tensor([[0]])], valid=torch.ones(1, 1, dtype=torch.bool),
                     view_ids=torch.zeros(1, 1, dtype=torch.long))
    res = autoregressive_orbit(m, inputs, ring[torch.tensor([6, 12, 18])], strategy=composed_strategy, steps=3, seed=0)
    assert res.images.shape == (1, 3, 3, 16, 16) and res.set_sizes.tolist() == [[1, 2, 3]]
    assert res.nfe == 9 and torch.isfinite(res.images).all()
    stoch = autoregressive_orbit(m, inputs, ring[torch.tensor([6, 12])], strategy="stochastic", steps=2, seed=0)
    assert stoch.images.shape == (1, 2, 3, 16, 16)


# ------------------------------------------------------------------------------------ convert command
def _reference_checkpoint(d: dict) -> dict:
    """The reference training checkpoint layout: {"model": ViewFusion.state_dict(), "it": ...}."""
    model = {"denoise_fn." + k[len("state."):]: v.clone() for k, v in d.items() if k.startswith("state.")}
    model["gammas"] = d["schedule.gammas_buffer"].clone()
    return {"model": model, "it": 123}


def test_convert_cli_round_trip(ref, tmp_path, capsys):
    from safetensors.torch import save_file

    from vantage.cli.main import main
    from vantage.train.checkpoint import load_checkpoint

    d, m, views, target = ref
    path = tmp_path / "best_model_all.pt"
    torch.save(_reference_checkpoint(d), path)
    out = tmp_path / "run"
    args = ["convert", "viewfusion", str(path), "--out", str(out), "--set", "resolution=32", "--set", "norm_groups=8"]
    assert main(args) == 0
    said = capsys.readouterr().out
    assert "not UNet weights: gammas" in said and "the weights have ch=16" in said
    back = load_checkpoint(out)
    assert back.config.input_range == "unit" and back.config.clip_x0 == "model" and back.config.ch == 16
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["format"] == "vantage-run" and cfg["converted_from"]["path"] == str(path)
    gamma = d["in.gamma"].flatten().double()
    x = (2 * d["in.y_noisy"].double() / gamma.sqrt()[:, None, None, None] - 1).float()
    with torch.no_grad():
        comp = back.compose(x, (2 * ((1 - gamma) / gamma).sqrt()).float(), views, target)
    assert torch.allclose(comp.eps, d["out.noise_hat"], atol=1e-5)

    assert main(args) == 2  # non-empty --out without --overwrite
    assert "not empty" in capsys.readouterr().err
    st = tmp_path / "unet.safetensors"
    save_file({k[len("state."):]: v.contiguous() for k, v in d.items() if k.startswith("state.")}, str(st))
    assert main(["convert", "viewfusion", str(st), "--out", str(out), "--overwrite", "--set", "resolution=32",
                 "--set", "norm_groups=8", "--preset", "viewfusion-shapes32"]) == 0
    capsys.readouterr()
    back = load_checkpoint(out)  # released weights predict ε even from a v-prediction preset
    assert back.config.prediction == "eps"
    with torch.no_grad():
        comp = back.compose(x, (2 * ((1 - gamma) / gamma).sqrt()).float(), views, target)
    assert torch.allclose(comp.eps, d["out.noise_hat"], atol=1e-5)

    broken = _reference_checkpoint(d)
    del broken["model"]["denoise_fn.ups.1.res_block.res_conv.bias"]
    broken["model"]["denoise_fn.ups.1.extra.weight"] = torch.zeros(2)
    torch.save(broken, tmp_path / "broken.pt")
    assert main(["convert", "viewfusion", str(tmp_path / "broken.pt"), "--out", str(tmp_path / "b"),
                 "--set", "resolution=32", "--set", "norm_groups=8"]) == 2
    err = capsys.readouterr().err
    assert "missing keys: backbone.up_blocks.1.res.skip.bias (reference name ups.1.res_block.res_conv.bias)" in err
    assert "unexpected keys: ups.1.extra.weight" in err
    assert main(["convert", "viewfusion", str(path), "--out", str(tmp_path / "c"), "--set", "ch=32"]) == 2
    assert "contradicts the weights" in capsys.readouterr().err
    assert main(["convert", "viewfusion", str(tmp_path / "nope.pt"), "--out", str(tmp_path / "d")]) == 2
    capsys.readouterr()
    # the fixture file itself also records inputs and outputs: unexpected keys (docs/viewfusion.md, Released weights)
    assert main(["convert", "viewfusion", str(REF / "viewfusion_unet.safetensors"), "--out", str(tmp_path / "e"),
                 "--set", "resolution=32", "--set", "norm_groups=8"]) == 2
    err = capsys.readouterr().err
    assert "unexpected keys: in." in err and "out.noise_hat" in err and "state." not in err


def test_weight_recorder_keeps_the_weights_of_the_views_composed():
    from vantage.sampling import autoregressive_orbit
    from vantage.sampling.weights import WeightRecorder

    m = _perturbed(_tiny())
    ring = ring_cameras(24, resolution=16)
    images = torch.rand(1, 2, 3, 16, 16, generator=torch.Generator().manual_seed(2)) * 2 - 1
    inputs = ViewSet(images=images, cameras=ring[torch.tensor([[0, 6]])], valid=torch.ones(1, 2, dtype=torch.bool),
                     view_ids=torch.zeros(1, 2, dtype=torch.long))
    targets = ring[torch.tensor([12, 18, 3])]
    recs = {mode: WeightRecorder(images[0], mode) for mode in ("mean", "final")}
    results = {mode: autoregressive_orbit(m, inputs, targets, strategy=composed_strategy, steps=3, seed=0,
                                          callback=rec, strategy_options={"accumulate_weights": mode == "mean"})
               for mode, rec in recs.items()}
    res = results["mean"]
    assert torch.equal(res.images, results["final"].images)  # recording changes nothing
    for rec in recs.values():
        assert [r.frame for r in rec.records] == [0, 1, 2]
        assert [r.sources for r in rec.records] == [["input 0", "input 1"], ["input 0", "input 1", "frame 0"],
                                                    ["input 0", "input 1", "frame 0", "frame 1"]]
        last = rec.records[-1]
        assert torch.equal(last.images[2], res.images[0, 0]) and torch.equal(last.images[3], res.images[0, 1])
        assert torch.equal(last.images[:2], images[0]) and torch.equal(last.output, res.images[0, 2])
        for r in rec.records:
            assert torch.allclose(r.weights.sum(0), torch.ones(3, 16, 16), atol=1e-5)
    assert not torch.allclose(recs["mean"].records[2].weights, recs["final"].records[2].weights)
    # fixed views: every target composes the two inputs only
    fixed = WeightRecorder(images[0], "final")
    autoregressive_orbit(m, inputs, targets, strategy=composed_strategy, steps=2, callback=fixed, autoregressive=False)
    assert all(r.sources == ["input 0", "input 1"] for r in fixed.records)
    with pytest.raises(ValueError, match="accumulate_weights=True"):
        autoregressive_orbit(m, inputs, targets[:1], strategy=composed_strategy, steps=1,
                             callback=WeightRecorder(images[0], "mean"))
    with pytest.raises(TypeError, match="composing strategy"):
        autoregressive_orbit(m, inputs, targets[:1], strategy="stochastic", steps=1,
                             callback=WeightRecorder(images[0], "final"))


def test_angles_outside_one_turn_are_wrapped():
    from vantage.cameras import look_at, spherical_to_cartesian

    az = torch.tensor([-30.0, 390.0, 720.0, -360.0]).deg2rad().double()
    eye = spherical_to_cartesian(torch.full_like(az, math.radians(60)), az, torch.full_like(az, 2.5))
    cams = Cameras(look_at(eye).float(), ring_cameras(24, resolution=16).K[:4], 16, 16)
    got = target_angle(cams)
    want = torch.tensor([330.0, 30.0, 0.0, 0.0]).deg2rad()
    assert ((got >= 0) & (got < 2 * math.pi)).all()
    assert (torch.remainder(got - want + math.pi, 2 * math.pi) - math.pi).abs().max() < 1e-5


@pytest.mark.parametrize("mode", ["absolute", "relative"])
def test_an_explicit_angle_is_wrapped_like_a_camera_angle(mode):
    m = _perturbed(_tiny(angle_mode=mode))
    images, valid, x, sigma = _random_case()
    views = _views(images, valid)
    a = [0.4, 2.5, 6.0]  # Python floats and float64 tensors: wrapping happens before rounding to float32
    with torch.no_grad():
        base = m.compose(x, sigma, views, angle=a)
        for turned in ([v + 2 * math.pi for v in a], torch.tensor(a, dtype=torch.float64) - 2 * math.pi,
                       [v + 6 * math.pi for v in a]):
            other = m.compose(x, sigma, views, angle=turned)
            assert torch.equal(other.eps, base.eps) and torch.equal(other.weights, base.weights)
        # the angle matters (so the equality above is not vacuous), and an in-range angle is used as given
        assert not torch.allclose(m.compose(x, sigma, views, angle=[v + 1.0 for v in a]).eps, base.eps, atol=1e-4)
        cams = _targets([3, 10, 17], 16)
        from_cams, _ = m.angles(views, cams)
        assert torch.equal(m.compose(x, sigma, views, cams).eps, m.compose(x, sigma, views, angle=from_cams).eps)
