"""3D consistency: the voxel radiance field (rendering conventions, fitting), the 3DiM consistency score on
true vs inconsistent views, adjacent-view and reprojection scores, marching tetrahedra + PLY/OBJ, and
``vantage reconstruct`` end to end. Small on purpose: 32 px views, 24-view ring, 32³ grids, 1 thread."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from vantage.cameras import Cameras, orbit_cameras
from vantage.cli.main import main
from vantage.data.synthetic import SyntheticDataset
from vantage.eval.consistency import adjacent_view_score, consistency_score, reprojection_error, split_views
from vantage.eval.mesh import field_mesh, marching_tetrahedra, write_mesh
from vantage.eval.metrics import psnr, to_unit
from vantage.eval.voxels import Field, fit_field, render_field

FIT = dict(grid=32, iters=300)  # the CPU test setting (docs/consistency.md)


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """One intra-op thread for the whole module (small tensors; and a CPU shared with other work)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def objects():
    """Three held-out synthetic objects (test split), 24-view ring, 32 px, on white."""
    ds = SyntheticDataset("test", num_objects=3, views=24, resolution=32)
    return [ds.load(k) for k in range(3)]


@pytest.fixture(scope="module")
def true_score(objects):
    v = objects[0]
    return consistency_score(v.images, v.cameras, reprojection=True, return_outputs=True, **FIT)


@pytest.fixture(scope="module")
def mixed_views(objects):
    """Inconsistent views: view i of object i % 3, at the true cameras."""
    return torch.stack([objects[i % 3].images[i] for i in range(24)])


CENTER = (0.2, -0.1, 0.15)  # off the origin, so that a mix-up of the grid's axes shows


def sphere_field(d: int = 48, radius: float = 0.5, rgb=(0.9, 0.1, 0.1), center=CENTER) -> Field:
    """An opaque coloured ball in [-1, 1]³ (its density switches over about one voxel)."""
    z, y, x = torch.meshgrid(*(torch.linspace(-1, 1, d),) * 3, indexing="ij")
    r = ((x - center[0]) ** 2 + (y - center[1]) ** 2 + (z - center[2]) ** 2).sqrt()
    voxel = 2 / (d - 1)
    grid = torch.zeros(4, d, d, d)
    grid[0] = (20 * (radius - r) / voxel).clamp(-30, 30)
    grid[1:] = torch.logit(torch.tensor(rgb)).view(3, 1, 1, 1)
    return Field(grid, torch.full((3,), -1.0), torch.full((3,), 1.0), torch.ones(3), 0.0)


# ------------------------------------------------------------------------------------------- rendering
def test_render_matches_an_analytic_sphere():
    cams = orbit_cameras(4, resolution=32, elevation_deg=20.0)
    images, depth, opacity = render_field(sphere_field(), cams)
    assert images.shape == (4, 3, 32, 32) and depth.shape == opacity.shape == (4, 1, 32, 32)
    o, d = cams.rays()  # exact ray-sphere intersection, camera-z depth
    o = o - torch.tensor(CENTER)
    b = (o * d).sum(-1)
    disc = b * b - ((o * o).sum(-1) - 0.25)
    hit = disc > 0
    t = -b - disc.clamp_min(0).sqrt()
    z_true = t * (d * cams.forward[:, None, None, :]).sum(-1)
    # away from the silhouette (ray misses/hits by a margin) the render is exact up to the grid
    core = disc > 0.02
    miss = disc < -0.02
    assert (depth[:, 0][core] - z_true[core]).abs().max() < 0.05
    assert opacity[:, 0][core].min() > 0.99 and opacity[:, 0][miss].max() < 0.01
    assert (depth[:, 0][miss] == 0).all()
    red = to_unit(images).permute(0, 2, 3, 1)
    assert torch.allclose(red[core], torch.tensor([0.9, 0.1, 0.1]), atol=0.02)
    assert torch.allclose(red[miss], torch.ones(3), atol=0.01)  # white background
    assert hit.any() and (~hit).any()


def test_fit_is_deterministic_and_seeded(objects):
    v = objects[1].select(range(0, 24, 4))
    a = fit_field(v.images, v.cameras, grid=16, iters=40, seed=3)
    b = fit_field(v.images, v.cameras, grid=16, iters=40, seed=3)
    c = fit_field(v.images, v.cameras, grid=16, iters=40, seed=4)
    assert torch.equal(a.grid, b.grid)
    assert not torch.equal(a.grid, c.grid)
    assert a.grid.shape == (4, 16, 16, 16)


