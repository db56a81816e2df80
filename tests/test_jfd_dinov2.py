"""Joint FD-DINOv2 (VIVID's ``joint_fd_dinov2``): FD-DINOv2 of [target features ‖ source features] pairs.

The counterpart of the joint FID tests (tests/test_fid_joint.py) in DINOv2 feature space, with the small
random-weight ViT of tests/test_dinov2.py in place of DINOv2 ViT-L/14 (whose weights are never present in
tests). Shuffling the generated images against their sources keeps the same set of images, so FD-DINOv2
does not move, while the joint FD-DINOv2 grows. The joint metrics share one notion of "needs the sources".
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from test_dinov2 import tiny  # noqa: F401 (the small random ViT, a fixture)
from test_evaluate import ckpt, write_protocol  # noqa: F401 (a tiny 3DiM run, a fixture)
from test_fid_joint import TinyFeatures, save, scenes, views_of

from vantage.cli.main import main
from vantage.eval.evaluate import EvaluationError, Scorer, evaluate_folders
from vantage.eval.fid import fd_dinov2, joint_fd_dinov2, joint_fid
from vantage.eval.protocol import METRIC_NAMES, MetricSettings, ProtocolError, protocol_from_dict
from vantage.eval.scorer import SOURCE_METRICS, source_metrics

pytestmark = pytest.mark.usefixtures("single_thread")

DINO = MetricSettings(names=("psnr", "fd_dinov2", "jfd_dinov2"))
N_OBJECTS = 24


@pytest.fixture(autouse=True)
def no_weights(tmp_path_factory, monkeypatch):
    """No weight files anywhere; the FID Inception is the joint FID tests' small random network."""
    monkeypatch.setenv("VANTAGE_WEIGHTS", str(tmp_path_factory.mktemp("no-weights")))
    monkeypatch.setattr("vantage.eval.inception.FIDInceptionV3", TinyFeatures)


@pytest.fixture
def with_tiny(tiny, monkeypatch):  # noqa: F811
    """``vantage evaluate`` builds the small random ViT where it would load DINOv2 ViT-L/14."""
    monkeypatch.setattr("vantage.eval.dinov2.DINOv2Features", lambda: tiny)
    return tiny


@pytest.fixture
def folders(tmp_path):
    """inputs/<obj>/000000.png (one source per object), gt/<obj>/00000{1,2}.png (two views of it), pred = gt
    (pred/) and pred shuffled across objects (shuffled/: every prediction is a view of another object)."""
    src = scenes(N_OBJECTS)
    objects = [f"obj{k:02d}" for k in range(N_OBJECTS)]
    for k, obj in enumerate(objects):
        save(src[k], tmp_path / "inputs" / obj / "000000.png")
        for v, shift in ((1, 3), (2, -4)):
            view = views_of(src[k], shift)
            save(view, tmp_path / "gt" / obj / f"{v:06d}.png")
            save(view, tmp_path / "pred" / obj / f"{v:06d}.png")
            save(view, tmp_path / "shuffled" / objects[(k + 1) % N_OBJECTS] / f"{v:06d}.png")
    return tmp_path


# ------------------------------------------------------------------------------------ the function
def test_joint_fd_dinov2_zero_for_identical_sets_and_larger_when_shuffled(tiny):  # noqa: F811
    src = scenes(48)
    f_src, f_tgt = tiny.extract(src).double().numpy(), tiny.extract(views_of(src, 3)).double().numpy()
    assert f_src.shape == (48, 16)
    assert abs(joint_fd_dinov2(f_tgt, f_tgt, f_src)) < 1e-6  # identical sets: 0 within round-off
    shuffled = f_tgt[np.roll(np.arange(48), 1)]  # every generated image paired with another scene's source
    assert abs(fd_dinov2(shuffled, f_tgt)) < 1e-6  # the same set of images: FD-DINOv2 does not see the shuffle
    grown = joint_fd_dinov2(shuffled, f_tgt, f_src)
    assert grown > 0.05 * np.trace(np.cov(f_tgt, rowvar=False)) > 0  # ... the joint FD-DINOv2 does
    # the joint FID's computation on DINOv2 features, with its arguments and errors
    assert grown == joint_fid(shuffled, f_tgt, f_src)
    assert joint_fd_dinov2(shuffled, f_tgt, f_src, reference_source=f_src) == pytest.approx(grown)
    with pytest.raises(ValueError, match="reference_source is needed"):
        joint_fd_dinov2(shuffled, f_tgt[:40], f_src)


