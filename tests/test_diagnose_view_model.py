"""bench/diagnose_view_model.py: the three measurements run on a (barely trained) checkpoint, their
plumbing is checked where any model must agree (at t → 0 the noised truth is the truth), and the
results file is never overwritten."""

from __future__ import annotations

import json

import pytest
from helpers import load_bench_script

from vantage.cli.main import main as cli

pytestmark = pytest.mark.usefixtures("single_thread")

TINY = ["--set", "resolution=16", "--set", "ch=8", "--set", "ch_mult=[1,2]", "--set", "attn_resolutions=[8]",
        "--set", "num_heads=2", "--set", "emb_ch=16", "--set", "norm_groups=4", "--set", "default_steps=4"]


def _module():
    return load_bench_script("diagnose_view_model")


def test_diagnosis_tables_and_files(tmp_path, capsys):
    run = tmp_path / "run"
    assert cli(["train", "3dim-shapes32", "--data", "synthetic", "--out", str(run), "--steps", "1", "--batch", "2",
                *TINY, "--set", "train.progress=false", "--set", "train.tensorboard=false"]) == 0
    diag = _module()
    out = tmp_path / "diag"
    argv = [str(run), "--out", str(out), "--objects", "2", "--offsets", "1,12", "--t", "0.001,0.98",
            "--sdedit", "0.001,0.9",
            "--samples", "ddpm,2,0;euler_ancestral,2,1,s_noise=0", "--orbit", "ddim,2,0,single;ddim,2,0,single,eta=0.5",
            "--orbit-objects", "2"]
    r = diag.main(argv)
    printed = capsys.readouterr().out
    assert "x0: one call" in printed and "sdedit:" in printed and "orbit:" in printed
    assert [row["offset"] for row in r["x0"]] == [1, 12] and r["x0"][1]["degrees"] == 180.0
    for row in r["x0"]:
        # barely any noise: x̂0 is the truth for any network, far above copying the input
        assert row["x0@t=0.001"] > 35 > row["copy"]
        assert row["x0@t=0.98"] < row["x0@t=0.001"]
    near, far = r["sdedit"]
    assert near["end"] > 35 and near["steps"] == 1 and far["steps"] == 4 and far["end"] < near["end"]
    assert [row["spec"] for row in r["samples"]] == ["ddpm,2,0", "euler_ancestral,2,1,s_noise=0"]
    assert r["samples"][0]["copy k=12"] == r["x0"][1]["copy"] and "k=1" in r["samples"][1]
    assert r["orbit"][1]["spec"].endswith("eta=0.5") and r["orbit"][1]["psnr"] != r["orbit"][0]["psnr"]
    orbit = r["orbit"][0]
    assert orbit["spec"] == "ddim,2,0,single" and orbit["nfe"] > 0 and len(orbit["gain_per_object"]) == 2
    assert sorted(float(d) for d in orbit["by_angle"]) == [15.0 * k for k in range(1, 13)]
    saved = json.loads((out / "diagnosis.json").read_text())
    assert saved["x0"] == r["x0"] and saved["command"].startswith("python bench/diagnose_view_model.py")
    assert (out / "sdedit.png").is_file()
    with pytest.raises(SystemExit, match="exists"):
        diag.main(argv)
    with pytest.raises(SystemExit, match="SAMPLER,STEPS,GUIDANCE"):
        diag.main([str(run), "--objects", "2", "--offsets", "1", "--t", "0.5", "--sdedit", "", "--samples", "ddim,2"])
    with pytest.raises(SystemExit, match="SAMPLER,STEPS"):
        diag.main([str(run), "--objects", "2", "--offsets", "1", "--t", "0.5", "--sdedit", "", "--orbit", "ddim,2"])


def test_noise_level_is_a_fraction_of_any_schedule():
    """``--t`` is a fraction of the schedule: a discrete schedule (ViewFusion) maps it to timestep t·(T − 1)."""
    import torch

    from vantage.methods import build_method

    diag = load_bench_script("diagnose_view_model")
    vf = build_method("viewfusion", {"resolution": 16, "ch": 8, "ch_mult": (1, 2), "num_res_blocks": 1,
                                     "attn_resolutions": (8,), "norm_groups": 4})
    sched = vf.schedule
    assert float(diag._sigma(vf, 1.0)) == pytest.approx(float(sched.sigma_max), rel=1e-5)
    assert float(diag._sigma(vf, 0.0)) == pytest.approx(float(sched.sigma_min), rel=1e-5)
    assert float(diag._sigma(vf, 0.5)) == pytest.approx(float(sched.t_to_sigma(torch.tensor(999.5))), rel=1e-5)
    with pytest.raises(SystemExit, match=r"fractions of the schedule in \[0, 1\], got 1.5"):
        diag._sigma(vf, 1.5)
