"""GeNVS: the RGB loss pairing, EDM preconditioning, augmentation, the conditioning and volume caches, the pooled
strategy, training, checkpoints and `vantage sample`, and the errors a user can make (the geometry: frustums,
rendering, pooling, near/far: tests/test_genvs_geometry.py)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import genvs_batch as batch
from helpers import randomize, view_set
from helpers import tiny_genvs as tiny

from vantage.cameras import Cameras, hemisphere_cameras, orbit_cameras
from vantage.data.mirror import mirror_cameras, mirror_view_set
from vantage.data.testing import ToyDataset
from vantage.data.views import ViewSet
from vantage.diffusion.samplers import get_sampler
from vantage.diffusion.schedules import sample_lognormal_sigma
from vantage.methods import all_presets, build_method, method_from_json
from vantage.methods.base import ViewCond, config_from_dict
from vantage.methods.genvs import GeNVS, GeNVSConfig
from vantage.nn.frustum import FrustumVolumes, sample_volumes
from vantage.nn.unet import count_parameters
from vantage.sampling import autoregressive_orbit
from vantage.sampling.strategies import STRATEGIES, ViewSetCond, make_strategy

pytestmark = pytest.mark.usefixtures("single_thread")

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
    # field_pooled/: the field of the set that conditioned each frame; frames 0 and 1 are the inputs (copied)
    assert summary["field_pooled_sets"][2] == {"frame": 2, "generated": True, "input_views": [0, 1], "frames": []}
    # one input, 4 frames: frame 0 (the input) and frame 1 (the first generated one) had the input alone, so they
    # render as field/ does; frame 2 also pooled frame 1, frame 3 frames 1 and 2
    out4 = tmp_path / "pooled4"
    assert main(["sample", "--checkpoint", str(run), "--input", str(data), "--orbit", "4", "--steps", "1",
                 "--out", str(out4), "--device", "cpu"]) == 0
    for kind in ("rgb", "depth"):
        assert [f.name for f in sorted((out4 / "field_pooled" / kind).iterdir())] == [f"{i:03d}.png" for i in range(4)]
    assert Image.open(out4 / "field_pooled" / "field.gif").n_frames == 4

    def png(folder: str, i: int) -> torch.Tensor:
        return torch.from_numpy(np.array(Image.open(out4 / folder / "rgb" / f"{i:03d}.png"))).int()

    for i in (0, 1):
        assert (png("field_pooled", i) - png("field", i)).abs().max() <= 1  # the same set at the same camera
    assert (png("field_pooled", 2) - png("field", 2)).abs().float().mean() > 1
    assert json.loads((out4 / "sample.json").read_text())["field_pooled_sets"] == [
        {"frame": 0, "generated": False, "input_views": [0], "frames": []},
        {"frame": 1, "generated": True, "input_views": [0], "frames": []},
        {"frame": 2, "generated": True, "input_views": [0], "frames": [1]},
        {"frame": 3, "generated": True, "input_views": [0], "frames": [1, 2]}]
    single = json.loads((out / "sample.json").read_text())  # another strategy: no pooled field
    assert "field_pooled_sets" not in single and not (out / "field_pooled").exists() and (out / "field").is_dir()
    assert main(["sample", "--checkpoint", str(run), "--input", str(data), "--orbit", "2", "--strategy",
                 "genvs-pooled", "--no-autoregressive", "--steps", "1", "--out", str(tmp_path / "x"),
                 "--device", "cpu"]) == 0
    assert not (tmp_path / "x" / "field_pooled").exists()  # fixed views: every frame had the inputs alone
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
