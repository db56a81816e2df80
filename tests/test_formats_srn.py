"""SRN reader: round trips through the on-disk layout, the real sample, and bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vantage.cameras import Cameras, hemisphere_cameras
from vantage.data.formats import detect_format, open_dataset
from vantage.data.formats.common import DatasetError, up_to_z_rotation
from vantage.data.formats.srn import SRNDataset

REAL = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "real" / "srn_format"


def _write_instance(d: Path, cams: Cameras, *, intrinsics_scale: float = 1.0, rgba: bool = True,
                    world2cam: bool = False) -> None:
    """Write cameras (z-up world) in SRN's layout: y-up world, OpenCV c2w (or w2c) pose files."""
    (d / "rgb").mkdir(parents=True)
    (d / "pose").mkdir()
    to_y_up = up_to_z_rotation("+y").T.float()  # inverse of the reader's +y -> +z rotation
    stored = Cameras(to_y_up @ cams.c2w, cams.K, cams.width, cams.height)
    mats = stored.w2c if world2cam else stored.to_srn()
    rng = np.random.default_rng(0)
    for i in range(len(cams)):
        np.savetxt(d / "pose" / f"{i:06d}.txt", mats[i].reshape(1, 16).numpy(), fmt="%.9f")
        arr = rng.integers(0, 256, (cams.height, cams.width, 4 if rgba else 3), dtype=np.uint8)
        if rgba:
            arr[..., 3] = 255
            arr[0, 0, 3] = 0
        Image.fromarray(arr).save(d / "rgb" / f"{i:06d}.png")
    k, s = cams.K[0] * intrinsics_scale, intrinsics_scale  # intrinsics of a (s H) x (s W) image
    lines = [f"{k[0, 0]:.6f} {k[0, 2]:.6f} {k[1, 2]:.6f} 0.", "0. 0. 0.", "1.",
             f"{round(s * cams.height)} {round(s * cams.width)}"]  # SRN: "H W"
    if world2cam:
        lines.append("1")
    (d / "intrinsics.txt").write_text("\n".join(lines) + "\n")


@pytest.fixture
def cams() -> Cameras:
    return hemisphere_cameras(5, generator=torch.Generator().manual_seed(1), resolution=16, radius=1.3)


def test_round_trip_into_our_convention(tmp_path: Path, cams: Cameras):
    for name in ("a", "b"):
        _write_instance(tmp_path / "cars_train" / name, cams)
    ds = open_dataset(tmp_path / "cars_train")
    assert isinstance(ds, SRNDataset) and len(ds) == 2 and ds.num_views(1) == 5 and not ds.skipped
    obj = ds.load(1)
    assert obj.name == "b" and obj.view_ids.tolist() == [0, 1, 2, 3, 4]
    assert obj.cameras.allclose(cams, atol=1e-5)
    c = obj.cameras.centers
    assert torch.allclose((obj.cameras.forward * -c).sum(-1) / c.norm(dim=-1), torch.ones(5), atol=1e-5)
    assert obj.images.shape == (5, 3, 16, 16) and obj.masks.shape == (5, 1, 16, 16)
    assert torch.allclose(obj.images[:, :, 0, 0], torch.ones(5, 3))  # transparent pixel -> white
    # split folders and a single instance
    assert len(SRNDataset(tmp_path, split="train")) == 2
    assert len(SRNDataset(tmp_path / "cars_train" / "a")) == 1


def test_stored_frame_kept_with_up_none_and_intrinsics_rescaled(tmp_path: Path, cams: Cameras):
    _write_instance(tmp_path / "x", cams, intrinsics_scale=4.0)  # intrinsics written for 64 px images
    raw = SRNDataset(tmp_path / "x", up=None).load(0, views=[2])
    stored = up_to_z_rotation("+y").T.float() @ cams.c2w[2]
    assert torch.allclose(raw.cameras.c2w[0], stored, atol=1e-5)
    assert torch.allclose(raw.cameras.K[0], cams.K[2], atol=1e-4)  # rescaled from 64 to 16 px
    small = SRNDataset(tmp_path / "x", resolution=8).load(0)
    assert small.images.shape[-1] == 8 and torch.allclose(small.cameras.K, cams.resize(8).K, atol=1e-4)
    wide = Cameras.from_look_at(cams.centers[:2], fov_deg=50.0, width=16, height=8)  # "H W" order matters
    _write_instance(tmp_path / "wide", wide, intrinsics_scale=2.0)
    assert SRNDataset(tmp_path / "wide").load(0).cameras.allclose(wide, atol=1e-4)


def test_world2cam_flag_and_per_view_intrinsics(tmp_path: Path, cams: Cameras):
    _write_instance(tmp_path / "w", cams, world2cam=True, rgba=False)
    obj = SRNDataset(tmp_path / "w").load(0)
    assert obj.cameras.allclose(cams, atol=1e-5) and obj.masks is None
    (tmp_path / "w" / "intrinsics").mkdir()
    K = cams.K.clone()
    K[:, 0, 0] *= 1.5
    for i in range(5):
        np.savetxt(tmp_path / "w" / "intrinsics" / f"{i:06d}.txt", K[i].numpy())
    (tmp_path / "w" / "intrinsics.txt").unlink()
    obj = SRNDataset(tmp_path / "w").load(0, views=[3, 1])
    assert torch.allclose(obj.cameras.K, K[[3, 1]], atol=1e-5) and obj.view_ids.tolist() == [3, 1]


