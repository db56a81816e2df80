"""Joint FID (VIVID): FID of [target features ‖ source features] pairs.

The Inception weights are never present in tests: a small random-weight convolutional network
stands in for it (monkeypatched in place of ``FIDInceptionV3``). The point of the metric is tested
directly: the generated images shuffled relative to their sources keep the same set of images, so
the plain FID does not move, while the joint FID grows.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from vantage.cli.main import main
from vantage.eval.evaluate import EvaluationError, Scorer, evaluate_folders, match_sources
from vantage.eval.fid import fid, joint_features, joint_fid
from vantage.eval.inception import FIDInceptionV3
from vantage.eval.protocol import MetricSettings, ProtocolError, protocol_from_dict

pytestmark = pytest.mark.usefixtures("single_thread")

JOINT = MetricSettings(names=("psnr", "fid", "jfid"))


class TinyFeatures(nn.Module):
    """A small random-weight feature network: (B, 3, H, W) in [-1, 1] -> (B, 7) (pooled conv features, mean colour)."""

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.conv = nn.Conv2d(3, 4, 3, stride=2)
        with torch.no_grad():
            self.conv.weight.copy_(torch.randn(self.conv.weight.shape, generator=g) * 0.5)
            self.conv.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([torch.tanh(self.conv(x)).mean(dim=(2, 3)), x.mean(dim=(2, 3))], 1)


@pytest.fixture(autouse=True)
def no_weights(tmp_path_factory, monkeypatch):
    """No weight files (LPIPS would be skipped); the FID Inception is replaced by :class:`TinyFeatures`."""
    monkeypatch.setenv("VANTAGE_WEIGHTS", str(tmp_path_factory.mktemp("no-weights")))
    monkeypatch.setattr("vantage.eval.inception.FIDInceptionV3", TinyFeatures)


def scenes(n: int, size: int = 24, seed: int = 0) -> torch.Tensor:
    """``n`` smooth random colour images (B, 3, size, size) in [-1, 1]: 4x4 random colours, upsampled."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(n, 3, 4, 4, generator=g) * 2 - 1
    return F.interpolate(low, size=(size, size), mode="bilinear", align_corners=False)


def views_of(src: torch.Tensor, shift: int) -> torch.Tensor:
    """Another "view" of each source: shifted by ``shift`` px and slightly darker (strongly correlated with it)."""
    return (torch.roll(src, shifts=shift, dims=-1) * 0.9).clamp(-1, 1)


# ------------------------------------------------------------------------------------ the function
def test_joint_fid_zero_for_identical_sets_and_larger_when_shuffled():
    net = TinyFeatures()
    with torch.no_grad():
        src = scenes(48)
        f_src, f_tgt = net(src).double().numpy(), net(views_of(src, 3)).double().numpy()
    assert joint_features(f_tgt, f_src).shape == (48, 14)
    assert np.array_equal(joint_features(f_tgt, f_src)[:, 7:], f_src)

    assert abs(joint_fid(f_tgt, f_tgt, f_src)) < 1e-6  # identical sets: 0 within round-off
    perm = np.roll(np.arange(48), 1)  # every generated image paired with another scene's source
    shuffled = f_tgt[perm]
    # the same set of images: the plain FID does not see the shuffle ...
    assert fid(shuffled, f_tgt) == pytest.approx(fid(f_tgt, f_tgt), abs=1e-6)
    assert abs(fid(shuffled, f_tgt)) < 1e-6
    # ... the joint FID does
    assert joint_fid(shuffled, f_tgt, f_src) > 0.05 * np.trace(np.cov(f_tgt, rowvar=False)) > 0
    # an explicit reference source equal to the source gives the same number; tensors work too
    assert joint_fid(shuffled, f_tgt, f_src, reference_source=f_src) == pytest.approx(
        joint_fid(torch.from_numpy(shuffled), torch.from_numpy(f_tgt), torch.from_numpy(f_src)))


