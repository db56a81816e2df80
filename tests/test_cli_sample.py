"""`vantage sample` end to end with tiny randomly initialised 3DiM and ViewFusion checkpoints: an image
input (resized, alpha, assumed camera), an object folder with ground truth, dataset targets, several
input views (autoregressive and fixed), ViewFusion's weight maps, and the errors a user can make."""

from __future__ import annotations

import json
import sys
import types

import numpy as np
import pytest
import torch
from helpers import save_tiny_run
from PIL import Image
from safetensors.torch import save_file

from vantage.cli.main import main
from vantage.methods import METHODS, build_method
from vantage.methods.base import Method, MethodConfig
from vantage.train.checkpoint import save_checkpoint

pytestmark = pytest.mark.usefixtures("single_thread")

TINY = dict(resolution=16, ch=16, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(8,), num_heads=2, emb_ch=32,
            norm_groups=8, ray_octaves_origin=4, ray_octaves_dir=2, default_sampler="euler", default_steps=2,
            input_elevation_deg=30.0, input_radius=2.5, input_fov_deg=40.0)


def write_checkpoint(folder, method: Method) -> None:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({**method.to_json(), "step": 1}))
    save_file({k: v.contiguous() for k, v in method.state_dict().items()}, str(folder / "model.safetensors"))


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return save_tiny_run(tmp_path_factory.mktemp("run"), "3dim", TINY)  # its newest checkpoint is used


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

    out3 = tmp_path / "two_inputs_fixed"  # 3DiM with two posed input views, fixed views: stochastic over both
    assert main(["sample", "--checkpoint", str(ckpt), "--input", str(objects), "--orbit", "4", "--input-views", "0,2",
                 "--no-autoregressive", "--out", str(out3), "--steps", "1"]) == 0
    summary = json.loads((out3 / "sample.json").read_text())
    assert summary["strategy"] == "stochastic" and summary["set_sizes"] == [0, 2, 0, 2]


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


# ------------------------------------------------------------------------------------ ViewFusion
VF_TINY = dict(resolution=16, ch=8, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(8,), norm_groups=4,
               default_steps=2, max_views=2)


@pytest.fixture(scope="module")
def vf_ckpt(tmp_path_factory):
    torch.manual_seed(0)
    m = build_method("viewfusion", VF_TINY)
    with torch.no_grad():  # non-zero output convolution: weights that differ between views and pixels
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    run = tmp_path_factory.mktemp("vf_run")
    save_checkpoint(run, 1, config={**m.to_json(), "step": 1}, weights=m.state_dict(), training_state={})
    return run


def _sample(ckpt, inp, out, *extra: str) -> int:
    inputs = [str(p) for p in inp] if isinstance(inp, list) else [str(inp)]
    return main(["sample", "--checkpoint", str(ckpt), "--input", *inputs, "--out", str(out), "--device", "cpu",
                 *extra])


def _frames(out) -> np.ndarray:
    return np.stack([np.asarray(Image.open(p)) for p in sorted((out / "frames").iterdir())]).astype(int)


def test_viewfusion_autoregressive_orbit_with_weight_maps(vf_ckpt, objects, tmp_path, capsys):
    out = tmp_path / "vf"
    assert _sample(vf_ckpt, objects, out, "--orbit", "4", "--input-views", "0,1", "--save-weights") == 0
    said = capsys.readouterr().out
    assert "strategy composed, autoregressive" in said  # the default strategy of a ViewFusion checkpoint
    assert "reaches 3 views, more than the 2 the model was trained with" in said  # extrapolation: a note
    assert [np.asarray(Image.open(p)).shape for p in sorted((out / "frames").iterdir())] == [(16, 16, 3)] * 4
    assert Image.open(out / "orbit.gif").n_frames == 4
    assert sorted(p.name for p in (out / "inputs").iterdir()) == ["000.png", "001.png"]
    assert Image.open(out / "contact_sheet.png").height >= 3 * 64  # inputs | generated | truth
    cams = json.loads((out / "cameras.json").read_text())
    assert [f["view"] for f in cams["inputs"]] == [0, 1] and len(cams["frames"]) == 4
    assert [f["generated"] for f in cams["frames"]] == [False, False, True, True]  # frames 0, 1 are the inputs
    summary = json.loads((out / "sample.json").read_text())
    assert summary["strategy"] == "composed" and summary["autoregressive"] and summary["guidance"] == 0
    assert summary["set_sizes"] == [0, 0, 2, 3] and summary["nfe"] == 2 * 2 and summary["weights"] == "mean"

    w = out / "weights"
    assert sorted(p.name for p in w.iterdir()) == ["002.png", "003.png", "orbit.gif", "summary.json", "weights.pt"]
    grid = Image.open(w / "003.png")
    assert grid.width >= (3 + 2) * 64 and grid.height >= 2 * 64  # 3 views + output + colour bar, 2 rows
    assert Image.open(w / "orbit.gif").n_frames == 2
    raw = torch.load(w / "weights.pt")
    assert raw["mode"] == "mean" and [f["frame"] for f in raw["frames"]] == [2, 3]
    f2, f3 = raw["frames"]
    assert f2["sources"] == ["view 0", "view 1"] and f3["sources"] == ["view 0", "view 1", "frame 2"]
    for f in (f2, f3):
        k = len(f["sources"])
        assert f["weights"].shape == (k, 3, 16, 16)
        assert torch.allclose(f["weights"].sum(0), torch.ones(3, 16, 16), atol=1e-5)  # over the views used
        assert f["weights"].std() > 1e-4  # learned per-pixel weights, not uniform
    assert set(json.loads((w / "summary.json").read_text())["mean_weight"]["3"]) == {"view 0", "view 1", "frame 2"}