# ------------------------------------------------------------------------------------------- the score
def test_consistency_score_of_true_views_is_high(true_score, objects):
    r = true_score
    assert r["train_views"] == list(range(0, 24, 2)) and r["test_views"] == list(range(1, 24, 2))
    v = objects[0]
    white = psnr(torch.ones_like(v.images[1::2]), to_unit(v.images[1::2])).mean().item()
    # measured 22.6 dB / SSIM 0.89 (white baseline 7 dB); a broken renderer or camera convention is < 15 dB
    assert r["psnr"] > 20.0 and r["psnr"] > white + 10
    assert r["ssim"] > 0.8
    assert r["train_psnr"] > r["psnr"] - 0.5
    assert len(r["psnr_per_view"]) == 12 and min(r["psnr_per_view"]) > 17.0
    assert r["renders"].shape == (12, 3, 32, 32)
    json.dumps({k: v for k, v in r.items() if k not in ("field", "renders")})  # JSON friendly


def test_consistency_score_drops_for_inconsistent_views(true_score, mixed_views, objects):
    mixed = consistency_score(mixed_views, objects[0].cameras, reprojection=True, **FIT)
    perm = torch.randperm(24, generator=torch.Generator().manual_seed(0))
    shuffled = consistency_score(objects[0].images, objects[0].cameras[perm], **FIT)
    # measured: true 22.6 dB, mixed objects 11.8 dB, shuffled cameras 13.0 dB
    assert mixed["psnr"] < true_score["psnr"] - 6 and mixed["ssim"] < true_score["ssim"] - 0.3
    assert shuffled["psnr"] < true_score["psnr"] - 6
    # field-depth reprojection (generated-view mode) separates them too
    assert true_score["reprojection"]["mae"] < 0.06 < 0.15 < mixed["reprojection"]["mae"]


def test_adjacent_view_score(objects, mixed_views):
    true = adjacent_view_score(objects[0].images, cyclic=True)
    mixed = adjacent_view_score(mixed_views, cyclic=True)
    assert len(true["pairs"]) == 24 and true["pairs"][-1] == [23, 0]
    assert true["psnr"] > mixed["psnr"] + 3 and true["ssim"] > mixed["ssim"]
    same = adjacent_view_score(objects[0].images[:1].repeat(3, 1, 1, 1))
    assert same["psnr"] == 100.0 and abs(same["ssim"] - 1) < 1e-6 and len(same["pairs"]) == 2


def test_reprojection_error_with_true_depth(objects, mixed_views):
    v = objects[0]
    true = reprojection_error(v.images, v.cameras, v.depth, cyclic=True)
    # not 0: bilinear resampling of 32 px aliased views and view-dependent highlights (measured 0.022)
    assert true["mae"] < 0.035 and true["valid_fraction"] > 0.5 and len(true["mae_per_pair"]) == 24
    ang = torch.tensor([math.radians(5.0) * (1 if i % 2 else -1) for i in range(24)])  # cameras off by ±5°
    rot = torch.eye(4).repeat(24, 1, 1)
    rot[:, 0, 0], rot[:, 0, 1], rot[:, 1, 0], rot[:, 1, 1] = ang.cos(), -ang.sin(), ang.sin(), ang.cos()
    moved = Cameras(rot @ v.cameras.c2w, v.cameras.K, 32, 32)
    perturbed = reprojection_error(v.images, moved, v.depth, cyclic=True)
    assert perturbed["mae"] > 1.4 * true["mae"]  # measured 0.038
    assert reprojection_error(mixed_views, v.cameras, v.depth)["mae"] > 0.2  # measured 0.41
    # the identity pair reprojects exactly
    self_pair = reprojection_error(v.images, v.cameras, v.depth, pairs=[(3, 3)])
    assert self_pair["mae"] < 1e-5 and self_pair["valid_fraction"] > 0.7


def test_exports():
    import vantage.eval as ev

    assert ev.consistency_score is consistency_score and ev.render_field is render_field and ev.Field is Field


def test_split_views():
    assert split_views(6) == ([0, 2, 4], [1, 3, 5])
    assert split_views(7, 3) == ([0, 2, 3, 5, 6], [1, 4])
    assert split_views(5, [4, 0]) == ([1, 2, 3], [0, 4])
    for bad, match in (("every", "holdout must be"), (1, "k must be >= 2"), ([9], "out of range"),
                       (list(range(5)), "both must be non-empty")):
        with pytest.raises(ValueError, match=match):
            split_views(5, bad)