def test_joint_fid_argument_errors():
    rng = np.random.default_rng(0)
    a, b, s = rng.normal(size=(10, 4)), rng.normal(size=(10, 4)), rng.normal(size=(10, 3))
    with pytest.raises(ValueError, match=r"pair row i of the targets with row i of the sources: got 9 target and 10"):
        joint_fid(a[:9], b[:9], s, reference_source=s[:9])
    with pytest.raises(ValueError, match=r"got 10 target and 8 source"):
        joint_features(a, s[:8])
    with pytest.raises(ValueError, match="different dimensions: 4 and 5"):
        joint_fid(a, rng.normal(size=(10, 5)), s)
    with pytest.raises(ValueError, match=r"reference_source is needed when the reference set \(12 images\)"):
        joint_fid(a, rng.normal(size=(12, 4)), s)
    with pytest.raises(ValueError, match="source and reference source features have different dimensions: 3 and 2"):
        joint_fid(a, b, s, reference_source=rng.normal(size=(10, 2)))
    with pytest.raises(ValueError, match=r"must be a \(N, D\) feature array, got shape \(10,\)"):
        joint_fid(a, b, s[:, 0])
    with pytest.raises(ValueError, match="at least 2 pairs"):
        joint_fid(a[:1], b[:1], s[:1])
    with pytest.raises(ValueError, match="non-finite"):
        joint_fid(a, b, np.full((10, 3), np.nan))
    # a reference set of another size, with its own sources
    assert np.isfinite(joint_fid(a, rng.normal(size=(12, 4)), s, reference_source=rng.normal(size=(12, 3))))


def test_jfid_is_a_protocol_metric():
    p = protocol_from_dict({"name": "j", "version": 1, "dataset": {"spec": "synthetic:test"}, "input_views": [0],
                            "resolution": 16, "metrics": {"names": ["fid", "jfid"]}})
    assert p.metrics.names == ("fid", "jfid")
    with pytest.raises(ProtocolError, match=r"'metrics.names' must be a non-empty list of .*kid, jfid"):
        protocol_from_dict({"name": "j", "version": 1, "dataset": {"spec": "synthetic:test"}, "input_views": [0],
                            "resolution": 16, "metrics": {"names": ["joint_fid"]}})


