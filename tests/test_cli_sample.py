"""`vantage sample` end to end with a tiny randomly initialised 3DiM checkpoint: an image input
(resized, alpha, assumed camera), an object folder with ground truth, dataset targets, and the
errors a user can make."""

from __future__ import annotations

import json
import sys
import types

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from vantage.cli.main import main
from vantage.methods import METHODS, build_method
from vantage.methods.base import Method, MethodConfig
from vantage.train.checkpoint import save_checkpoint

TINY = dict(resolution=16, ch=16, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(8,), num_heads=2, emb_ch=32,
            norm_groups=8, ray_octaves_origin=4, ray_octaves_dir=2, default_sampler="euler", default_steps=2,
            input_elevation_deg=30.0, input_radius=2.5, input_fov_deg=40.0)


def write_checkpoint(folder, method: Method) -> None:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({**method.to_json(), "step": 1}))
    save_file({k: v.contiguous() for k, v in method.state_dict().items()}, str(folder / "model.safetensors"))


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    torch.manual_seed(0)
    m = build_method("3dim", TINY)
    with torch.no_grad():  # not all-zero outputs
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    run = tmp_path_factory.mktemp("run")  # a run folder as the trainer writes it; its newest checkpoint is used
    save_checkpoint(run, 1, config={**m.to_json(), "step": 1}, weights=m.state_dict(), training_state={})
    return run


@pytest.fixture(scope="module")
def objects(tmp_path_factory):
    out = tmp_path_factory.mktemp("data") / "synth"
    assert main(["data", "render", "--out", str(out), "--objects", "1", "--views", "4", "--resolution", "24",
                 "--split", "val"]) == 0
    return out


