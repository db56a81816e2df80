"""Zero-1-to-3 and GSO render folders: round trips of each camera layout, published values, errors."""

from __future__ import annotations

import math
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vantage.cameras import Cameras, hemisphere_cameras
from vantage.data.formats import detect_format, open_dataset
from vantage.data.formats.common import DatasetError
from vantage.data.formats.gso import GSODataset, syncdreamer_cameras
from vantage.data.formats.zero123 import ZERO123_FOV_DEG, Zero123Dataset

RES = 16


@pytest.fixture(scope="module")
def cams() -> Cameras:
    g = torch.Generator().manual_seed(3)
    return hemisphere_cameras(6, generator=g, radius=1.8, fov_deg=ZERO123_FOV_DEG, resolution=RES)


def _renders(d: Path, n: int, size: int = RES, depth: np.ndarray | None = None) -> None:
    d.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        rgba = np.zeros((size, size, 4), np.uint8)
        rgba[4:12, 4:12] = (200, 30, i * 13, 255)
        Image.fromarray(rgba).save(d / f"{i:03d}.png")
        if depth is not None:
            Image.fromarray(depth).save(d / f"{i:03d}-depth.png")


def _zero123_object(d: Path, cams: Cameras) -> None:
    _renders(d, len(cams))
    for i, m in enumerate(cams.to_zero123()):
        np.save(d / f"{i:03d}.npy", m.double().numpy())


def test_zero123_round_trip_fov_and_masks(tmp_path: Path, cams: Cameras):
    for uid in ("uid_a", "uid_b"):
        _zero123_object(tmp_path / uid, cams)
    ds = open_dataset(tmp_path)
    assert isinstance(ds, Zero123Dataset) and len(ds) == 2 and ds.num_views(0) == 6
    obj = ds.load(1, views=[4, 1])
    assert obj.name == "uid_b" and obj.view_ids.tolist() == [4, 1]
    assert obj.cameras.allclose(cams[[4, 1]], atol=1e-5)
    # 35 mm lens on a 32 mm sensor: f = W * 35 / 32 pixels, principal point at the centre
    assert math.isclose(ZERO123_FOV_DEG, 49.1343, abs_tol=1e-3)
    f = RES * 35 / 32
    K = torch.tensor([[f, 0, RES / 2], [0, f, RES / 2], [0, 0, 1.0]])
    assert torch.allclose(obj.cameras.K[0], K, atol=1e-4)
    c = obj.cameras.centers
    assert torch.allclose((obj.cameras.forward * -c).sum(-1) / c.norm(dim=-1), torch.ones(2), atol=1e-5)
    assert obj.masks.shape == (2, 1, RES, RES) and obj.masks[0, 0, 0, 0] == 0 and obj.masks[0, 0, 5, 5] == 1
    assert torch.allclose(obj.images[:, :, 0, 0], torch.ones(2, 3))  # transparent background -> white
    fast = Zero123Dataset(tmp_path, num_views=6, resolution=8)  # indexing without listing the folders
    assert len(fast) == 2 and fast.load(0).cameras.allclose(cams.resize(8), atol=1e-5)


def test_zero123_bad_input(tmp_path: Path, cams: Cameras):
    _zero123_object(tmp_path / "o", cams)
    np.save(tmp_path / "o" / "002.npy", cams.to_opengl()[2].numpy())
    with pytest.raises(DatasetError, match=r"002\.npy: Zero-1-to-3 cameras are 3x4 .*format 'gso'"):
        Zero123Dataset(tmp_path / "o").load(0, views=[2])
    np.save(tmp_path / "o" / "002.npy", np.zeros((3, 3)))
    with pytest.raises(DatasetError, match=r"002\.npy: expected an array of shape 3x4 or 4x4, found \(3, 3"):
        Zero123Dataset(tmp_path / "o").load(0, views=[2])
    (tmp_path / "o" / "003.npy").unlink()
    with pytest.raises(DatasetError, match=r"render\(s\) without a camera file NNN\.npy: 003\.png"):
        Zero123Dataset(tmp_path / "o")
    with pytest.raises(DatasetError, match=r"missing image: .*007\.png"):
        Zero123Dataset(tmp_path, num_views=8).load(0, views=[7])


