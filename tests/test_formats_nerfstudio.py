"""nerfstudio transforms.json: write -> read round trips, the file's content, reading variants, errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vantage.cameras import Cameras, hemisphere_cameras
from vantage.data.formats import detect_format, open_dataset
from vantage.data.formats.common import DatasetError
from vantage.data.formats.nerfstudio import NerfstudioDataset, write_nerfstudio
from vantage.data.views import ObjectViews
from vantage.outputs import OutputExistsError

RES = 12


@pytest.fixture
def objects() -> ObjectViews:
    g = torch.Generator().manual_seed(7)
    cams = hemisphere_cameras(4, generator=g, resolution=RES)
    images = torch.rand(4, 3, RES, RES, generator=g) * 2 - 1
    masks = (torch.rand(4, 1, RES, RES, generator=g) > 0.5).float()
    depth = torch.rand(4, 1, RES, RES, generator=g) * 3 * masks
    return ObjectViews(images=images, cameras=cams, masks=masks, depth=depth, name="obj")


def test_write_read_round_trip(tmp_path: Path, objects: ObjectViews):
    path = write_nerfstudio(objects, tmp_path / "scene")
    ds = open_dataset(tmp_path / "scene")
    assert isinstance(ds, NerfstudioDataset) and len(ds) == 1 and ds.scene_name(0) == "scene"
    back = ds.load(0)
    assert back.cameras.allclose(objects.cameras, atol=1e-5)
    assert (back.images - objects.images).abs().max() <= 1 / 255 + 1e-6  # 8-bit quantisation
    assert torch.equal(back.masks, objects.masks)
    assert (back.depth - objects.depth).abs().max() <= 0.0005 + 1e-6  # millimetres
    assert torch.equal(back.depth == 0, objects.depth == 0)
    sub = ds.load(0, views=[2])
    assert sub.view_ids.tolist() == [2] and sub.cameras.allclose(objects.cameras[[2]], atol=1e-5)
    meta = json.loads(path.read_text())
    assert meta["camera_model"] == "OPENCV" and meta["depth_unit_scale_factor"] == 0.001
    assert meta["fl_x"] == pytest.approx(objects.cameras.fx[0].item()) and meta["w"] == RES
    gl = torch.tensor(meta["frames"][1]["transform_matrix"])
    assert torch.allclose(gl, objects.cameras.to_opengl()[1], atol=1e-6)  # OpenGL camera-to-world
    assert np.array(Image.open(tmp_path / "scene" / meta["frames"][0]["depth_file_path"])).dtype == np.uint16


def test_per_frame_intrinsics_other_factor_and_overwrite(tmp_path: Path, objects: ObjectViews):
    K = objects.cameras.K.clone()
    K[:, 0, 0] *= torch.tensor([1.0, 1.1, 1.2, 1.3])
    objects.cameras = Cameras(objects.cameras.c2w, K, RES, RES)
    write_nerfstudio(objects, tmp_path / "s", depth_unit_scale_factor=1e-4)
    meta = json.loads((tmp_path / "s" / "transforms.json").read_text())
    assert "fl_x" not in meta and meta["frames"][3]["fl_x"] == pytest.approx(K[3, 0, 0].item())
    back = NerfstudioDataset(tmp_path / "s" / "transforms.json").load(0)
    assert back.cameras.allclose(objects.cameras, atol=1e-5)
    assert (back.depth - objects.depth).abs().max() <= 0.00005 + 1e-6
    with pytest.raises(OutputExistsError, match="already exists and is not empty"):
        write_nerfstudio(objects, tmp_path / "s")
    write_nerfstudio(objects, tmp_path / "s", overwrite=True)
    objects.depth = objects.depth * 1000
    with pytest.raises(ValueError, match="does not fit a 16-bit PNG"):
        write_nerfstudio(objects, tmp_path / "t")


def _blender_scene(d: Path, cams: Cameras) -> dict:
    """NeRF-synthetic style: camera_angle_x, RGBA images, no w/h."""
    (d / "train").mkdir(parents=True)
    frames = []
    for i, m in enumerate(cams.to_opengl()):
        rgba = np.zeros((RES, RES, 4), np.uint8)
        rgba[3:9, 3:9] = (10, 200, 30, 255)
        Image.fromarray(rgba).save(d / "train" / f"r_{i}.png")
        frames.append({"file_path": f"train/r_{i}.png", "transform_matrix": m.tolist()})
    meta = {"camera_angle_x": math.radians(40.0), "frames": frames[::-1]}
    (d / "transforms.json").write_text(json.dumps(meta))
    return meta


def test_reads_blender_style_and_folders_of_scenes(tmp_path: Path):
    cams = hemisphere_cameras(3, resolution=RES, fov_deg=40.0)
    _blender_scene(tmp_path / "lego", cams)
    _blender_scene(tmp_path / "ship", cams)
    (tmp_path / "readme").mkdir()
    assert detect_format(tmp_path) == "nerfstudio"
    ds = NerfstudioDataset(tmp_path)
    assert len(ds) == 2 and [Path(s.path).name for s in ds.skipped] == ["readme"]
    obj = ds.load(1)
    assert obj.meta["files"] == ["train/r_0.png", "train/r_1.png", "train/r_2.png"]  # sorted by name
    assert obj.cameras.allclose(cams, atol=1e-5)
    assert obj.masks is not None and torch.allclose(obj.images[:, :, 0, 0], torch.ones(3, 3))


def test_bad_input_messages(tmp_path: Path):
    cams = hemisphere_cameras(3, resolution=RES)
    meta = _blender_scene(tmp_path / "s", cams)
    path = tmp_path / "s" / "transforms.json"

    def write(m: dict) -> None:
        path.write_text(json.dumps(m))

    write({**meta, "k1": 0.01})
    with pytest.raises(DatasetError, match=r"frames\[2\] \(train/r_0\.png\): distortion k1=0.01 is not"):
        NerfstudioDataset(path).load(0)
    write({**meta, "camera_model": "OPENCV_FISHEYE"})
    with pytest.raises(DatasetError, match="camera_model 'OPENCV_FISHEYE' is not supported"):
        NerfstudioDataset(path)
    frames = [dict(f) for f in meta["frames"]]
    frames[0]["mask_path"] = "m.png"
    write({**meta, "frames": frames})
    with pytest.raises(DatasetError, match="'mask_path' is given for 1 of 3 frames"):
        NerfstudioDataset(path)
    frames = [dict(f) for f in meta["frames"]]
    frames[1]["transform_matrix"] = np.diag([0.0, 0.0, 0.0, 1.0]).tolist()
    write({**meta, "frames": frames})
    msg = r"frames\[1\] \(train/r_1\.png\) transform_matrix: pose is not invertible"
    with pytest.raises(DatasetError, match=msg):
        NerfstudioDataset(path).load(0)
    write({"camera_angle_x": 0.7, "frames": [{"file_path": "train/nope.png",
                                               "transform_matrix": np.eye(4).tolist()}]})
    with pytest.raises(DatasetError, match=r"missing image: .*train/nope\.png"):
        NerfstudioDataset(path).load(0)
    write({"frames": [{"file_path": "train/r_0.png", "transform_matrix": np.eye(4).tolist()}]})
    with pytest.raises(DatasetError, match="no focal length"):
        NerfstudioDataset(path).load(0)
    path.write_text("{not json")
    with pytest.raises(DatasetError, match=r"transforms\.json: not valid JSON"):
        NerfstudioDataset(path)
    Image.fromarray(np.zeros((RES + 2, RES, 3), np.uint8)).save(tmp_path / "s" / "train" / "r_2.png")
    write(meta)
    with pytest.raises(DatasetError, match=r"r_2\.png: image is 12x14 but .*r_0\.png is 12x12"):
        NerfstudioDataset(path).load(0)