def test_sample_from_an_image(ckpt, tmp_path, capsys):
    rgba = np.zeros((12, 20, 4), dtype=np.uint8)
    rgba[..., 0], rgba[3:9, 5:15, 3] = 200, 255  # a red box, transparent around it
    img = tmp_path / "photo.png"
    Image.fromarray(rgba, "RGBA").save(img)
    out = tmp_path / "out"
    assert main(["sample", "--checkpoint", str(ckpt), "--input", str(img), "--orbit", "4", "--out", str(out),
                 "--seed", "3", "--device", "cpu"]) == 0
    said = capsys.readouterr().out
    assert "resized the input image from 20x12" in said and "alpha" in said and "default camera" in said
    assert sorted(p.name for p in (out / "frames").iterdir()) == [f"{i:03d}.png" for i in range(4)]
    assert Image.open(out / "orbit.gif").n_frames == 4
    assert (out / "orbit.mp4").is_file() or "orbit.mp4 skipped" in said
    sheet = Image.open(out / "contact_sheet.png")
    assert 2 * 64 <= sheet.height < 3 * 64  # input | generated, no ground truth row
    cams = json.loads((out / "cameras.json").read_text())
    assert len(cams["frames"]) == 4 and not cams["frames"][0]["generated"] and cams["frames"][1]["generated"]
    f1 = cams["frames"][1]
    assert np.asarray(f1["c2w"]).shape == (4, 4) and np.asarray(f1["K"]).shape == (3, 3)
    assert abs(f1["azimuth_deg"] - 90) < 1e-3 and abs(f1["elevation_deg"] - 30) < 1e-3
    assert abs(f1["radius"] - 2.5) < 1e-4
    gl = np.asarray(f1["transform_matrix"])
    assert np.allclose(gl[:3, 1], -np.asarray(f1["c2w"])[:3, 1])  # OpenGL: camera y flipped
    ns = json.loads((out / "nerfstudio" / "transforms.json").read_text())
    assert len(ns["frames"]) == 4
    summary = json.loads((out / "sample.json").read_text())
    assert summary["views"] == 4 and summary["nfe"] == 3 * 2 and summary["psnr_mean"] is None
    # the input frame is the (composited, resized) input itself
    assert np.array_equal(np.asarray(Image.open(out / "frames" / "000.png")), np.asarray(Image.open(out / "input.png")))
    # --elevation on an unposed image: the input is assumed there and the orbit runs through it
    out_e = tmp_path / "elev"
    assert main(["sample", "--checkpoint", str(ckpt), "--input", str(img), "--orbit", "2", "--out", str(out_e),
                 "--elevation", "10", "--steps", "1"]) == 0
    frames = json.loads((out_e / "cameras.json").read_text())["frames"]
    assert [f["generated"] for f in frames] == [False, True]
    assert all(abs(f["elevation_deg"] - 10) < 1e-3 for f in frames) and abs(abs(frames[1]["azimuth_deg"]) - 180) < 1e-3
    capsys.readouterr()
    # a second run into the same folder is refused
    assert main(["sample", "--checkpoint", str(ckpt), "--input", str(img), "--out", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err


def test_sample_from_an_object_folder_with_ground_truth(ckpt, objects, tmp_path, capsys):
    out = tmp_path / "orbit"
    assert main(["sample", "--checkpoint", str(ckpt), "--input", str(objects), "--orbit", "4", "--out", str(out),
                 "--strategy", "stochastic", "--order", "alternating", "--guidance", "1.5"]) == 0
    said = capsys.readouterr().out
    assert "resized views from 24x24 to the model's 16x16" in said and "PSNR" in said
    summary = json.loads((out / "sample.json").read_text())
    assert sorted(summary["psnr"]) == ["1", "2", "3"] and summary["order"] == [0, 1, 3, 2]
    assert [f["ground_truth_view"] for f in json.loads((out / "cameras.json").read_text())["frames"]] == [0, 1, 2, 3]
    assert Image.open(out / "contact_sheet.png").height >= 3 * 64  # input | generated | truth

    out2 = tmp_path / "dataset_targets"
    assert main(["sample", "--checkpoint", str(ckpt), "--input", str(objects), "--targets", "dataset", "--orbit", "2",
                 "--input-view", "1", "--strategy", "single", "--out", str(out2), "--steps", "1"]) == 0
    summary = json.loads((out2 / "sample.json").read_text())
    assert summary["views"] == 2 and summary["steps"] == 1 and len(summary["psnr"]) == 2


class Dummy(Method):
    """A method without a single-view denoiser."""

    name = "dummy"
    config_class = MethodConfig

    def __init__(self, config: MethodConfig) -> None:
        super().__init__(config)
        self.w = torch.nn.Parameter(torch.zeros(1))


def test_sample_errors(ckpt, objects, tmp_path, capsys, monkeypatch):
    img = tmp_path / "x.png"
    Image.new("RGB", (16, 16), "white").save(img)

    def run(*extra: str, checkpoint=ckpt, inp=img) -> str:
        out = tmp_path / f"out{len(list(tmp_path.iterdir()))}"
        code = main(["sample", "--checkpoint", str(checkpoint), "--input", str(inp), "--orbit", "3",
                     "--out", str(out), *extra])
        err = capsys.readouterr().err
        assert code == 2, err
        return err

    assert "does not exist" in run(checkpoint=tmp_path / "missing")
    bad = tmp_path / "bad_weights" / "ck"
    write_checkpoint(bad, build_method("3dim", TINY))
    (bad / "model.safetensors").write_bytes(b"not a safetensors file")
    assert "corrupt" in run(checkpoint=bad)
    badcfg = tmp_path / "bad_cfg" / "ck"
    write_checkpoint(badcfg, build_method("3dim", TINY))
    (badcfg / "config.json").write_text("{ nope")
    assert "config.json" in run(checkpoint=badcfg)
    other = tmp_path / "other_size" / "ck"
    write_checkpoint(other, build_method("3dim", {**TINY, "ch": 8, "norm_groups": 4}))
    cfg = json.loads((other / "config.json").read_text())
    cfg["config"]["ch"] = 16
    cfg["config"]["norm_groups"] = 8
    (other / "config.json").write_text(json.dumps(cfg))
    assert "do not match" in run(checkpoint=other)

    module = types.ModuleType("vantage_test_dummy_method")
    module.Dummy = Dummy
    monkeypatch.setitem(sys.modules, "vantage_test_dummy_method", module)
    monkeypatch.setitem(METHODS, "dummy", "vantage_test_dummy_method:Dummy")
    dummy = tmp_path / "dummy" / "ck"
    write_checkpoint(dummy, Dummy(MethodConfig()))
    assert "single-view denoiser" in run(checkpoint=dummy)

    junk = tmp_path / "junk.png"
    junk.write_bytes(b"\x89PNG garbage")
    assert "cannot read" in run(inp=junk)
    assert "not found" in run(inp=tmp_path / "nothing.png")
    assert "unknown sampler" in run("--sampler", "nope")
    assert "--orbit" in run("--orbit", "0")
    assert "needs posed views" in run("--targets", "dataset")
    assert "--scene" in run("--scene", "7", inp=objects)
