"""VIVID's super-resolution stage (`vivid-sr`): conditioning on the upsampled low-resolution target, training,
chaining with `vantage sample --sr-checkpoint`, and `vantage sample`'s VIVID guidance options (`--guide`, what
the recorded guidance says)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vantage.cameras import Cameras, intrinsics_from_fov, look_at
from vantage.cli.main import main
from vantage.methods import build_method
from vantage.methods.vivid_sr import VIVIDSR, SRCond, downsample, upsample_bilinear
from vantage.train.checkpoint import load_checkpoint, save_checkpoint

pytestmark = pytest.mark.usefixtures("single_thread")

TINY = dict(model_channels=8, channel_mult=(1, 2), num_blocks=1, extra_attn=None, channels_per_head=8,
            logvar_channels=16, default_steps=2, preview_steps=2, preview_count=2, input_elevation_deg=30.0,
            input_radius=2.5, input_fov_deg=40.0)


def _settings(values: dict) -> list[str]:
    out = []
    for k, v in values.items():
        out += ["--set", f"{k}={list(v) if isinstance(v, tuple) else ('null' if v is None else v)}"]
    return out


def _save(run: Path, method) -> Path:
    save_checkpoint(run, 1, config={**method.to_json(), "step": 1}, weights=method.state_dict(), training_state={})
    return run


def _gains(m):
    with torch.no_grad():  # non-zero output and embedding gains (both start at 0)
        for name, p in m.named_parameters():
            if name.endswith("gain"):
                p.fill_(0.7)
    return m.eval()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A tiny 16x16 base model, its unconditional guide, and a 16 -> 32 SR model trained for 2 steps."""
    root = tmp_path_factory.mktemp("vivid_sr")
    torch.manual_seed(0)
    base = _save(root / "base", _gains(build_method("vivid", {**TINY, "resolution": 16, "attn_resolutions": (8,)})))
    guide = _save(root / "guide", _gains(build_method("vivid", {**TINY, "resolution": 16, "attn_resolutions": (8,),
                                                                "conditional": False, "default_guidance": 1.0})))
    sr = root / "sr"
    args = ["train", "vivid-sr", "--data", "synthetic", "-o", "num_objects=4", "-o", "views=4", "--out", str(sr),
            "--steps", "2", "--batch", "2", "--device", "cpu", *_settings({**TINY, "resolution": 32,
                                                                             "low_resolution": 16,
                                                                             "attn_resolutions": (16,)})]
    assert main(args) == 0
    return {"base": base, "guide": guide, "sr": sr, "root": root}


def test_sr_conditioning_and_loss():
    torch.manual_seed(0)
    m = _gains(build_method("vivid-sr", {**TINY, "resolution": 16, "low_resolution": 8, "attn_resolutions": (8,)}))
    assert isinstance(m, VIVIDSR) and m.net.unet.enc["16x16_conv"].weight.shape[1] == 3 + 3 + 1  # + low-res, ones
    assert m.net.encoder.enc["16x16_conv"].weight.shape[1] == 3 + 1
    K = intrinsics_from_fov(40.0, 16)
    eyes = torch.tensor([[2.5, 0.0, 1.0], [0.0, 2.5, 1.0]])
    src, tgt = Cameras(look_at(eyes[:1]), K, 16, 16), Cameras(look_at(eyes[1:]), K, 16, 16)
    x0 = torch.rand(1, 3, 16, 16) * 2 - 1
    low = downsample(x0, 8)
    assert low.shape == (1, 3, 8, 8) and upsample_bilinear(low, 16).shape == (1, 3, 16, 16)
    x, sigma = torch.randn(1, 3, 16, 16), torch.tensor([0.5])
    up = upsample_bilinear(low, 16)
    with torch.no_grad():  # the low-resolution input changes the output
        d1 = m.edm2_denoiser()(x, sigma, SRCond(x0, src, tgt, low_res=up))
        d2 = m.edm2_denoiser()(x, sigma, SRCond(x0, src, tgt, low_res=-up))
    assert (d1 - d2).abs().max() > 1e-4
    with pytest.raises(TypeError, match="needs cond: SRCond"):
        from vantage.methods.base import ViewCond

        m.edm2_denoiser()(x, sigma, ViewCond(x0, src, tgt))
    with pytest.raises(ValueError, match="upsamples 8x8 images, got 16x16"):
        m.low_res_condition(x0)
    with pytest.raises(ValueError, match="unguided"):
        m.single_view_denoiser(1.5)
    with pytest.raises(ValueError, match="low_resolution must be in"):
        build_method("vivid-sr", {**TINY, "resolution": 16, "low_resolution": 16, "attn_resolutions": (8,)})
    with pytest.raises(ValueError, match="unguided"):
        build_method("vivid-sr", {**TINY, "resolution": 16, "low_resolution": 8, "attn_resolutions": (8,),
                                  "guide_checkpoint": "runs/guide"})
    out = m.upsample(low, x0, src, tgt, generator=torch.Generator().manual_seed(0))
    again = m.upsample(low, x0, src, tgt, generator=torch.Generator().manual_seed(0))
    assert out.shape == (1, 3, 16, 16) and torch.equal(out, again) and out.abs().max() <= 1


