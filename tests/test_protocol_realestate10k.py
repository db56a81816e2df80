"""The RealEstate10K protocols: realestate10k-v1 (VIVID's 'mid' gap, unchanged), realestate10k-mid-v1 (the same
views with the joint FID) and realestate10k-long-v1 (the 'long' gap, frames 60/90/120), on a tiny generated
RealEstate10K-format dataset whose frames encode their index in the green channel."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import save_tiny_run
from PIL import Image

from vantage.cameras import Cameras
from vantage.cli.main import main
from vantage.eval.evaluate_model import _view_ids, choose_views, open_protocol_dataset, select_objects
from vantage.eval.protocol import PROTOCOL_DIR, load_protocol, protocol_from_dict, shipped_protocols

pytestmark = pytest.mark.usefixtures("single_thread")

TINY_3DIM = dict(resolution=16, ch=16, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(8,), num_heads=2,
                 emb_ch=32, norm_groups=8, ray_octaves_origin=4, ray_octaves_dir=2, default_sampler="euler",
                 default_steps=2)


class MeanColour(torch.nn.Module):
    """Stand-in for the FID Inception (its weights are never present in tests): (B, 3, H, W) -> (B, 3) mean colour."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3))


@pytest.fixture(autouse=True)
def no_weights(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("VANTAGE_WEIGHTS", str(tmp_path_factory.mktemp("no-weights")))


def write_clip(root: Path, name: str, lines: int, frames: list[int], size: tuple[int, int] = (24, 16)) -> None:
    """A test-split clip: a camera file of ``lines`` frames moving forward, and the frames ``frames`` extracted
    (flat colour (100 + clip hash, 2·index, 50): the green channel says which frame it is)."""
    eye = torch.stack([torch.tensor([0.0, 0.0, 0.02 * i]) for i in range(lines)])
    cams = Cameras.from_look_at(eye, eye + torch.tensor([0.0, 0.0, 1.0]), fov_deg=60.0, width=size[0],
                                height=size[1], up=torch.tensor([0.0, -1.0, 0.0]))
    intr, w2c = cams.to_realestate10k()
    stamps = [5000 + 33366 * i for i in range(lines)]
    rows = ["https://www.youtube.com/watch?v=" + name]
    for t, k, m in zip(stamps, intr, w2c):
        rows.append(" ".join([str(t)] + [f"{v:.9f}" for v in k.tolist()] + ["0", "0"]
                             + [f"{v:.9f}" for v in m.flatten().tolist()]))
    (root / "test").mkdir(parents=True, exist_ok=True)
    (root / "test" / f"{name}.txt").write_text("\n".join(rows) + "\n")
    folder = root / "frames" / "test" / name
    folder.mkdir(parents=True)
    red = 100 + sum(map(ord, name)) % 100
    for i in frames:
        Image.fromarray(np.full((size[1], size[0], 3), (red, 2 * i, 50), np.uint8)).save(folder / f"{stamps[i]}.png")


@pytest.fixture(scope="module")
def re10k(tmp_path_factory) -> Path:
    """Clips (test split): three with frames 0, 5, ..., 120; 'gap' without frame 90; 'short' ending at frame 99."""
    root = tmp_path_factory.mktemp("re10k")
    every5 = list(range(0, 121, 5))
    for name in ("full_a", "full_b", "full_c"):
        write_clip(root, name, 121, every5)
    write_clip(root, "gap", 121, [i for i in every5 if i != 90])
    write_clip(root, "short", 100, [i for i in every5 if i < 100])
    return root


# ------------------------------------------------------------------------------------ the protocol files
def test_realestate10k_protocols_load_and_validate():
    assert {"realestate10k-v1", "realestate10k-mid-v1", "realestate10k-long-v1"} <= set(shipped_protocols())
    v1, mid, long = (load_protocol(n) for n in ("realestate10k-v1", "realestate10k-mid-v1", "realestate10k-long-v1"))
    # v1 is versioned and unchanged: the mid gap, no joint FID
    assert v1.target_views == [30, 45, 60] and v1.metrics.names == ("psnr", "ssim", "lpips", "fid")
    assert load_protocol("realestate10k").label == "realestate10k-v1"  # the newest version of that name
    assert load_protocol("realestate10k-long").label == "realestate10k-long-v1"
    # mid-v1: v1's views and settings, plus the joint FID
    assert mid.metrics.names == ("psnr", "ssim", "lpips", "fid", "jfid")
    a, b = v1.to_dict(), mid.to_dict()
    for d in (a, b):
        d.pop("name"), d.pop("description"), d["metrics"].pop("names")
    assert a == b
    # long-v1: VIVID's 'long' gap (60-120 frames), the same everything else as mid-v1
    assert long.input_views == [0] and long.target_views == [60, 90, 120] and long.missing_views == "skip"
    assert long.resolution == 64 and long.metrics.names == mid.metrics.names and not long.sampling.autoregressive
    a, b = mid.to_dict(), long.to_dict()
    for d in (a, b):
        d.pop("name"), d.pop("description"), d.pop("target_views")
    assert a == b
    assert "'mid' gap (30-60 frames)" in mid.description and "'long' gap (60-120 frames)" in long.description
    # the files are valid as they are read (no defaults filled in for missing keys)
    for name in ("realestate10k-mid-v1", "realestate10k-long-v1"):
        data = json.loads((PROTOCOL_DIR / f"{name}.json").read_text())
        assert set(data) == set(json.loads((PROTOCOL_DIR / "realestate10k-v1.json").read_text()))
        assert protocol_from_dict(data).label == name


def test_protocols_select_the_right_frames(re10k):
    for label, targets, skipped in (("realestate10k-long-v1", [60, 90, 120], {"gap": [90], "short": [120]}),
                                    ("realestate10k-mid-v1", [30, 45, 60], {}),
                                    ("realestate10k-v1", [30, 45, 60], {})):
        p = load_protocol(label)
        ds = open_protocol_dataset(p, re10k, p.resolution)  # the root: the protocol's split folder is used
        picked = select_objects(ds, p)
        assert [ds.scene_name(i) for i in picked] == ["full_a", "full_b", "full_c", "gap", "short"]
        for i in picked:
            name = ds.scene_name(i)
            inputs, tgt, why = choose_views(p, name, _view_ids(ds, i))
            assert inputs == [0] and tgt == targets
            if name in skipped:
                assert f"has no view(s) {skipped[name]}" in why
            else:
                assert why is None


# ------------------------------------------------------------------------------------ checkpoint and files mode
@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return save_tiny_run(tmp_path_factory.mktemp("run"), "3dim", TINY_3DIM, scale=0)


@pytest.mark.filterwarnings("ignore:Matrix is singular")  # 9 images, 3 distinct sources: rank-deficient covariances
def test_long_protocol_end_to_end_with_joint_fid(re10k, ckpt, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("vantage.eval.inception.FIDInceptionV3", MeanColour)
    data = json.loads((PROTOCOL_DIR / "realestate10k-long-v1.json").read_text())
    proto = tmp_path / "long16.json"  # the shipped protocol at the tiny model's 16 px, nothing else changed
    proto.write_text(json.dumps({**data, "name": "realestate10k-long-16px", "resolution": 16}))
    out = tmp_path / "eval"
    assert main(["evaluate", "--checkpoint", str(ckpt), "--protocol", str(proto), "--data", str(re10k),
                 "--out", str(out), "--device", "cpu"]) == 0
    said = capsys.readouterr().out
    assert "joint FID:" in said
    doc = json.loads((out / "metrics.json").read_text())
    run, r = doc["run"], doc["result"]
    assert [o["object"] for o in run["objects"]] == ["full_a", "full_b", "full_c"]
    assert {s["object"] for s in run["skipped_objects"]} == {"gap", "short"}
    assert r["images"] == 9 and set(r["skipped"]) == {"lpips"}
    for clip in ("full_a", "full_b", "full_c"):
        assert sorted(p.name for p in (out / "gt" / clip).iterdir()) == ["000060.png", "000090.png", "000120.png"]
        assert [p.name for p in (out / "inputs" / clip).iterdir()] == ["000000.png"]
        for frame in (60, 90, 120):  # the frame itself: its index is in the green channel
            assert np.asarray(Image.open(out / "gt" / clip / f"{frame:06d}.png"))[..., 1].mean() == 2 * frame
        assert np.asarray(Image.open(out / "inputs" / clip / "000000.png"))[..., 1].max() == 0
    sm = r["set_metrics"]
    assert np.isfinite(sm["jfid"]) and np.isfinite(sm["fid"]) and sm["set_size"] == 9
    assert "joint FID" in (out / "metrics.md").read_text()
    # files mode on the saved folders, with the saved input views as sources, gives the same numbers
    again = tmp_path / "again"
    assert main(["evaluate", "--pred", str(out / "pred"), "--gt", str(out / "gt"), "--inputs", str(out / "inputs"),
                 "--protocol", str(proto), "--out", str(again), "--device", "cpu"]) == 0
    sm2 = json.loads((again / "metrics.json").read_text())["result"]["set_metrics"]
    assert sm2["jfid"] == pytest.approx(sm["jfid"]) and sm2["fid"] == pytest.approx(sm["fid"])