def test_bad_inputs_are_named(objects):
    v = objects[0]
    with pytest.raises(ValueError, match=r"cameras must have shape \(24,\)"):
        fit_field(v.images, v.cameras[:23], iters=1)
    with pytest.raises(ValueError, match=r"images must be \(N, 3, H, W\)"):
        fit_field(v.images[:, :1], v.cameras, iters=1)
    with pytest.raises(ValueError, match=r"in \[-1, 1\]"):
        consistency_score((v.images + 1) * 127.5, v.cameras, iters=1)
    with pytest.raises(ValueError, match="cameras are for 16x16 images"):
        fit_field(v.images, v.cameras.resize(16), iters=1)
    with pytest.raises(ValueError, match="bbox"):
        fit_field(v.images, v.cameras, iters=1, bbox=([0, 0, 0], [1, -1, 1]))
    with pytest.raises(ValueError, match="background"):
        fit_field(v.images, v.cameras, iters=1, background="plaid")
    with pytest.raises(ValueError, match=r"depth must be \(24, 1, 32, 32\)"):
        reprojection_error(v.images, v.cameras, v.depth[:, :, :16])
    with pytest.raises(ValueError, match="N >= 2"):
        adjacent_view_score(v.images[:1])


# ------------------------------------------------------------------------------------------- meshes
def read_ply(path):
    lines = path.read_text().splitlines()
    end = lines.index("end_header")
    header = lines[:end]
    nv = int(next(h for h in header if h.startswith("element vertex")).split()[-1])
    nf = int(next(h for h in header if h.startswith("element face")).split()[-1])
    body = lines[end + 1:]
    assert header[0] == "ply" and header[1] == "format ascii 1.0" and len(body) == nv + nf
    verts = np.array([[float(x) for x in ln.split()[:3]] for ln in body[:nv]])
    cols = np.array([[int(x) for x in ln.split()[3:]] for ln in body[:nv]])
    faces = np.array([[int(x) for x in ln.split()] for ln in body[nv:]])
    assert (faces[:, 0] == 3).all() and faces[:, 1:].min() >= 0 and faces[:, 1:].max() < nv
    return verts, cols, faces[:, 1:]


def test_marching_tetrahedra_sphere_is_closed_and_outward():
    n = 24
    z, y, x = torch.meshgrid(*(torch.arange(n, dtype=torch.float64),) * 3, indexing="ij")
    c, r = (n - 1) / 2, 8.3
    mesh = marching_tetrahedra(r - ((x - c) ** 2 + (y - c) ** 2 + (z - c) ** 2).sqrt(), 0.0)
    rad = (mesh.vertices.double() - c).norm(dim=1)
    assert (rad - r).abs().max() < 0.1
    edges = torch.cat([mesh.faces[:, [0, 1]], mesh.faces[:, [1, 2]], mesh.faces[:, [2, 0]]])
    _, directed = torch.unique(edges, dim=0, return_counts=True)
    _, undirected = torch.unique(edges.sort(1).values, dim=0, return_counts=True)
    assert (directed == 1).all() and (undirected == 2).all()  # closed, consistently oriented
    p = mesh.vertices.double()[mesh.faces]
    volume = (p[:, 0] * torch.linalg.cross(p[:, 1], p[:, 2], dim=1)).sum() / 6
    assert abs(volume / (4 / 3 * math.pi * r**3) - 1) < 0.02  # positive: normals point outwards
    assert marching_tetrahedra(torch.zeros(4, 4, 4), 0.5).faces.shape == (0, 3)
    with pytest.raises(ValueError, match="volume must be"):
        marching_tetrahedra(torch.zeros(4, 4), 0.5)


def test_field_mesh_writes_valid_ply_and_obj(tmp_path):
    mesh = field_mesh(sphere_field(32), level=0.5)
    verts, cols, faces = read_ply(write_mesh(mesh, tmp_path / "ball.ply"))
    assert len(verts) == mesh.vertices.shape[0] > 500 and len(faces) == mesh.faces.shape[0]
    assert np.abs(np.linalg.norm(verts - CENTER, axis=1) - 0.5).max() < 0.07  # world units: the ball of radius 0.5
    assert (np.abs(cols - [230, 26, 26]) <= 3).all()  # vertex colours from the RGB grid
    obj = write_mesh(mesh, tmp_path / "ball.obj").read_text().splitlines()
    v_lines = [ln for ln in obj if ln.startswith("v ")]
    f_lines = [ln for ln in obj if ln.startswith("f ")]
    assert len(v_lines) == len(verts) and len(f_lines) == len(faces) and len(v_lines[0].split()) == 7
    idx = np.array([[int(x) for x in ln.split()[1:]] for ln in f_lines])
    assert idx.min() == 1 and idx.max() == len(verts)
    with pytest.raises(ValueError, match="mesh format"):
        write_mesh(mesh, tmp_path / "ball.stl")
    with pytest.raises(ValueError, match="level"):
        field_mesh(sphere_field(16), level=1.5)