def test_viewfusion_fixed_views_do_not_depend_on_the_input_order(vf_ckpt, objects, tmp_path):
    runs = {}
    cases = (("a", "0,2", ()), ("b", "2,0", ("--max-rows", "1")), ("c", "2,0", ("--order", "alternating")))
    for name, views, extra in cases:
        out = tmp_path / name
        assert _sample(vf_ckpt, objects, out, "--input-views", views, "--targets", "dataset", "--no-autoregressive",
                       "--save-weights", "final", "--seed", "5", *extra) == 0
        runs[name] = out
    a = json.loads((runs["a"] / "sample.json").read_text())
    assert not a["autoregressive"] and a["set_sizes"] == [2, 2] and a["input_views"] == [0, 2]
    assert [f["ground_truth_view"] for f in json.loads((runs["a"] / "cameras.json").read_text())["frames"]] == [1, 3]
    fa = _frames(runs["a"])
    assert fa.std() > 0
    for other in ("b", "c"):  # permutation invariance (same seed); neither the target order nor --max-rows matter
        assert np.abs(_frames(runs[other]) - fa).max() <= 1
        wa, wo = (torch.load(runs[n] / "weights" / "weights.pt")["frames"] for n in ("a", other))
        for fa_, fo in zip(wa, wo):
            assert fa_["frame"] == fo["frame"] and sorted(fo["sources"]) == ["view 0", "view 2"]
            perm = [fo["sources"].index(s) for s in fa_["sources"]]
            assert torch.allclose(fo["weights"][perm], fa_["weights"], atol=1e-5)
            assert torch.allclose(fa_["weights"].sum(0), torch.ones(3, 16, 16), atol=1e-5)


def test_viewfusion_from_several_images(vf_ckpt, ckpt, tmp_path, capsys):
    a, b = tmp_path / "front.png", tmp_path / "side.png"
    rgba = np.zeros((12, 20, 4), dtype=np.uint8)
    rgba[..., 1], rgba[2:10, 4:16, 3] = 180, 255
    Image.fromarray(rgba, "RGBA").save(a)
    Image.new("RGB", (16, 16), (30, 60, 200)).save(b)
    out = tmp_path / "imgs"
    assert _sample(vf_ckpt, [a, b], out, "--orbit", "3", "--save-weights") == 0
    said = capsys.readouterr().out
    assert "front.png: resized the input image from 20x12" in said and "2 images have no pose" in said
    summary = json.loads((out / "sample.json").read_text())
    assert summary["input_views"] == [0, 1] and summary["set_sizes"] == [0, 2, 3]  # frame 0: the first image
    assert np.array_equal(np.asarray(Image.open(out / "inputs" / "001.png")), np.asarray(Image.open(b)))
    assert torch.load(out / "weights" / "weights.pt")["frames"][0]["sources"] == ["front", "side"]
    # a method that reads the input cameras cannot use several unposed images
    assert _sample(ckpt, [a, b], tmp_path / "3dim", "--orbit", "3") == 2
    assert "same default camera" in capsys.readouterr().err


