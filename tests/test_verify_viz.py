"""Camera sanity checks, contact sheets, camera plots, GIFs and output-folder protection."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from vantage.cameras import Cameras, orbit_cameras
from vantage.data.verify import check_cameras, look_at_point
from vantage.outputs import OutputExistsError, next_free_dir, prepare_output_dir
from vantage.viz import contact_sheet, plot_cameras, save_gif


def test_look_at_point_of_an_orbit_is_its_target():
    cams = orbit_cameras(12, elevation_deg=25, target=(0.3, -0.2, 0.1))
    assert torch.allclose(look_at_point(cams).float(), torch.tensor([0.3, -0.2, 0.1]), atol=1e-4)
    problems, stats = check_cameras(cams)
    assert problems == []
    lo, med, hi = stats["baseline"]
    assert 0 < lo <= med <= hi <= 5.0 + 1e-6


def test_check_cameras_flags_a_camera_looking_away_and_bad_intrinsics():
    cams = orbit_cameras(8)
    c2w = cams.c2w.clone()
    c2w[3, :3, :3] = c2w[3, :3, :3] @ torch.diag(torch.tensor([-1.0, 1.0, -1.0]))  # turn around
    problems, _ = check_cameras(Cameras(c2w, cams.K, 64, 64))
    assert any("view 3: does not look at the object" in p for p in problems)
    K = cams.K.clone()
    K[2, 0, 0] = -5
    problems, _ = check_cameras(Cameras(cams.c2w, K, 64, 64))
    assert any("view 2: focal length must be positive" in p for p in problems)
    c2w = cams.c2w.clone()
    c2w[1, :3, 0] *= 2
    problems, _ = check_cameras(Cameras(c2w, cams.K, 64, 64))
    assert any("view 1: rotation is not a proper rotation" in p for p in problems)
    dup = Cameras.cat([cams[:2], cams[:1]])
    assert any("identical cameras" in p for p in check_cameras(dup)[0])


def test_contact_sheet_plot_and_gif(tmp_path):
    rows = [torch.rand(4, 3, 8, 8) * 2 - 1, torch.ones(2, 3, 8, 8)]
    sheet = contact_sheet(rows, ["a", "b"], min_cell=16)
    assert sheet.height == 2 * 16 + 3 * 2
    # the all-ones row is white
    assert sheet.getpixel((sheet.width - 3, sheet.height - 4)) == (255, 255, 255)
    with pytest.raises(ValueError, match="row 1 has images of size"):
        contact_sheet([torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 4, 4)])
    p = plot_cameras(orbit_cameras(6), tmp_path / "cams.png")
    assert Image.open(p).size[0] > 100
    g = save_gif(torch.rand(5, 3, 8, 8) * 2 - 1, tmp_path / "o.gif", min_size=32)
    im = Image.open(g)
    assert im.n_frames == 5 and im.size == (32, 32)


def test_output_dirs_are_never_overwritten_silently(tmp_path):
    out = prepare_output_dir(tmp_path / "new")
    (out / "user.txt").write_text("keep me")
    with pytest.raises(OutputExistsError, match="not empty.*--overwrite"):
        prepare_output_dir(out)
    assert prepare_output_dir(out, overwrite=True) == out
    assert (out / "user.txt").read_text() == "keep me"
    assert next_free_dir(out) == tmp_path / "new-2"
    assert next_free_dir(tmp_path / "free") == tmp_path / "free"
