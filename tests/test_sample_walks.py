"""ViewFusion's single-target mode for every target (Yang et al. 2024): `sample_target_walks` with a mock
denoiser (walk lengths, copied inputs, per-target seeds, the final-pose callback) and `vantage sample --walk-step`
end to end with a tiny untrained 3DiM checkpoint (the files, sample.json, independence of the targets, the
one-step walk against a plain interpolated view, and the errors)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from helpers import save_tiny_run
from PIL import Image
from test_cli_sample import TINY

from vantage.cameras import Cameras, look_at, ring_cameras, spherical_to_cartesian
from vantage.cli.main import main
from vantage.data.views import ObjectViews
from vantage.methods.base import ViewCond
from vantage.sampling import autoregressive_orbit
from vantage.sampling.walks import plan_walks, sample_target_walks, target_seed

pytestmark = [pytest.mark.usefixtures("single_thread"), pytest.mark.filterwarnings("ignore:interpolated denoising")]

R = 8


def _mock(x, sigma, c: ViewCond):
    """A denoiser whose output depends on the view, its camera and x (so noise and conditioning both matter)."""
    return 0.5 * c.images + 0.1 * x + 0.01 * c.source.centers[:, :1, None, None]


def _object(azimuth_indices=(0,)) -> ObjectViews:
    g = torch.Generator().manual_seed(1)
    ring = ring_cameras(24, resolution=R)  # 15° apart
    n = len(azimuth_indices)
    return ObjectViews(images=torch.rand(n, 3, R, R, generator=g) * 2 - 1, cameras=ring[torch.tensor(azimuth_indices)])


def test_target_walks_with_a_mock_denoiser():
    ring = ring_cameras(24, resolution=R)
    obj = _object((0, 12))  # inputs at 0° and 180°
    targets = ring[torch.tensor([0, 1, 3, 12, 20])]  # 0°, 15°, 45°, 180°, -60°
    assert [None if p is None else len(p) for p in plan_walks(obj, targets, step_deg=20)] == [None, 1, 3, None, 3]
    seen = []
    w = sample_target_walks(_mock, obj, targets, step_deg=20, seed=3, sampler="euler_ancestral",
                            sigmas=[2.0, 1.0, 0.0], step_callback=seen.append)
    assert w.walk_lengths == [0, 1, 3, 0, 3] and w.generated.tolist() == [False, True, True, False, True]
    assert torch.equal(w.images[0], obj.images[0]) and torch.equal(w.images[3], obj.images[1])  # inputs: copied
    assert w.set_sizes.tolist() == [0, 2, 4, 0, 4]  # both inputs and the walk's earlier poses
    assert w.nfe == 2 * (1 + 3 + 3) and w.seeds[0] is None and w.seeds[1] == target_seed(3, targets[1])
    for t in (1, 2, 4):
        assert torch.equal(w.path_images[t][-1], w.images[t]) and torch.equal(w.paths[t].c2w[-1], targets.c2w[t])
    finals = [(e["target"], e["view_step"]) for e in seen if e["final"]]
    assert finals == [(1, 0), (1, 0), (2, 2), (2, 2), (4, 2), (4, 2)]  # two denoising steps of each target pose
    orbit = w.orbit_result()
    assert orbit.order.tolist() == [[0, 3, 1, 2, 4]] and orbit.images.shape == (1, 5, 3, R, R)

    # a target's view does not depend on the other targets (nor on its index); the seed follows the camera
    alone = sample_target_walks(_mock, obj, targets[torch.tensor([4])], step_deg=20, seed=3,
                                sampler="euler_ancestral", sigmas=[2.0, 1.0, 0.0])
    assert torch.equal(alone.images[0], w.images[4])
    assert target_seed(3, targets[4]) != target_seed(4, targets[4]) != target_seed(3, targets[2])
    # a one-pose walk is the plain interpolated view with the target's seed
    plain = autoregressive_orbit(_mock, obj, targets[1:2], strategy="interpolated", sampler="euler_ancestral",
                                 sigmas=[2.0, 1.0, 0.0], seed=[w.seeds[1]])
    assert torch.equal(plain.images[0, 0], w.images[1])

    with pytest.raises(ValueError, match="one object"):
        sample_target_walks(_mock, [obj, obj], targets, sigmas=[1.0, 0.0])
    with pytest.raises(ValueError, match="step_deg"):
        sample_target_walks(_mock, obj, targets, step_deg=0, sigmas=[1.0, 0.0])
    with pytest.raises(ValueError, match="T >= 1"):
        sample_target_walks(_mock, obj, targets[torch.tensor([], dtype=torch.long)], sigmas=[1.0, 0.0])


def test_walk_lengths_ignore_float32_camera_noise():
    """A 90° target at 45° steps is two poses, also when float32 rounding puts it at 90.000003°."""
    az = torch.tensor([0.0, 90.0, 90.000003, 90.01]).deg2rad().double()
    eye = spherical_to_cartesian(torch.full_like(az, math.radians(60)), az, torch.full_like(az, 2.5))
    cams = Cameras(look_at(eye).float(), ring_cameras(4, resolution=R).K, R, R)
    obj = ObjectViews(images=torch.zeros(1, 3, R, R), cameras=cams[torch.tensor([0])])
    assert [len(p) for p in plan_walks(obj, cams[torch.tensor([1, 2, 3])], step_deg=45)] == [2, 2, 3]


# ------------------------------------------------------------------------------------ command line
@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return save_tiny_run(tmp_path_factory.mktemp("run"), "3dim", TINY)


@pytest.fixture(scope="module")
def objects(tmp_path_factory):
    out = tmp_path_factory.mktemp("data") / "synth"
    assert main(["data", "render", "--out", str(out), "--objects", "1", "--views", "4", "--resolution", "24",
                 "--split", "val"]) == 0
    return out


def _sample(ckpt, objects, out, *extra: str) -> int:
    return main(["sample", "--checkpoint", str(ckpt), "--input", str(objects), "--out", str(out), "--device", "cpu",
                 "--steps", "2", "--seed", "5", *extra])


def _walk(ckpt, objects, out, *extra: str) -> int:
    return _sample(ckpt, objects, out, "--strategy", "interpolated", "--walk-step", "45", *extra)


def _frame(out, i: int) -> np.ndarray:
    return np.asarray(Image.open(out / "frames" / f"{i:03d}.png")).astype(int)


def test_walk_mode_writes_an_orbits_files_and_the_walks(ckpt, objects, tmp_path, capsys):
    out = tmp_path / "walks"
    assert _walk(ckpt, objects, out, "--orbit", "4", "--save-walks", "--save-intermediates") == 0
    said = capsys.readouterr()
    assert "3 walk(s) of 2-4 poses, 8 poses in all" in said.out and "single-target walks" in said.out
    assert "targets" in said.err  # the progress bar runs over the targets
    assert sorted(p.name for p in (out / "frames").iterdir()) == [f"{i:03d}.png" for i in range(4)]
    assert Image.open(out / "orbit.gif").n_frames == 4
    assert Image.open(out / "contact_sheet.png").height >= 3 * 64  # input | generated | truth
    frames = json.loads((out / "cameras.json").read_text())["frames"]
    assert [f["generated"] for f in frames] == [False, True, True, True]
    assert [f["ground_truth_view"] for f in frames] == [0, 1, 2, 3]
    s = json.loads((out / "sample.json").read_text())
    assert s["mode"] == "single-target walks" and s["walk_step_deg"] == 45.0 and s["strategy"] == "interpolated"
    assert s["walk_lengths"] == [0, 2, 4, 2] and s["walk_poses"] == 8 and s["set_sizes"] == [0, 2, 4, 2]
    assert s["nfe"] == 2 * 8 and s["strategy_options"]["distance"] == "azimuth+elevation"
    assert s["walk_seeds"][0] is None and len(set(s["walk_seeds"][1:])) == 3 and sorted(s["psnr"]) == ["1", "2", "3"]
    assert sorted(p.name for p in (out / "walks").iterdir()) == ["001", "002", "003"]  # frame 0 is the input
    assert sorted(p.name for p in (out / "walks" / "002").iterdir()) == ["000.png", "001.png", "002.png", "003.png",
                                                                        "cameras.json"]
    walk = json.loads((out / "walks" / "002" / "cameras.json").read_text())
    assert walk["frame"] == 2 and walk["seed"] == s["walk_seeds"][2]
    assert [round(p["azimuth_deg"]) for p in walk["poses"]] == [-45, -90, -135, -180]  # the short way round
    assert np.allclose(walk["poses"][-1]["c2w"], frames[2]["c2w"], atol=1e-6)
    for t, n in ((1, 2), (2, 4), (3, 2)):  # the walk's last pose is the frame
        assert np.array_equal(np.asarray(Image.open(out / "walks" / f"{t:03d}" / f"{n - 1:03d}.png")), _frame(out, t))
    inter = out / "intermediates"  # x̂0 of the target pose of every walk, one per denoising step
    assert sorted(p.name for p in inter.iterdir()) == ["001", "002", "003"]
    assert sorted(p.name for p in (inter / "002").iterdir()) == ["000.png", "001.png"]

    data = tmp_path / "dataset"  # the object's own other cameras, each by its walk
    assert _walk(ckpt, objects, data, "--targets", "dataset") == 0
    d = json.loads((data / "sample.json").read_text())
    assert d["walk_lengths"] == [2, 4, 2] and sorted(d["psnr"]) == ["0", "1", "2"] and not (data / "walks").exists()
    for i in range(3):  # the same cameras as frames 1..3 above: the same views
        assert np.abs(_frame(data, i) - _frame(out, i + 1)).max() <= 1


def test_walk_targets_do_not_depend_on_the_other_targets(ckpt, objects, tmp_path):
    full, half = tmp_path / "full", tmp_path / "half"
    assert _walk(ckpt, objects, full, "--orbit", "4") == 0
    assert _walk(ckpt, objects, half, "--arc", "90:180", "--orbit", "2") == 0  # frames 1, 2 of the orbit
    for i in range(2):
        assert np.abs(_frame(half, i) - _frame(full, i + 1)).max() <= 1
    assert np.abs(_frame(full, 1) - _frame(full, 3)).max() > 0  # different targets, different noise


def test_a_one_step_walk_is_a_plain_interpolated_view(ckpt, objects, tmp_path):
    """One target 5° from the input: its walk is one pose, conditioned on the input alone, i.e. a plain interpolated
    one-view generation. The walk's seed is derived from the run's seed and the camera (so that targets are
    independent), so the plain run gets that seed (sample.json's walk_seeds) to draw the same noise."""
    walk, plain = tmp_path / "walk", tmp_path / "plain"
    assert _walk(ckpt, objects, walk, "--arc", "5:5", "--orbit", "1") == 0
    s = json.loads((walk / "sample.json").read_text())
    assert s["walk_lengths"] == [1] and s["set_sizes"] == [1]
    assert main(["sample", "--checkpoint", str(ckpt), "--input", str(objects), "--out", str(plain), "--device", "cpu",
                 "--steps", "2", "--strategy", "interpolated", "--arc", "5:5", "--orbit", "1",
                 "--seed", str(s["walk_seeds"][0])]) == 0
    p = json.loads((plain / "sample.json").read_text())
    assert p["mode"] == "autoregressive" and p["nfe"] == s["nfe"] == 2
    assert np.array_equal(_frame(walk, 0), _frame(plain, 0))


def test_walk_mode_errors(ckpt, objects, tmp_path, capsys):
    def err(*extra: str) -> str:
        code = _sample(ckpt, objects, tmp_path / f"out{len(list(tmp_path.iterdir()))}", "--orbit", "2", *extra)
        said = capsys.readouterr().err
        assert code == 2, said
        assert "Traceback" not in said and len(said.strip().splitlines()) == 1
        return said

    assert "--walk-step: option(s) of interpolated denoising, they need --strategy interpolated" in err(
        "--walk-step", "10")
    assert "--walk-step" in err("--strategy", "stochastic", "--walk-step", "10")
    assert "must be > 0, got 0" in err("--strategy", "interpolated", "--walk-step", "0")
    assert "must be > 0, got -5" in err("--strategy", "interpolated", "--walk-step=-5")
    assert "needs --walk-step" in err("--strategy", "interpolated", "--save-walks")
    assert "--no-autoregressive" in err("--strategy", "interpolated", "--walk-step", "10", "--no-autoregressive")
    assert "--order alternating does not apply" in err("--strategy", "interpolated", "--walk-step", "10",
                                                       "--order", "alternating")