def test_sr_trains_and_presets(runs):
    m = load_checkpoint(runs["sr"])
    assert type(m) is VIVIDSR and m.config.low_resolution == 16 and m.config.resolution == 32
    assert m.config.extra_attn is None
    stats = [json.loads(line) for line in (runs["sr"] / "stats.jsonl").read_text().splitlines()]
    assert stats and all(torch.isfinite(torch.tensor(s["loss"])) for s in stats if "loss" in s)
    big = build_method("vivid-sr256")
    assert big.config.low_resolution == 64 and big.config.resolution == 256 and big.config.default_guidance == 1
    assert big.config.camera_mean[12] == pytest.approx(57.708 * 4)  # RealEstate10K statistics at 256 px


def test_vivid_sr_is_the_method_and_vivid_sr256_the_papers_stage(capsys):
    """`vivid-sr` names the method (its bare defaults, as every method name: no camera statistics, so the tiny test
    configs at 16 px are not standardised by 256 px statistics); `vivid-sr256` is the paper's 64 -> 256 stage."""
    import vantage.methods as vm
    from vantage.methods.vivid_sr import VIVIDSRConfig

    presets = vm.all_presets()
    assert "vivid-sr" not in presets and presets["vivid-sr256"][0] == "vivid-sr"
    assert VIVIDSRConfig().camera_mean is None and vm.preset_train_defaults("vivid-sr") == {}
    cfg = vm.method_class("vivid-sr").config_class(**presets["vivid-sr256"][1])
    assert cfg.camera_mean[12] == pytest.approx(57.708 * 4) and (cfg.resolution, cfg.low_resolution) == (256, 64)
    assert (cfg.channels_per_head, cfg.encoder_channels_per_head) == (32, 64)  # as the reference code
    assert main(["train", "--list"]) == 0
    assert any(line.startswith("vivid-sr256 ") for line in capsys.readouterr().out.splitlines())


def test_sample_refuses_a_guide_of_another_resolution(runs, tmp_path, capsys):
    """`vantage sample --guide` with a guide network of another resolution: exit 2, the message names both sizes
    (with an explicit weight and with the default one)."""
    torch.manual_seed(0)
    guide8 = _save(tmp_path / "guide8", build_method("vivid", {**TINY, "resolution": 8, "attn_resolutions": (4,),
                                                               "conditional": False, "default_guidance": 1.0}))
    img = tmp_path / "in.png"
    Image.new("RGB", (16, 16), (40, 40, 200)).save(img)
    common = ["--input", str(img), "--orbit", "2", "--strategy", "single", "--steps", "2", "--device", "cpu"]
    for weight in (["--guidance", "2"], []):
        out = tmp_path / f"out{len(weight)}"
        code = main(["sample", "--checkpoint", str(runs["base"]), "--guide", str(guide8), "--out", str(out), *weight,
                     *common])
        err = capsys.readouterr().err
        assert code == 2 and err.startswith("vantage sample: error:") and "Traceback" not in err
        assert "works at 8x8" in err and "this model at 16x16" in err
        assert not (out / "frames").exists()