def test_jfd_dinov2_is_a_protocol_metric_that_needs_sources():
    p = protocol_from_dict({"name": "d", "version": 1, "dataset": {"spec": "synthetic:test"}, "input_views": [0],
                            "resolution": 16, "metrics": {"names": ["fd_dinov2", "jfd_dinov2"]}})
    assert p.metrics.names == ("fd_dinov2", "jfd_dinov2")
    with pytest.raises(ProtocolError, match=r"'metrics.names' must be a non-empty list of .*fd_dinov2, jfd_dinov2"):
        protocol_from_dict({"name": "d", "version": 1, "dataset": {"spec": "synthetic:test"}, "input_views": [0],
                            "resolution": 16, "metrics": {"names": ["joint_fd_dinov2"]}})
    assert set(SOURCE_METRICS) <= set(METRIC_NAMES)
    assert source_metrics(METRIC_NAMES) == ("jfid", "jfd_dinov2") and source_metrics(("fid", "fd_dinov2")) == ()


# ------------------------------------------------------------------------------------ scoring folders
def test_jfd_dinov2_of_folders_sees_the_shuffle(folders, with_tiny):
    ok = evaluate_folders(folders / "pred", folders / "gt", settings=DINO, sources=folders / "inputs",
                          progress=False)
    bad = evaluate_folders(folders / "shuffled", folders / "gt", settings=DINO, sources=folders / "inputs",
                           progress=False)
    assert ok["skipped"] == {} and ok["set_metrics"]["set_size"] == bad["set_metrics"]["set_size"] == 2 * N_OBJECTS
    ok, bad = ok["set_metrics"], bad["set_metrics"]
    assert abs(ok["fd_dinov2"]) < 1e-6 and abs(ok["jfd_dinov2"]) < 1e-6
    assert bad["fd_dinov2"] == pytest.approx(ok["fd_dinov2"], abs=1e-6)  # the same images: FD-DINOv2 unchanged
    assert bad["jfd_dinov2"] > 1e-2 > 1e-6 > abs(ok["jfd_dinov2"])  # wrong sources: the joint FD-DINOv2 grows
    # both joint metrics at once: each from its own network's features, the same numbers as alone
    both = MetricSettings(names=("fid", "jfid", "fd_dinov2", "jfd_dinov2"))
    r = evaluate_folders(folders / "shuffled", folders / "gt", settings=both, sources=folders / "inputs",
                         progress=False)["set_metrics"]
    assert r["jfd_dinov2"] == pytest.approx(bad["jfd_dinov2"]) and r["fd_dinov2"] == pytest.approx(bad["fd_dinov2"])
    alone = evaluate_folders(folders / "shuffled", folders / "gt", settings=MetricSettings(names=("jfid",)),
                             sources=folders / "inputs", progress=False)["set_metrics"]
    assert r["jfid"] == pytest.approx(alone["jfid"]) and r["jfid"] != pytest.approx(r["jfd_dinov2"])


def test_jfd_dinov2_needs_the_sources(folders, with_tiny, tmp_path):
    with pytest.raises(EvaluationError, match=r"the joint FD-DINOv2 \(jfd_dinov2\) pairs each target with its source"
                                              r".*--inputs DIR"):
        evaluate_folders(folders / "pred", folders / "gt", settings=DINO, progress=False)
    both = MetricSettings(names=("jfid", "jfd_dinov2"))
    with pytest.raises(EvaluationError, match=r"the joint FID \(jfid\) and the joint FD-DINOv2 \(jfd_dinov2\) pair "):
        evaluate_folders(folders / "pred", folders / "gt", settings=both, progress=False)
    with pytest.raises(EvaluationError, match=r"no source \(input\) image for the joint FD-DINOv2 \(jfd_dinov2\) for"):
        evaluate_folders(folders / "pred", folders / "gt", settings=DINO, sources={}, progress=False)
    (folders / "inputs" / "obj07" / "000000.png").unlink()
    with pytest.raises(EvaluationError, match=r"joint metrics \(jfid, jfd_dinov2\) need .*2 target\(s\) have no "
                                              r"source image: obj07/000001, obj07/000002"):
        evaluate_folders(folders / "pred", folders / "gt", settings=DINO, sources=folders / "inputs", progress=False)
    # not asked for: sources are not needed (and not read)
    r = evaluate_folders(folders / "pred", folders / "gt", settings=MetricSettings(names=("psnr", "fd_dinov2")),
                         sources=tmp_path / "nowhere", progress=False)
    assert "jfd_dinov2" not in r["set_metrics"] and "fd_dinov2" in r["set_metrics"]
    scorer = Scorer(DINO)
    assert scorer.joint_metrics() == ("jfd_dinov2",)
    with pytest.raises(EvaluationError, match=r"jfd_dinov2\) needs the source \(input\) view of every target; none"):
        scorer.score(["a", "b"], torch.zeros(2, 3, 8, 8), torch.zeros(2, 3, 8, 8))
    scorer.score(["a", "b"], torch.zeros(2, 3, 8, 8), torch.zeros(2, 3, 8, 8), features=False)  # per image only
    assert scorer.set_metrics() == {}  # no features collected
    scorer.score(["a"], torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 8), source=torch.zeros(1, 3, 8, 8))
    assert scorer.set_metrics() == {} and "FD-DINOv2/joint FD-DINOv2 need at least 2 images" in scorer.notes[-1]