def test_gso_viewfusion_matrix_world(tmp_path: Path, cams: Cameras):
    """ViewFusion's GSO/ABO renders save Blender's cam.matrix_world: a c2w with OpenGL axes."""
    d = tmp_path / "gso" / "obj"
    _renders(d, len(cams))
    for i, m in enumerate(cams.to_opengl()):
        np.save(d / f"{i:03d}.npy", m.double().numpy())
    assert detect_format(tmp_path / "gso") == "gso"
    obj = GSODataset(tmp_path / "gso").load(0)
    assert obj.cameras.allclose(cams, atol=1e-5) and obj.meta["layout"] == "npy"
    forced = GSODataset(tmp_path / "gso", npy_pose="w2c").load(0)  # the wrong reading is not silent
    assert not forced.cameras.allclose(cams, atol=1e-3)
    _zero123_object(tmp_path / "gso" / "obj2", cams)  # Zero-1-to-3 layout in the same dataset
    assert GSODataset(tmp_path / "gso").load(1).cameras.allclose(cams, atol=1e-5)


# meta_info/camera-16.pkl of liuyuan-pal/SyncDreamer (commit cc373c8): K and two of the 16 poses.
SYNCDREAMER_K = [[280.0, 0.0, 128.0], [0.0, 280.0, 128.0], [0.0, 0.0, 1.0]]
SYNCDREAMER_POSES = {0: [[0.0, 1.0, 0.0, 0.0], [0.5, 0.0, -0.86603, 0.0], [-0.86603, 0.0, -0.5, 1.5]],
                     4: [[-1.0, 0.0, 0.0, 0.0], [0.0, 0.5, -0.86603, 0.0], [0.0, -0.86603, -0.5, 1.5]]}


def test_syncdreamer_fixed_cameras_match_published_values():
    cams = syncdreamer_cameras()
    assert len(cams) == 16 and cams.width == 256
    assert torch.allclose(cams.K[0], torch.tensor(SYNCDREAMER_K), atol=1e-3)
    for i, pose in SYNCDREAMER_POSES.items():
        assert torch.allclose(cams.w2c[i, :3], torch.tensor(pose), atol=1e-4)
    sph = cams.spherical()
    assert torch.allclose(sph[:, 2], torch.full((16,), 1.5), atol=1e-5)
    assert torch.allclose(torch.rad2deg(sph[:, 0]), torch.full((16,), 60.0), atol=1e-4)  # elevation 30


def test_gso_syncdreamer_layouts_and_depth(tmp_path: Path):
    depth = np.full((RES, RES), 65535, np.uint16)  # background
    depth[4:12, 4:12] = round((1.2 - 0.6) / 1.8 * 65535)
    _renders(tmp_path / "chicken-gt", 16, depth=depth)
    assert detect_format(tmp_path) == "gso"
    obj = GSODataset(tmp_path).load(0, views=[0, 4])
    assert obj.meta["layout"] == "syncdreamer-fixed"
    assert obj.cameras.allclose(syncdreamer_cameras(resolution=RES)[[0, 4]], atol=1e-5)
    assert obj.depth.shape == (2, 1, RES, RES) and obj.depth[0, 0, 0, 0] == 0
    assert torch.allclose(obj.depth[:, 0, 4:12, 4:12], torch.full((2, 8, 8), 1.2), atol=1e-4)
    assert GSODataset(tmp_path, depth=False).load(0).depth is None
    # meta.pkl (SyncDreamer's random-elevation renders): [K, azimuths, elevations, distances, poses]
    cams = hemisphere_cameras(3, generator=torch.Generator().manual_seed(5), resolution=RES)
    _renders(tmp_path / "rand", 3)
    w2c = cams.w2c[:, :3].double().numpy()
    meta = [cams.K[0].double().numpy(), np.zeros(3), np.zeros(3), np.ones(3), w2c]
    (tmp_path / "rand" / "meta.pkl").write_bytes(pickle.dumps(meta))
    obj = GSODataset(tmp_path / "rand").load(0)
    assert obj.meta["layout"] == "syncdreamer-meta" and obj.cameras.allclose(cams, atol=1e-5)
    (tmp_path / "rand" / "meta.pkl").write_bytes(pickle.dumps(meta[:4]))
    with pytest.raises(DatasetError, match=r"meta\.pkl: expected a list \[K, azimuths"):
        GSODataset(tmp_path / "rand")
    _renders(tmp_path / "many-gt", 17)
    with pytest.raises(DatasetError, match="view 16 exists"):
        GSODataset(tmp_path / "many-gt")
