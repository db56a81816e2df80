"""`vantage evaluate` beyond the basics: the copy-the-nearest-input baseline, adjacent-view scores, combining
samples, and the sweeps (metric against input views and against NFE)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from helpers import save_tiny_run
from PIL import Image

from vantage.cameras import ring_cameras
from vantage.eval import psnr
from vantage.eval.consistency import adjacent_view_score, nearest_pairs
from vantage.eval.evaluate import combine_samples
from vantage.eval.evaluate_model import evaluate_checkpoint, nearest_inputs
from vantage.eval.protocol import ProtocolError, protocol_from_dict

pytestmark = pytest.mark.usefixtures("single_thread")

TINY = dict(resolution=16, ch=16, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(8,), num_heads=2, emb_ch=32,
            norm_groups=8, ray_octaves_origin=4, ray_octaves_dir=2, default_sampler="euler", default_steps=2)
BASE = {"name": "tiny", "version": 1, "dataset": {"spec": "synthetic:benchmark"}, "objects": 1, "input_views": [0],
        "target_views": [6, 12], "resolution": 16, "metrics": {"names": ["psnr", "ssim"]}}


@pytest.fixture(autouse=True)
def no_weights(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("VANTAGE_WEIGHTS", str(tmp_path_factory.mktemp("no-weights")))


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return save_tiny_run(tmp_path_factory.mktemp("run"), "3dim", TINY)


def unit(path) -> torch.Tensor:
    return torch.from_numpy(np.array(Image.open(path))).permute(2, 0, 1)[None].float() / 255.0


def quiet(**kw):
    return dict(device="cpu", progress=False, log=lambda s: None, **kw)


def test_nearest_inputs_and_pairs_on_a_ring():
    ring = ring_cameras(24, resolution=16)
    # inputs 0 and 12: targets 2, 5 are nearest to 0; 7, 11, 15 to 12; 22 wraps around to 0
    assert nearest_inputs(ring[[0, 12]], ring[[2, 5, 7, 11, 15, 22]]) == [0, 0, 1, 1, 1, 0]
    # equal distances (target 6 is halfway between inputs 0 and 12): the first one wins deterministically
    assert nearest_inputs(ring[[0, 12]], ring[[6]]) == [0]
    # views stored out of order: each is paired with its ring neighbour
    order = [3, 0, 2, 1]
    pairs = nearest_pairs(ring[order])
    assert {tuple(sorted((order[i], order[j]))) for i, j in pairs} <= {(0, 1), (1, 2), (2, 3)}
    assert len(pairs) >= 2
    with pytest.raises(ValueError, match="at least 2 cameras"):
        nearest_pairs(ring[[0]])
    images = torch.zeros(3, 3, 16, 16)
    with pytest.raises(ValueError, match="index views 0..2"):
        adjacent_view_score(images, pairs=[(0, 5)])


def test_copy_baseline_takes_the_nearest_input(ckpt, tmp_path):
    proto = protocol_from_dict({**BASE, "input_views": [0, 12], "target_views": [2, 11]})
    out = tmp_path / "two_inputs"
    r = evaluate_checkpoint(ckpt, proto, out, **quiet())["result"]
    obj = "benchmark-000000"
    for target, source in ((2, 0), (11, 12)):
        rec = next(x for x in r["per_image"] if x["image"] == f"{obj}/{target:06d}")
        want = psnr(unit(out / "inputs" / obj / f"{source:06d}.png"), unit(out / "gt" / obj / f"{target:06d}.png"))
        assert rec["baseline_psnr"] == pytest.approx(float(want), abs=1e-4)
    assert "nearest" in r["baseline"]["what"]


def test_adjacent_view_scores_and_reprojection(ckpt, tmp_path):
    with pytest.raises(ProtocolError, match="adjacent_views"):
        protocol_from_dict({**BASE, "metrics": {"names": ["psnr"], "adjacent_views": "yes"}})
    proto = protocol_from_dict({**BASE, "target_views": [5, 6, 7, 8], "metrics": {"names": ["psnr"],
                                                                                   "adjacent_views": True}})
    out = tmp_path / "adjacent"
    res = evaluate_checkpoint(ckpt, proto, out, **quiet())
    adj = json.loads((out / "metrics.json").read_text())["adjacent_views"]
    assert adj == res["extra"]["adjacent_views"]
    row = adj["per_object"][0]
    assert row["pairs"] == 3  # 5-6, 6-7, 7-8
    truth, gen = adj["ground_truth"], adj["generated"]
    # the true views agree after reprojection through their own depth up to resampling of aliased 16 px renders and
    # shading (measured 0.125; 0.047 at 64 px); an untrained model's noise does not
    assert 0 <= truth["reprojection_mae"] < 0.2 and gen["reprojection_mae"] > 1.5 * truth["reprojection_mae"], adj
    assert 0 < truth["valid_fraction"] <= 1
    # the adjacent PSNR is that of the saved images, pair by pair
    obj = out / "gt" / "benchmark-000000"
    direct = np.mean([float(psnr(unit(obj / f"{a:06d}.png"), unit(obj / f"{b:06d}.png")))
                      for a, b in ((5, 6), (6, 7), (7, 8))])
    assert truth["psnr"] == pytest.approx(direct, abs=0.2)  # float truth against its 8-bit PNGs
    md = (out / "metrics.md").read_text()
    assert "## Adjacent views" in md and "reprojection error" in md
    # one target per object: nothing to pair, said so
    proto1 = protocol_from_dict({**BASE, "target_views": [6], "metrics": {"names": ["psnr"], "adjacent_views": True}})
    r1 = evaluate_checkpoint(ckpt, proto1, tmp_path / "one", **quiet())
    assert "adjacent_views" not in r1["extra"] and any("adjacent-view" in n for n in r1["result"]["notes"])


def test_combine_samples_does_not_count_a_missing_set_metric_as_zero():
    def one(fid):
        return {"per_image": [{"image": "o/1", "object": "o", "psnr": 20.0}], "set_metrics": fid, "skipped": {},
                "notes": [], "mean": {}}

    r = combine_samples([one({"fid": 10.0}), one({})], "pred", "gt")
    assert r["set_metrics"]["fid"] == 10.0


def test_spread_views_and_sweep_view_sets():
    from vantage.eval.evaluate import EvaluationError
    from vantage.eval.sweep import spread_views, sweep_view_sets

    ring = list(range(24))
    assert spread_views(ring, 0, 3) == [0, 8, 16] and spread_views(ring, 0, 6) == [0, 4, 8, 12, 16, 20]
    assert spread_views(ring, 20, 2) == [20, 8]  # cyclic from the first input view
    assert spread_views(list(range(5)), 0, 5) == [0, 1, 2, 3, 4]
    p = protocol_from_dict({**BASE, "target_views": "all-others"})
    sets, targets = sweep_view_sets(p, ring, [1, 2, 3])
    assert sets == {1: [0], 2: [0, 12], 3: [0, 8, 16]} and targets == [v for v in ring if v not in (0, 8, 12, 16)]
    with pytest.raises(EvaluationError, match="input_views is a list"):
        sweep_view_sets(protocol_from_dict({**BASE, "input_views": {"random": 1}}), ring, [1, 2])
    with pytest.raises(EvaluationError, match="uses every target view"):
        sweep_view_sets(protocol_from_dict({**BASE, "target_views": [12]}), ring, [1, 2])
    with pytest.raises(EvaluationError, match="cannot spread 30"):
        spread_views(ring, 0, 30)


def test_sweeps_through_the_cli(ckpt, tmp_path, capsys):
    from vantage.cli.main import main

    proto = tmp_path / "p.json"
    proto.write_text(json.dumps({**BASE, "target_views": [3, 6, 9, 15]}))
    out = tmp_path / "views"
    assert main(["evaluate", "--checkpoint", str(ckpt), "--protocol", str(proto), "--out", str(out),
                 "--sweep-views", "1,2", "--device", "cpu"]) == 0
    said = capsys.readouterr().out
    assert "views 1: PSNR" in said and "views 2: PSNR" in said
    doc = json.loads((out / "sweep.json").read_text())
    assert [r["value"] for r in doc["rows"]] == [1, 2] and [r["inputs"] for r in doc["rows"]] == [[0], [0, 12]]
    assert doc["targets"] == [3, 6, 9, 15]
    for r, k in zip(doc["rows"], (1, 2)):  # each row is the complete evaluation in its folder
        sub = json.loads((out / f"views-{k}" / "metrics.json").read_text())
        assert r["psnr"] == sub["result"]["mean"]["psnr"]
        assert r["baseline_psnr"] == sub["result"]["baseline"]["mean"]["psnr"]
        assert sub["run"]["overrides"]["input_views"] == r["inputs"]
        assert sorted(p.stem for p in (out / f"views-{k}" / "gt" / "benchmark-000000").iterdir()) == [
            "000003", "000006", "000009", "000015"]
    # with two inputs, target 15 is copied from input 12: the baseline improves on it
    one, two = (json.loads((out / f"views-{k}" / "metrics.json").read_text())["result"] for k in (1, 2))
    rec = {k: next(x for x in r["per_image"] if x["image"].endswith("000015")) for k, r in ((1, one), (2, two))}
    assert rec[2]["baseline_psnr"] != rec[1]["baseline_psnr"]
    assert (out / "sweep.png").stat().st_size > 1000 and "| 2 | 0,12 |" in (out / "sweep.md").read_text()
    # the output folder is guarded; --overwrite reruns in place
    assert main(["evaluate", "--checkpoint", str(ckpt), "--protocol", str(proto), "--out", str(out),
                 "--sweep-views", "1"]) == 2
    assert "not empty" in capsys.readouterr().err

    out2 = tmp_path / "steps"
    assert main(["evaluate", "--checkpoint", str(ckpt), "--protocol", str(proto), "--out", str(out2),
                 "--sweep-steps", "1,3", "--objects", "1"]) == 0
    doc = json.loads((out2 / "sweep.json").read_text())
    nfe = [r["nfe_per_view"] for r in doc["rows"]]
    assert [r["steps"] for r in doc["rows"]] == [1, 3] and nfe[1] > nfe[0] > 0
    capsys.readouterr()
    for bad, why in ((["--sweep-steps", "2", "--steps", "2"], "do not go together"),
                     (["--sweep-steps", "2", "--sweep-views", "1"], "one sweep at a time")):
        assert main(["evaluate", "--checkpoint", str(ckpt), "--protocol", str(proto), "--out",
                     str(tmp_path / "bad"), *bad]) == 2
        assert why in capsys.readouterr().err
    # a sweep that fails before generating anything leaves no folder behind (the same command then runs)
    assert main(["evaluate", "--checkpoint", str(tmp_path / "no-run"), "--protocol", str(proto), "--out",
                 str(tmp_path / "failed"), "--sweep-steps", "1,2"]) == 2
    assert not (tmp_path / "failed").exists()
    capsys.readouterr()
    # a protocol without PSNR/SSIM (here only LPIPS, whose weights are absent): the summary says so
    only = tmp_path / "lpips.json"
    only.write_text(json.dumps({**BASE, "target_views": [6], "metrics": {"names": ["lpips"]}}))
    assert main(["evaluate", "--checkpoint", str(ckpt), "--protocol", str(only), "--out", str(tmp_path / "lp"),
                 "--sweep-steps", "1"]) == 0
    assert "steps 1: no PSNR/SSIM/LPIPS in the protocol's metrics" in capsys.readouterr().out
    with pytest.raises(SystemExit):  # argparse refuses it
        main(["evaluate", "--checkpoint", str(ckpt), "--protocol", str(proto), "--out", str(tmp_path / "bad"),
              "--sweep-views", "0,1"])
    assert "positive integers" in capsys.readouterr().err