def test_loads_only_requested_views(tmp_path: Path, cams: Cameras):
    _write_instance(tmp_path / "i", cams)
    ds = SRNDataset(tmp_path / "i")
    (tmp_path / "i" / "rgb" / "000004.png").unlink()
    assert ds.load(0, views=[0, 3]).images.shape[0] == 2
    with pytest.raises(DatasetError, match=r"missing image: .*000004\.png"):
        ds.load(0, views=[4])


def test_bad_input_messages(tmp_path: Path, cams: Cameras):
    _write_instance(tmp_path / "i", cams)
    pose = tmp_path / "i" / "pose" / "000001.txt"
    pose.write_text(" ".join(["0.5"] * 15))
    msg = r"000001\.txt: expected 16 \(4x4\) or 12 \(3x4\) numbers, found 15"
    with pytest.raises(DatasetError, match=msg):
        SRNDataset(tmp_path / "i").load(0)
    pose.write_text(" ".join(["0"] * 15 + ["1"]))
    with pytest.raises(DatasetError, match=r"000001\.txt: pose is not invertible"):
        SRNDataset(tmp_path / "i").load(0, views=[1])
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "i" / "rgb" / "000002.png")
    msg = r"000002\.png: image is 8x8 but 16x16 was expected like .*000000\.png"
    with pytest.raises(DatasetError, match=msg):
        SRNDataset(tmp_path / "i").load(0, views=[0, 2])
    (tmp_path / "i" / "intrinsics.txt").write_text("131.25 64 64 0.\n0. 0. 0.\n1.\n")
    with pytest.raises(DatasetError, match=r"intrinsics\.txt: expected at least 4 lines"):
        SRNDataset(tmp_path / "i")
    (tmp_path / "i" / "intrinsics.txt").write_text("131.25 64 64 0.\n0. 0. 0.\n1.\n128\n")
    with pytest.raises(DatasetError, match=r"intrinsics\.txt:4: expected 2 numbers, found 1"):
        SRNDataset(tmp_path / "i")
    _write_instance(tmp_path / "ok", hemisphere_cameras(2, resolution=16))
    ds = SRNDataset(tmp_path, strict=False)  # the broken instance is skipped with the reason
    assert [e.name for e in ds.entries] == ["ok"]
    assert [Path(s.path).name for s in ds.skipped] == ["i"] and "intrinsics.txt:4" in ds.skipped[0].reason


def test_skipped_instances_are_recorded(tmp_path: Path, cams: Cameras):
    _write_instance(tmp_path / "good", cams)
    (tmp_path / "noposes" / "rgb").mkdir(parents=True)
    (tmp_path / "noposes" / "pose").mkdir()
    (tmp_path / "notes").mkdir()
    rgb = tmp_path / "good" / "rgb"
    (rgb / "000009.png").write_bytes((rgb / "000000.png").read_bytes())
    ds = SRNDataset(tmp_path)
    reasons = {Path(s.path).name: s.reason for s in ds.skipped}
    assert len(ds) == 1 and ds.num_views(0) == 5
    assert reasons["noposes"] == "no pose/*.txt files"
    assert "not an SRN instance" in reasons["notes"]
    assert "000009.png" in reasons["good"]
    with pytest.raises(DatasetError, match="no srn scenes found"):
        SRNDataset(tmp_path / "notes")


def test_real_sample():
    if not REAL.is_dir():
        pytest.skip(f"real SRN sample not found at {REAL} (shared fixtures are not checked out)")
    assert detect_format(REAL) == "srn"
    ds = SRNDataset(REAL)
    obj = ds.load(0)
    assert len(obj) == 4 and obj.images.shape == (4, 3, 128, 128)
    assert torch.allclose(obj.cameras.K[0], torch.tensor([[131.25, 0, 64], [0, 131.25, 64], [0, 0, 1.0]]))
    c = obj.cameras.centers
    assert torch.allclose(c.norm(dim=-1), torch.full((4,), 1.2), atol=1e-4)  # SOURCE.md: radius 1.2
    assert torch.allclose((obj.cameras.forward * -c).sum(-1) / c.norm(dim=-1), torch.ones(4), atol=1e-4)
    # after the +y -> +z rotation the image "up" (-y camera axis) points up (+z) and x is level
    assert (-obj.cameras.c2w[:, 2, 1] > 0.5).all()
    assert torch.allclose(obj.cameras.c2w[:, 2, 0], torch.zeros(4), atol=1e-6)
    raw = SRNDataset(REAL, up=None).load(0, views=[0])
    first = [float(v) for v in (REAL / "instance" / "pose" / "000000.txt").read_text().split()]
    assert torch.allclose(raw.cameras.c2w[0].flatten(), torch.tensor(first), atol=1e-6)
