"""`vantage export`: nerfstudio, NeuS and instant-ngp exports round-trip cameras (1e-5) and 8-bit images, from a
synthetic object and from a `vantage sample` folder (made by the CLI with a tiny random 3DiM); each tool's own
convention (OpenGL c2w, NeuS projection and sphere, instant-ngp scale/offset); refusals and input errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vantage.cameras import Cameras, look_at
from vantage.cli.main import main
from vantage.data.formats import detect_format, open_dataset
from vantage.data.formats.common import DatasetError, to_uint8
from vantage.data.synthetic import SyntheticDataset
from vantage.data.views import ObjectViews
from vantage.export import ExportSource, export, read_instant_ngp, read_neus, read_sample_folder
from vantage.export.common import focus_point, load_source
from vantage.export.instant_ngp import nerf_position_to_ngp, nerf_to_ngp, ngp_to_nerf, write_instant_ngp
from vantage.export.neus import PIXEL_SHIFT, decompose_projection, neus_world_mats, write_neus
from vantage.methods import build_method
from vantage.train.checkpoint import save_checkpoint

pytestmark = pytest.mark.usefixtures("single_thread")
FORMATS = ["nerfstudio", "neus", "instant-ngp"]


def read_back(fmt: str, folder: Path) -> ObjectViews:
    """The export read with our own reader of that format."""
    if fmt == "nerfstudio":
        return open_dataset(folder).load(0)
    return read_neus(folder) if fmt == "neus" else read_instant_ngp(folder)


def assert_same_views(back: ObjectViews, ref: ObjectViews, masks: str = "same") -> None:
    """Cameras to 1e-5 (c2w and K), 8-bit images exactly; masks equal to the 8-bit ``ref`` ones / all white / none."""
    assert (back.cameras.width, back.cameras.height) == (ref.cameras.width, ref.cameras.height)
    assert torch.allclose(back.cameras.c2w, ref.cameras.c2w, atol=1e-5)
    assert torch.allclose(back.cameras.K, ref.cameras.K, atol=1e-5)
    assert len(back) == len(ref)
    for a, b in zip(back.images, ref.images):
        assert np.array_equal(to_uint8(a), to_uint8(b))
    if masks == "same":
        assert torch.equal(back.masks, (ref.masks.clamp(0, 1) * 255).round() / 255)
    elif masks == "white":
        assert back.masks is not None and bool((back.masks == 1).all())
    else:
        assert back.masks is None


@pytest.fixture(scope="module")
def synthetic() -> ObjectViews:
    return SyntheticDataset("test", num_objects=1, views=6, resolution=24).load(0)


def _source(views: ObjectViews) -> ExportSource:
    return ExportSource(views, ["view"] * len(views), [f"view {i}" for i in range(len(views))], "synthetic", Path("."))


# ------------------------------------------------------------------------------------ synthetic object
@pytest.mark.parametrize("fmt", FORMATS)
def test_synthetic_object_round_trip(fmt, synthetic, tmp_path):
    assert synthetic.masks is not None
    summary = export(_source(synthetic), fmt, tmp_path / fmt)
    assert_same_views(read_back(fmt, tmp_path / fmt), synthetic)
    saved = json.loads((tmp_path / fmt / "export.json").read_text())
    assert saved == summary and saved["views"] == 6 and saved["masks"] == "known" and saved["roles"] == {"view": 6}
    assert [f["role"] for f in saved["frames"]] == ["view"] * 6 and saved["frames"][0]["mask"]


@pytest.mark.parametrize("fmt", ["neus", "instant-ngp"])
def test_per_view_intrinsics_round_trip(fmt, synthetic, tmp_path):
    K = synthetic.cameras.K.clone()
    K[:, 0, 0] *= torch.linspace(0.9, 1.2, 6)
    K[:, 1, 2] += torch.linspace(-1.5, 2.0, 6)
    views = ObjectViews(images=synthetic.images, cameras=Cameras(synthetic.cameras.c2w, K, 24, 24),
                        masks=synthetic.masks)
    export(_source(views), fmt, tmp_path / fmt)
    assert_same_views(read_back(fmt, tmp_path / fmt), views)
    if fmt == "instant-ngp":  # instant-ngp reads a frame's cx/cy against that frame's w/h
        meta = json.loads((tmp_path / fmt / "transforms.json").read_text())
        assert "fl_x" not in meta and all({"fl_x", "cx", "w", "h"} <= set(fr) for fr in meta["frames"])


def test_nerfstudio_files_and_detection(synthetic, tmp_path):
    export(_source(synthetic), "nerfstudio", tmp_path / "ns")
    assert detect_format(tmp_path / "ns") == "nerfstudio"
    meta = json.loads((tmp_path / "ns" / "transforms.json").read_text())
    assert meta["camera_model"] == "OPENCV" and meta["orientation_override"] == "none"
    assert (meta["w"], meta["h"]) == (24, 24) and meta["cx"] == pytest.approx(12.0)  # pixel centres at +0.5: as ours
    assert meta["fl_x"] == pytest.approx(float(synthetic.cameras.fx[0]))
    fr = meta["frames"][2]
    flip = torch.diag(torch.tensor([1.0, -1.0, -1.0, 1.0]))
    assert torch.allclose(torch.tensor(fr["transform_matrix"]), synthetic.cameras.c2w[2] @ flip, atol=1e-6)
    mask = np.asarray(Image.open(tmp_path / "ns" / fr["mask_path"]))
    assert mask.ndim == 2 and set(np.unique(mask)) <= set(range(256))  # one channel, as nerfstudio requires
    assert fr["vantage_role"] == "view"


# ------------------------------------------------------------------------------------ NeuS
def test_neus_projection_sphere_and_decomposition(tmp_path):
    w, h = 24, 20
    cams = Cameras.from_look_at(torch.tensor([[1.8, -1.1, 1.4], [0.3, 2.4, 0.2]]), fov_deg=45.0, width=w, height=h)
    world = neus_world_mats(cams)
    uvw = world @ torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=torch.float64)
    # the world origin (the look-at target) lands on the image centre, at integer pixel centres in NeuS
    assert torch.allclose(uvw[:, :2] / uvw[:, 2:3], torch.tensor([(w - 1) / 2, (h - 1) / 2], dtype=torch.float64),
                          atol=1e-6)
    assert torch.allclose(world[:, 3], torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=torch.float64))
    for s in (1.0, -3.7, 0.01):  # any scale and sign of P
        K_neus, w2c = decompose_projection(world[0] * s)
        assert torch.allclose(torch.linalg.solve(PIXEL_SHIFT, K_neus), cams.K[0].double(), atol=1e-5)
        assert torch.allclose(torch.linalg.inv(w2c), cams.c2w[0].double(), atol=1e-5)
    with pytest.raises(ValueError, match="singular"):
        decompose_projection(torch.zeros(3, 4))
    views = ObjectViews(images=torch.zeros(2, 3, h, w), cameras=cams)
    res = write_neus(views, tmp_path / "case", radius=0.8, center=[0.1, -0.2, 0.3])
    data = np.load(tmp_path / "case" / "cameras_sphere.npz")
    scale = data["scale_mat_1"]
    assert np.allclose(scale @ [1.0, 0.0, 0.0, 1.0], [0.9, -0.2, 0.3, 1.0])  # the unit sphere -> the object's
    assert np.allclose(data["camera_mat_0"][:3, 2], [(w - 1) / 2, (h - 1) / 2, 1.0])
    assert res.center == pytest.approx([0.1, -0.2, 0.3]) and not res.masks_known and "all-white" in res.notes[-1]
    assert sorted(p.name for p in (tmp_path / "case" / "mask").iterdir()) == ["000.png", "001.png"]
    assert (np.asarray(Image.open(tmp_path / "case" / "mask" / "000.png")) == 255).all()


def test_focus_point_and_sphere(synthetic, tmp_path):
    assert focus_point(synthetic.cameras).abs().max() < 1e-5  # the synthetic cameras look at the origin
    shifted = torch.tensor([0.2, -0.1, 0.3])
    c2w = look_at(synthetic.cameras.centers + shifted, shifted.expand(6, 3))
    assert torch.allclose(focus_point(Cameras(c2w, synthetic.cameras.K, 24, 24)).float(), shifted, atol=1e-5)
    one = ObjectViews(images=synthetic.images[:1], cameras=synthetic.cameras[:1])  # a single axis: no focus point
    res = write_instant_ngp(one, tmp_path / "one", radius=3.0)
    assert res.center == [0.0, 0.0, 0.0] and any("parallel" in n for n in res.notes)
    assert any("inside the bounding sphere" in n for n in res.notes)  # the camera (distance 2.5) is inside r = 3


# ------------------------------------------------------------------------------------ instant-ngp
def test_instant_ngp_scale_offset_fit_the_unit_cube(synthetic, tmp_path):
    center, r = [0.25, -0.5, 0.1], 0.6
    res = write_instant_ngp(synthetic, tmp_path / "ngp", radius=r, center=center, aabb_scale=4)
    meta = json.loads((tmp_path / "ngp" / "transforms.json").read_text())
    assert meta["scale"] == pytest.approx(0.5 / r) and meta["aabb_scale"] == 4
    assert meta["offset"] == pytest.approx([0.5 - 0.5 / r * c for c in center]) == res.offset
    assert meta["camera_angle_x"] == pytest.approx(2 * math.atan(24 / (2 * meta["fl_x"])))
    c = torch.tensor(center, dtype=torch.float64)
    assert torch.allclose(nerf_position_to_ngp(c, meta["scale"], meta["offset"]), torch.full((3,), 0.5,
                                                                                          dtype=torch.float64))
    extremes = c + r * torch.cat([torch.eye(3), -torch.eye(3)]).double()  # the sphere touches each face of the cube
    p = nerf_position_to_ngp(extremes, meta["scale"], meta["offset"])
    assert torch.allclose(p.max(0).values, torch.ones(3, dtype=torch.float64))
    assert torch.allclose(p.min(0).values, torch.zeros(3, dtype=torch.float64), atol=1e-12)
    back = read_instant_ngp(tmp_path / "ngp")
    assert back.meta["scale"] == meta["scale"] and back.meta["offset"] == meta["offset"]
    ngp = nerf_to_ngp(back.cameras.to_opengl(), back.meta["scale"], back.meta["offset"])
    # instant-ngp's camera positions are the cube coordinates of ours; undoing scale/offset gives our cameras back
    assert torch.allclose(ngp[:, :, 3], nerf_position_to_ngp(synthetic.cameras.centers, meta["scale"], meta["offset"]))
    undone = Cameras.from_opengl(ngp_to_nerf(ngp, back.meta["scale"], back.meta["offset"]).float(), back.cameras.K,
                                 24, 24)
    assert undone.allclose(synthetic.cameras, atol=1e-5)
    with Image.open(tmp_path / "ngp" / meta["frames"][0]["file_path"]) as im:
        assert im.mode == "RGBA"  # the mask is the alpha channel
    with pytest.raises(ValueError, match="power of two"):
        write_instant_ngp(synthetic, tmp_path / "bad", aabb_scale=3)


# ------------------------------------------------------------------------------------ vantage sample folder
TINY = dict(resolution=16, ch=16, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(8,), num_heads=2, emb_ch=32,
            norm_groups=8, ray_octaves_origin=4, ray_octaves_dir=2, default_sampler="euler", default_steps=1)


@pytest.fixture(scope="module")
def sample_folder(tmp_path_factory) -> Path:
    """`vantage sample` output of a tiny random 3DiM: an orbit of 3 through input view 0 (ring views 0 and 1 at
    azimuths 0 and 90 degrees are the inputs; the orbit's 120 and 240 degrees are generated)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("export")
    torch.manual_seed(0)
    m = build_method("3dim", TINY)
    save_checkpoint(root / "run", 1, config={**m.to_json(), "step": 1}, weights=m.state_dict(), training_state={})
    assert main(["data", "render", "--out", str(root / "data"), "--objects", "1", "--views", "4", "--resolution", "16",
                 "--split", "test"]) == 0
    out = root / "sample"
    assert main(["sample", "--checkpoint", str(root / "run"), "--input", str(root / "data"), "--orbit", "3",
                 "--input-views", "0,1", "--out", str(out), "--device", "cpu"]) == 0
    torch.set_num_threads(n)
    return out


def test_sample_folder_reader(sample_folder):
    src = read_sample_folder(sample_folder)
    meta = json.loads((sample_folder / "cameras.json").read_text())
    # 3 frames (frame 0 is input 0 itself) + input 1, whose camera is not a frame's
    assert src.roles == ["input", "generated", "generated", "input"]
    assert src.sources == [f"frames/{i:03d}.png" for i in range(3)] + ["inputs/001.png"]
    assert torch.allclose(src.views.cameras.c2w[3], torch.tensor(meta["inputs"][1]["c2w"]))
    assert torch.allclose(src.views.cameras.K[1], torch.tensor(meta["frames"][1]["K"]))
    assert load_source(sample_folder).kind == "vantage-sample"
    from vantage.cli.reconstruct import load_views  # reconstruct reads sample folders with the same reader

    views, fmt = load_views(sample_folder)
    assert fmt == "vantage-sample" and views.cameras.allclose(src.views.cameras)


@pytest.mark.parametrize("fmt", FORMATS)
def test_sample_folder_cli_round_trip(fmt, sample_folder, tmp_path, capsys):
    out = tmp_path / fmt
    assert main(["export", str(sample_folder), "--format", fmt, "--out", str(out)]) == 0
    said = capsys.readouterr().out
    assert "exported 4 views (2 input, 2 generated)" in said and "run: " in said
    ref = read_sample_folder(sample_folder).views
    assert_same_views(read_back(fmt, out), ref, masks="white" if fmt == "neus" else "none")
    summary = json.loads((out / "export.json").read_text())
    assert summary["source_kind"] == "vantage-sample" and summary["roles"] == {"input": 2, "generated": 2}
    assert [f["source"] for f in summary["frames"]][-1] == "inputs/001.png"
    if fmt != "neus":
        meta = json.loads((out / "transforms.json").read_text())
        assert [fr["vantage_role"] for fr in meta["frames"]] == ["input", "generated", "generated", "input"]
    else:
        assert "all-white" in said and "womask" in said
    gen = tmp_path / f"{fmt}-generated"
    assert main(["export", str(sample_folder), "--format", fmt, "--out", str(gen), "--generated-only"]) == 0
    assert_same_views(read_back(fmt, gen), ref.select([1, 2]), masks="white" if fmt == "neus" else "none")


def test_dataset_folder_cli(sample_folder, tmp_path, capsys):
    data = sample_folder.parent / "data"
    out = tmp_path / "ngp"
    assert main(["export", str(data), "--format", "instant-ngp", "--out", str(out), "--object", "0",
                 "--radius", "0.8", "--aabb-scale", "2"]) == 0
    said = capsys.readouterr().out
    assert "4 dataset" in said and "(vantage)" in said and "masks known" in said and "scale 0.625" in said
    ref = open_dataset(data).load(0)
    assert_same_views(read_instant_ngp(out), ref)
    assert main(["export", str(data), "--format", "nerfstudio", "--out", str(tmp_path / "ns"), "--no-masks"]) == 0
    assert "mask_path" not in json.loads((tmp_path / "ns" / "transforms.json").read_text())["frames"][0]
    # one object folder of `vantage data render` has a cameras.json too: it is a dataset, not a sample folder
    obj = data / open_dataset(data).scene_name(0)
    assert (obj / "cameras.json").is_file() and load_source(obj).kind == "vantage"
    assert main(["export", str(obj), "--format", "neus", "--out", str(tmp_path / "neus")]) == 0
    assert_same_views(read_neus(tmp_path / "neus"), ref)


def test_unposed_image_sample(sample_folder, tmp_path, capsys):
    """An image without a pose: the input keeps the camera the model assumed (frame 0), and a note says so."""
    img = tmp_path / "photo.png"
    Image.fromarray(np.full((16, 16, 3), 90, dtype=np.uint8)).save(img)
    run = sample_folder.parent / "run"
    assert main(["sample", "--checkpoint", str(run), "--input", str(img), "--orbit", "2", "--out", str(tmp_path / "s"),
                 "--device", "cpu"]) == 0
    assert main(["export", str(tmp_path / "s"), "--format", "nerfstudio", "--out", str(tmp_path / "ns")]) == 0
    said = capsys.readouterr().out
    assert "exported 2 views (1 input, 1 generated)" in said and "had no camera" in said
    assert_same_views(open_dataset(tmp_path / "ns").load(0), read_sample_folder(tmp_path / "s").views, masks="none")


# ------------------------------------------------------------------------------------ refusals and errors
def test_cli_refuses_a_non_empty_out(sample_folder, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert main(["export", str(sample_folder), "--format", "neus", "--out", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err and not (out / "image").exists()
    assert main(["export", str(sample_folder), "--format", "neus", "--out", str(out), "--overwrite"]) == 0
    assert (out / "keep.txt").read_text() == "mine" and (out / "cameras_sphere.npz").is_file()


def test_bad_inputs(sample_folder, tmp_path, capsys):
    def fails(*args: str) -> str:
        capsys.readouterr()
        assert main(["export", *args, "--out", str(tmp_path / f"o{len(list(tmp_path.iterdir()))}")]) == 2, args
        return capsys.readouterr().err

    empty = tmp_path / "empty"
    empty.mkdir()
    assert "folder is empty" in fails(str(empty), "--format", "neus")
    no_frames = tmp_path / "no_frames"  # cameras.json whose frame files are missing
    no_frames.mkdir()
    (no_frames / "cameras.json").write_text((sample_folder / "cameras.json").read_text())
    err = fails(str(no_frames), "--format", "nerfstudio")
    assert "missing image" in err and "frames/000.png" in err
    empty_list = tmp_path / "empty_list"
    empty_list.mkdir()
    (empty_list / "cameras.json").write_text(json.dumps({"width": 16, "height": 16, "frames": []}))
    assert "no frames" in fails(str(empty_list), "--format", "instant-ngp")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "cameras.json").write_text(json.dumps({"width": 16, "frames": [{"file": "a.png"}]}))
    err = fails(str(broken), "--format", "neus")
    assert "cameras.json" in err and "height" in err
    plain = tmp_path / "plain"
    plain.mkdir()
    Image.fromarray(np.full((16, 16, 3), 128, dtype=np.uint8)).save(plain / "a.png")
    assert "no cameras" in fails(str(plain), "--format", "neus")
    assert "not found" in fails(str(tmp_path / "missing"), "--format", "neus")
    assert "unknown dataset format 'nope'" in fails(str(sample_folder), "--format", "neus", "--input-format", "nope")
    data = sample_folder.parent / "data"
    assert "--object" in fails(str(data), "--format", "neus", "--object", "nope")
    assert "no generated views" in fails(str(data), "--format", "neus", "--generated-only")
    assert "--radius" in fails(str(data), "--format", "neus", "--radius", "0")
    with pytest.raises(SystemExit) as e:  # an unknown output format is refused by the argument parser
        main(["export", str(sample_folder), "--format", "colmap", "--out", str(tmp_path / "x")])
    assert e.value.code == 2 and "invalid choice" in capsys.readouterr().err
    with pytest.raises(DatasetError, match="cameras_sphere.npz"):
        read_neus(empty)
