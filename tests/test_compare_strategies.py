"""bench/compare_strategies.py (issue #6): strategies × tiny 3DiM and relpose checkpoints on short orbits, the rows
and their scores, the files (never overwritten), the temperature ablation, specs and checkpoints refused before any
sampling, and the BENCHMARKS block written into a temporary copy (only its own block replaced)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from helpers import load_bench_script, save_tiny_run

pytestmark = [pytest.mark.usefixtures("single_thread"),
              pytest.mark.filterwarnings("ignore:interpolated denoising:UserWarning")]  # the 180° view: expected

ROOT = Path(__file__).resolve().parents[1]
COMMON = dict(resolution=16, ch=16, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(8,), num_heads=2, emb_ch=32,
              norm_groups=8, default_sampler="euler", default_steps=2)
TINY_3DIM = dict(COMMON, ray_octaves_origin=4, ray_octaves_dir=2)
TINY_RELPOSE = dict(COMMON, encoder_ch=8, image_emb_dim=16, pose_emb_dim=16, preview_steps=2, preview_count=2)
TINY_REGRESSION = dict(resolution=16, ch=16, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(8,), num_heads=2,
                       emb_ch=32, norm_groups=8, encoder_ch=8, image_emb_dim=16, pose_emb_dim=16, preview_count=2)
FAST = ["--views", "6", "--objects", "2"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("runs")
    return {name: str(save_tiny_run(root / name, name, over))
            for name, over in (("3dim", TINY_3DIM), ("relpose", TINY_RELPOSE), ("regression", TINY_REGRESSION))}


def test_rows_scores_and_files(runs, tmp_path, capsys):
    cs = load_bench_script("compare_strategies")
    out = tmp_path / "out"
    argv = ["--model", f"3dim={runs['3dim']}", "--model", f"rp={runs['relpose']}", *FAST, "--consistency",
            "--consistency-iters", "5", "--out", str(out)]
    r = cs.main(argv)
    printed = capsys.readouterr().out
    assert "[6/6] rp: interpolated T_in=0.5 T_auto=0.5 (alternating)" in printed and cs.BEGIN in printed
    rows = r["rows"]
    assert [(x["model"], x["strategy"]) for x in rows] == [(m, s) for m in ("3dim", "rp")
                                                           for s in ("single", "stochastic", "interpolated")]
    assert {x["order"] for x in rows if x["strategy"] != "interpolated"} == {"sequential"}
    assert {x["order"] for x in rows if x["strategy"] == "interpolated"} == {"alternating"}
    keys = ("psnr", "ssim", "baseline_psnr", "baseline_ssim", "adjacent_psnr", "gt_adjacent_psnr", "consistency_psnr",
            "gt_consistency_psnr", "seconds_per_orbit")
    for x in rows:
        assert all(math.isfinite(x[k]) for k in keys), x
        # NFE counts batch-level calls: 5 generated views × 2 Euler steps, whatever the strategy; the
        # interpolated branches are rows of those calls (more than one per call once views are generated)
        assert x["nfe"] == 5 * 2 and len(x["psnr_per_object"]) == 2
        assert sorted(float(d) for d in x["by_angle"]) == [60.0, 120.0, 180.0]
        assert x["gt_adjacent_psnr"] > x["adjacent_psnr"]  # an untrained model flickers; truth is smooth
    for model in ("3dim", "rp"):
        mine = {x["strategy"]: x for x in rows if x["model"] == model}
        assert len({(x["baseline_psnr"], x["baseline_ssim"]) for x in mine.values()}) == 1
        assert mine["single"]["branch_evals"] == mine["stochastic"]["branch_evals"] == 10
        assert mine["interpolated"]["branch_evals"] > mine["single"]["branch_evals"]
        assert mine["interpolated"]["options"]["t_in"] == 0.5 and mine["single"]["psnr"] != mine["stochastic"]["psnr"]
    saved = json.loads((out / "strategies.json").read_text())
    assert saved["rows"] == json.loads(json.dumps(rows)) and saved["command"].startswith("python bench/compare_")
    assert saved["settings"]["models"]["rp"]["method"] == "relpose" and saved["settings"]["seeds"] == [0, 1]
    assert saved["settings"]["models"]["3dim"]["steps"] == 2 and "cpu" in saved["hardware"]["device"]
    md = (out / "strategies.md").read_text()
    assert "| rp | copy the input view |" in md and "3D consistency PSNR (GT)" in md and (out / "orbits.png").is_file()
    with pytest.raises(SystemExit, match="exists"):
        cs.main(argv)


def test_temperature_ablation_and_benchmarks_block(runs, tmp_path, monkeypatch):
    cs = load_bench_script("compare_strategies")
    bench = tmp_path / "BENCHMARKS.md"
    bench.write_text("# Benchmarks\n\n<!-- harness:begin -->\nharness table\n<!-- harness:end -->\n\n"
                     f"{cs.BEGIN}\nSTALE\n{cs.END}\n\n## After\n\nkept\n")
    monkeypatch.setattr(cs, "BENCHMARKS", bench)
    r = cs.main(["--model", f"3dim={runs['3dim']}", "--views", "4", "--objects", "1", "--strategies", "single",
                 "--temperature-ablation", "--write-benchmarks"])
    interp = [x for x in r["rows"] if x["strategy"] == "interpolated"]
    assert len(r["rows"]) == 7 and len(interp) == 6
    assert {(round(x["options"]["t_in"], 4), x["options"]["t_auto"]) for x in interp} == {
        (round(ti, 4), ta) for ti in (1 / 3, 0.5) for ta in (1.0, 0.5, 0.1)}
    assert "interpolated T_in=0.333 T_auto=0.1" in {x["label"] for x in interp}
    text = bench.read_text()
    assert "STALE" not in text and "| 3dim | interpolated T_in=0.333 T_auto=1 | alternating |" in text
    assert text.startswith("# Benchmarks\n\n<!-- harness:begin -->\nharness table\n<!-- harness:end -->\n\n")
    assert text.endswith(f"{cs.END}\n\n## After\n\nkept\n")
    cs.main(["--model", f"3dim={runs['3dim']}", "--views", "4", "--objects", "1", "--strategies", "single",
             "--write-benchmarks"])
    again = bench.read_text()
    assert again.count(cs.BEGIN) == again.count(cs.END) == 1 and "T_auto=" not in again.split(cs.BEGIN)[1]
    assert again.endswith(f"{cs.END}\n\n## After\n\nkept\n") and "harness table" in again
    assert (ROOT / "BENCHMARKS.md").read_text().count(cs.BEGIN) <= 1


def test_specs_parsed_and_deduplicated():
    cs = load_bench_script("compare_strategies")
    specs = cs.strategy_specs("single;interpolated;interpolated,t_in=0.5,t_auto=0.5;stochastic,order=alternating",
                              ablation=True)
    assert [s for s, _, _ in specs][:3] == ["single", "interpolated", "stochastic,order=alternating"]
    assert len(specs) == 3 + 5  # the ablation's (0.5, 0.5) is the default interpolated
    assert specs[2][2] == {"order": "alternating"} and specs[3][2] == {"t_in": pytest.approx(1 / 3), "t_auto": 1}
    assert cs.parse_value("true") is True and cs.parse_value("2") == 2 and cs.parse_value("azimuth") == "azimuth"
    with pytest.raises(SystemExit, match="t_bogus"):
        cs.strategy_specs("single;interpolated,t_bogus=1")
    with pytest.raises(SystemExit, match="NAME"):
        cs.strategy_specs("interpolated,0.5")


def test_refused_before_sampling(runs, tmp_path, monkeypatch):
    cs = load_bench_script("compare_strategies")

    def no_sampling(*args, **kwargs):
        raise AssertionError("sampled before the settings were checked")

    monkeypatch.setattr(cs, "run_row", no_sampling)
    model = ["--model", f"3dim={runs['3dim']}", *FAST, "--out", str(tmp_path / "o")]
    with pytest.raises(SystemExit, match="'nosuch'.*unknown strategy"):
        cs.main([*model, "--strategies", "single;nosuch"])
    with pytest.raises(SystemExit, match="t_bogus"):
        cs.main([*model, "--strategies", "interpolated,t_bogus=1"])
    with pytest.raises(SystemExit, match="interpolated,t_in=0.*temperature"):
        cs.main([*model, "--strategies", "interpolated,t_in=0"])
    with pytest.raises(SystemExit, match="stochastic,t_in=0.3.*need strategy interpolated"):
        cs.main([*model, "--strategies", "stochastic,t_in=0.3"])
    with pytest.raises(SystemExit, match=r"regression.*single-view diffusion model.*3dim"):
        cs.main(["--model", f"reg={runs['regression']}", "--model", f"3dim={runs['3dim']}", *FAST])
    with pytest.raises(SystemExit, match="divide 24"):
        cs.main([*model, "--views", "5"])
    assert not (tmp_path / "o").exists()


def test_include_rows_of_an_earlier_run(runs, tmp_path):
    cs = load_bench_script("compare_strategies")
    first = tmp_path / "first"
    cs.main(["--model", f"3dim={runs['3dim']}", "--views", "4", "--objects", "1", "--strategies", "single",
             "--out", str(first)])
    earlier = first / "strategies.json"
    r = cs.main(["--model", f"rp={runs['relpose']}", "--views", "4", "--objects", "1", "--strategies", "single",
                 "--include", str(earlier), "--out", str(tmp_path / "second")])
    assert [x["model"] for x in r["rows"]] == ["3dim", "rp"] and list(r["settings"]["models"]) == ["3dim", "rp"]
    assert r["rows"][0] == json.loads(earlier.read_text())["rows"][0]
    assert [e["models"] for e in r["included"]] == [["3dim"]]
    md = (tmp_path / "second" / "strategies.md").read_text()
    assert "The rows of `3dim` come from an earlier run" in md and md.index("| 3dim | single |") < md.index("| rp |")
    assert md.count("python bench/compare_strategies.py") == 2
    # a file that itself included rows: each model stays with the command that measured it
    again = cs.main(["--model", f"b={runs['3dim']}", "--views", "4", "--objects", "1", "--strategies", "single",
                     "--include", str(tmp_path / "second" / "strategies.json")])
    assert [e["models"] for e in again["included"]] == [["3dim"], ["rp"]] and len(again["rows"]) == 3
    with pytest.raises(SystemExit, match=r"other settings: objects 1 \(this run: 2\), views 4 \(this run: 6\)"):
        cs.main(["--model", f"rp={runs['relpose']}", *FAST, "--include", str(earlier)])
    with pytest.raises(SystemExit, match="label.*3dim.*also given"):
        cs.main(["--model", f"3dim={runs['relpose']}", "--views", "4", "--objects", "1", "--include", str(earlier)])
    (tmp_path / "junk.json").write_text("{}")
    with pytest.raises(SystemExit, match="not a strategies.json"):
        cs.main(["--model", f"rp={runs['relpose']}", "--include", str(tmp_path / "junk.json")])