def test_sample_chains_the_sr_stage(runs, tmp_path, capsys):
    img = tmp_path / "in.png"
    Image.new("RGB", (24, 24), (200, 40, 40)).save(img)
    out = tmp_path / "out"
    assert main(["sample", "--checkpoint", str(runs["base"]), "--sr-checkpoint", str(runs["sr"]), "--input", str(img),
                 "--orbit", "2", "--out", str(out), "--strategy", "single", "--steps", "2", "--device", "cpu"]) == 0
    frames = sorted((out / "frames").iterdir())
    assert len(frames) == 2 and all(Image.open(f).size == (32, 32) for f in frames)
    assert all(Image.open(f).size == (16, 16) for f in sorted((out / "frames_base").iterdir()))
    summary = json.loads((out / "sample.json").read_text())
    assert summary["sr_checkpoint"] and summary["guidance"] == "none (no guide network)"
    cams = json.loads((out / "cameras.json").read_text())
    assert cams["width"] == 32 and "super-resolving" in capsys.readouterr().out
    # an SR model of another low resolution does not chain, and the message names both sizes
    torch.manual_seed(0)
    other = _save(tmp_path / "sr8", build_method("vivid-sr", {**TINY, "resolution": 16, "low_resolution": 8,
                                                               "attn_resolutions": (8,)}))
    code = main(["sample", "--checkpoint", str(runs["base"]), "--sr-checkpoint", str(other), "--input", str(img),
                 "--out", str(tmp_path / "bad"), "--steps", "2", "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 2 and "upsamples 8x8 images to 16x16" in err and "generates 16x16" in err
    code = main(["sample", "--checkpoint", str(runs["sr"]), "--input", str(img), "--out", str(tmp_path / "bad2"),
                 "--steps", "2", "--device", "cpu"])
    assert code == 2 and "--sr-checkpoint" in capsys.readouterr().err
    code = main(["sample", "--checkpoint", str(runs["base"]), "--sr-checkpoint", str(runs["guide"]), "--input",
                 str(img), "--out", str(tmp_path / "bad3"), "--steps", "2", "--device", "cpu"])
    assert code == 2 and "not VIVID's super-resolution stage" in capsys.readouterr().err


def test_sample_guidance_options(runs, tmp_path, capsys):
    img = tmp_path / "in.png"
    Image.new("RGB", (16, 16), (40, 200, 40)).save(img)
    common = ["--input", str(img), "--orbit", "2", "--strategy", "single", "--steps", "2", "--device", "cpu"]
    out = tmp_path / "guided"
    assert main(["sample", "--checkpoint", str(runs["base"]), "--guide", str(runs["guide"]), "--guidance", "2",
                 "--out", str(out), *common]) == 0
    summary = json.loads((out / "sample.json").read_text())
    assert summary["guidance"] == 2 and summary["guide"] == str(runs["guide"].resolve())
    assert "guidance 2 by the guide network" in capsys.readouterr().out
    out = tmp_path / "one"
    assert main(["sample", "--checkpoint", str(runs["base"]), "--guidance", "1", "--out", str(out), *common]) == 0
    assert json.loads((out / "sample.json").read_text())["guidance"] == "none (weight 1)"
    capsys.readouterr()
    assert main(["sample", "--checkpoint", str(runs["base"]), "--guidance", "2", "--out", str(tmp_path / "x"),
                 *common]) == 2
    assert "give --guide CHECKPOINT" in capsys.readouterr().err
    assert main(["sample", "--checkpoint", str(runs["base"]), "--guide", str(tmp_path / "missing"), "--guidance",
                 "2", "--out", str(tmp_path / "y"), *common]) == 2
    assert "guide checkpoint not found" in capsys.readouterr().err
    threedim = build_method("3dim", dict(resolution=16, ch=16, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(8,),
                                         num_heads=2, emb_ch=32, norm_groups=8, ray_octaves_origin=4,
                                         ray_octaves_dir=2, default_sampler="euler", default_steps=2))
    other = _save(tmp_path / "3dim", threedim)
    assert main(["sample", "--checkpoint", str(other), "--guide", str(runs["guide"]), "--out", str(tmp_path / "z"),
                 *common]) == 2
    assert "'3dim' has none" in capsys.readouterr().err


def _size(path) -> tuple[int, int]:
    with Image.open(path) as im:
        return im.size


def test_single_target_walks_chain_the_sr_stage(runs, tmp_path, capsys):
    """``--walk-step`` with ``--sr-checkpoint``: the walks' frames are super-resolved like an orbit's, the walks
    themselves (``--save-walks``) stay at the base model's resolution."""
    img = tmp_path / "in.png"
    Image.new("RGB", (24, 24), (40, 160, 40)).save(img)
    out = tmp_path / "out"
    assert main(["sample", "--checkpoint", str(runs["base"]), "--sr-checkpoint", str(runs["sr"]), "--input", str(img),
                 "--orbit", "2", "--out", str(out), "--strategy", "interpolated", "--walk-step", "120",
                 "--save-walks", "--steps", "2", "--device", "cpu"]) == 0
    assert "super-resolving" in capsys.readouterr().out
    assert [_size(f) for f in sorted((out / "frames").iterdir())] == [(32, 32)] * 2
    assert [_size(f) for f in sorted((out / "frames_base").iterdir())] == [(16, 16)] * 2
    summary = json.loads((out / "sample.json").read_text())
    assert summary["sr_checkpoint"] and summary["walk_step_deg"] == 120 and summary["walk_lengths"][1] == 2
    walk = sorted((out / "walks" / "001").glob("*.png"))  # frame 1 is 180° from the input: two 90° poses
    assert len(walk) == 2 and all(_size(f) == (16, 16) for f in walk)
    with Image.open(walk[-1]) as last, Image.open(sorted((out / "frames_base").iterdir())[1]) as frame:
        assert np.array_equal(np.asarray(last), np.asarray(frame))  # the walk's last pose is the frame


# ------------------------------------------------------------------------------------ reference SR weights
SR_FIXTURE = Path(__file__).parent / "data" / "vivid_sr_reference.safetensors"


def _sr_reference():
    """The recorded reference SR network (``tests/data/vivid_sr_reference.*``: random weights, its inputs and
    outputs; see the README there) as ``(tensors, info)``; skips when the file is missing."""
    if not SR_FIXTURE.is_file():
        pytest.skip(f"reference SR fixture {SR_FIXTURE} missing (made with the authors' code; see "
                    f"tests/data/README.md)")
    from safetensors.torch import load_file

    return load_file(str(SR_FIXTURE)), json.loads(SR_FIXTURE.with_suffix(".json").read_text())


def _reference_state_file(d: dict, path: Path, drop=(), add=None) -> Path:
    from safetensors.torch import save_file

    state = {k[6:]: v.float().contiguous() for k, v in d.items() if k.startswith("state.") and k[6:] not in drop}
    save_file({**state, **(add or {})}, str(path))
    return path


def test_reference_sr_weights_through_convert(tmp_path, capsys):
    """`vantage convert vivid` on the reference SR network's state dict: detected by its 7-channel input conv,
    converted to `vivid-sr` with the reference's head widths (32 in the denoiser, 64 in the encoder), it
    reproduces the reference's D(x), log-variance and encoder features to 1e-5."""
    d, info = _sr_reference()
    weights = _reference_state_file(d, tmp_path / "sr.safetensors")
    assert main(["convert", "vivid", str(weights), "--out", str(tmp_path / "run")]) == 0
    assert "super-resolution 4 -> 16" in capsys.readouterr().out
    m = load_checkpoint(tmp_path / "run").eval()
    assert type(m) is VIVIDSR
    c, r = m.config, info["net_config"]["img_resolution"]
    assert (c.resolution, c.low_resolution, c.channels_per_head, c.encoder_channels_per_head) == (r, r // 4, 32, 64)
    assert c.noisy_sr == info["net_config"]["noisy_sr"]
    assert sum(v.numel() for v in m.state_dict().values()) == info["num_state_numbers"]
    heads = {f"unet.{n}": b.num_heads for n, b in m.net.unet.attention_blocks()}
    heads.update({f"encoder.{n}": b.num_heads for n, b in m.net.encoder.attention_blocks()})
    assert heads == info["attention_heads"]
    # the low-resolution input the reference's denoiser received: the upsampled image + noisy_sr · N(0, 1)
    assert torch.allclose(upsample_bilinear(d["in.low"], r), d["in.conditioning_image"], atol=1e-6)
    assert torch.allclose(d["in.conditioning_image"] + c.noisy_sr * d["in.sr_noise"], d["in.low_res_noised"],
                          atol=1e-6)
    src = Cameras.from_w2c(d["in.src_w2c"], d["in.src_K"], r, r)
    tgt = Cameras.from_w2c(d["in.tgt_w2c"], d["in.tgt_K"], r, r)
    cond = SRCond(d["in.src"], src, tgt, low_res=d["in.low_res_noised"])
    _, label, _ = m.conditioning(cond)
    assert torch.allclose(label, d["in.geometry"], atol=1e-4)  # the standardised 20-D vector at 16 px
    with torch.no_grad():
        D, logvar = m.edm2_denoiser()(d["in.dst"], d["in.sigma"], cond, return_logvar=True)
        feats = m.net.features(d["in.src"], d["in.sigma"].log() / 4, d["in.geometry"])
    assert (D - d["out.D_x"]).abs().max() < 1e-5
    assert (logvar - d["out.logvar"]).abs().max() < 1e-5
    assert [f"unet.{n}" for n, _ in m.net.unet.attention_blocks()] == info["xattn_blocks_in_order"]
    assert len(feats) == len(info["feature_shapes"])
    for i, f in enumerate(feats):
        assert (f - d[f"out.feature.{i}"]).abs().max() < 1e-5
    # the explicit preset gives the same model
    assert main(["convert", "vivid", str(weights), "--out", str(tmp_path / "run2"), "--preset", "vivid-sr256"]) == 0
    m2 = load_checkpoint(tmp_path / "run2")
    assert m2.config == c and all(torch.equal(v, m.state_dict()[k]) for k, v in m2.state_dict().items())


def test_reference_sr_weights_mismatches_are_named(tmp_path, capsys):
    d, _ = _sr_reference()
    # a base-model preset for SR weights: refused, naming the input conv
    weights = _reference_state_file(d, tmp_path / "sr.safetensors")
    assert main(["convert", "vivid", str(weights), "--out", str(tmp_path / "a"), "--preset", "vivid-re10k64"]) == 2
    err = capsys.readouterr().err
    assert "vivid-re10k64 is a vivid preset" in err and "unet.enc.16x16_conv.weight" in err and "(32, 7, 3, 3)" in err
    # a missing and an unexpected key are listed by name
    bad = _reference_state_file(d, tmp_path / "bad.safetensors", drop=("unet.dec.8x8_in0.x_attn_kv.weight",),
                                add={"unet.dec.8x8_in0.extra.weight": torch.zeros(2)})
    assert main(["convert", "vivid", str(bad), "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert "missing keys: net.unet.dec.8x8_in0.x_attn_kv.weight" in err
    assert "unexpected keys: unet.dec.8x8_in0.extra.weight" in err
    # other input widths (depth, warped coordinates) are not the SR network
    odd = _reference_state_file(d, tmp_path / "odd.safetensors", drop=("unet.enc.16x16_conv.weight",),
                                add={"unet.enc.16x16_conv.weight": torch.zeros(32, 8, 3, 3)})
    assert main(["convert", "vivid", str(odd), "--out", str(tmp_path / "c")]) == 2
    assert "takes 7 input channels" in capsys.readouterr().err


def test_sr_preset_refuses_base_weights(tmp_path, capsys):
    """`--preset vivid-sr256` on a base model's state dict (3-channel input conv) is an error naming the key."""
    from safetensors.torch import save_file

    torch.manual_seed(0)
    base = build_method("vivid", {**TINY, "resolution": 16, "attn_resolutions": (8,)})
    ref = {}
    for k, v in base.state_dict().items():  # ours -> the reference's names (the inverse of the converter's map)
        ref[k[4:] if k.startswith("net.") else k.replace("logvar.weight", "logvar_linear.weight")
            .replace("logvar.", "logvar_fourier.")] = v.contiguous()
    save_file(ref, str(tmp_path / "base.safetensors"))
    assert main(["convert", "vivid", str(tmp_path / "base.safetensors"), "--out", str(tmp_path / "ok"), "--set",
                 "channels_per_head=8"]) == 0
    assert type(load_checkpoint(tmp_path / "ok")).__name__ == "VIVID"
    capsys.readouterr()
    assert main(["convert", "vivid", str(tmp_path / "base.safetensors"), "--out", str(tmp_path / "sr"), "--preset",
                 "vivid-sr256"]) == 2
    err = capsys.readouterr().err
    assert "vivid-sr256 is a vivid-sr preset" in err and "unet.enc.16x16_conv.weight" in err
