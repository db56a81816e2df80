"""regression (deterministic baseline): presets and config, the loss (MSE / L1) and that it decreases, the
sampling trick (any sampler, noise and step count return the prediction), no guidance, and a tiny checkpoint
through `vantage sample`."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from helpers import pair_batch as batch
from helpers import randomize
from PIL import Image

from vantage.cli.main import main
from vantage.data.testing import ToyDataset
from vantage.diffusion.samplers import SAMPLERS
from vantage.methods import all_presets, build_method
from vantage.methods.base import ViewCond, config_from_dict
from vantage.methods.regression import Regression, RegressionConfig
from vantage.nn.unet import count_parameters
from vantage.sampling import autoregressive_orbit
from vantage.train.checkpoint import load_checkpoint, save_checkpoint

pytestmark = pytest.mark.usefixtures("single_thread")

TINY = dict(resolution=16, ch=16, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(8,), num_heads=2, emb_ch=32,
            norm_groups=8, encoder_ch=8, image_emb_dim=16, pose_emb_dim=16, preview_count=2)


def tiny(**over) -> Regression:
    torch.manual_seed(0)
    return build_method("regression", {**TINY, **over})


def test_presets_and_config():
    presets = all_presets()
    for name in ("regression-shapes32", "regression-shapes64"):
        method, overrides, description = presets[name]
        assert method == "regression" and description
        config_from_dict(RegressionConfig, overrides)
    ours = count_parameters(build_method("regression-shapes32"))
    relpose = count_parameters(build_method("relpose-shapes32"))
    assert abs(ours - relpose) / relpose < 0.05, (ours, relpose)  # the same budget as relpose-shapes32
    m = build_method("regression-shapes32")
    assert m.config.default_steps == 1 and not Regression.supports_guidance and Regression.deterministic
    with pytest.raises(ValueError, match="loss_type"):
        RegressionConfig(loss_type="huber")
    with pytest.raises(ValueError, match="unconditional"):
        RegressionConfig(default_guidance=2.0)
    with pytest.raises(ValueError, match="encoder_ch"):
        RegressionConfig(encoder_ch=20, norm_groups=8)


def test_loss_mse_l1_and_it_decreases():
    b = batch(4)
    m = randomize(tiny())
    x_cond, cc, x0, ct = m._unpack(b)
    pred = m.net(x_cond, cc, ct)
    out = m.loss(b)
    assert set(out) == {"loss"} and torch.allclose(out["loss"], (pred - x0).square().mean(), atol=1e-6)
    m.config.loss_type = "l1"
    out = m.loss(b)
    assert set(out) == {"loss", "mse"} and torch.allclose(out["loss"], (pred - x0).abs().mean(), atol=1e-6)
    m.config.loss_type = "mse"
    # the loss draws no randomness: the generator does not matter
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)
    assert torch.equal(m.loss(b, g1)["loss"], m.loss(b, g2)["loss"])

    m = tiny()
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)
    first = None
    for _ in range(25):
        loss = m.loss(b)["loss"]
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert m.loss(b)["loss"].item() < 0.5 * first


@pytest.mark.parametrize("steps", [1, 3])
def test_sampling_returns_the_prediction_for_any_sampler_and_noise(steps):
    m = randomize(tiny()).eval()
    b = batch(2)
    x_cond, cc, _, ct = m._unpack(b)
    pred = m.predict(x_cond, cc, ct)
    assert pred.std() > 0.01
    den = m.single_view_denoiser()
    cond = ViewCond(x_cond, cc, ct)
    x1, x2 = torch.randn(2, 3, 16, 16), 50 * torch.randn(2, 3, 16, 16)
    assert torch.equal(den(x1, torch.full((2,), 0.3), cond), pred)
    assert torch.equal(den(x2, torch.full((2,), 7.0), cond), pred)
    obj = ToyDataset(num_scenes=1, num_views=4, resolution=16, seed=3).load(0)
    given, targets = obj.select([0]), obj.cameras[1:]
    want = m.predict(given.images.expand(3, -1, -1, -1), given.cameras[[0, 0, 0]], targets)  # (3, 3, H, W)
    for name in SAMPLERS:
        for seed in (0, 1):
            r = autoregressive_orbit(m, [given], targets, strategy="single", sampler=name, steps=steps, seed=seed)
            assert torch.allclose(r.images[0], want, atol=1e-5), (name, seed)


def test_no_guidance():
    m = tiny()
    with pytest.raises(ValueError, match="no classifier-free guidance"):
        m.single_view_denoiser(guidance=2.0)
    assert m.single_view_denoiser(guidance=0.0) is not None
    b = batch(2)
    x_cond, cc, _, ct = m._unpack(b)
    cond = ViewCond(x_cond, cc, ct, drop=torch.tensor([True, False]))
    with pytest.raises(ValueError, match="unconditional branch"):
        m.single_view_denoiser()(torch.zeros(2, 3, 16, 16), torch.ones(2), cond)


def test_preview_and_checkpoint_round_trip(tmp_path):
    m = randomize(tiny())
    b = batch(3)
    out = m.preview(b)
    assert out.shape == (2, 3, 16, 16) and out.abs().max() <= 1
    save_checkpoint(tmp_path / "run", 1, config={**m.to_json(), "step": 1}, weights=m.state_dict(), training_state={})
    back = load_checkpoint(tmp_path / "run")
    assert isinstance(back, Regression) and torch.allclose(back.preview(b), out)


def test_vantage_sample_with_a_tiny_checkpoint(tmp_path, capsys):
    m = randomize(tiny())
    run = tmp_path / "run"
    save_checkpoint(run, 1, config={**m.to_json(), "step": 1}, weights=m.state_dict(), training_state={})
    data = tmp_path / "synth"
    assert main(["data", "render", "--out", str(data), "--objects", "1", "--views", "4", "--resolution", "16",
                 "--split", "val"]) == 0
    frames = {}
    for name, extra in (("a", ["--seed", "1"]), ("b", ["--seed", "2", "--sampler", "dpmpp_2m", "--steps", "4"])):
        out = tmp_path / name
        assert main(["sample", "--checkpoint", str(run), "--input", str(data), "--orbit", "4", "--out", str(out),
                     "--device", "cpu", *extra]) == 0
        summary = json.loads((out / "sample.json").read_text())
        assert summary["views"] == 4 and len(summary["psnr"]) == 3 and summary["strategy"] == "single"
        frames[name] = np.stack([np.asarray(Image.open(p)) for p in sorted((out / "frames").iterdir())]).astype(int)
    assert json.loads((tmp_path / "a" / "sample.json").read_text())["nfe"] == 3  # one forward per generated view
    assert frames["a"].std() > 0
    # deterministic: another seed, sampler and step count give the same frames (up to 8-bit rounding)
    assert np.abs(frames["a"] - frames["b"]).max() <= 1
    capsys.readouterr()
    assert main(["sample", "--checkpoint", str(run), "--input", str(data), "--orbit", "2", "--out",
                 str(tmp_path / "g"), "--guidance", "2"]) == 2
    assert "no classifier-free guidance" in capsys.readouterr().err
