"""`vantage evaluate`'s strategy selection (the one `vantage sample` uses, `vantage.sampling.strategy_choice`) and the
protocols' optional `sampling.max_context` (absent: every generated view, as before)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from test_evaluate import BASE, ckpt, no_weights, write_protocol  # noqa: F401 (fixtures)

from vantage.cli.main import main
from vantage.eval.protocol import ProtocolError, load_protocol, protocol_from_dict, shipped_protocols

pytestmark = pytest.mark.usefixtures("single_thread")


def test_max_context_is_an_optional_protocol_field():
    for name in shipped_protocols():  # the versioned files do not set it: all views, as before
        assert load_protocol(name).sampling.max_context is None
    assert protocol_from_dict(BASE).to_dict()["sampling"]["max_context"] is None
    bounded = protocol_from_dict({**BASE, "sampling": {"strategy": "interpolated", "max_context": 2}})
    assert bounded.sampling.max_context == 2
    for bad in (-1, 1.5, "4", True):
        with pytest.raises(ProtocolError, match="max_context"):
            protocol_from_dict({**BASE, "sampling": {"max_context": bad}})


def _pred(out):
    return {p.relative_to(out).as_posix(): np.asarray(Image.open(p)) for p in sorted((out / "pred").rglob("*.png"))}


@pytest.mark.filterwarnings("ignore:interpolated denoising")
def test_checkpoint_mode_with_a_bounded_interpolated_context(ckpt, tmp_path, capsys):  # noqa: F811
    def evaluate(label: str, **sampling) -> int:
        proto = write_protocol(tmp_path / f"{label}.json", objects=1, metrics={"names": ["psnr"]},
                               target_views=[4, 8, 12], sampling={"steps": 1, **sampling})
        return main(["evaluate", "--checkpoint", str(ckpt), "--protocol", str(proto), "--out", str(tmp_path / label),
                     "--device", "cpu"])

    assert evaluate("bounded", strategy="interpolated", order="alternating", max_context=0) == 0
    assert "strategy interpolated (max_context 0), order alternating" in capsys.readouterr().out
    doc = json.loads((tmp_path / "bounded" / "metrics.json").read_text())
    assert doc["protocol"]["sampling"]["max_context"] == 0 and doc["run"]["strategy"] == "interpolated"
    # K = 0: the input alone conditions every target, exactly as with fixed views
    assert evaluate("fixed", strategy="interpolated", order="alternating", autoregressive=False) == 0
    bounded, fixed = _pred(tmp_path / "bounded"), _pred(tmp_path / "fixed")
    assert bounded.keys() == fixed.keys() and all(np.array_equal(bounded[k], fixed[k]) for k in bounded)
    capsys.readouterr()
    # refused where it does not fit, as `vantage sample` refuses it (the model's own strategy here: stochastic)
    assert evaluate("stochastic", max_context=1) == 2
    said = capsys.readouterr().err
    assert "protocol tiny-v1: sampling: max_context bounds" in said and "(got stochastic)" in said
    assert evaluate("no-ar", strategy="interpolated", max_context=1, autoregressive=False) == 2
    assert "with autoregressive: false there are none" in capsys.readouterr().err