def test_viewfusion_sample_errors(vf_ckpt, ckpt, objects, tmp_path, capsys):
    img = tmp_path / "x.png"
    Image.new("RGB", (16, 16), "white").save(img)

    def err(*extra: str, checkpoint=vf_ckpt, inp=objects) -> str:
        code = _sample(checkpoint, inp, tmp_path / f"out{len(list(tmp_path.iterdir()))}", "--orbit", "2", *extra)
        said = capsys.readouterr().err
        assert code == 2, said
        assert "Traceback" not in said and len(said.strip().splitlines()) == 1
        return said

    assert "no classifier-free guidance" in err("--guidance", "3")
    assert "needs a ViewFusion checkpoint" in err("--strategy", "composed", checkpoint=ckpt)
    assert "needs --strategy composed" in err("--strategy", "stochastic", "--save-weights")
    assert "zero input views" in err("--input-views", "")
    assert "zero input views" in err("--num-input-views", "0")
    assert "has 4 views" in err("--input-views", "0,9")
    assert "twice" in err("--input-views", "1,1")
    assert "not both" in err("--input-views", "0,1", "--num-input-views", "2")
    assert "must all be image files" in err(inp=[img, objects])
    assert "no such option" in err("--max-rows", "2", checkpoint=ckpt)
    # guidance 0 is accepted (it is ViewFusion's default); --num-input-views spaces the views evenly
    out = tmp_path / "ok"
    assert _sample(vf_ckpt, objects, out, "--guidance", "0", "--num-input-views", "2", "--input-view", "1",
                   "--orbit", "2", "--strategy", "stochastic", "--steps", "1") == 0
    assert json.loads((out / "sample.json").read_text())["input_views"] == [1, 3]


# ------------------------------------------------------------------------------------ orbit options
def _cams_json(out) -> list[dict]:
    return json.loads((out / "cameras.json").read_text())["frames"]


def test_sample_arc_elevation_and_intermediates(ckpt, objects, tmp_path, capsys):
    out = tmp_path / "arc"
    assert _sample(ckpt, objects, out, "--arc=-90:90", "--orbit", "3", "--elevation", "10", "--steps", "2",
                   "--save-intermediates") == 0
    frames = _cams_json(out)
    inp = json.loads((out / "cameras.json").read_text())["input"]
    rel = [(f["azimuth_deg"] - inp["azimuth_deg"] + 180) % 360 - 180 for f in frames]
    assert np.allclose(rel, [-90, 0, 90], atol=1e-3) and all(abs(f["elevation_deg"] - 10) < 1e-3 for f in frames)
    assert all(f["generated"] for f in frames)  # another elevation: no frame is the input
    summary = json.loads((out / "sample.json").read_text())
    assert summary["arc"] == [-90.0, 90.0] and summary["target_cameras"] == "arc -90:90" and summary["intermediates"]
    inter = out / "intermediates"
    assert sorted(p.name for p in inter.iterdir()) == ["000", "001", "002"]
    assert sorted(p.name for p in (inter / "001").iterdir()) == ["000.png", "001.png"]  # x̂0 of both steps
    # at the input's elevation, 0:90 in 2 views: the input and the object's view at +90° (ground truth)
    out2 = tmp_path / "quarter"
    assert _sample(ckpt, objects, out2, "--arc", "0:90", "--orbit", "2", "--steps", "1") == 0
    frames = _cams_json(out2)
    assert [f["generated"] for f in frames] == [False, True] and [f["ground_truth_view"] for f in frames] == [0, 1]
    assert list(json.loads((out2 / "sample.json").read_text())["psnr"]) == ["1"]
    # a clockwise arc, END < START
    out3 = tmp_path / "cw"
    assert _sample(ckpt, objects, out3, "--arc", "0:-90", "--orbit", "2", "--steps", "1") == 0
    assert [f["ground_truth_view"] for f in _cams_json(out3)] == [0, 3]


