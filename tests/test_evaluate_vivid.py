"""`vantage evaluate --checkpoint` with VIVID's guide network (`--guide`, `--guidance`) and super-resolution stage
(`--sr-checkpoint`), on tiny 16 px models and a 16 -> 32 SR stage: what ran is recorded, guidance changes the
samples and weight 1 is unguided, the SR chain scores 32 px views, and mismatched stages are refused by name."""

from __future__ import annotations

import json

import pytest
from PIL import Image
from test_evaluate import ckpt, no_weights, write_protocol  # noqa: F401 (fixtures)
from test_vivid_sr import runs  # noqa: F401 (fixture)

from vantage.cli.main import main

pytestmark = pytest.mark.usefixtures("single_thread")

METRICS = {"names": ["psnr", "ssim"]}


def _evaluate(tmp_path, label: str, checkpoint, resolution: int = 16, *extra: str) -> dict:
    proto = write_protocol(tmp_path / f"p{resolution}.json", objects=1, resolution=resolution, metrics=METRICS)
    out = tmp_path / label
    assert main(["evaluate", "--checkpoint", str(checkpoint), "--protocol", str(proto), "--out", str(out),
                 "--device", "cpu", *extra]) == 0
    return json.loads((out / "metrics.json").read_text())


def _pred(tmp_path, label: str) -> bytes:
    return (tmp_path / label / "pred" / "benchmark-000000" / "000006.png").read_bytes()


def test_guide_and_guidance_are_used_and_recorded(runs, tmp_path, capsys):  # noqa: F811
    guided = _evaluate(tmp_path, "guided", runs["base"], 16, "--guide", str(runs["guide"]))
    said = capsys.readouterr().out
    assert "guidance 1.5 by the guide network" in said
    assert guided["run"]["guidance"] == 1.5 and guided["run"]["guide"] == str(runs["guide"].resolve())
    plain = _evaluate(tmp_path, "plain", runs["base"], 16, "--guide", str(runs["guide"]), "--guidance", "1")
    assert plain["run"]["guidance"] == "none (weight 1)" and plain["run"]["guide"] is None
    assert plain["run"]["overrides"] == {"guidance": 1.0}
    assert any("protocol overridden (guidance=1.0)" in n for n in plain["result"]["notes"])
    unguided = _evaluate(tmp_path, "noguide", runs["base"], 16)  # default weight, no guide: unguided
    assert unguided["run"]["guidance"] == "none (no guide network)"
    assert _pred(tmp_path, "plain") == _pred(tmp_path, "noguide") != _pred(tmp_path, "guided")


def test_sr_stage_chains_at_the_protocol_resolution(runs, tmp_path):  # noqa: F811
    doc = _evaluate(tmp_path, "sr", runs["base"], 32, "--sr-checkpoint", str(runs["sr"]))
    sr = doc["run"]["sr"]
    assert sr["resolution"] == 32 and sr["base_resolution"] == 16 and sr["checkpoint"].endswith("step-000002")
    assert sr["nfe_per_view"] == 3  # Heun with 2 steps: 2N - 1 network calls for each generated view
    assert sr["seconds"] > 0 and doc["run"]["seconds_sampling"] > 0
    for folder in ("pred", "gt", "inputs"):
        with Image.open(tmp_path / "sr" / folder / "benchmark-000000" / ("000000.png" if folder == "inputs"
                                                                         else "000006.png")) as im:
            assert im.size == (32, 32)
    assert doc["result"]["mean"]["psnr"] > 0


def test_mismatches_are_refused(runs, ckpt, tmp_path, capsys):  # noqa: F811
    proto16 = write_protocol(tmp_path / "p16.json", objects=1, metrics=METRICS)
    proto32 = write_protocol(tmp_path / "p32.json", objects=1, resolution=32, metrics=METRICS)

    def fails(*args: str) -> str:
        assert main(["evaluate", *args, "--out", str(tmp_path / "x"), "--device", "cpu"]) != 0
        return capsys.readouterr().err

    assert "3dim' model has none" in fails("--checkpoint", str(ckpt), "--protocol", str(proto16), "--guide",
                                            str(runs["guide"]))
    assert "no such run" in fails("--checkpoint", str(runs["base"]), "--protocol", str(proto16), "--guide",
                                  str(tmp_path / "missing"))
    assert "weighs a guide network" in fails("--checkpoint", str(runs["base"]), "--protocol", str(proto16),
                                             "--guidance", "2")
    assert "makes 32x32 images but the protocol evaluates at 16x16" in fails(
        "--checkpoint", str(runs["base"]), "--protocol", str(proto16), "--sr-checkpoint", str(runs["sr"]))
    assert "not VIVID's super-resolution stage" in fails(
        "--checkpoint", str(runs["base"]), "--protocol", str(proto32), "--sr-checkpoint", str(runs["guide"]))
    assert "super-resolution stage" in fails("--checkpoint", str(runs["sr"]), "--protocol", str(proto32))
    assert "only apply to checkpoint mode" in fails("--pred", str(tmp_path), "--gt", str(tmp_path), "--guide",
                                                    str(runs["guide"]))
    assert not (tmp_path / "x" / "metrics.json").exists()