# ------------------------------------------------------------------------------------ scoring folders
def save(img: torch.Tensor, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = ((img.clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()
    Image.fromarray(arr).save(path)


@pytest.fixture
def folders(tmp_path):
    """inputs/<obj>/000000.png (one source per object), gt/<obj>/00000{1,2}.png (two views of it), pred = gt
    (pred/) and pred shuffled across objects (shuffled/: every prediction is a view of another object)."""
    src = scenes(14)
    objects = [f"obj{k:02d}" for k in range(14)]
    for k, obj in enumerate(objects):
        save(src[k], tmp_path / "inputs" / obj / "000000.png")
        for v, shift in ((1, 3), (2, -4)):
            view = views_of(src[k], shift)
            save(view, tmp_path / "gt" / obj / f"{v:06d}.png")
            save(view, tmp_path / "pred" / obj / f"{v:06d}.png")
            save(view, tmp_path / "shuffled" / objects[(k + 1) % 14] / f"{v:06d}.png")
    return tmp_path


def test_joint_fid_of_folders_sees_the_shuffle(folders):
    ok = evaluate_folders(folders / "pred", folders / "gt", settings=JOINT, sources=folders / "inputs",
                          progress=False)["set_metrics"]
    bad = evaluate_folders(folders / "shuffled", folders / "gt", settings=JOINT, sources=folders / "inputs",
                           progress=False)["set_metrics"]
    assert ok["set_size"] == bad["set_size"] == 28
    assert abs(ok["fid"]) < 1e-6 and abs(ok["jfid"]) < 1e-6
    assert bad["fid"] == pytest.approx(ok["fid"], abs=1e-6)  # the same images: FID unchanged
    assert bad["jfid"] > 0.05 > 1e-6 > abs(ok["jfid"])  # wrong sources: the joint FID grows
    # a mapping of names to source files gives the same number as the folder
    sources = match_sources([f"obj{k:02d}/{v:06d}" for k in range(14) for v in (1, 2)], folders / "inputs")
    assert sources["obj03/000002"] == folders / "inputs" / "obj03" / "000000.png"
    again = evaluate_folders(folders / "shuffled", folders / "gt", settings=JOINT, sources=sources, progress=False)
    assert again["set_metrics"]["jfid"] == pytest.approx(bad["jfid"])


def test_joint_fid_needs_the_sources(folders, tmp_path):
    with pytest.raises(EvaluationError, match=r"joint FID \(jfid\) pairs each target with its source.*--inputs DIR"):
        evaluate_folders(folders / "pred", folders / "gt", settings=JOINT, progress=False)
    # not asked for: sources are not needed (and not read)
    r = evaluate_folders(folders / "pred", folders / "gt", settings=MetricSettings(names=("psnr", "fid")),
                         sources=tmp_path / "nowhere", progress=False)
    assert "jfid" not in r["set_metrics"] and "fid" in r["set_metrics"]
    # a folder that lacks some sources, or holds several candidates for one target
    save(scenes(1)[0], folders / "inputs" / "obj05" / "000009.png")
    (folders / "inputs" / "obj07" / "000000.png").unlink()
    with pytest.raises(EvaluationError, match=r"2 target\(s\) have no source image: obj07/000001, obj07/000002; "
                                              r"2 target\(s\) have several candidates .*: obj05/000001, obj05/000002"):
        evaluate_folders(folders / "pred", folders / "gt", settings=JOINT, sources=folders / "inputs", progress=False)
    with pytest.raises(EvaluationError, match=r"no source \(input\) image for the joint FID \(jfid\) for obj00/000001"):
        evaluate_folders(folders / "pred", folders / "gt", settings=JOINT, sources={}, progress=False)
    # one source per target under the target's own name is the other accepted layout
    per_target = tmp_path / "per_target"
    for p in (folders / "gt").rglob("*.png"):
        save(scenes(1, seed=3)[0], per_target / p.relative_to(folders / "gt"))
    found = match_sources(["obj00/000001"], per_target)
    assert found == {"obj00/000001": per_target / "obj00" / "000001.png"}
    scorer = Scorer(JOINT)
    with pytest.raises(EvaluationError, match=r"needs the source \(input\) view of every target; none was given"):
        scorer.score(["a"], torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 8))
    with pytest.raises(EvaluationError, match=r"source batch must be \(B, 3, H', W'\) with B = 1"):
        scorer.score(["a"], torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 8), source=torch.zeros(2, 3, 8, 8))


def test_joint_fid_skipped_without_inception_weights(folders, monkeypatch):
    monkeypatch.setattr("vantage.eval.inception.FIDInceptionV3", FIDInceptionV3)  # the real one: no weight file
    r = evaluate_folders(folders / "pred", folders / "gt", settings=JOINT, sources=folders / "inputs", progress=False)
    assert set(r["skipped"]) == {"fid", "jfid"} and "pt_inception-2015-12-05" in r["skipped"]["jfid"]
    assert r["set_metrics"] == {}


def test_cli_files_mode_with_inputs(folders, tmp_path, capsys):
    proto = tmp_path / "joint.json"
    proto.write_text(json.dumps({"name": "joint", "version": 1, "dataset": {"spec": "synthetic:test"},
                                 "input_views": [0], "resolution": 24,
                                 "metrics": {"names": ["psnr", "ssim", "fid", "jfid"]}}))
    base = ["evaluate", "--pred", str(folders / "shuffled"), "--gt", str(folders / "gt")]
    assert main(base + ["--out", str(tmp_path / "o1"), "--protocol", str(proto)]) == 2
    assert "asks for the joint FID (jfid)" in capsys.readouterr().err and not (tmp_path / "o1").exists()
    assert main(base + ["--out", str(tmp_path / "o2"), "--inputs", str(folders / "inputs")]) == 2
    assert "--inputs is used only by the joint FID" in capsys.readouterr().err
    assert main(["evaluate", "--checkpoint", "run", "--protocol", str(proto), "--inputs", str(folders / "inputs"),
                 "--out", str(tmp_path / "o3")]) == 2
    assert "--inputs only applies to files mode" in capsys.readouterr().err
    out = tmp_path / "scores"
    assert main(base + ["--out", str(out), "--protocol", str(proto), "--inputs", str(folders / "inputs")]) == 0
    assert "joint FID:" in capsys.readouterr().out
    doc = json.loads((out / "metrics.json").read_text())
    sm = doc["result"]["set_metrics"]
    assert sm["jfid"] > 1e-3 and abs(sm["fid"]) < 1e-6 and doc["metric_settings"]["names"][-1] == "jfid"
    assert "joint FID" in doc["metric_settings"]["conventions"]
    assert f"joint FID {sm['jfid']:.2f}" in (out / "metrics.md").read_text()