def test_sample_target_cameras_from_files(ckpt, objects, tmp_path, capsys):
    first = tmp_path / "first"
    assert _sample(ckpt, objects, first, "--orbit", "4", "--steps", "1") == 0
    # our own cameras.json: the same cameras again; frame 0 is the input (copied), the rest are ground truth
    again = tmp_path / "again"
    assert _sample(ckpt, objects, again, "--cameras", str(first / "cameras.json"), "--steps", "1") == 0
    a, b = _cams_json(first), _cams_json(again)
    assert np.allclose([f["c2w"] for f in a], [f["c2w"] for f in b], atol=1e-6)
    assert [f["generated"] for f in b] == [False, True, True, True]
    assert [f["ground_truth_view"] for f in b] == [0, 1, 2, 3]
    summary = json.loads((again / "sample.json").read_text())
    assert summary["targets"] == "cameras" and "(vantage-sample)" in summary["target_cameras"]
    # nerfstudio's transforms.json (OpenGL axes) and a folder holding it; --orbit keeps 2 evenly spaced
    ns = tmp_path / "ns"
    assert _sample(ckpt, objects, ns, "--cameras", str(first / "nerfstudio"), "--orbit", "2", "--steps", "1") == 0
    c = _cams_json(ns)
    assert np.allclose([f["c2w"] for f in c], [a[0]["c2w"], a[2]["c2w"]], atol=1e-5)
    assert [f["generated"] for f in c] == [False, True]
    # the object's own cameras.json at 24x24: scaled to the model's 16x16 (said), ground truth everywhere
    own = tmp_path / "own"
    obj_dir = next(p for p in objects.iterdir() if p.is_dir())
    assert _sample(ckpt, objects, own, "--cameras", str(obj_dir / "cameras.json"), "--order", "alternating",
                   "--steps", "1") == 0
    assert "target cameras are for 24x24 images" in capsys.readouterr().out
    assert [f["ground_truth_view"] for f in _cams_json(own)] == [0, 1, 2, 3]
    # a hand-written transforms.json without images (w, h and fl_x given), another size
    doc = {"fl_x": 40.0, "w": 32, "h": 32, "frames": [
        {"file_path": "missing.png", "transform_matrix": [[1, 0, 0, 0], [0, 0, -1, -2.5], [0, 1, 0, 0], [0, 0, 0, 1]]}]}
    tf = tmp_path / "transforms.json"
    tf.write_text(json.dumps(doc))
    hand = tmp_path / "hand"
    assert _sample(ckpt, objects, hand, "--cameras", str(tf), "--steps", "1") == 0
    (f,) = _cams_json(hand)
    assert np.allclose(np.asarray(f["K"])[0, 0], 20.0) and abs(f["radius"] - 2.5) < 1e-5 and f["generated"]


def test_sample_orbit_option_errors(ckpt, objects, tmp_path, capsys):
    def err(*extra: str) -> str:
        code = _sample(ckpt, objects, tmp_path / f"out{len(list(tmp_path.iterdir()))}", "--steps", "1", *extra)
        said = capsys.readouterr().err
        assert code == 2, said
        assert "Traceback" not in said and len(said.strip().splitlines()) == 1
        return said

    empty = tmp_path / "empty.json"
    empty.write_text(json.dumps({"width": 16, "height": 16, "frames": []}))
    assert "is empty" in err("--arc", "10:10", "--orbit", "3")
    assert "at most 360" in err("--arc", "0:400")
    assert "(-90, 90)" in err("--elevation", "95")
    assert "--orbit" in err("--orbit", "0")
    assert "no cameras" in err("--cameras", str(empty))
    assert "not found" in err("--cameras", str(tmp_path / "nope.json"))
    assert "give one of them" in err("--cameras", str(empty), "--arc", "0:90")
    assert "give one of them" in err("--cameras", str(empty), "--targets", "dataset")
    assert "--elevation sets the orbit's elevation" in err("--targets", "dataset", "--elevation", "10")
    with pytest.raises(SystemExit):  # argparse: not START:END
        _sample(ckpt, objects, tmp_path / "bad_arc", "--arc", "90")
    assert "START:END" in capsys.readouterr().err


def test_sample_preprocesses_photos_unless_told_not_to(ckpt, tmp_path, capsys):
    """A photo on a uniform grey background with an off-centre object is masked, recentred and composited
    on white by default (the parameters land in sample.json); --no-preprocess uses it as it is."""
    rng = np.random.default_rng(0)
    photo = np.full((40, 40, 3), 128, dtype=np.uint8) + rng.integers(0, 3, (40, 40, 3), dtype=np.uint8)
    photo[4:16, 22:36] = (200, 30, 30)  # a red box in the top right corner
    img = tmp_path / "photo.png"
    Image.fromarray(photo).save(img)
    out, raw = tmp_path / "pre", tmp_path / "raw"
    assert main(["sample", "--checkpoint", str(ckpt), "--input", str(img), "--orbit", "2", "--out", str(out),
                 "--steps", "1"]) == 0
    assert main(["sample", "--checkpoint", str(ckpt), "--input", str(img), "--orbit", "2", "--out", str(raw),
                 "--steps", "1", "--no-preprocess"]) == 0
    pre = json.loads((out / "sample.json").read_text())
    assert len(pre["preprocessing"]) == 1 and "preprocessing" not in json.loads((raw / "sample.json").read_text())
    a, b = (np.asarray(Image.open(d / "input.png")).astype(int) for d in (out, raw))
    assert (a[0, 0] > 240).all() and abs(b[0, 0] - 128).max() < 10  # white background vs the grey photo
    red = (a[..., 0] > 150) & (a[..., 1] < 100)
    ys, xs = np.nonzero(red)
    assert abs(ys.mean() - 7.5) < 1.5 and abs(xs.mean() - 7.5) < 1.5  # recentred in the 16 px frame
