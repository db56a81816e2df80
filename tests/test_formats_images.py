"""Plain image folders: default cameras, RGBA, sizes, one-scene mode, the real photos, errors."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vantage.data.formats import detect_format, open_dataset
from vantage.data.formats.common import DatasetError
from vantage.data.formats.images import DEFAULT_FOV_DEG, DEFAULT_RADIUS, ImageFolderDataset, default_camera

REAL = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "real" / "photos"


def _img(path: Path, w: int, h: int, rgba: bool = False) -> None:
    arr = np.full((h, w, 4 if rgba else 3), 90, np.uint8)
    if rgba:
        arr[..., 3] = 0
        arr[h // 4: 3 * h // 4, w // 4: 3 * w // 4, 3] = 255
    Image.fromarray(arr).save(path)


def test_default_camera_looks_at_origin():
    cam = default_camera(20, 10)
    c = cam.centers[0]
    assert torch.allclose(c, torch.tensor([DEFAULT_RADIUS, 0.0, 0.0]), atol=1e-6)
    assert torch.allclose(cam.forward[0], -c / c.norm(), atol=1e-6)
    assert math.isclose(cam.fx[0].item(), 10 / math.tan(math.radians(DEFAULT_FOV_DEG) / 2), rel_tol=1e-6)
    assert cam.cx[0].item() == 10 and cam.cy[0].item() == 5
    assert (-cam.c2w[0, 2, 1]) > 0.99  # image up is world +z
    up = default_camera(8, 8, elevation_deg=30.0, radius=1.5)
    assert math.isclose(math.degrees(math.asin(up.centers[0, 2].item() / 1.5)), 30.0, abs_tol=1e-4)


def test_folder_of_images(tmp_path: Path):
    _img(tmp_path / "10.png", 16, 12, rgba=True)
    _img(tmp_path / "2.jpg", 16, 12)
    _img(tmp_path / "b.webp", 16, 12)
    (tmp_path / "notes.txt").write_text("x")
    assert detect_format(tmp_path) == "images"
    ds = open_dataset(tmp_path)
    assert [ds.scene_name(i) for i in range(len(ds))] == ["2", "10", "b"]  # natural order
    assert "notes.txt" in ds.skipped[0].reason
    obj = ds.load(1)
    assert obj.meta["posed"] is False and obj.images.shape == (1, 3, 12, 16)
    assert torch.allclose(obj.images[0, :, 0, 0], torch.ones(3))  # transparent -> white
    assert obj.masks is not None and obj.masks[0, 0, 6, 8] == 1 and obj.masks[0, 0, 0, 0] == 0
    assert ds.load(0).masks is None
    assert obj.cameras.allclose(default_camera(16, 12))
    scene = ImageFolderDataset(tmp_path, one_scene=True).load(0, views=[2, 0])
    assert len(scene) == 2 and scene.view_ids.tolist() == [2, 0] and scene.masks is None
    assert torch.equal(scene.cameras.c2w[0], scene.cameras.c2w[1])
    single = ImageFolderDataset(tmp_path / "10.png")
    assert len(single) == 1 and single.scene_name(0) == "10"


def test_sizes_and_resolution(tmp_path: Path):
    _img(tmp_path / "a.png", 16, 8)
    _img(tmp_path / "b.png", 10, 10, rgba=True)
    msg = r"images of different sizes: .*b\.png is 10x10 but .*a\.png is 16x8"
    with pytest.raises(DatasetError, match=msg):
        ImageFolderDataset(tmp_path)
    ds = ImageFolderDataset(tmp_path, resolution=8, one_scene=True)
    obj = ds.load(0)
    assert obj.images.shape == (2, 3, 8, 8) and obj.masks is None
    # a.png (16x8) was padded with 4 white rows at the top and bottom to 16x16
    assert torch.allclose(obj.images[0, :, 0, :], torch.ones(3, 8))
    assert obj.cameras.width == 8 and obj.cameras.allclose(default_camera(8, 8).flatten().reshape(1)[[0, 0]])


def test_empty_and_missing(tmp_path: Path):
    with pytest.raises(DatasetError, match=r"no images found \(expected \.png"):
        ImageFolderDataset(tmp_path)
    with pytest.raises(DatasetError, match="image path does not exist"):
        ImageFolderDataset(tmp_path / "nope")
    (tmp_path / "x.txt").write_text("x")
    with pytest.raises(DatasetError, match=r"x\.txt: not an image"):
        ImageFolderDataset(tmp_path / "x.txt")


def test_real_photos():
    if not REAL.is_dir():
        pytest.skip(f"real photos not found at {REAL} (shared fixtures are not checked out)")
    ds = ImageFolderDataset(REAL, resolution=64)
    assert [ds.scene_name(i) for i in range(len(ds))] == ["car_2_rgba", "chair_5_rgba", "sofa_5_rgba"]
    obj = ds.load(0)
    assert obj.images.shape == (1, 3, 64, 64) and obj.masks.shape == (1, 1, 64, 64)
    m = obj.masks[0, 0]
    assert 0.1 < m.mean() < 0.9 and m[0, 0] == 0  # the object is inside, the corner is background
    assert torch.allclose(obj.images[0, :, 0, 0], torch.ones(3))
