"""Shared reader helpers: number parsing, pose checks, world rotations, images, pickles."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vantage.cameras import orbit_cameras
from vantage.data.formats.common import (
    DatasetError,
    load_depth,
    load_image,
    load_pickle,
    natural_key,
    parse_floats,
    read_matrix,
    rigid_pose,
    select_views,
    similarity_to_rigid,
    to_z_up,
    up_to_z_rotation,
)


def test_parse_floats_names_file_line_and_counts():
    assert parse_floats("a.txt", 3, "1 2.5 -3e-1", 3) == [1.0, 2.5, -0.3]
    with pytest.raises(DatasetError, match=r"a\.txt:7: expected 16 numbers, found 15"):
        parse_floats("a.txt", 7, " ".join(["1"] * 15), 16)
    with pytest.raises(DatasetError, match=r"a\.txt:2: 'x1' is not a number"):
        parse_floats("a.txt", 2, "1 x1 3")
    with pytest.raises(DatasetError, match=r"expected 3 or 4 numbers, found 2"):
        parse_floats("a.txt", 1, "1 2", (3, 4))
    with pytest.raises(DatasetError, match="NaN"):
        parse_floats("a.txt", 1, "1 nan 3")


def test_read_matrix_counts_and_shapes(tmp_path: Path):
    p = tmp_path / "m.txt"
    p.write_text("1 0 0 0\n0 1 0 0\n0 0 1 0\n0 0 0 1\n")
    assert torch.equal(read_matrix(p), torch.eye(4, dtype=torch.float64))
    p.write_text(" ".join(["1"] * 15))
    with pytest.raises(DatasetError, match=r"m\.txt: expected 16 \(4x4\) or 12 \(3x4\) numbers, found 15"):
        read_matrix(p)
    with pytest.raises(DatasetError, match="missing text file"):
        read_matrix(tmp_path / "nope.txt")


def test_rigid_pose_rejects_singular_scaled_and_bad_rows():
    good = orbit_cameras(1).c2w[0].double()
    assert torch.allclose(rigid_pose(good[:3], "p"), good)
    singular = good.clone()
    singular[:3, 0] = 0
    with pytest.raises(DatasetError, match="p: pose is not invertible"):
        rigid_pose(singular, "p")
    with pytest.raises(DatasetError, match="not a rigid transform"):
        rigid_pose(torch.diag(torch.tensor([2.0, 2.0, 2.0, 1.0])), "p")
    with pytest.raises(DatasetError, match="not a rigid transform"):  # mirrored
        rigid_pose(torch.diag(torch.tensor([1.0, 1.0, -1.0, 1.0])), "p")
    bad = good.clone()
    bad[3, 0] = 1
    with pytest.raises(DatasetError, match="bottom row"):
        rigid_pose(bad, "p")


def test_similarity_to_rigid_keeps_projections():
    cams = orbit_cameras(3, radius=2.0)
    w2c = cams.w2c.double()
    scaled = w2c.clone()
    scaled[:, :3, :] *= 3.7  # similarity [s R, s t]: the same pixels for every point
    rig = torch.stack([similarity_to_rigid(m, "x") for m in scaled])
    assert torch.allclose(rig, w2c, atol=1e-10)
    with pytest.raises(DatasetError, match="not invertible or mirrored"):
        similarity_to_rigid(torch.zeros(4, 4), "x")


@pytest.mark.parametrize("up", ["+x", "-x", "+y", "-y", "+z", "-z"])
def test_up_rotation_sends_axis_to_z(up: str):
    r = up_to_z_rotation(up)[:3, :3]
    axis = torch.zeros(3, dtype=torch.float64)
    axis["xyz".index(up[1])] = 1.0 if up[0] == "+" else -1.0
    assert torch.allclose(r @ axis, torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64))
    assert torch.isclose(torch.linalg.det(r), torch.tensor(1.0, dtype=torch.float64))
    cams = orbit_cameras(4)
    turned = to_z_up(cams, up)
    # a world rotation keeps every camera looking at the origin and keeps intrinsics
    assert torch.allclose((turned.forward * -turned.centers).sum(-1) / turned.centers.norm(dim=-1),
                          torch.ones(4), atol=1e-5)
    assert torch.equal(turned.K, cams.K)


def test_pixelnerf_world_rotation():
    # pixelNeRF's ShapeNet _coord_trans_world: (x, y, z) -> (x, -z, y)
    r = up_to_z_rotation("+y")[:3, :3]
    assert torch.equal(r, torch.tensor([[1.0, 0, 0], [0, 0, -1], [0, 1, 0]], dtype=torch.float64))


def test_load_image_composites_rgba_on_white_and_checks_size(tmp_path: Path):
    rgba = np.zeros((4, 6, 4), np.uint8)
    rgba[..., 0] = 255  # red
    rgba[:, :3, 3] = 255  # left half opaque, right half transparent
    rgba[0, 0, 3] = 128
    Image.fromarray(rgba).save(tmp_path / "a.png")
    img, alpha = load_image(tmp_path / "a.png")
    assert img.shape == (3, 4, 6) and alpha.shape == (1, 4, 6)
    assert torch.allclose(img[:, 1, 1], torch.tensor([1.0, -1.0, -1.0]))  # opaque red
    assert torch.allclose(img[:, 1, 4], torch.tensor([1.0, 1.0, 1.0]))  # transparent -> white
    a = 128 / 255
    assert torch.allclose(img[1, 0, 0], torch.tensor(2 * (1 - a) - 1), atol=1e-6)  # half: pinkish
    Image.fromarray(np.zeros((5, 6, 3), np.uint8)).save(tmp_path / "b.png")
    img_b, alpha_b = load_image(tmp_path / "b.png")
    assert alpha_b is None and img_b.min() == -1
    with pytest.raises(DatasetError, match=r"b\.png: image is 6x5 but 6x4 was expected like .*a\.png"):
        load_image(tmp_path / "b.png", expected_size=(6, 4), reference=tmp_path / "a.png")
    with pytest.raises(DatasetError, match=r"missing image: .*c\.png"):
        load_image(tmp_path / "c.png")
    (tmp_path / "d.png").write_text("not an image")
    with pytest.raises(DatasetError, match=r"d\.png: cannot read as an image"):
        load_image(tmp_path / "d.png")


class _Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_load_pickle_only_rebuilds_arrays(tmp_path: Path):
    p = tmp_path / "ok.pkl"
    data = [np.eye(3), np.arange(4, dtype=np.float32), 1.5, {"k": np.zeros((2, 3, 4))}]
    p.write_bytes(pickle.dumps(data))
    out = load_pickle(p)
    assert np.array_equal(out[0], np.eye(3)) and out[1].dtype == np.float32 and out[3]["k"].shape == (2, 3, 4)
    bad = tmp_path / "bad.pkl"
    bad.write_bytes(pickle.dumps(_Evil()))
    with pytest.raises(DatasetError, match=r"bad\.pkl: .*refusing to load 'builtins.print'"):
        load_pickle(bad)


def test_select_views_and_natural_sort():
    assert select_views(4, None, "x") == [0, 1, 2, 3]
    assert select_views(4, [3, -1, 0], "x") == [3, 3, 0]
    with pytest.raises(IndexError, match="x has 4 views"):
        select_views(4, [4], "x")
    names = ["10.png", "2.png", "1.png", "b.png", "a10.png", "a2.png"]
    assert sorted(names, key=natural_key) == ["1.png", "2.png", "10.png", "a2.png", "a10.png", "b.png"]


def test_load_depth_png_npy_and_bad_modes(tmp_path: Path):
    raw = np.array([[0, 1000], [65535, 2500]], np.uint16)
    Image.fromarray(raw).save(tmp_path / "d.png")
    d = load_depth(tmp_path / "d.png", 1e-3, invalid=65535)
    assert d.shape == (1, 2, 2) and torch.allclose(d[0], torch.tensor([[0.0, 1.0], [0.0, 2.5]]))
    np.save(tmp_path / "d.npy", np.array([[0.0, 1.5], [2.0, 3.0]])[..., None])
    assert torch.allclose(load_depth(tmp_path / "d.npy", 2.0)[0], torch.tensor([[0.0, 3.0], [4.0, 6.0]]))
    Image.fromarray(np.zeros((2, 2, 3), np.uint8)).save(tmp_path / "rgb.png")
    with pytest.raises(DatasetError, match=r"rgb\.png: a depth PNG must be single-channel 16-bit"):
        load_depth(tmp_path / "rgb.png", 1e-3)
    with pytest.raises(DatasetError, match=r"d\.png: image is 2x2 but 4x4 was expected"):
        load_depth(tmp_path / "d.png", 1e-3, expected_size=(4, 4))
