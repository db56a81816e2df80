"""Sampler options (``s_noise``, ``eta``, ...): named and checked per sampler, carried by a method config as
``default_sampler_options`` (applied only when its default sampler runs), and set with ``vantage sample
--sampler-option``; the orbit, the CLI and ``sample.json`` agree on what ran."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from vantage.cameras import Cameras
from vantage.cli.main import main
from vantage.data.synthetic import SyntheticDataset
from vantage.diffusion.sampler_options import check_sampler_options, parse_sampler_option, sampler_option_defaults
from vantage.methods import build_method
from vantage.methods.base import sampler_options_for
from vantage.sampling.orbit import autoregressive_orbit
from vantage.train.checkpoint import load_checkpoint, save_checkpoint

pytestmark = pytest.mark.usefixtures("single_thread")

TINY = dict(resolution=16, ch=8, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(8,), num_heads=2, emb_ch=16,
            norm_groups=4, ray_octaves_origin=2, ray_octaves_dir=2, default_steps=3,
            default_sampler="euler_ancestral", default_sampler_options={"s_noise": 0})


def test_options_of_each_sampler_and_their_checks():
    assert sampler_option_defaults("euler_ancestral") == {"eta": 1.0, "s_noise": 1.0}
    assert sampler_option_defaults("ddpm") == {"clip_denoised": None}
    assert set(sampler_option_defaults("heun")) == {"s_churn", "s_tmin", "s_tmax", "s_noise"}
    assert check_sampler_options("ddim", {"eta": 1, "eps_from_clipped": True, "clip_denoised": None}) == \
        {"eta": 1.0, "eps_from_clipped": True, "clip_denoised": None}
    with pytest.raises(ValueError, match=r"'ddpm' has no option 's_noise' \(its options: clip_denoised\)"):
        check_sampler_options("ddpm", {"s_noise": 0.5})
    with pytest.raises(ValueError, match="finite number"):
        check_sampler_options("euler", {"s_churn": float("nan")})
    with pytest.raises(ValueError, match="true or false"):
        check_sampler_options("ddim", {"eps_from_clipped": 1})
    with pytest.raises(ValueError, match="finite number"):
        check_sampler_options("euler", {"s_noise": True})
    assert parse_sampler_option(" s_noise = 0.7") == ("s_noise", 0.7)
    assert parse_sampler_option("eps_from_clipped=true") == ("eps_from_clipped", True)
    assert parse_sampler_option("clip_denoised=null") == ("clip_denoised", None)
    for bad in ("s_noise", "=1", "s_noise=cold"):
        with pytest.raises(ValueError, match="KEY=VALUE|not a number"):
            parse_sampler_option(bad)


def test_config_defaults_apply_to_the_default_sampler_only():
    m = build_method("3dim", TINY)
    assert m.config.default_sampler_options == {"s_noise": 0.0}
    assert sampler_options_for(m.config, None) == {"s_noise": 0.0}
    assert sampler_options_for(m.config, "Euler-Ancestral") == {"s_noise": 0.0}  # the same sampler, spelt otherwise
    assert sampler_options_for(m.config, "ddpm") == {} and sampler_options_for(None, None) == {}
    with pytest.raises(ValueError, match="default_sampler_options: sampler 'ddpm' has no option 's_noise'"):
        build_method("3dim", {**TINY, "default_sampler": "ddpm"})
    # the orbit runs the default sampler with them: the same as passing them, not the same as without them
    torch.manual_seed(0)
    m = build_method("3dim", TINY)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    obj = SyntheticDataset(split="val", num_objects=1, views=4, resolution=16).load(0)
    cams = Cameras.stack([obj.cameras[1], obj.cameras[2]])

    def orbit(**kw):
        return autoregressive_orbit(m, obj.select([0]), cams, seed=3, **kw).images

    cold = orbit()
    assert torch.equal(cold, orbit(sampler="euler_ancestral", sampler_options={"s_noise": 0.0}))
    assert not torch.allclose(cold, orbit(sampler_options={}))  # s_noise 1, the sampler's default
    assert not torch.allclose(cold, orbit(sampler="euler_ancestral", sampler_options={"s_noise": 1.0}))


def test_sample_cli_and_checkpoint_round_trip(tmp_path, capsys):
    torch.manual_seed(0)
    m = build_method("3dim", TINY)
    run = tmp_path / "run"
    save_checkpoint(run, 1, config={**m.to_json(), "step": 1}, weights=m.state_dict(), training_state={})
    assert load_checkpoint(run).config.default_sampler_options == {"s_noise": 0.0}
    from vantage.serve.models import read_model_info

    assert "sampler euler_ancestral s_noise=0, 3 steps" in read_model_info(run).describe()
    img = tmp_path / "in.png"
    Image.new("RGB", (16, 16), (30, 90, 200)).save(img)

    def sample(name, *extra):
        return main(["sample", "--checkpoint", str(run), "--input", str(img), "--orbit", "2", "--out",
                     str(tmp_path / name), "--device", "cpu", *extra])

    assert sample("a") == 0
    assert "euler_ancestral (s_noise=0) x 3 steps" in capsys.readouterr().out
    assert json.loads((tmp_path / "a" / "sample.json").read_text())["sampler_options"] == {"s_noise": 0.0}
    assert sample("b", "--sampler-option", "s_noise=0.5", "--sampler-option", "eta=0.5") == 0
    assert json.loads((tmp_path / "b" / "sample.json").read_text())["sampler_options"] == {"s_noise": 0.5, "eta": 0.5}
    assert sample("c", "--sampler", "ddim") == 0  # another sampler: the model's options do not follow it
    assert json.loads((tmp_path / "c" / "sample.json").read_text())["sampler_options"] == {}
    capsys.readouterr()
    assert sample("d", "--sampler", "ddpm", "--sampler-option", "s_noise=0.5") == 2
    assert "--sampler-option: sampler 'ddpm' has no option 's_noise'" in capsys.readouterr().err
    assert sample("e", "--sampler-option", "s_noise") == 2
    assert "KEY=VALUE" in capsys.readouterr().err
    assert not (tmp_path / "d").exists() or not any((tmp_path / "d").iterdir())
