"""NMR/DVR reader: ring round trips, pixelNeRF's reading of the same files, splits, bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vantage.cameras import Cameras, ring_cameras
from vantage.data.formats import detect_format, open_dataset
from vantage.data.formats.common import DatasetError, up_to_z_rotation
from vantage.data.formats.nmr import NMRDataset

RES = 16


def _write_object(d: Path, cams: Cameras, *, scale: float | None = None, masks: bool = False,
                  drop_key: str | None = None) -> None:
    """DVR layout; the stored world is +y up. With ``scale``, a DTU-style scale_mat is added."""
    (d / "image").mkdir(parents=True)
    stored = Cameras(up_to_z_rotation("+y").T.float() @ cams.c2w, cams.K, cams.width, cams.height)
    world_mat, camera_mat = stored.to_nmr()
    out = {}
    for i in range(len(cams)):
        wm = world_mat[i].double().numpy()
        if scale is not None:
            S = np.diag([scale, scale, scale, 1.0])
            S[:3, 3] = [0.1, -0.2, 0.3]
            out[f"scale_mat_{i}"] = S
            wm = wm @ np.linalg.inv(S)
        out[f"world_mat_{i}"] = wm
        out[f"camera_mat_{i}"] = camera_mat[i].double().numpy()
        img = np.full((cams.height, cams.width, 3), 255, np.uint8)
        img[4:12, 4:12] = (i * 10, 100, 200)
        Image.fromarray(img).save(d / "image" / f"{i:04d}.png")
        if masks:
            (d / "mask").mkdir(exist_ok=True)
            Image.fromarray((img[..., 0] < 255).astype(np.uint8) * 255).save(d / "mask" / f"{i:04d}.png")
    if drop_key:
        out.pop(drop_key)
    np.savez(d / "cameras.npz", **out)


@pytest.fixture(scope="module")
def ring() -> Cameras:
    return ring_cameras(24, resolution=RES, radius=2.732, fov_deg=2 * np.degrees(np.arctan(1 / 2.1875)))


def test_round_trip_ring_and_view_ids(tmp_path: Path, ring: Cameras):
    _write_object(tmp_path / "02958343" / "car1", ring, masks=True)
    _write_object(tmp_path / "03001627" / "chair1", ring)
    ds = open_dataset(tmp_path)
    assert isinstance(ds, NMRDataset) and len(ds) == 2
    assert ds.scene_name(0) == "02958343/car1" and ds.num_views(0) == 24
    obj = ds.load(0, views=[5, 0, 23])
    assert obj.view_ids.tolist() == [5, 0, 23] and obj.meta["class_id"] == "02958343"
    assert obj.cameras.allclose(ring[[5, 0, 23]], atol=1e-5)
    assert obj.masks.shape == (3, 1, RES, RES) and ds.load(1).masks is None
    c = obj.cameras.centers
    assert torch.allclose((obj.cameras.forward * -c).sum(-1) / c.norm(dim=-1), torch.ones(3), atol=1e-5)
    assert torch.allclose(obj.cameras.K[0, 0, 0], torch.tensor(2.1875 * RES / 2), atol=1e-4)
    # ring index i has azimuth 2 pi i / 24 in our z-up world
    az = torch.atan2(c[:, 1], c[:, 0])
    ring_az = torch.tensor([5, 0, 23]) * 2 * np.pi / 24
    assert torch.allclose(torch.remainder(az, 2 * np.pi), ring_az, atol=1e-4)


def test_matches_pixelnerf_reading(tmp_path: Path, ring: Cameras):
    """pixelNeRF DVRDataset: pose = T_world @ inv(world_mat) @ T_cam, focal = camera_mat[0, 0] * W / 2."""
    _write_object(tmp_path / "c" / "o", ring)
    cams = np.load(tmp_path / "c" / "o" / "cameras.npz")
    t_world = np.array([[1, 0, 0, 0], [0, 0, -1, 0], [0, 1, 0, 0], [0, 0, 0, 1]], dtype=np.float64)
    t_cam = np.diag([1.0, -1.0, -1.0, 1.0])
    obj = NMRDataset(tmp_path / "c" / "o").load(0)
    for i in (0, 7, 19):
        pose = t_world @ np.linalg.inv(cams[f"world_mat_{i}"]) @ t_cam  # pixelNeRF's OpenGL c2w
        assert np.allclose(obj.cameras.to_opengl()[i].numpy(), pose, atol=1e-5)
        assert np.isclose(obj.cameras.fx[i].item(), cams[f"camera_mat_{i}"][0, 0] * RES / 2, atol=1e-4)
        assert np.isclose(obj.cameras.cx[i].item(), RES / 2)


def test_scale_mat_and_scaled_world_mat(tmp_path: Path, ring: Cameras):
    _write_object(tmp_path / "c" / "o", ring, scale=2.5)
    obj = NMRDataset(tmp_path / "c" / "o").load(0)
    assert obj.cameras.allclose(ring, atol=1e-5)
    cams = dict(np.load(tmp_path / "c" / "o" / "cameras.npz"))
    for i in range(24):  # a world_mat with a uniform scale projects like the rigid one
        cams[f"world_mat_{i}"] = cams[f"world_mat_{i}"] @ cams.pop(f"scale_mat_{i}")
        cams[f"world_mat_{i}"][:3] *= 3.0
    np.savez(tmp_path / "c" / "o" / "cameras.npz", **cams)
    assert NMRDataset(tmp_path / "c" / "o").load(0).cameras.allclose(ring, atol=1e-5)


def test_split_lists(tmp_path: Path, ring: Cameras):
    for name in ("a", "b", "c"):
        _write_object(tmp_path / "cls" / name, ring[:4])
    (tmp_path / "cls" / "softras_train.lst").write_text("a\nc\nmissing\n")
    (tmp_path / "cls" / "test.lst").write_text("b\n")
    ds = NMRDataset(tmp_path, split="train")
    assert [ds.scene_name(i) for i in range(len(ds))] == ["cls/a", "cls/c"]
    assert "does not exist" in ds.skipped[0].reason and ds.skipped[0].path.endswith("missing")
    assert [e.name for e in NMRDataset(tmp_path, split="test", list_prefix="").entries] == ["cls/b"]
    assert len(NMRDataset(tmp_path)) == 3 and len(NMRDataset(tmp_path / "cls")) == 3
    with pytest.raises(DatasetError, match="no class folder has a split list 'softras_val.lst'"):
        NMRDataset(tmp_path, split="val")


def test_bad_input_messages(tmp_path: Path, ring: Cameras):
    _write_object(tmp_path / "c" / "o", ring[:3], drop_key="world_mat_1")
    msg = r"cameras\.npz: no world_mat_<i>/camera_mat_<i> for image\(s\) 0001\.png"
    with pytest.raises(DatasetError, match=msg):
        NMRDataset(tmp_path / "c" / "o")
    _write_object(tmp_path / "c" / "p", ring[:3])
    cams = dict(np.load(tmp_path / "c" / "p" / "cameras.npz"))
    cams["world_mat_2"] = np.zeros((4, 4))
    cams["camera_mat_1"] = -cams["camera_mat_1"]
    np.savez(tmp_path / "c" / "p" / "cameras.npz", **cams)
    ds = NMRDataset(tmp_path / "c" / "p")
    with pytest.raises(DatasetError, match=r"cameras\.npz \[world_mat_2\]: pose is not invertible"):
        ds.load(0, views=[2])
    with pytest.raises(DatasetError, match=r"cameras\.npz \[camera_mat_1\]: expected positive focal lengths"):
        ds.load(0, views=[1])
    (tmp_path / "c" / "p" / "cameras.npz").write_text("garbage")
    with pytest.raises(DatasetError, match=r"cameras\.npz: cannot read as an \.npz archive"):
        ds.load(0, views=[0])
    with pytest.raises(DatasetError, match=r"no nmr scenes found .*skipped: .*o: .*0001.*p: .*cannot read"):
        NMRDataset(tmp_path / "c", strict=False)  # both skipped, with their reasons, then nothing is left
    _write_object(tmp_path / "c" / "q", ring[:2])
    lenient = NMRDataset(tmp_path / "c", strict=False)
    assert [Path(s.path).name for s in lenient.skipped] == ["o", "p"] and len(lenient) == 1
    assert detect_format(tmp_path) == "nmr"
