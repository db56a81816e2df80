"""RealEstate10K reader: camera files, frames, centre crop + resize, camera-only mode, errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vantage.cameras import Cameras
from vantage.data.formats import detect_format, open_dataset
from vantage.data.formats.common import DatasetError
from vantage.data.formats.realestate10k import RealEstate10KDataset, read_realestate10k

REAL = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "real" / "realestate10k"
W, H = 96, 64


@pytest.fixture(scope="module")
def cams() -> Cameras:
    """A forward-moving trajectory of 5 cameras, 96x64 frames."""
    eye = torch.stack([torch.tensor([0.1 * i, 0.0, 0.3 * i]) for i in range(5)])
    target = eye + torch.tensor([0.05, 0.02, 1.0])
    down = torch.tensor([0.0, -1.0, 0.0])
    return Cameras.from_look_at(eye, target, fov_deg=60.0, width=W, height=H, up=down)


def _write_clip(root: Path, name: str, cams: Cameras, *, frames: bool = True) -> list[int]:
    intr, w2c = cams.to_realestate10k()
    stamps = [1000 + 33366 * i for i in range(len(cams))]
    rows = ["https://www.youtube.com/watch?v=abc"]
    for t, k, m in zip(stamps, intr, w2c):
        rows.append(" ".join([str(t)] + [f"{v:.9f}" for v in k.tolist()] + ["0", "0"]
                             + [f"{v:.9f}" for v in m.flatten().tolist()]))
    root.mkdir(parents=True, exist_ok=True)
    (root / f"{name}.txt").write_text("\n".join(rows) + "\n")
    if frames:
        (root / "frames" / name).mkdir(parents=True)
        cols = np.arange(W, dtype=np.uint8)[None, :, None] * 2
        for i, t in enumerate(stamps):
            img = np.broadcast_to(cols, (H, W, 3)).copy()
            img[..., 1] = i * 40
            Image.fromarray(img).save(root / "frames" / name / f"{t}.png")
    return stamps


def test_frames_cropped_and_resized_with_intrinsics(tmp_path: Path, cams: Cameras):
    stamps = _write_clip(tmp_path, "clip1", cams)
    ds = open_dataset(tmp_path, resolution=64)
    assert isinstance(ds, RealEstate10KDataset) and ds.num_views(0) == 5 and not ds.skipped
    obj = ds.load(0, views=[3, 1])
    assert obj.view_ids.tolist() == [3, 1] and obj.meta["timestamps"] == [stamps[3], stamps[1]]
    assert obj.cameras.allclose(cams[[3, 1]].center_crop(64), atol=1e-4)
    # the centre crop keeps columns 16..79 of the frame; the frame's column value is 2 * column
    expect = torch.arange(16, 80, dtype=torch.float32) * 2 / 255 * 2 - 1
    assert torch.allclose(obj.images[0, 0, 10], expect, atol=1e-6)
    assert torch.allclose(obj.images[:, 1, 0, 0], torch.tensor([120, 40]) / 255 * 2 - 1.0, atol=1e-6)
    small = RealEstate10KDataset(tmp_path, resolution=32).load(0)
    assert small.images.shape == (5, 3, 32, 32)
    assert small.cameras.allclose(cams.center_crop(64).resize(32), atol=1e-4)


def test_camera_only_mode(tmp_path: Path, cams: Cameras):
    _write_clip(tmp_path, "clip1", cams, frames=False)
    ds = RealEstate10KDataset(tmp_path / "clip1.txt", frames=False, resolution=32)
    obj = ds.load(0)
    assert obj.meta["camera_only"] and obj.images.shape == (5, 3, 32, 32) and not obj.images.any()
    # the frame size comes from fy / fx (square pixels): same cameras as the real 96x64 frames
    assert obj.cameras.allclose(cams.center_crop(64).resize(32), atol=1e-4)
    assert ds.cameras(0, views=[2]).allclose(obj.cameras[[2]])
    with pytest.raises(DatasetError, match="no frames folder"):  # frames mode needs the frames
        RealEstate10KDataset(tmp_path)


def test_missing_frames_are_reported_not_silently_dropped(tmp_path: Path, cams: Cameras):
    stamps = _write_clip(tmp_path, "a", cams)
    _write_clip(tmp_path, "b", cams, frames=False)
    (tmp_path / "README.txt").write_text("notes\n")
    (tmp_path / "frames" / "a" / f"{stamps[2]}.png").unlink()
    ds = RealEstate10KDataset(tmp_path, resolution=16)
    assert len(ds) == 1 and ds.num_views(0) == 4
    reasons = {Path(s.path).name: s.reason for s in ds.skipped}
    assert "1 of 5 frames missing" in reasons["a.txt"] and "no frames folder" in reasons["b.txt"]
    assert "not a camera file" in reasons["README.txt"]
    assert ds.load(0).view_ids.tolist() == [0, 1, 3, 4]  # frame indices are kept


def test_bad_lines_name_file_and_line(tmp_path: Path, cams: Cameras):
    _write_clip(tmp_path, "c", cams, frames=False)
    path = tmp_path / "c.txt"
    lines = path.read_text().splitlines()
    lines[2] = " ".join(lines[2].split()[:-1])
    path.write_text("\n".join(lines))
    with pytest.raises(DatasetError, match=r"c\.txt:3: expected 19 numbers, found 18"):
        read_realestate10k(path)
    lines[2] = " ".join(["7"] + ["0.5"] * 4 + ["0"] * 14)
    path.write_text("\n".join(lines))
    with pytest.raises(DatasetError, match=r"c\.txt:3: pose is not invertible"):
        RealEstate10KDataset(path, frames=False)
    path.write_text("158692025 0.47 0.84 0.5 0.5 0 0 1 0 0 0 0 1 0 0 0 0 1 0\n")
    with pytest.raises(DatasetError, match=r"c\.txt:1: expected the video URL on the first line"):
        RealEstate10KDataset(path, frames=False)
    path.write_text("")
    with pytest.raises(DatasetError, match=r"c\.txt: empty camera file"):
        RealEstate10KDataset(path, frames=False)


def test_real_camera_file():
    f = REAL / "0bf152ef84195293.txt"
    if not f.is_file():
        pytest.skip(f"real RealEstate10K sample not found at {f} (shared fixtures are not checked out)")
    assert detect_format(REAL) == "realestate10k"
    url, ts, intr, w2c = read_realestate10k(f)
    assert url == "https://www.youtube.com/watch?v=QShWPZxTDoE" and len(ts) == 16 and ts[0] == 158692025
    ds = RealEstate10KDataset(f, frames=False, resolution=256)
    obj = ds.load(0)
    assert len(obj) == 16 and obj.view_ids.tolist() == list(range(16))
    # fx = 0.474812461 * 640 px on a 640x360 frame (fy / fx = 16 / 9), cropped to 360, resized to 256
    fx = 0.474812461 * 640 * 256 / 360
    K = torch.tensor([[fx, 0, 128], [0, fx, 128], [0, 0, 1.0]])
    assert torch.allclose(obj.cameras.K[0], K, atol=1e-3)
    c2w = torch.linalg.inv(torch.cat([w2c, torch.tensor([[[0, 0, 0, 1.0]]]).double().expand(16, 1, 4)], 1))
    assert torch.allclose(obj.cameras.c2w, c2w.float(), atol=1e-5)