# ------------------------------------------------------------------------------------------- CLI
@pytest.fixture(scope="module")
def data_folder(tmp_path_factory):
    out = tmp_path_factory.mktemp("rc") / "synth"
    assert main(["data", "render", "--out", str(out), "--objects", "2", "--views", "12", "--resolution", "32",
                 "--split", "test"]) == 0
    return out


def test_cli_reconstruct_dataset_folder(data_folder, tmp_path, capsys):
    out = tmp_path / "rec"
    args = ["reconstruct", str(data_folder), "--out", str(out), "--grid", "24", "--iters", "150", "--turntable", "8",
            "--object", "test-000001"]
    assert main(args) == 0
    for f in ("turntable.gif", "renders.png", "mesh.ply", "field.pt", "reconstruct.json"):
        assert (out / f).is_file(), f
    summary = json.loads((out / "reconstruct.json").read_text())
    assert summary["scene"] == "test-000001" and summary["views"] == 12 and summary["format"] == "vantage"
    assert summary["train_psnr"] > 20 and summary["mesh"]["faces"] > 100
    verts, _, faces = read_ply(out / "mesh.ply")
    assert len(faces) == summary["mesh"]["faces"] and np.abs(verts).max() <= 1.0
    with Image.open(out / "turntable.gif") as gif:
        assert gif.n_frames == 8
    field = Field.from_state_dict(torch.load(out / "field.pt"))
    assert field.grid.shape == (4, 24, 24, 24)
    capsys.readouterr()
    assert main(args) == 2  # never overwrites without --overwrite
    assert "--overwrite" in capsys.readouterr().err
    assert main(args + ["--overwrite", "--mesh-format", "obj", "--iters", "20"]) == 0
    assert (out / "mesh.obj").read_text().startswith("# written by vantage")


def test_cli_reconstruct_sample_folder(objects, tmp_path):
    """A folder as `vantage sample` writes it: cameras.json + frames/NNN.png (input = frame 0)."""
    v = objects[2].select(range(0, 24, 2))
    folder = tmp_path / "sample"
    (folder / "frames").mkdir(parents=True)
    frames = []
    for i in range(len(v)):
        img = ((v.images[i].permute(1, 2, 0) + 1) * 127.5).round().byte().numpy()
        Image.fromarray(img).save(folder / "frames" / f"{i:03d}.png")
        frames.append({"file": f"frames/{i:03d}.png", "c2w": v.cameras.c2w[i].tolist(), "K": v.cameras.K[i].tolist()})
    Image.open(folder / "frames" / "000.png").save(folder / "input.png")
    (folder / "cameras.json").write_text(json.dumps({"width": 32, "height": 32, "frames": frames, "input": {
        "file": "input.png", "c2w": frames[0]["c2w"], "K": frames[0]["K"]}}))
    out = tmp_path / "rec"
    assert main(["reconstruct", str(folder), "--out", str(out), "--grid", "24", "--iters", "100", "--turntable", "4",
                 "--score"]) == 0
    summary = json.loads((out / "reconstruct.json").read_text())
    assert summary["format"] == "vantage-sample" and summary["views"] == 12  # the input is frame 0: not doubled
    assert summary["consistency"]["test_views"] == [1, 3, 5, 7, 9, 11] and summary["consistency"]["psnr"] > 15


def test_cli_reconstruct_errors(data_folder, tmp_path, capsys):
    plain = tmp_path / "plain"
    plain.mkdir()
    Image.fromarray(np.full((16, 16, 3), 128, dtype=np.uint8)).save(plain / "a.png")
    bad_json = tmp_path / "badjson"
    bad_json.mkdir()
    (bad_json / "cameras.json").write_text(json.dumps({"width": 32, "frames": []}))
    cases = [([str(plain)], "no cameras"), ([str(tmp_path / "missing")], "not found"),
             ([str(bad_json)], "cameras.json"), ([str(data_folder), "--level", "1.5"], "--level"),
             ([str(data_folder), "--object", "nope"], "not found"), ([str(data_folder), "--grid", "2"], "--grid")]
    for extra, message in cases:
        capsys.readouterr()
        assert main(["reconstruct", *extra, "--out", str(tmp_path / "o"), "--overwrite"]) == 2, extra
        assert message in capsys.readouterr().err, extra
