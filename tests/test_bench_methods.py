"""bench/bench_methods.py end to end on the 16 px --tiny networks, in process: the training rows (with ViewFusion's
one-view row), the orbit rows (GeNVS with and without its feature cache, ViewFusion's composed UNet rows) and the
interpolated-strategy rows (chunked = unchunked)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import bench_methods  # noqa: E402

pytestmark = pytest.mark.usefixtures("single_thread")


def test_bench_methods_tiny(tmp_path):
    out = bench_methods.main(["--all", "--tiny", "--in-process", "--threads", "1", "--presets",
                              "genvs-shapes32,viewfusion-shapes32", "--precisions", "bf16", "--batch", "2",
                              "--steps", "1", "--warmup", "1", "--repeats", "1", "--orbit", "3", "--sample-steps", "2",
                              "--branch-presets", "relpose-shapes32", "--views", "1,3", "--max-rows", "2",
                              "--json", str(tmp_path / "r.json")])
    assert json.loads((tmp_path / "r.json").read_text())["command"].startswith("python bench/bench_methods.py --all")

    train = out["train"]
    assert [r["preset"] for r in train] == ["genvs-shapes32", "viewfusion-shapes32", "viewfusion-shapes32 (1 view)"]
    assert train[2]["cond_views"] == 1 and all(r["images_per_s"] > 0 and r["parameters"] > 0 for r in train)

    sample = {r["preset"]: r for r in out["sample"]}
    cached, fresh = sample["genvs-shapes32"], sample["genvs-shapes32 (no cache)"]
    assert cached["views"] == fresh["views"] == 2  # 3 orbit views, the input's own copied
    assert cached["nfe_orbit"] == fresh["nfe_orbit"] == 4  # dpmpp_2m: 2 NFE for 2 steps, per view
    assert (cached["renders"], fresh["renders"]) == (2, 4)  # one render per view vs one per denoiser call
    vf = sample["viewfusion-shapes32"]
    assert vf["strategy"] == "composed" and vf["unet_rows"] == 2 * 1 + 2 * 2  # sets of 1 then 2 views

    rows = out["branches"]
    assert [(r["views"], r["max_rows"]) for r in rows] == [(1, None), (1, 2), (3, None), (3, 2)]
    assert all(r["diff"] < 1e-4 and r["seconds"] > 0 for r in rows)


def test_reference_attention_rows(monkeypatch):
    """``--attention sdpa,naive``: every training row also with the reference implementations' attention (einsum and an
    explicit fp32 softmax), switched in the timed network; presets without such blocks are refused."""
    from vantage.nn.blocks import Attention

    seen = []
    real = bench_methods.build

    def spy(*args, **kwargs):
        m = real(*args, **kwargs)
        seen.append(m)
        return m

    monkeypatch.setattr(bench_methods, "build", spy)
    out = bench_methods.main(["--train", "--tiny", "--in-process", "--threads", "1", "--presets", "viewfusion-shapes32",
                              "--precisions", "fp32", "--attention", "sdpa,naive", "--batch", "2", "--steps", "1",
                              "--warmup", "0", "--repeats", "1"])
    rows = [(r["preset"], r["attention"]) for r in out["train"]]
    assert rows == [("viewfusion-shapes32", "sdpa"), ("viewfusion-shapes32", "naive"),
                    ("viewfusion-shapes32 (1 view)", "sdpa"), ("viewfusion-shapes32 (1 view)", "naive")]
    impls = [{m.impl for m in net.modules() if isinstance(m, Attention)} for net in seen]
    assert impls == [{"sdpa"}, {"naive"}, {"sdpa"}, {"naive"}]
    with pytest.raises(SystemExit):
        bench_methods.main(["--train", "--tiny", "--in-process", "--attention", "flash"])
