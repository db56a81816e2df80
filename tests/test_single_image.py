"""Single-image pairs (VIVID's single-view training): several rotation ranges and how a pair picks one, rotating
both views (the reference's scheme), the identity warp at zero rotation, a pixel's position against K R K⁻¹, and
the errors of bad options. The earlier tests of the warp and of the mixing are in ``tests/test_vivid_data.py``."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import VIVID_TINY_SET as TINY_SET
from PIL import Image

from vantage.cli.main import main
from vantage.data.formats.common import DatasetError
from vantage.data.single_image import (
    REFERENCE_MAX_DEG,
    SingleImagePairs,
    rotation_homography,
    rotation_matrix,
    rotation_ranges,
    single_image_pair,
    view_intrinsics,
)

pytestmark = pytest.mark.usefixtures("single_thread")


def _smooth_image(h: int = 90, w: int = 120) -> torch.Tensor:
    v, u = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    return torch.stack([torch.sin(u / 9), torch.cos(v / 7), torch.sin((u + v) / 13)]) * 0.8


def _dot_image(x: float, y: float, h: int = 90, w: int = 120) -> torch.Tensor:
    """Black image with a bright Gaussian dot at pixel position ``(x, y)`` (pixel centres at +0.5)."""
    yy, xx = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")
    return (-1 + 2 * torch.exp(-((xx - x) ** 2 + (yy - y) ** 2) / 6.0)).expand(3, h, w).clone()


def _centroid(x: torch.Tensor) -> torch.Tensor:
    """Brightness-weighted centroid ``(u, v)`` (pixel centres at +0.5) of a (3, R, R) view of a dot."""
    r = x.shape[-1]
    v, u = torch.meshgrid(torch.arange(r) + 0.5, torch.arange(r) + 0.5, indexing="ij")
    w = (x[0] + 1).clamp(min=0)
    return torch.stack([(w * u).sum(), (w * v).sum()]).double() / w.sum()


def _folder(tmp_path: Path, n: int = 6) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(n):
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (20 + i, 24, 3), dtype=np.uint8)).save(
            folder / f"{i}.png")
    return folder


def test_ranges_chosen_per_pair_and_angles_within_range(tmp_path: Path):
    folder = _folder(tmp_path)
    singles = SingleImagePairs(folder, 8, seed=5)  # defaults: the reference's two ranges, random, both rotated
    assert singles.ranges == REFERENCE_MAX_DEG == ((8.3, 8.3, 3.5), (5.5, 5.5, 0.0))
    assert singles.range_choice == "random" and singles.rotate_source
    picks = []
    for epoch in range(12):
        for i in range(len(singles)):
            meta = singles[(epoch, i)].target.meta
            k = meta["range_index"]
            picks.append(k)
            assert meta["max_deg"] == REFERENCE_MAX_DEG[k]
            for angles in (meta["angles_deg"], meta["source_angles_deg"]):
                assert all(abs(a) <= m for a, m in zip(angles, REFERENCE_MAX_DEG[k]))
            if k == 1:
                assert meta["angles_deg"][2] == 0.0 == meta["source_angles_deg"][2]  # no roll in the small range
            # the relative rotation is the target's times the source's transposed, and the cameras carry it
            rel = rotation_matrix(*map(math.radians, meta["angles_deg"])).double() @ \
                rotation_matrix(*map(math.radians, meta["source_angles_deg"])).double().T
            assert torch.allclose(meta["rotation"].double(), rel, atol=1e-6)
    # both ranges are used, about half each; the draw is a pure function of (seed, epoch, index)
    frac = sum(picks) / len(picks)
    assert 0.3 < frac < 0.7
    again = [singles[(e, i)].target.meta["range_index"] for e in range(12) for i in range(len(singles))]
    assert again == picks
    # both views rotated: the source angles are drawn too, and differ from the target's
    meta = singles[(0, 0)].target.meta
    assert any(a != 0 for a in meta["source_angles_deg"]) and meta["source_angles_deg"] != meta["angles_deg"]
    # the per-axis draws fill the range (not just a corner of it)
    yaws = torch.tensor([singles[(e, 0)].target.meta["angles_deg"][1] for e in range(40)])
    assert yaws.min() < -2 and yaws.max() > 2


def test_alternate_choice_and_the_earlier_behaviour(tmp_path: Path):
    folder = _folder(tmp_path, 3)
    alt = SingleImagePairs(folder, 8, seed=1, max_deg=[[10, 0, 0], [0, 4, 0], [0, 0, 2]], range_choice="alternate")
    for epoch in range(3):
        for i in range(3):
            meta = alt[(epoch, i)].target.meta
            k = (i + epoch) % 3
            assert meta["range_index"] == k and meta["max_deg"] == alt.ranges[k]
            assert all(abs(a) <= m for a, m in zip(meta["angles_deg"], alt.ranges[k]))
            assert [a == 0 for a in meta["angles_deg"]] == [m == 0 for m in alt.ranges[k]]
    # one range and an unrotated source: the module's earlier behaviour (same draws as single_image_pair's)
    old = SingleImagePairs(folder, 8, seed=1, max_deg=[8.3, 8.3, 3.5], rotate_source=False)
    assert old.ranges == ((8.3, 8.3, 3.5),) and old.max_deg == (8.3, 8.3, 3.5)
    # (the angles the earlier module drew for this seed and item: the draw sequence is unchanged)
    assert torch.allclose(torch.tensor(SingleImagePairs(folder, 8, seed=3, max_deg=[8.3, 8.3, 3.5],
                                                        rotate_source=False)[(0, 1)].target.meta["angles_deg"]),
                          torch.tensor([1.92450, -3.78738, -0.71678]), atol=1e-5)
    pair = old[(2, 1)]
    assert pair.target.meta["range_index"] == 0 and pair.target.meta["source_angles_deg"] == [0.0, 0.0, 0.0]
    assert torch.allclose(pair.target.meta["rotation"],
                          rotation_matrix(*map(math.radians, pair.target.meta["angles_deg"])))


def test_zero_rotation_is_the_identity_warp():
    img = _smooth_image()
    pair = single_image_pair(img, 24, angles_deg=(0.0, 0.0, 0.0))
    assert torch.equal(pair.target.images, pair.cond.images)
    assert torch.equal(pair.target.meta["rotation"], torch.eye(3))
    assert torch.allclose(pair.target.cameras.c2w, pair.cond.cameras.c2w)
    K = view_intrinsics(24, 0.9)
    assert torch.allclose(rotation_homography(K, rotation_matrix(0.0, 0.0, 0.0)), torch.eye(3, dtype=torch.float64))
    # equal rotations of both views: zero relative rotation, the same view (both resampled alike)
    same = single_image_pair(img, 24, angles_deg=(3.0, -2.0, 1.0), source_angles_deg=(3.0, -2.0, 1.0))
    assert torch.allclose(same.target.meta["rotation"], torch.eye(3), atol=1e-6)
    assert torch.equal(same.target.images, same.cond.images)
    assert same.target.cameras.relative_to(same.cond.cameras)[0].allclose(torch.eye(4), atol=1e-6)
    # zero ranges: every pair is the identity
    flat = single_image_pair(img, 24, torch.Generator().manual_seed(0), max_deg=(0, 0, 0))
    assert torch.equal(flat.target.images, flat.cond.images)


def test_known_rotation_moves_a_pixel_as_K_R_K_inverse_predicts():
    r, focal = 48, 0.9
    f, c = focal * r, r / 2
    # the full image (crop 0.6 of the square) maps onto the 90x90 centre of the 120x90 photo: a dot at the photo's
    # centre is at the views' principal point; a pure yaw of 6° moves it to u = c + f·tan(6°) (R e_z = (sin, 0, cos))
    pair = single_image_pair(_dot_image(60.0, 45.0), r, angles_deg=(0.0, 6.0, 0.0), rotate_source=False)
    assert torch.allclose(_centroid(pair.cond.images[0]), torch.tensor([c, c], dtype=torch.float64), atol=0.05)
    expect = torch.tensor([c + f * math.tan(math.radians(6.0)), c], dtype=torch.float64)
    assert torch.allclose(_centroid(pair.target.images[0]), expect, atol=0.15)
    # an off-centre dot with both views rotated: where it is in the source, H = K R K⁻¹ (R the relative rotation)
    # says where it is in the target
    pair = single_image_pair(_dot_image(70.0, 38.0), r, angles_deg=(-4.0, 5.0, 2.0),
                             source_angles_deg=(3.0, -2.0, -1.5))
    R = pair.target.meta["rotation"]
    R_expect = rotation_matrix(*map(math.radians, (-4.0, 5.0, 2.0))).double() @ \
        rotation_matrix(*map(math.radians, (3.0, -2.0, -1.5))).double().T
    assert torch.allclose(R.double(), R_expect, atol=1e-6)
    H = rotation_homography(view_intrinsics(r, focal), R)
    p_s = _centroid(pair.cond.images[0])
    h = H @ torch.cat([p_s, torch.ones(1, dtype=torch.float64)])
    assert torch.allclose(_centroid(pair.target.images[0]), h[:2] / h[2], atol=0.15)
    # and the cameras agree: the target camera is the source camera rotated by R, not moved
    rel = pair.target.cameras.relative_to(pair.cond.cameras)[0]
    assert torch.allclose(rel[:3, :3], R.T, atol=1e-6) and rel[:3, 3].abs().max() < 1e-6
    # with the default crop both views stay inside the image at the corners of the larger range
    corner = single_image_pair(_smooth_image(), r, angles_deg=(8.3, 8.3, 3.5), source_angles_deg=(-8.3, -8.3, -3.5))
    assert corner.target.meta["inside_fraction"] == 1.0 == corner.cond.meta["inside_fraction"]


@pytest.mark.parametrize("value, message", [
    ([], "single_max_deg is an empty list"),
    ([8.3, 8.3], r"single_max_deg: each range has 3 angles.*range 0 \[8.3, 8.3\] has 2"),
    ([[8.3, 8.3, 3.5], [5.5, 5.5]], r"single_max_deg: each range has 3 angles.*range 1 \[5.5, 5.5\] has 2"),
    ([8.3, -1.0, 3.5], r"single_max_deg: angles must be in \[0, 90\).*\[8.3, -1.0, 3.5\]"),
    ([[8.3, 8.3, 3.5], [5.5, 5.5, -0.5]], r"single_max_deg: angles must be in \[0, 90\).*range 1"),
    ([[8.3, 8.3, 3.5], 5.5], "single_max_deg must be .pitch, yaw, roll. or a list of such ranges.*item 1"),
    ("8.3", "single_max_deg must be .pitch, yaw, roll. or a list"),
    (5, "single_max_deg must be .pitch, yaw, roll. or a list"),
])
def test_bad_ranges_are_errors_naming_the_field(tmp_path: Path, value, message):
    folder = _folder(tmp_path, 1)
    with pytest.raises(DatasetError, match=message):
        SingleImagePairs(folder, 8, max_deg=value)
    with pytest.raises(ValueError, match=message.replace("single_max_deg", "max_deg")):
        rotation_ranges(value)


def test_bad_choice_and_function_arguments(tmp_path: Path):
    folder = _folder(tmp_path, 1)
    with pytest.raises(DatasetError, match="single_range_choice must be one of 'random', 'alternate', got 'batch'"):
        SingleImagePairs(folder, 8, range_choice="batch")
    with pytest.raises(DatasetError, match="single_rotate_source must be true or false"):
        SingleImagePairs(folder, 8, rotate_source="yes")
    with pytest.raises(ValueError, match="max_deg: single_image_pair takes one range"):
        single_image_pair(_smooth_image(), 8, max_deg=REFERENCE_MAX_DEG)
    with pytest.raises(ValueError, match="source_angles_deg must be 3 angles"):
        single_image_pair(_smooth_image(), 8, angles_deg=(1, 2, 3), source_angles_deg=(1, 2))


def test_range_options_from_vantage_train(tmp_path: Path, capsys):
    folder = _folder(tmp_path, 3)
    base = ["train", "vivid", "--data", "synthetic", "-o", "num_objects=4", "-o", "views=4", "--batch", "4",
            "-o", f"single_images={folder}", "--dry-run", *TINY_SET]
    assert main(base + ["-o", "single_max_deg=[[10,10,2],[4,4,0]]", "-o", "single_range_choice=alternate",
                        "-o", "single_rotate_source=false"]) == 0
    out = "".join(capsys.readouterr().out.split())  # the config is printed indented
    assert '"single_max_deg":[[10,10,2],[4,4,0]]' in out and '"single_range_choice":"alternate"' in out
    assert '"single_rotate_source":false' in out
    for option, message in (("single_max_deg=[]", "single_max_deg is an empty list"),
                            ("single_max_deg=[1,2]", "single_max_deg: each range has 3 angles"),
                            ("single_max_deg=[[1,2,3],[1,-2,3]]", "single_max_deg: angles must be in"),
                            ("single_range_choice=batch", "single_range_choice must be one of"),
                            ("single_rotate_source=2", "single_rotate_source must be true or false")):
        assert main(base + ["-o", option]) == 2, option
        assert message in capsys.readouterr().err
