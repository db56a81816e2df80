"""The shipped default model (``vantage/assets/default-3dim``) checked honestly.

On held-out benchmark objects (the ``benchmark`` split is disjoint from the ``train`` split the model
was trained on), a 24-view orbit generated from view 0 with the demo's settings (stochastic
conditioning, alternating order, the model's default sampler, steps and guidance) must beat the
"copy the input view to every target" baseline on PSNR by ``MARGIN_DB`` and on SSIM by ``MARGIN_SSIM``,
with no object more than ``WORST_OBJECT_DB`` below its own baseline. The test fails when the
model is missing, when it is replaced by an untrained one, or when sampling breaks (see
``test_an_untrained_model_does_not_pass``).
"""

from __future__ import annotations

import json

import torch

from vantage.cli.model_demo import DEFAULT_MODEL_DIR, default_model_available, run_model_demo

#: PSNR margin (dB) over the copy-the-input baseline, mean over the objects' 23 generated views (measured on
#: the shipped model: +0.5 dB; an untrained network is far below the baseline)
MARGIN_DB = 0.4
#: SSIM margin over the baseline, same views (measured: +0.06)
MARGIN_SSIM = 0.03
#: no object may fall further than this below its own copy baseline (dB)
WORST_OBJECT_DB = 0.5
#: benchmark objects used by the test (the demo's default is 4)
OBJECTS = 4


def test_the_default_model_ships_with_its_provenance():
    assert default_model_available(), f"the default model is missing from {DEFAULT_MODEL_DIR}"
    size = (DEFAULT_MODEL_DIR / "model.safetensors").stat().st_size
    assert size <= 20 * 2**20, f"model.safetensors is {size / 2**20:.1f} MB; the limit is 20 MB"
    cfg = json.loads((DEFAULT_MODEL_DIR / "config.json").read_text())
    assert cfg["method"] == "3dim" and cfg["preset"] == "3dim-shapes32"
    training = (DEFAULT_MODEL_DIR / "TRAINING.md").read_text()
    assert "vantage train 3dim-shapes32" in training  # the exact command that produced it
    assert (DEFAULT_MODEL_DIR / "loss.png").is_file() and (DEFAULT_MODEL_DIR / "stats.jsonl").is_file()


def test_the_default_model_beats_the_copy_baseline(tmp_path, single_thread):
    torch.set_num_threads(2)  # this test is the slow one; let it use the CI machine's two cores
    m = run_model_demo(tmp_path, objects=OBJECTS, device="cpu", progress=False)
    mean = m["mean"]
    gain = mean["psnr"] - mean["baseline_psnr"]
    assert gain >= MARGIN_DB, (f"default model PSNR {mean['psnr']:.2f} dB vs copy-the-input "
                               f"{mean['baseline_psnr']:.2f} dB: +{gain:.2f} dB < the required +{MARGIN_DB} dB "
                               f"({m['per_object']})")
    assert mean["ssim"] - mean["baseline_ssim"] >= MARGIN_SSIM, mean
    for obj in m["per_object"]:  # and no object is a disaster
        assert obj["psnr"] > obj["baseline_psnr"] - WORST_OBJECT_DB, obj


def test_an_untrained_model_does_not_pass(tmp_path, single_thread):
    """The same check on an untrained network of the same preset fails: the margin is not free."""
    from vantage.methods import build_method
    from vantage.train.checkpoint import save_checkpoint

    torch.manual_seed(0)
    m = build_method("3dim-shapes32")
    run = tmp_path / "untrained"
    save_checkpoint(run, 0, config={**m.to_json(), "step": 0}, weights=m.state_dict(), training_state={})
    metrics = run_model_demo(tmp_path / "demo", checkpoint=run, objects=2, device="cpu", steps=8, progress=False)
    mean = metrics["mean"]
    assert mean["psnr"] - mean["baseline_psnr"] < MARGIN_DB, mean


def test_serve_uses_the_default_model_without_a_checkpoint(single_thread):
    """``vantage serve`` with no ``--checkpoint`` serves the shipped model (issue #10): its engine loads it and
    generates a view of a held-out object at the model's resolution."""
    from PIL import Image

    from vantage.serve.engine import GenerateRequest, ServeEngine
    from vantage.serve.models import default_checkpoint

    assert default_checkpoint(None) == DEFAULT_MODEL_DIR  # what `vantage serve` does without --checkpoint
    engine = ServeEngine(default_checkpoint(None), device="cpu")
    res = engine.generate(GenerateRequest(benchmark="benchmark-000001", mode="view", azimuth=90, steps=8))
    assert res.summary["generated"] == 1 and res.summary["method"] == "3dim", res.summary
    with Image.open(res.frames[0]) as im:
        assert im.size == (32, 32)
