"""The benchmark harness (bench/harness.py) end to end in --quick --tiny mode on two methods: training, evaluation,
the table rows, RUNS/harness.json, a second run that reuses everything, and the BENCHMARKS block written into a
temporary copy of BENCHMARKS.md (replaced, never duplicated; the rest of the file untouched)."""

from __future__ import annotations

import hashlib
import json
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

import harness  # noqa: E402
from harness_report import BEGIN, END, BlockError, replace_block, views_sheet  # noqa: E402
from PIL import Image  # noqa: E402

pytestmark = pytest.mark.usefixtures("single_thread")

METHODS = "regression-shapes32,3dim-shapes32"


def table_rows(text: str) -> dict[str, list[str]]:
    """Markdown table rows of ``text`` by their first cell (header and separator left out)."""
    rows = {}
    for line in text.splitlines():
        if line.startswith("| ") and not line.startswith("| method ") and not line.startswith("|---"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            rows[cells[0]] = cells
    return rows


def test_quick_harness_on_two_methods(tmp_path, capsys):
    real = (ROOT / "BENCHMARKS.md").read_bytes()
    bench = tmp_path / "BENCHMARKS.md"
    bench.write_bytes(real)
    runs = tmp_path / "runs"
    argv = ["--runs", str(runs), "--quick", "--tiny", "--methods", METHODS, "--set", "train.progress=false",
            "--write-benchmarks", str(bench)]
    assert harness.main(argv) == 0
    out = capsys.readouterr().out
    assert "training to 0.016 kimg" in out and "vantage evaluate --checkpoint" in out
    rows = table_rows(out)
    assert set(rows) == {"regression", "3dim", "copy the input view"}
    head = next(line for line in out.splitlines() if line.startswith("| method "))
    cols = [c.strip() for c in head.strip("|").split("|")]
    assert "3D consistency PSNR (ceiling)" not in cols  # only with --consistency
    get = {name: dict(zip(cols, cells)) for name, cells in rows.items()}
    reg, tdm, copy = get["regression"], get["3dim"], get["copy the input view"]
    assert reg["preset"] == "regression-shapes32" and tdm["preset"] == "3dim-shapes32"
    for r in (reg, tdm):
        assert re.fullmatch(r"0\.\d\dM", r["parameters"]) and r["training"] == "0.016 kimg, bf16"
        assert float(r["train images/s"]) > 0 and float(r["s / view"]) > 0
        assert 0 < float(r["PSNR (dB) ↑"]) < 100 and -1 <= float(r["SSIM ↑"]) <= 1
        assert r["LPIPS ↓"] == "n/a (weights absent)" or float(r["LPIPS ↓"]) >= 0
    assert reg["NFE / view"] == "1 (one forward)" and reg["sampling"] == "direct prediction"
    assert tdm["NFE / view"] == "2.0" and tdm["sampling"].endswith("× 2, stochastic")  # --quick: 2 steps
    assert copy["NFE / view"] == "0" and float(copy["PSNR (dB) ↑"]) > 0
    assert "Protocol synthetic-16px-v1 (overridden: objects 1, sampling steps 2" in out
    assert "python bench/harness.py --runs" in out and "torch " in out

    # the summary and the runs
    doc = json.loads((runs / "harness.json").read_text())
    assert doc["tool"] == harness.TOOL and [r["preset"] for r in doc["rows"]] == METHODS.split(",")
    assert all(r["objects"] == 1 and r["views"] == 23 and r["kimg"] == 0.016 for r in doc["rows"])
    assert (runs / "protocols" / "synthetic-16px-v1.json").is_file()
    assert json.loads((runs / "protocols" / "synthetic-16px-v1.json").read_text())["resolution"] == 16

    # BENCHMARKS block: in place of the copy's block (or appended), the rest untouched; the real file never written
    text, original = bench.read_text(), real.decode()
    before, after = outside(original)
    assert text.startswith(before) and text.endswith(after)
    assert text.count(BEGIN) == 1 and text.count(END) == 1 and "### Harness results" in text
    block = text[len(before):len(text) - len(after)]
    assert block.startswith(BEGIN) and block.rstrip().endswith(END) and "| regression |" in block
    assert (ROOT / "BENCHMARKS.md").read_bytes() == real

    # the views sheet: truth row + one row per method for the one evaluated object, linked from the block
    assert "![harness views](docs/images/harness-views.png)" in block
    sheet = Image.open(tmp_path / "docs" / "images" / "harness-views.png")
    assert sheet.size == Image.open(runs / "harness_views.png").size
    assert sheet.size[1] > 3 * 64  # three rows of at least 64 px cells (16 px images upscaled)

    # a second run reuses the runs and their evaluations, and replaces the block in place
    bench.write_text(f"# Benchmarks\n\nintro\n\n{BEGIN}\nSTALE\n{END}\n\n## After the block\n\nkept\n")
    assert harness.main(argv) == 0
    out2 = capsys.readouterr().out
    assert out2.count("loading the existing run") == 2 and out2.count("reusing the evaluation") == 2
    assert "training to" not in out2 and table_rows(out2)["regression"] == rows["regression"]
    text2 = bench.read_text()
    assert text2.count(BEGIN) == 1 and text2.count(END) == 1 and "STALE" not in text2 and "| 3dim |" in text2
    assert text2.startswith(f"# Benchmarks\n\nintro\n\n{BEGIN}\n### Harness results")
    assert text2.endswith(f"{END}\n\n## After the block\n\nkept\n")
    assert hashlib.sha256((ROOT / "BENCHMARKS.md").read_bytes()).digest() == hashlib.sha256(real).digest()

    # an interrupted evaluation (generated views, no report) is started again; a folder with anything else in it
    # is refused by `vantage evaluate` and that method's row fails, the other one is kept
    ev = {r["preset"]: Path(r["eval_dir"]) for r in doc["rows"]}
    for f in ev["regression-shapes32"].iterdir():
        if f.is_file():
            f.unlink()
    assert harness.interrupted_evaluation(ev["regression-shapes32"])
    (ev["3dim-shapes32"] / "metrics.json").unlink()
    (ev["3dim-shapes32"] / "notes.txt").write_text("mine")
    assert not harness.interrupted_evaluation(ev["3dim-shapes32"])
    assert harness.main(argv) == 1
    out3 = capsys.readouterr().out
    assert "held an interrupted evaluation" in out3 and (ev["regression-shapes32"] / "metrics.json").is_file()
    aside = ev["regression-shapes32"].with_name(ev["regression-shapes32"].name + ".interrupted")
    assert sorted(d.name for d in aside.iterdir()) == ["gt", "inputs", "pred"]  # moved, nothing deleted
    assert "3dim-shapes32: FAILED" in out3 and "not empty" in out3
    assert (ev["3dim-shapes32"] / "notes.txt").read_text() == "mine"
    assert table_rows(out3)["regression"][:-1] == rows["regression"][:-1]  # the same scores (s / view is timed)


def test_harness_with_the_consistency_score(tmp_path, capsys):
    runs = tmp_path / "runs"
    argv = ["--runs", str(runs), "--quick", "--tiny", "--methods", "regression-shapes32", "--set",
            "train.progress=false", "--consistency"]
    assert harness.main(argv) == 0
    out = capsys.readouterr().out
    head = next(line for line in out.splitlines() if line.startswith("| method "))
    cols = [c.strip() for c in head.strip("|").split("|")]
    cell = dict(zip(cols, table_rows(out)["regression"]))["3D consistency PSNR (ceiling)"]
    score, ceiling = re.fullmatch(r"(\d+\.\d\d) \((\d+\.\d\d)\)", cell).groups()
    row = json.loads((runs / "harness.json").read_text())["rows"][0]
    ev = json.loads((Path(row["eval_dir"]) / "metrics.json").read_text())["consistency"]
    # the table shows the evaluation's own numbers: the score of input + generated views and the ceiling of input +
    # ground truth, both fitted by the protocol copy's settings
    assert float(score) == pytest.approx(ev["mean"]["psnr"], abs=0.006) == pytest.approx(row["consistency_psnr"])
    assert float(ceiling) == pytest.approx(ev["ceiling"]["psnr"], abs=0.006)
    assert ev["settings"]["grid"] == 16 and ev["settings"]["iters"] == 30 and len(ev["per_object"]) == 1
    assert 5 < float(ceiling) < 100 and 0 < float(score) < 100
    assert "synthetic-16px-3d-v1" in out


def outside(text: str) -> tuple[str, str]:
    """``(text before the begin marker, text after the end marker and its newline)``; no markers: (text, "")."""
    if BEGIN not in text:
        return text, ""
    end = text.index(END) + len(END)
    return text[:text.index(BEGIN)], text[end + 1 if text[end:end + 1] == "\n" else end:]


def test_replace_block(tmp_path):
    block = f"{BEGIN}\nnew\n{END}\n"
    f = tmp_path / "B.md"
    f.write_text("# Title\n\ntext")
    assert replace_block(f, block) == "appended"
    assert f.read_text() == f"# Title\n\ntext\n\n{block}"
    f.write_text(f"a\n{BEGIN}\nold\n{END}\nb\n")
    assert replace_block(f, block) == "replaced" and f.read_text() == f"a\n{block}b\n"
    for broken in (f"a\n{BEGIN}\nold\n", f"{END}\n{BEGIN}\n", f"{BEGIN}\n{END}\n{BEGIN}\n{END}\n"):
        f.write_text(broken)
        with pytest.raises(BlockError, match="fix the file by hand"):
            replace_block(f, block)
        assert f.read_text() == broken


def test_failed_method_is_reported_and_the_others_kept(tmp_path, capsys):
    runs = tmp_path / "runs"
    (runs / "regression-shapes32").mkdir(parents=True)
    (runs / "regression-shapes32" / "notes.txt").write_text("not a run")  # a folder without a checkpoint
    assert harness.main(["--runs", str(runs), "--quick", "--tiny", "--methods", "regression-shapes32"]) == 1
    out = capsys.readouterr().out
    assert "holds no checkpoint; pass --train" in out and "failed (see notes)" in out
    assert (runs / "regression-shapes32" / "notes.txt").read_text() == "not a run"


def test_every_method_gets_the_same_training_recipe():
    """A preset's own training defaults (VIVID: EDM2 schedule, power EMA, Adam betas, no clipping) are reset to
    the trainer's built-in values, so the harness compares methods at one recipe."""
    from vantage.methods import preset_train_defaults

    args = harness.parse_args(["--runs", "unused"])
    vivid = dict(item.split("=", 1) for item in harness.method_overrides("vivid-shapes32", "vivid", args))
    plain = dict(item.split("=", 1) for item in harness.method_overrides("3dim-shapes32", "3dim", args))
    assert preset_train_defaults("vivid-shapes32")  # else this test checks nothing
    for key in preset_train_defaults("vivid-shapes32"):
        assert f"train.{key}" in vivid, key
    shared = {k: v for k, v in vivid.items() if k in plain}
    assert shared == {k: plain[k] for k in shared}
    assert vivid["train.ema"] == '"halflife"' and vivid["train.lr_schedule"] == '"constant"'


def test_views_sheet_places_truth_and_each_methods_views(tmp_path):
    """Known one-colour images: the truth row is the input then the evenly spread targets (of 5: views 1, 3, 5),
    each method's row a white cell then its own views at the same targets; failed rows are left out."""
    def write(folder: Path, name: str, rgb: tuple[int, int, int]) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 8), rgb).save(folder / f"{name}.png")

    colour = {v: (40 * v, 0, 0) for v in range(1, 6)}
    rows = []
    for k, preset in enumerate(("a-shapes32", "b-shapes32")):
        ev = tmp_path / preset
        write(ev / "inputs" / "obj", "0", (0, 0, 255))
        for v in range(1, 6):
            write(ev / "gt" / "obj", str(v), colour[v])
            write(ev / "pred" / "obj", str(v), (0, 40 * v, 100 * k))
        rows.append({"preset": preset, "eval_dir": str(ev)})
    rows.append({"preset": "c-shapes32", "error": "failed"})
    sheet = views_sheet(rows, objects=1, views=3)
    label_w, pad, cell = 8 + 7 * len("obj: input, truth"), 2, 64
    assert sheet.size == (label_w + 4 * (cell + pad) + pad, 3 * (cell + pad) + pad)

    def at(i: int, j: int) -> tuple[int, int, int]:
        return sheet.getpixel((label_w + pad + j * (cell + pad) + cell // 2, pad + i * (cell + pad) + cell // 2))

    assert [at(0, j) for j in range(4)] == [(0, 0, 255), colour[1], colour[3], colour[5]]
    for i, k in ((1, 0), (2, 1)):
        assert [at(i, j) for j in range(4)] == [(255, 255, 255)] + [(0, 40 * v, 100 * k) for v in (1, 3, 5)]
    assert views_sheet([{"preset": "x", "error": "failed"}]) is None


def test_a_run_stopped_before_its_planned_steps_is_detected(tmp_path):
    """The trainer returns normally when stopped on request (after a checkpoint), so the harness compares the newest
    checkpoint with the planned steps and stops instead of evaluating a half-trained run."""
    from helpers import save_tiny_run

    run = save_tiny_run(tmp_path / "run", "regression", harness.TINY["regression"])  # checkpoint step-000001
    assert harness.stopped_early(run, 4) and not harness.stopped_early(run, 1)
    assert harness.stopped_early(tmp_path / "empty", 1)  # no checkpoint at all
    assert issubclass(harness.HarnessStopped, BaseException) and not issubclass(harness.HarnessStopped, Exception)


def test_a_background_harness_can_be_interrupted(monkeypatch):
    """A shell starts background jobs with SIGINT ignored; the harness turns KeyboardInterrupt back on (and leaves
    a handler someone installed alone)."""
    import signal

    previous = signal.getsignal(signal.SIGINT)
    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        harness.interruptible()
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler

        def mine(signum, frame):
            pass

        signal.signal(signal.SIGINT, mine)
        harness.interruptible()
        assert signal.getsignal(signal.SIGINT) is mine
    finally:
        signal.signal(signal.SIGINT, previous)
