"""bench/viewfusion_views.py (issue #5): ViewFusion's quality against the number of input views, softmax weighting
against the mean, samplers against the reference DDPM, on a tiny checkpoint: the rows, the paired seeds, the
baseline, the files (never overwritten), the BENCHMARKS block and the settings refused before any sampling."""

from __future__ import annotations

import json
import math

import pytest
import torch
from helpers import load_bench_script, save_tiny_run

pytestmark = pytest.mark.usefixtures("single_thread")

TINY = {"resolution": 16, "ch": 8, "ch_mult": [1, 2], "num_res_blocks": 1, "attn_resolutions": [8], "norm_groups": 4,
        "default_steps": 3, "timesteps": 100}


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> str:
    return str(save_tiny_run(tmp_path_factory.mktemp("runs") / "vf", "viewfusion", TINY, scale=0.05))


def test_views_rows_baseline_and_files(run, tmp_path, capsys):
    vv = load_bench_script("viewfusion_views")
    out = tmp_path / "out"
    argv = ["--checkpoint", run, "--objects", "2", "--counts", "1,2,12", "--nfe", "ddpm,6;ddim,3;heun,2",
            "--out", str(out)]
    r = vv.main(argv)
    rows = r["views"]
    assert [x["views"] for x in rows] == [1, 2, 12] and rows[1]["inputs"] == [0, 12]
    assert rows[2]["inputs"] == list(range(0, 24, 2))
    for x in rows:
        for c in ("softmax", "mean"):
            assert math.isfinite(x[c]["psnr"]) and len(x[c]["psnr_per_image"]) == 2 * 4
            assert x[c]["nfe"] == 3 and x[c]["unet_rows_per_view"] == 3 * x["views"]
    # one view: the softmax over a single view is 1, so both compositions are the same computation
    assert rows[0]["softmax"]["psnr_per_image"] == rows[0]["mean"]["psnr_per_image"]
    # several views: the learned weights are not uniform, so the samples differ
    assert rows[2]["softmax"]["psnr_per_image"] != rows[2]["mean"]["psnr_per_image"]
    # the copy baseline, computed directly: targets 3, 9, 15, 21 copy their nearest input
    vv_objs = vv.benchmark_objects(16, 2)
    from vantage.eval import psnr, to_unit

    nearest = {1: [0, 0, 0, 0], 2: [0, 12, 12, 0], 12: [2, 8, 14, 20]}  # ties go to the lower view
    for x in rows:
        copy = torch.stack([o.images[nearest[x["views"]]] for o in vv_objs]).flatten(0, 1)
        truth = torch.stack([o.images[[3, 9, 15, 21]] for o in vv_objs]).flatten(0, 1)
        assert x["copy_psnr"] == pytest.approx(psnr(to_unit(copy), to_unit(truth)).mean().item(), abs=1e-3)
    nfe = r["nfe"]
    assert [(x["sampler"], x["nfe"]) for x in nfe] == [("ddpm", 6), ("ddim", 3), ("heun", 3)]
    assert nfe[0]["delta_psnr"] == 0 and nfe[0]["delta_psnr_se"] == 0
    assert nfe[1]["delta_psnr"] == pytest.approx(nfe[1]["psnr"] - nfe[0]["psnr"], abs=2e-3)
    printed = capsys.readouterr().out
    assert vv.BEGIN in printed and "| ddpm | 6 | 6 |" in printed and "reference" in printed
    saved = json.loads((out / "views.json").read_text())
    assert saved["views"] == json.loads(json.dumps(rows)) and saved["settings"]["train_views"] == "1-6"
    assert saved["settings"]["checkpoint"].endswith("step-000001")
    for name in ("views.md", "views.png", "samples.png"):
        assert (out / name).is_file()
    with pytest.raises(SystemExit, match="exists"):
        vv.main(argv)


def test_same_seed_same_samples_and_benchmarks_block(run, tmp_path, monkeypatch):
    vv = load_bench_script("viewfusion_views")
    bench = tmp_path / "BENCHMARKS.md"
    bench.write_text(f"# Benchmarks\n\n{vv.BEGIN}\nSTALE\n{vv.END}\n\n## After\n\nkept\n")
    monkeypatch.setattr(vv, "BENCHMARKS", bench)
    argv = ["--checkpoint", run, "--objects", "1", "--counts", "3", "--compositions", "softmax", "--nfe", "",
            "--targets", "1,5"]
    a = vv.main([*argv, "--write-benchmarks"])
    b = vv.main(argv)
    assert a["views"][0]["softmax"]["psnr_per_image"] == b["views"][0]["softmax"]["psnr_per_image"]
    assert a["nfe"] == [] and "mean" not in a["views"][0]
    text = bench.read_text()
    assert "STALE" not in text and "| 3 | 0,8,16 |" in text and "Samplers at" not in text
    assert text.endswith(f"{vv.END}\n\n## After\n\nkept\n") and text.count(vv.BEGIN) == 1


def test_refused_before_sampling(run, tmp_path, monkeypatch):
    vv = load_bench_script("viewfusion_views")

    def no_sampling(*args, **kwargs):
        raise AssertionError("sampled before the settings were checked")

    monkeypatch.setattr(vv, "sample_targets", no_sampling)
    base = ["--checkpoint", run, "--objects", "1"]
    with pytest.raises(SystemExit, match=r"--targets \[4\] are input views when 6 views"):
        vv.main([*base, "--targets", "3,4"])
    with pytest.raises(SystemExit, match="0..23"):
        vv.main([*base, "--targets", "24"])
    with pytest.raises(SystemExit, match="softmax and/or mean"):
        vv.main([*base, "--compositions", "max"])
    with pytest.raises(SystemExit, match="'bogus,4'.*known sampler"):
        vv.main([*base, "--nfe", "ddpm,4;bogus,4"])
    with pytest.raises(SystemExit, match="STEPS must be >= 1"):
        vv.main([*base, "--nfe", "ddpm,0"])
    with pytest.raises(SystemExit, match="view count must be in 1..24"):
        vv.main([*base, "--counts", "0,3"])
    other = save_tiny_run(tmp_path / "reg", "regression", {"resolution": 16, "ch": 16, "ch_mult": (1, 2),
                                                          "num_res_blocks": 1, "attn_resolutions": (8,),
                                                          "num_heads": 2, "emb_ch": 32, "norm_groups": 8,
                                                          "encoder_ch": 8, "image_emb_dim": 16, "pose_emb_dim": 16})
    with pytest.raises(SystemExit, match="'regression' checkpoint.*ViewFusion"):
        vv.main(["--checkpoint", str(other)])