def test_jfd_dinov2_skipped_without_dinov2_weights(folders, tmp_path, capsys):
    r = evaluate_folders(folders / "pred", folders / "gt", settings=DINO, sources=folders / "inputs", progress=False)
    assert set(r["skipped"]) == {"fd_dinov2", "jfd_dinov2"}
    assert "dinov2_vitl14_pretrain.pth" in r["skipped"]["jfd_dinov2"] and r["set_metrics"] == {}
    scorer = Scorer(DINO)
    assert scorer.dinov2 is None and scorer.joint_metrics() == ()  # skipped: the sources are not needed by the scorer
    # the command: the other metrics are scored, the skipped one is named with its file
    proto = tmp_path / "jdino.json"
    proto.write_text(json.dumps({"name": "jdino", "version": 1, "dataset": {"spec": "synthetic:test"},
                                 "input_views": [0], "resolution": 24,
                                 "metrics": {"names": ["psnr", "fid", "jfd_dinov2"]}}))
    out = tmp_path / "scores"
    assert main(["evaluate", "--pred", str(folders / "pred"), "--gt", str(folders / "gt"), "--out", str(out),
                 "--protocol", str(proto), "--inputs", str(folders / "inputs")]) == 0
    said = capsys.readouterr().out
    assert "note: joint FD-DINOv2 skipped" in said and "dinov2_vitl14_pretrain.pth" in said and "FID:" in said
    assert "**joint FD-DINOv2 skipped**" in (out / "metrics.md").read_text()


def test_cli_files_mode_with_inputs(folders, with_tiny, tmp_path, capsys):
    proto = tmp_path / "jdino.json"
    proto.write_text(json.dumps({"name": "jdino", "version": 1, "dataset": {"spec": "synthetic:test"},
                                 "input_views": [0], "resolution": 24,
                                 "metrics": {"names": ["psnr", "fd_dinov2", "jfd_dinov2"]}}))
    base = ["evaluate", "--pred", str(folders / "shuffled"), "--gt", str(folders / "gt")]
    assert main(base + ["--out", str(tmp_path / "o1"), "--protocol", str(proto)]) == 2
    assert "asks for the joint FD-DINOv2 (jfd_dinov2), which pairs" in capsys.readouterr().err
    assert not (tmp_path / "o1").exists()
    assert main(base + ["--out", str(tmp_path / "o2"), "--inputs", str(folders / "inputs")]) == 2
    assert ("--inputs is used only by the joint FID (jfid) and the joint FD-DINOv2 (jfd_dinov2)"
            in capsys.readouterr().err)
    out = tmp_path / "scores"
    assert main(base + ["--out", str(out), "--protocol", str(proto), "--inputs", str(folders / "inputs")]) == 0
    said = capsys.readouterr().out
    assert "joint FD-DINOv2:" in said and "FD-DINOv2:" in said
    doc = json.loads((out / "metrics.json").read_text())
    sm = doc["result"]["set_metrics"]
    assert sm["jfd_dinov2"] > 1e-2 and abs(sm["fd_dinov2"]) < 1e-6
    assert "joint FD-DINOv2" in doc["metric_settings"]["conventions"]
    assert f"joint FD-DINOv2 {sm['jfd_dinov2']:.2f}" in (out / "metrics.md").read_text()


# ------------------------------------------------------------------------------------ checkpoint mode
@pytest.mark.filterwarnings("ignore:Matrix is singular")  # 4 images: rank-deficient covariances
def test_checkpoint_mode_pairs_each_target_with_its_input_view(ckpt, with_tiny, tmp_path, capsys):  # noqa: F811
    proto = write_protocol(tmp_path / "tiny.json", metrics={"names": ["psnr", "fd_dinov2", "jfd_dinov2"]},
                           sampling={"steps": 1})
    out = tmp_path / "eval"
    assert main(["evaluate", "--checkpoint", str(ckpt), "--protocol", str(proto), "--out", str(out),
                 "--device", "cpu"]) == 0
    assert "joint FD-DINOv2:" in capsys.readouterr().out
    sm = json.loads((out / "metrics.json").read_text())["result"]["set_metrics"]
    assert sm["set_size"] == 4 and np.isfinite(sm["jfd_dinov2"]) and np.isfinite(sm["fd_dinov2"])
    # files mode on the saved folders, with the saved input views as sources, gives the same numbers
    again = tmp_path / "again"
    assert main(["evaluate", "--pred", str(out / "pred"), "--gt", str(out / "gt"), "--inputs", str(out / "inputs"),
                 "--protocol", str(proto), "--out", str(again), "--device", "cpu"]) == 0
    sm2 = json.loads((again / "metrics.json").read_text())["result"]["set_metrics"]
    assert sm2["jfd_dinov2"] == pytest.approx(sm["jfd_dinov2"]) and sm2["fd_dinov2"] == pytest.approx(sm["fd_dinov2"])
