"""A bounded context for ViewFusion's composed strategy (``max_context=K``, ``vantage sample --max-context``): the
selection (inputs always, then the generated views nearest in pose), the network rows per call (counted on the
UNet), the documented cost formula, identity with the unbounded strategy for K >= the views, and the command."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import randomize
from test_cli_sample import VF_TINY

from vantage.cameras import Cameras, ring_cameras
from vantage.cli.main import main
from vantage.data.views import ViewSet
from vantage.methods import build_method
from vantage.methods.viewfusion import ViewFusionDenoiser, composed_strategy
from vantage.sampling import autoregressive_orbit
from vantage.sampling.context import nearest_context, pose_angles
from vantage.sampling.weights import WeightRecorder
from vantage.train.checkpoint import save_checkpoint

pytestmark = pytest.mark.usefixtures("single_thread")

R = 16
RING = ring_cameras(24, resolution=R)  # 15° apart


def _cams(indices) -> Cameras:
    return RING[torch.as_tensor(indices)]


def test_nearest_context_keeps_the_inputs_and_the_nearest_generated_views():
    # sample 0: inputs in slots 0, 1; sample 1: one input (slot 1 is padding); generated views in slots 2..6
    cams = _cams([[0, 12, 2, 4, 6, 8, 22], [0, 0, 2, 4, 6, 8, 22]])
    valid = torch.ones(2, 7, dtype=torch.bool)
    valid[1, 1] = False
    target = _cams([21, 21])  # -45°: nearest are slot 6 (-30°), then slot 2 (30°), then slot 3 (60°)
    keep = nearest_context(valid, cams, target, max_generated=2, inputs=2)
    assert keep.tolist() == [[True, True, True, False, False, False, True], [True, False, True, False, False, False,
                                                                            True]]
    assert nearest_context(valid, cams, target, max_generated=0, inputs=2).tolist() == [[True, True] + [False] * 5,
                                                                                        [True] + [False] * 6]
    assert torch.equal(nearest_context(valid, cams, target, max_generated=5, inputs=2), valid)
    # no input count given: the first valid view is the input; slot 1 (180°) of sample 0 is then a candidate, 135°
    # from the target like slot 4 (90°): the later slot wins the tie, slot 5 (120°, 165° away) is the farthest
    alone = nearest_context(valid, cams, target, max_generated=4, inputs=None)
    assert alone[0].tolist() == [True, False, True, True, True, False, True]
    # symmetric views tie (±30°): the one generated later wins
    tie = nearest_context(torch.ones(1, 3, dtype=torch.bool), _cams([[0, 2, 22]]), _cams([0]), max_generated=1,
                          inputs=1)
    assert tie.tolist() == [[True, False, True]]
    # the pose distance is the angle between the centres' directions: the azimuth difference on a ring at 0° elevation
    flat = ring_cameras(24, resolution=R, elevation_deg=0.0)
    assert torch.allclose(pose_angles(flat[torch.tensor([[0, 3, 12]])], flat[torch.tensor([0])]),
                          torch.tensor([[0.0, 45.0, 180.0]], dtype=torch.float64).deg2rad(), atol=1e-5)
    with pytest.raises(ValueError, match="max_generated"):
        nearest_context(valid, cams, target, max_generated=-1)


@pytest.fixture(scope="module")
def vf():
    torch.manual_seed(0)
    return randomize(build_method("viewfusion", dict(VF_TINY, default_steps=2)), seed=0, std=0.05).eval()


def _inputs(images: torch.Tensor, ring_idx) -> ViewSet:
    n = images.shape[1]
    return ViewSet(images=images, cameras=_cams([ring_idx]), valid=torch.ones(1, n, dtype=torch.bool),
                   view_ids=torch.zeros(1, n, dtype=torch.long))


def _rows(model):
    """Rows of every UNet call of ``model`` (a forward pre-hook); remove the handle when done."""
    rows: list[int] = []
    handle = model.net.register_forward_pre_hook(lambda mod, args: rows.append(int(args[0].shape[0])))
    return rows, handle


def test_bounded_context_rows_inputs_and_identity(vf):
    images = torch.rand(1, 2, 3, R, R, generator=torch.Generator().manual_seed(3)) * 2 - 1
    inputs = _inputs(images, [0, 12])  # two inputs, 0° and 180°
    targets = _cams([2, 4, 6, 8, 22, 20])  # 30°, 60°, 90°, 120°, -30°, -60°: T = 6 generated views
    N, T, steps, K = 2, 6, 2, 2

    def run(max_context, **kw):
        rec = WeightRecorder(images[0], "final")
        rows, handle = _rows(vf)
        try:
            res = autoregressive_orbit(vf, inputs, targets, strategy=composed_strategy, steps=steps, seed=0,
                                       callback=rec, strategy_options={"max_context": max_context}, **kw)
        finally:
            handle.remove()
        return res, rows, rec

    full, rows_full, _ = run(None)
    bounded, rows_k, rec = run(K)
    assert rows_full == [N + j for j in range(T) for _ in range(steps)]  # grows with the set: quadratic total
    assert max(rows_k) == N + K and rows_k == [N + min(j, K) for j in range(T) for _ in range(steps)]
    assert sum(rows_full) == steps * (T * N + T * (T - 1) // 2)  # the documented cost formulas
    assert sum(rows_k) == steps * (T * N + K * T - K * (K + 1) // 2)
    assert all(r.sources[:2] == ["input 0", "input 1"] and len(r.sources) <= N + K for r in rec.records)
    # frame 4 (-30°) composes the generated views nearest to it: frame 0 (30°) and frame 1 (60°), not the latest
    # (frames 2 and 3, 90° and 120°); frame 5 (-60°): frame 4 (-30°) and frame 0 (30°)
    assert rec.records[4].sources == ["input 0", "input 1", "frame 0", "frame 1"]
    assert rec.records[5].sources == ["input 0", "input 1", "frame 0", "frame 4"]
    assert torch.equal(bounded.images[0, :K + 1], full.images[0, :K + 1])  # within K nothing is left out yet
    assert not torch.equal(bounded.images, full.images)
    assert bounded.set_sizes.tolist() == full.set_sizes.tolist()  # the set itself still grows
    # K >= the generated views: identical to the unbounded strategy; K = 0: the inputs only, as fixed views
    assert torch.equal(run(T)[0].images, full.images) and torch.equal(run(100)[0].images, full.images)
    assert torch.equal(run(0)[0].images, run(None, autoregressive=False)[0].images)


def test_max_context_option_errors(vf):
    den = vf.single_view_denoiser()
    assert composed_strategy(den, max_context=3).max_context == 3
    for bad in (-1, 1.5):
        with pytest.raises(ValueError, match="max_context"):
            ViewFusionDenoiser(vf, max_context=bad)
    with pytest.raises(TypeError, match="accumulate_weights and max_context"):
        composed_strategy(den, window_deg=3)


# ------------------------------------------------------------------------------------ command line
@pytest.fixture(scope="module")
def vf_run(tmp_path_factory, vf):
    run = tmp_path_factory.mktemp("vf_run")
    save_checkpoint(run, 1, config={**vf.to_json(), "step": 1}, weights=vf.state_dict(), training_state={})
    return run


@pytest.fixture(scope="module")
def objects(tmp_path_factory):
    out = tmp_path_factory.mktemp("data") / "synth"
    assert main(["data", "render", "--out", str(out), "--objects", "1", "--views", "8", "--resolution", "16",
                 "--split", "val"]) == 0
    return out


def _sample(run, objects, out, *extra: str) -> int:
    return main(["sample", "--checkpoint", str(run), "--input", str(objects), "--out", str(out), "--device", "cpu",
                 "--steps", "2", *extra])


def test_cli_max_context(vf_run, objects, tmp_path, capsys):
    out = tmp_path / "bounded"
    assert _sample(vf_run, objects, out, "--orbit", "8", "--max-context", "1", "--save-weights", "final") == 0
    said = capsys.readouterr().out
    assert "reaches 2 views" not in said and "more than" not in said  # 1 input + 1 view <= max_views (2)
    s = json.loads((out / "sample.json").read_text())
    assert s["strategy"] == "composed" and s["strategy_options"] == {"max_context": 1}
    assert s["set_sizes"] == [0, 1, 2, 3, 4, 5, 6, 7] and s["context_sizes"] == [0, 1, 2, 2, 2, 2, 2, 2]
    assert s["nfe"] == 7 * 2
    frames = torch.load(out / "weights" / "weights.pt")["frames"]
    assert all(f["sources"][0] == "input" and len(f["sources"]) <= 2 for f in frames)
    assert frames[-1]["sources"] == ["input", "frame 6"]  # frame 7 (-45°): frame 6 (-90°) is nearest
    unbounded = tmp_path / "unbounded"
    assert _sample(vf_run, objects, unbounded, "--orbit", "8") == 0
    assert "reaches 7 views, more than the 2" in capsys.readouterr().out
    assert json.loads((unbounded / "sample.json").read_text())["strategy_options"] == {"max_context": None}

    def err(*extra: str) -> str:
        code = _sample(vf_run, objects, tmp_path / f"out{len(list(tmp_path.iterdir()))}", "--orbit", "2", *extra)
        said = capsys.readouterr().err
        assert code == 2, said
        assert "Traceback" not in said and len(said.strip().splitlines()) == 1
        return said

    assert "needs --strategy composed or interpolated (got stochastic)" in err("--strategy", "stochastic",
                                                                              "--max-context", "2")
    assert "must be >= 0, got -1" in err("--max-context=-1")
    assert "--no-autoregressive" in err("--max-context", "2", "--no-autoregressive")
