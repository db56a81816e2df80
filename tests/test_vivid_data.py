"""VIVID's training data: RealEstate10K "mid"/"long" frame gaps (``pair_gap``), single-image pairs by camera
rotation (homography K R K⁻¹) and their mixing into the training pairs (``-o single_images=DIR``)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import VIVID_TINY as TINY
from helpers import VIVID_TINY_SET as TINY_SET
from PIL import Image

from vantage.cameras import Cameras
from vantage.cli.main import main
from vantage.data import PairDataset, SyntheticDataset, collate_pairs
from vantage.data.formats.realestate10k import RealEstate10KDataset
from vantage.data.pairs import ClipTooShortError
from vantage.data.single_image import (
    MixedPairs,
    SingleImagePairs,
    rotation_homography,
    rotation_matrix,
    single_image_pair,
    view_intrinsics,
)
from vantage.methods import build_method
from vantage.train.data import StepBatchSampler

pytestmark = pytest.mark.usefixtures("single_thread")


# ------------------------------------------------------------------------------------ RealEstate10K gaps
def _write_clip(root: Path, name: str, n: int, size: tuple[int, int] = (24, 16)) -> None:
    """A RealEstate10K clip of ``n`` frames (camera file + frames folder) moving forward along z."""
    eye = torch.stack([torch.tensor([0.0, 0.0, 0.05 * i]) for i in range(n)])
    cams = Cameras.from_look_at(eye, eye + torch.tensor([0.0, 0.0, 1.0]), fov_deg=60.0, width=size[0],
                                height=size[1], up=torch.tensor([0.0, -1.0, 0.0]))
    intr, w2c = cams.to_realestate10k()
    rows = ["https://www.youtube.com/watch?v=clip"]
    (root / "frames" / name).mkdir(parents=True)
    for i, (k, m) in enumerate(zip(intr, w2c)):
        stamp = 1000 + 33366 * i
        rows.append(" ".join([str(stamp)] + [f"{v:.9f}" for v in k.tolist()] + ["0", "0"]
                             + [f"{v:.9f}" for v in m.flatten().tolist()]))
        Image.fromarray(np.full((size[1], size[0], 3), i % 256, dtype=np.uint8)).save(root / "frames" / name /
                                                                                     f"{stamp}.png")
    (root / f"{name}.txt").write_text("\n".join(rows) + "\n")


@pytest.fixture(scope="module")
def re10k(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("re10k")
    _write_clip(root, "long_clip", 75)
    _write_clip(root, "short_clip", 20)
    return root


def test_pair_gaps_on_realestate10k(re10k: Path):
    ds = RealEstate10KDataset(re10k, resolution=16)
    mid = build_method("vivid", {**TINY, "pair_gap": "mid", "pair_on_short": "skip"})
    pairs = PairDataset(ds, mid.pair_sampler(), seed=0, samples_per_scene=40)
    assert [s.path for s in pairs.skipped] == ["short_clip"] and "frames within a gap" in pairs.skipped[0].reason
    batch = collate_pairs([pairs[i] for i in range(len(pairs))])
    gaps = (batch.cond.view_ids[:, 0] - batch.target.view_ids[:, 0]).abs()
    assert gaps.min() >= 30 and gaps.max() <= 60 and len(set(gaps.tolist())) > 5
    # "long" and an explicit range; the default draws any two frames
    for gap, lo, hi in (("long", 60, 120), ((5, 7), 5, 7)):
        sampler = build_method("vivid", {**TINY, "pair_gap": gap, "pair_on_short": "skip"}).pair_sampler()
        p = PairDataset(ds, sampler, seed=1, samples_per_scene=20)
        d = [abs(int(p[i].cond.view_ids[0]) - int(p[i].target.view_ids[0])) for i in range(len(p))]
        assert lo <= min(d) and max(d) <= hi
    assert len(PairDataset(ds, build_method("vivid", TINY).pair_sampler()).skipped) == 0
    # a clip too short for the gap is an error naming it (and the option that skips it)
    with pytest.raises(ClipTooShortError, match=r"short_clip.*needs >= 31 frames") as e:
        PairDataset(ds, build_method("vivid", {**TINY, "pair_gap": "mid"}).pair_sampler())
    assert "pair_on_short=skip" in str(e.value)
    with pytest.raises(ValueError, match="pair_gap='short'.*unknown frame_gap preset"):
        build_method("vivid", {**TINY, "pair_gap": "short"})


def test_pair_gap_from_vantage_train(re10k: Path, tmp_path: Path, capsys):
    base = ["train", "vivid", "--data", str(re10k), "--batch", "2", "--dry-run", *TINY_SET]
    assert main(base + ["--set", "pair_gap=mid"]) == 2
    err = capsys.readouterr().err
    assert "short_clip" in err and "pair_on_short=skip" in err
    assert main(base + ["--set", "pair_gap=mid", "--set", "pair_on_short=skip"]) == 0
    out = capsys.readouterr().out
    assert '"pair_gap": "mid"' in out and "target.images (2, 1, 3, 16, 16)" in out


# ------------------------------------------------------------------------------------ single-image pairs
def _smooth_image(h: int = 90, w: int = 120) -> torch.Tensor:
    v, u = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    return torch.stack([torch.sin(u / 9), torch.cos(v / 7), torch.sin((u + v) / 13)]) * 0.8


def test_rotation_warp_matches_the_homography():
    angles = (6.0, -7.0, 3.0)
    pair = single_image_pair(_smooth_image(), 48, angles_deg=angles)
    src, tgt = pair.cond.images[0], pair.target.images[0]
    K = view_intrinsics(48, 0.9)
    R = rotation_matrix(*(math.radians(a) for a in angles))
    H = rotation_homography(K, R)
    assert pair.target.meta["inside_fraction"] == 1.0  # the default crop keeps the target inside the image
    # every target pixel q shows the source at H^-1 q (bilinear interpolation of a smooth image: small error)
    v, u = torch.meshgrid(torch.arange(48.0) + 0.5, torch.arange(48.0) + 0.5, indexing="ij")
    q = torch.stack([u, v, torch.ones_like(u)], -1).double()
    p = q @ torch.linalg.inv(H).T
    uv = p[..., :2] / p[..., 2:]
    inside = ((uv > 0.5) & (uv < 47.5)).all(-1)
    grid = (2 * uv / 48 - 1).float()[None]
    expect = F.grid_sample(src[None], grid, mode="bilinear", align_corners=False)[0]
    assert inside.float().mean() > 0.6
    assert (expect - tgt)[:, inside].abs().max() < 0.03
    # a bright dot at source pixel p lands at H p in the target
    img = torch.full((3, 90, 120), -1.0)
    yy, xx = torch.meshgrid(torch.arange(90.0), torch.arange(120.0), indexing="ij")
    img += 2 * torch.exp(-((xx - 70) ** 2 + (yy - 40) ** 2) / 8.0)
    dot = single_image_pair(img, 48, angles_deg=angles)

    def centroid(x: torch.Tensor) -> torch.Tensor:
        w = (x[0] + 1).clamp(min=0)
        return torch.stack([(w * u).sum(), (w * v).sum()]) / w.sum()

    c_s, c_t = centroid(dot.cond.images[0]), centroid(dot.target.images[0])
    h = H @ torch.tensor([float(c_s[0]), float(c_s[1]), 1.0], dtype=torch.float64)
    assert torch.allclose(c_t.double(), h[:2] / h[2], atol=0.15)


def test_single_image_cameras_rotate_without_translating():
    angles = (4.0, 8.0, -2.5)
    pair = single_image_pair(_smooth_image(), 32, angles_deg=angles)
    src, tgt = pair.cond.cameras, pair.target.cameras
    rel = tgt.relative_to(src)[0]  # target -> source pose
    R = rotation_matrix(*(math.radians(a) for a in angles))
    assert rel[:3, 3].abs().max() < 1e-6 and torch.allclose(tgt.centers, src.centers)
    assert torch.allclose(rel[:3, :3], R.T, atol=1e-6)  # x_target = R x_source
    # the cameras agree with the warp: a 3D point projects to p in the source and to H p in the target
    pts = torch.tensor([[[0.3, -0.2, 2.0], [-0.4, 0.1, 5.0]]])
    p_s, _ = src.project(pts)
    p_t, _ = tgt.project(pts)
    H = rotation_homography(src.K[0], R)
    hp = torch.cat([p_s[0], torch.ones(2, 1)], 1).double() @ H.T
    assert torch.allclose(p_t[0].double(), hp[:, :2] / hp[:, 2:], atol=1e-4)
    assert pair.target.meta["rotation"].allclose(R) and pair.scene_index == 0
    # beyond the crop margin the target is filled (black) where the rotated camera sees outside the image
    far = single_image_pair(_smooth_image(), 32, angles_deg=(0.0, 30.0, 0.0))
    inside = far.target.meta["inside"][0, 0]
    assert far.target.meta["inside_fraction"] < 1  # (pixels on the image's edge blend with the fill)
    assert (far.target.images[0][:, ~inside] == -1).float().mean() > 0.8


def test_single_image_folder_and_mixing(tmp_path: Path):
    folder = tmp_path / "photos"
    folder.mkdir()
    for i, (w, h) in enumerate([(40, 30), (30, 50), (64, 64)]):
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (h, w, 3), dtype=np.uint8)).save(folder / f"{i}.jpg")
    singles = SingleImagePairs(folder, 16, seed=3)
    a, b, c = singles[(0, 1)], singles[(0, 1)], singles[(1, 1)]
    assert a.cond.images.shape == (1, 3, 16, 16) and a.target.images.shape == (1, 3, 16, 16)
    assert torch.equal(a.target.images, b.target.images) and not torch.equal(a.target.images, c.target.images)
    assert all(abs(x) <= m for x, m in zip(a.target.meta["angles_deg"], (8.3, 8.3, 3.5)))
    # mixed into multi-view pairs: exactly the fraction per epoch, about it per batch
    multi = PairDataset(SyntheticDataset("train", num_objects=60, views=4, resolution=16), seed=0)
    mixed = MixedPairs(multi, singles, 0.25)
    assert (mixed.num_multi, mixed.num_single, len(mixed)) == (60, 20, 80)
    steps = StepBatchSampler(len(mixed), batch=8, micro_batch=8, seed=0, end_step=300)
    flags = torch.tensor([[mixed.is_single(i) for _, i in items] for items in steps], dtype=torch.float)
    assert abs(flags.mean().item() - 0.25) < 0.01 and abs(flags[:10].mean().item() - 0.25) < 0.01
    assert 0.1 < flags.mean(1).std().item() < 0.25  # batches vary around the fraction
    item = mixed[(2, 70)]
    assert item.scene_index == -1 - ((70 - 60 + 2 * 20) % 3) and item.target.meta["format"] == "single_image"
    batch = collate_pairs([mixed[(0, i)] for i in (0, 65)], pad_to=1)
    assert batch.scene_index.tolist()[0] >= 0 > batch.scene_index.tolist()[1]


def test_single_images_from_vantage_train(tmp_path: Path, capsys):
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(np.full((20, 30, 3), 60 * i, dtype=np.uint8)).save(folder / f"{i}.png")
    base = ["train", "vivid", "--data", "synthetic", "-o", "num_objects=4", "-o", "views=4", "--batch", "4",
            *TINY_SET]
    assert main(base + ["-o", f"single_images={folder}", "-o", "single_fraction=0.5", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "mixing single-image pairs" in out and "(3 images) into 50% of the training pairs" in out
    assert f'"single_images": "{folder.resolve()}"' in out
    assert main(base + ["-o", "single_fraction=0.5", "--dry-run"]) == 2
    assert "single_images=DIR" in capsys.readouterr().err
    assert main(base + ["-o", f"single_images={folder}", "-o", "single_fraction=1.5", "--dry-run"]) == 2
    assert "single_fraction must be in (0, 1)" in capsys.readouterr().err
    assert main(base + ["-o", f"single_images={tmp_path / 'none'}", "--dry-run"]) == 2
    assert "not a folder of images" in capsys.readouterr().err
