"""The `vantage` command end to end: demo, data render/verify/show/convert/shard, errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from PIL import Image

from vantage.cli.data import parse_options
from vantage.cli.main import UserError, main
from vantage.data.formats import open_dataset


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "synth"
    assert main(["data", "render", "--out", str(out), "--objects", "3", "--views", "8",
                 "--resolution", "24", "--split", "val"]) == 0
    return out


def test_demo_writes_pictures_and_never_overwrites(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--data-only", "--out", str(out), "--objects", "2", "--views", "6", "--resolution", "32"]) == 0
    said = capsys.readouterr().out
    assert "--data-only" in said and "no model is run" in said
    summary = json.loads((out / "demo.json").read_text())
    assert len(summary["objects"]) == 2
    sheet = Image.open(out / "contact_sheet.png")
    assert sheet.width > 200 and (out / "cameras.png").is_file()
    assert Image.open(out / "orbit_01.gif").n_frames == 6
    # a second run into the same folder is refused with a clear message
    assert main(["demo", "--data-only", "--out", str(out), "--objects", "1"]) == 2
    assert "--overwrite" in capsys.readouterr().err


def test_render_verify_show_convert_shard(rendered, tmp_path, capsys):
    ds = open_dataset(rendered)
    assert ds.format_name == "vantage" and len(ds) == 3 and ds.num_views(0) == 8
    assert main(["data", "verify", str(rendered)]) == 0
    said = capsys.readouterr().out
    assert "scenes: 3" in said and "views: 24" in said and "24x24" in said and "OK" in said

    sheet = tmp_path / "s_sheet.png"
    assert main(["data", "show", str(rendered), "--out", str(sheet), "--views", "4"]) == 0
    assert Image.open(sheet).height > 3 * 24 and (tmp_path / "s_cameras.png").is_file()
    assert main(["data", "show", str(rendered), "--out", str(sheet)]) == 2  # exists: refused

    ns = tmp_path / "ns"
    assert main(["data", "convert", str(rendered), "--to", "nerfstudio", "--out", str(ns)]) == 0
    scenes = sorted(p.name for p in ns.iterdir())
    assert scenes == [ds.scene_name(i) for i in range(3)]
    tj = json.loads((ns / scenes[0] / "transforms.json").read_text())
    assert len(tj["frames"]) == 8 and "mask_path" in tj["frames"][0] and "depth_file_path" in tj["frames"][0]
    back = open_dataset(ns / scenes[0])
    assert back.format_name == "nerfstudio"
    assert back.load(0).cameras.allclose(ds.load(0).cameras, atol=1e-4)
    assert main(["data", "verify", str(ns / scenes[1])]) == 0

    sh = tmp_path / "shards"
    assert main(["data", "shard", str(rendered), "--out", str(sh), "--shard-size", "2"]) == 0
    index = json.loads((sh / "index.json").read_text())
    assert index["num_samples"] == 3 and [s["count"] for s in index["shards"]] == [2, 1]
    assert len(list(sh.glob("*.tar"))) == 2
    from vantage.data.shard_stream import ShardDataset

    got = {o.name: o for o in ShardDataset(sh, shuffle=False, rank=0, world_size=1)}
    assert sorted(got) == [ds.scene_name(i) for i in range(3)]
    src = ds.load(2)
    assert (got[src.name].images - src.images).abs().max() < 1 / 127
    assert got[src.name].cameras.allclose(src.cameras)


def test_verify_names_the_bad_file(rendered, tmp_path, capsys):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(rendered, bad)
    obj = sorted(p for p in bad.iterdir() if p.is_dir())[1]
    cams = json.loads((obj / "cameras.json").read_text())
    cams["views"][2]["K"] = [[1.0, 0.0], [0.0, 1.0]]
    (obj / "cameras.json").write_text(json.dumps(cams))
    code = main(["data", "verify", str(bad)])
    out = capsys.readouterr()
    assert code != 0
    text = out.out + out.err
    assert "cameras.json" in text and obj.name in text and "3x3" in text


def test_verify_flags_cameras_that_do_not_look_at_the_object(rendered, tmp_path, capsys):
    import shutil

    bad = tmp_path / "away"
    shutil.copytree(rendered, bad)
    obj = sorted(p for p in bad.iterdir() if p.is_dir())[0]
    cams = json.loads((obj / "cameras.json").read_text())
    c2w = cams["views"][5]["c2w"]
    for row in range(3):  # turn the camera around its y axis by 180 degrees
        c2w[row][0], c2w[row][2] = -c2w[row][0], -c2w[row][2]
    (obj / "cameras.json").write_text(json.dumps(cams))
    assert main(["data", "verify", str(bad)]) == 1
    assert "view 5: does not look at the object" in capsys.readouterr().out


def test_user_errors_are_one_line(tmp_path, capsys):
    assert main(["data", "verify", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["data", "verify", str(empty)]) == 2
    assert "--format" in capsys.readouterr().err
    assert main(["data", "render", "--out", str(tmp_path / "r"), "--resolution", "8"]) == 2
    assert main(["data", "render", "--out", str(tmp_path / "r"), "--split", "benchmark",
                 "--layout", "hemisphere", "--objects", "1", "--views", "2", "--resolution", "16"]) == 2
    assert "Traceback" not in capsys.readouterr().err


def test_parse_options():
    assert parse_options(["frames=false", "resolution=128", "split=train", "x=none"]) == {
        "frames": False, "resolution": 128, "split": "train", "x": None}
    with pytest.raises(UserError, match="KEY=VALUE"):
        parse_options(["frames"])


@pytest.mark.parametrize("cmd", [[], ["demo"], ["data"], ["data", "render"], ["data", "verify"],
                                 ["data", "convert"], ["data", "show"], ["data", "shard"]])
def test_every_command_has_help(cmd, capsys):
    with pytest.raises(SystemExit) as e:
        main([*cmd, "--help"])
    assert e.value.code == 0
    assert "usage: vantage" in capsys.readouterr().out


def test_console_script_runs():
    r = subprocess.run([sys.executable, "-m", "vantage.cli.main", "--version"], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.startswith("vantage "), r.stderr


def test_model_demo_with_a_checkpoint(tmp_path, capsys):
    """The model demo's plumbing with a tiny random 3DiM: orbit GIF, contact sheet, honest metrics."""
    import torch

    from vantage.cli.model_demo import orbit_metrics
    from vantage.data.synthetic import SyntheticDataset
    from vantage.methods import build_method
    from vantage.train.checkpoint import save_checkpoint

    torch.manual_seed(0)
    m = build_method("3dim", dict(resolution=16, ch=16, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(8,),
                                  num_heads=2, emb_ch=32, norm_groups=8, ray_octaves_origin=4, ray_octaves_dir=2,
                                  default_sampler="euler", default_steps=2))
    run = tmp_path / "run"
    save_checkpoint(run, 1, config={**m.to_json(), "step": 1}, weights=m.state_dict(), training_state={})
    out = tmp_path / "demo"
    assert main(["demo", "--checkpoint", str(run), "--objects", "2", "--out", str(out), "--device", "cpu"]) == 0
    said = capsys.readouterr().out
    assert "copy-the-input baseline" in said
    metrics = json.loads((out / "metrics.json").read_text())
    assert len(metrics["per_object"]) == 2 and metrics["nfe"] > 0
    # the baseline is what copying view 0 really scores against the benchmark ground truth
    obj = SyntheticDataset(split="benchmark", num_objects=1, views=24, resolution=16).load(0)
    ref = orbit_metrics(obj.images[1:], obj.images[1:], obj.images[:1])
    assert abs(metrics["per_object"][0]["baseline_psnr"] - round(ref["baseline_psnr"], 4)) < 1e-3
    assert ref["psnr"] == float("inf")  # identical images: the metric can tell a perfect orbit
    assert Image.open(out / "orbit.gif").n_frames == 24
    assert (out / "contact_sheet.png").is_file()
    # --data-only ignores the model
    assert main(["demo", "--checkpoint", str(run), "--data-only", "--objects", "1", "--views", "4",
                 "--out", str(tmp_path / "d2")]) == 0
    assert "no model is run" in capsys.readouterr().out
