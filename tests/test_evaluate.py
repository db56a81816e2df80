"""`vantage evaluate`: protocol files (shipped ones load; unknown keys and wrong types are clear errors),
files mode (numbers equal vantage.eval's PSNR/SSIM on the same images; missing, extra, mismatched and NaN
images are errors naming them), checkpoint mode on a tiny untrained 3DiM, and the command line."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import save_tiny_run
from PIL import Image

from vantage.cli.main import main
from vantage.eval import psnr, ssim
from vantage.eval.evaluate import EvaluationError, Scorer, evaluate_folders, match_folders
from vantage.eval.evaluate_model import choose_views
from vantage.eval.protocol import (
    MetricSettings,
    ProtocolError,
    load_protocol,
    protocol_from_dict,
    shipped_protocols,
)

pytestmark = pytest.mark.usefixtures("single_thread")

TINY = dict(resolution=16, ch=16, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(8,), num_heads=2, emb_ch=32,
            norm_groups=8, ray_octaves_origin=4, ray_octaves_dir=2, default_sampler="euler", default_steps=2)
BASE = {"name": "tiny", "version": 1, "dataset": {"spec": "synthetic:benchmark"}, "objects": 2, "input_views": [0],
        "target_views": [6, 12], "resolution": 16}


@pytest.fixture(autouse=True)
def no_weights(tmp_path_factory, monkeypatch):
    """No perceptual weight files: LPIPS/FID are skipped (the message names the file)."""
    monkeypatch.setenv("VANTAGE_WEIGHTS", str(tmp_path_factory.mktemp("no-weights")))


def write_protocol(path: Path, **changes) -> Path:
    data = {**BASE, **changes}
    path.write_text(json.dumps({k: v for k, v in data.items() if v is not ...}))
    return path


def unit(arr: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 -> (1, 3, H, W) in [0, 1], the way the metrics see a PNG."""
    return torch.from_numpy(np.array(arr)).permute(2, 0, 1)[None].float() / 255.0


@pytest.fixture
def image_sets(tmp_path):
    """gt/ and pred/ with 2 objects x 3 views of 24x24 images (pred = gt + noise), and the arrays."""
    rng = np.random.default_rng(0)
    arrays = {}
    for obj in ("car_a", "car_b"):
        for v in range(3):
            gt = rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)
            pred = np.clip(gt.astype(int) + rng.integers(-40, 41, gt.shape), 0, 255).astype(np.uint8)
            for folder, arr in (("gt", gt), ("pred", pred)):
                (tmp_path / folder / obj).mkdir(parents=True, exist_ok=True)
                Image.fromarray(arr).save(tmp_path / folder / obj / f"{v:06d}.png")
            arrays[f"{obj}/{v:06d}"] = (pred, gt)
    return tmp_path / "pred", tmp_path / "gt", arrays


# ------------------------------------------------------------------------------------ protocols
def test_every_shipped_protocol_loads_and_is_packaged():
    shipped = shipped_protocols()
    assert {"synthetic-v1", "srn-cars-v1", "nmr-v1", "realestate10k-v1"} <= set(shipped)
    for name in shipped:
        p = load_protocol(name)
        assert p.label == name and p.description and p.to_dict()["name"] == p.name
    srn = load_protocol("srn-cars")  # newest version of a name
    assert srn.label == "srn-cars-v1" and srn.input_views == [64] and srn.resolution == 128
    assert srn.target_views == "all-others" and srn.metrics.ssim_window == "uniform7"
    nmr = load_protocol("nmr-v1")
    assert nmr.resolution == 64 and nmr.input_views == {"random": 1, "seed": 0} and not nmr.sampling.autoregressive
    assert load_protocol("synthetic-v1").dataset.spec == "synthetic:benchmark"
    pyproject = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()
    assert "eval/protocols/*.json" in pyproject


def test_protocol_errors_name_the_key(tmp_path):
    with pytest.raises(ProtocolError, match=r"unknown key 'resolutoin' in the protocol; allowed keys: name, .*resol"):
        protocol_from_dict({**BASE, "resolutoin": 16})
    with pytest.raises(ProtocolError, match=r"unknown key 'window' in 'metrics'; allowed keys: names, ssim_window"):
        protocol_from_dict({**BASE, "metrics": {"window": "gaussian"}})
    with pytest.raises(ProtocolError, match=r"'resolution' must be an integer >= 8, got \"16\" \(str\)"):
        protocol_from_dict({**BASE, "resolution": "16"})
    with pytest.raises(ProtocolError, match=r"'metrics.ssim_window' must be one of gaussian, uniform7"):
        protocol_from_dict({**BASE, "metrics": {"ssim_window": "box"}})
    with pytest.raises(ProtocolError, match=r"'sampling.autoregressive' must be true or false"):
        protocol_from_dict({**BASE, "sampling": {"autoregressive": "yes"}})
    with pytest.raises(ProtocolError, match=r"'metrics.names' must be a non-empty list of psnr, ssim"):
        protocol_from_dict({**BASE, "metrics": {"names": ["psnr", "mse"]}})
    with pytest.raises(ProtocolError, match="has no 'input_views'"):
        protocol_from_dict({k: v for k, v in BASE.items() if k != "input_views"})
    with pytest.raises(ProtocolError, match="exactly one of 'spec'"):
        protocol_from_dict({**BASE, "dataset": {"spec": "synthetic:val", "format": "srn"}})
    with pytest.raises(ProtocolError, match=r"view\(s\) \[6\] are both input and target"):
        protocol_from_dict({**BASE, "input_views": [0, 6]})
    with pytest.raises(ProtocolError, match="one seed or one per sample"):
        protocol_from_dict({**BASE, "seeds": [1, 2], "samples_per_target": 3})
    assert protocol_from_dict({**BASE, "seeds": [5], "samples_per_target": 3}).sample_seeds() == [5, 6, 7]
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    with pytest.raises(ProtocolError, match="bad.json: not valid JSON"):
        load_protocol(bad)
    with pytest.raises(ProtocolError, match=r"unknown protocol 'nope'.*synthetic-v1"):
        load_protocol("nope")
    # errors in a file name the file
    with pytest.raises(ProtocolError, match=r"p.json: 'objects' must be a count"):
        load_protocol(write_protocol(tmp_path / "p.json", objects=0))


def test_choose_views_random_list_and_missing(tmp_path):
    ids = list(range(24))
    p = protocol_from_dict({**BASE, "input_views": {"random": 2, "seed": 3}, "target_views": "all-others"})
    a, targets, why = choose_views(p, "02958343/abc", ids)
    assert len(a) == 2 and why is None and sorted(a + targets) == ids
    assert choose_views(p, "02958343/abc", ids)[0] == a  # seeded by the name: the same every time
    lst = tmp_path / "src.txt"
    lst.write_text("02958343 abc 7\n03001627 xyz 3 9\n04256520 12345 5\n")
    p = protocol_from_dict({**BASE, "input_views": {"view_list": "src.txt"}, "target_views": "all-others"},
                           "p.json", tmp_path)
    from vantage.eval.evaluate_model import _read_view_list

    table = _read_view_list(p.input_views["view_list"])
    assert choose_views(p, "02958343/abc", ids, table)[0] == [7]
    assert choose_views(p, "xyz", ids, table)[0] == [3, 9]  # SRN-style names: the last token
    assert choose_views(p, "04256520/12345", ids, table)[0] == [5]  # numeric object names too
    with pytest.raises(EvaluationError, match="no line for object 'other'"):
        choose_views(p, "other", ids, table)
    p = protocol_from_dict({**BASE, "target_views": [6, 30]})
    with pytest.raises(EvaluationError, match=r"'obj' has no view\(s\) \[30\]"):
        choose_views(p, "obj", ids)
    p = protocol_from_dict({**BASE, "target_views": [6, 30], "missing_views": "skip"})
    assert "no view(s) [30]" in choose_views(p, "obj", ids)[2]


# ------------------------------------------------------------------------------------ files mode
def test_files_mode_numbers_equal_direct_metrics(image_sets, tmp_path, capsys):
    pred, gt, arrays = image_sets
    out = tmp_path / "scores"
    assert main(["evaluate", "--pred", str(pred), "--gt", str(gt), "--out", str(out), "--device", "cpu"]) == 0
    said = capsys.readouterr().out
    assert "LPIPS skipped" in said and "vgg16-397923af.pth" in said and f"wrote to {out}" in said
    assert "https://download.pytorch.org/models/vgg16-397923af.pth" in said and "VANTAGE_WEIGHTS" in said  # how to
    doc = json.loads((out / "metrics.json").read_text())
    assert doc["tool"] == "vantage evaluate" and doc["vantage_version"] and doc["protocol"] is None
    assert doc["metric_settings"]["ssim_window"] == "gaussian"
    r = doc["result"]
    assert r["images"] == 6 and "vgg16-397923af.pth" in r["skipped"]["lpips"]
    for rec in r["per_image"]:
        p, g = (unit(a) for a in arrays[rec["image"]])
        assert rec["psnr"] == pytest.approx(float(psnr(p, g)), abs=1e-4)
        assert rec["ssim"] == pytest.approx(float(ssim(p, g)), abs=1e-5)
        assert rec["object"] == rec["image"].split("/")[0] and rec["lpips"] is None
    p_all = torch.cat([unit(a[0]) for a in arrays.values()])
    g_all = torch.cat([unit(a[1]) for a in arrays.values()])
    assert r["mean"]["psnr"] == pytest.approx(float(psnr(p_all, g_all).mean()), abs=1e-4)
    assert [o["object"] for o in r["per_object"]] == ["car_a", "car_b"]
    rows = list(csv.DictReader(open(out / "per_image.csv")))
    assert len(rows) == 6 and "lpips" not in rows[0]
    assert float(rows[0]["psnr"]) == pytest.approx(r["per_image"][0]["psnr"])
    assert len(list(csv.DictReader(open(out / "per_object.csv")))) == 2
    md = (out / "metrics.md").read_text()
    assert "| generated | 6 |" in md and "LPIPS skipped" in md and "11x11 Gaussian" in md
    assert "download https://download.pytorch.org/models/vgg16-397923af.pth" in md
    assert Image.open(out / "best_worst.png").height > 4 * 24
    assert r["best"][0] != r["worst"][0]

    # the settings of a protocol: the 7x7 uniform SSIM window, another PSNR peak, per-object averaging
    proto = write_protocol(tmp_path / "u7.json", metrics={"names": ["psnr", "ssim"], "ssim_window": "uniform7",
                                                          "psnr_data_range": 2.0, "average": "objects"})
    out2 = tmp_path / "scores_u7"
    assert main(["evaluate", "--pred", str(pred), "--gt", str(gt), "--out", str(out2), "--protocol", str(proto)]) == 0
    doc = json.loads((out2 / "metrics.json").read_text())
    rec = doc["result"]["per_image"][0]
    p, g = (unit(a) for a in arrays[rec["image"]])
    assert rec["ssim"] == pytest.approx(float(ssim(p, g, window="uniform", size=7)), abs=1e-5)
    assert rec["psnr"] == pytest.approx(float(psnr(p, g, data_range=2.0)), abs=1e-4)
    per_obj = doc["result"]["per_object"]
    assert doc["result"]["mean"]["ssim"] == pytest.approx((per_obj[0]["ssim"] + per_obj[1]["ssim"]) / 2)
    assert doc["protocol"]["label"] == "tiny-v1" and doc["result"]["skipped"] == {}


def test_files_mode_errors_name_the_files(image_sets, tmp_path):
    pred, gt, _ = image_sets
    (pred / "car_a" / "000001.png").unlink()
    (pred / "car_a" / "000002.png").unlink()
    Image.fromarray(np.zeros((24, 24, 3), np.uint8)).save(pred / "car_b" / "000099.png")
    with pytest.raises(EvaluationError, match=r"2 ground-truth image\(s\) have no prediction: car_a/000001, "
                                              r"car_a/000002; 1 prediction\(s\) have no ground truth: car_b/000099"):
        match_folders(pred, gt)
    for v in range(9):  # a long list: the first few and the count
        Image.fromarray(np.zeros((24, 24, 3), np.uint8)).save(pred / f"x{v}.png")
    with pytest.raises(EvaluationError, match=r"x3, \.\.\. \(10 in all\)"):
        match_folders(pred, gt)
    with pytest.raises(EvaluationError, match="are the same folder"):
        match_folders(gt, gt)

    pred2 = tmp_path / "pred2"
    pred2.mkdir()
    Image.fromarray(np.zeros((16, 20, 3), np.uint8)).save(pred2 / "a.png")
    gt2 = tmp_path / "gt2"
    gt2.mkdir()
    Image.fromarray(np.zeros((24, 24, 3), np.uint8)).save(gt2 / "a.jpg")  # matched without extension
    for name in ("b", "c"):  # a matching pair between two mismatches: every mismatch is listed, before scoring
        Image.fromarray(np.zeros((24, 24, 3), np.uint8)).save(gt2 / f"{name}.png")
    Image.fromarray(np.zeros((24, 24, 3), np.uint8)).save(pred2 / "b.png")
    Image.fromarray(np.zeros((12, 24, 3), np.uint8)).save(pred2 / "c.png")
    with pytest.raises(EvaluationError, match=r"2 image\(s\) do not have the size of their ground truth: prediction "
                                              r".*pred2/a.png is 20x16, its ground truth .*gt2/a.jpg is 24x24; "
                                              r"prediction .*pred2/c.png is 24x12"):
        evaluate_folders(pred2, gt2, progress=False)
    Image.fromarray(np.zeros((24, 24, 3), np.uint8)).save(pred2 / "a.jpg")
    with pytest.raises(EvaluationError, match="same name with different extensions"):
        match_folders(pred2, gt2)

    scorer = Scorer(MetricSettings(names=("psnr", "ssim")))
    bad = torch.zeros(2, 3, 16, 16)
    bad[1, 0, 3, 3] = float("nan")
    with pytest.raises(EvaluationError, match=r"prediction image\(s\) with NaN or infinite values: obj/2"):
        scorer.score(["obj/1", "obj/2"], bad, torch.zeros(2, 3, 16, 16))


def test_lpips_and_fid_when_weights_are_present(image_sets, monkeypatch):
    class FakeLPIPS(torch.nn.Module):  # stand-ins for the real networks (their weight files are not here)
        def __init__(self, net: str) -> None:
            super().__init__()
            self.net = net

        def forward(self, x, y):
            return (x - y).abs().flatten(1).mean(1)

    class FakeInception(torch.nn.Module):
        def forward(self, x):  # (B, 3, H, W) -> (B, 12) features: channel means and a few pixels
            return torch.cat([x.mean(dim=(2, 3)), x[:, :, :3, 0].flatten(1)], 1)

    monkeypatch.setattr("vantage.eval.lpips.LPIPS", FakeLPIPS)
    monkeypatch.setattr("vantage.eval.inception.FIDInceptionV3", FakeInception)
    pred, gt, _ = image_sets
    r = evaluate_folders(pred, gt, settings=MetricSettings(names=("psnr", "ssim", "lpips", "fid", "kid")),
                         progress=False)
    assert not r["skipped"] and all(rec["lpips"] is not None for rec in r["per_image"])
    assert r["mean"]["lpips"] > 0
    sm = r["set_metrics"]
    assert sm["set_size"] == 6 and sm["fid"] > 0 and np.isfinite(sm["kid_mean"]) and sm["kid_std"] >= 0
    scorer = Scorer(MetricSettings(names=("fid",)))  # a shared scorer: FID of each call's images only
    a, b = (evaluate_folders(pred, gt, scorer=scorer, progress=False)["set_metrics"] for _ in range(2))
    assert a["set_size"] == b["set_size"] == 6 and a["fid"] == pytest.approx(sm["fid"]) == b["fid"]


def test_cli_mode_checks(image_sets, tmp_path, capsys):
    pred, gt, _ = image_sets
    cases = [
        (["--checkpoint", "run", "--pred", str(pred), "--gt", str(gt)], "not both"),
        ([], "nothing to evaluate"),
        (["--pred", str(pred)], "needs both --pred and --gt"),
        (["--pred", str(pred), "--gt", str(gt), "--steps", "3"], "--steps only apply to checkpoint mode"),
        (["--checkpoint", "run"], "checkpoint mode needs --protocol"),
        (["--pred", str(pred), "--gt", str(gt), "--protocol", "nope"], "unknown protocol 'nope'"),
    ]
    for extra, message in cases:
        assert main(["evaluate", "--out", str(tmp_path / "o"), *extra]) == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "o").exists()  # nothing is created before the inputs are checked
    out = tmp_path / "busy"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert main(["evaluate", "--pred", str(pred), "--gt", str(gt), "--out", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(["evaluate", "--pred", str(pred), "--gt", str(gt), "--out", str(out), "--overwrite"]) == 0
    assert (out / "notes.txt").read_text() == "mine" and (out / "metrics.json").is_file()
    assert main(["evaluate", "--list"]) == 0
    assert "srn-cars-v1" in capsys.readouterr().out


# ------------------------------------------------------------------------------------ checkpoint mode
@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return save_tiny_run(tmp_path_factory.mktemp("run"), "3dim", TINY)


def test_checkpoint_mode_end_to_end(ckpt, tmp_path, capsys):
    proto = write_protocol(tmp_path / "tiny.json", metrics={"names": ["psnr", "ssim", "lpips"],
                                                            "consistency": {"grid": 8, "iters": 3}})
    out = tmp_path / "eval"
    assert main(["evaluate", "--checkpoint", str(ckpt), "--protocol", str(proto), "--out", str(out),
                 "--device", "cpu"]) == 0
    said = capsys.readouterr().out
    assert "protocol tiny-v1: 2 object(s), euler x 2 steps" in said and "copy-the-input baseline" in said
    for folder, views in (("pred", ["000006", "000012"]), ("gt", ["000006", "000012"]), ("inputs", ["000000"])):
        for obj in ("benchmark-000000", "benchmark-000001"):
            assert sorted(p.stem for p in (out / folder / obj).iterdir()) == views
    doc = json.loads((out / "metrics.json").read_text())
    r, run = doc["result"], doc["run"]
    assert doc["mode"] == "checkpoint" and doc["protocol"]["label"] == "tiny-v1" and r["images"] == 4
    assert run["steps"] == 2 and run["strategy"] == "stochastic" and run["nfe"] > 0 and not run["overrides"]
    assert [o["inputs"] for o in run["objects"]] == [[0], [0]]
    assert r["baseline"]["mean"]["psnr"] > 5 and "lpips" in r["skipped"]
    assert set(doc["consistency"]) >= {"mean", "ceiling", "per_object"} and len(doc["consistency"]["per_object"]) == 2
    md = (out / "metrics.md").read_text()
    assert "copy-the-input baseline" in md and "3D consistency" in md
    # the scores are those of the saved files: files mode on pred/ and gt/ gives the same numbers
    again = evaluate_folders(out / "pred", out / "gt", progress=False)
    assert again["mean"]["psnr"] == pytest.approx(r["mean"]["psnr"]) and again["mean"]["ssim"] == r["mean"]["ssim"]
    # the baseline is the input view against each target
    inp = np.asarray(Image.open(out / "inputs" / "benchmark-000000" / "000000.png"))
    tgt = np.asarray(Image.open(out / "gt" / "benchmark-000000" / "000006.png"))
    base = next(x for x in r["per_image"] if x["image"] == "benchmark-000000/000006")["baseline_psnr"]
    assert base == pytest.approx(float(psnr(unit(inp), unit(tgt))), abs=1e-4)

    # a second run into the same folder needs --overwrite; then the previous evaluation's images are replaced
    args = ["evaluate", "--checkpoint", str(ckpt), "--protocol", str(proto), "--out", str(out), "--objects", "1",
            "--steps", "1"]
    assert main(args) == 2
    assert "previous evaluation" in capsys.readouterr().err
    assert main(args + ["--overwrite"]) == 0
    assert sorted(p.name for p in (out / "pred").iterdir()) == ["benchmark-000000"]
    doc = json.loads((out / "metrics.json").read_text())
    assert doc["run"]["overrides"] == {"objects": 1, "steps": 1} and "not comparable" in doc["result"]["notes"][0]


def test_checkpoint_mode_samples_and_errors(ckpt, tmp_path, capsys):
    from vantage.eval.evaluate_model import evaluate_checkpoint

    proto = write_protocol(tmp_path / "two.json", objects=1, samples_per_target=2, seeds=[7],
                           metrics={"names": ["psnr", "ssim"]})
    out = tmp_path / "two"
    res = evaluate_checkpoint(ckpt, proto, out, device="cpu", progress=False, log=lambda s: None)
    r = res["result"]
    assert sorted(p.name for p in (out / "pred").iterdir()) == ["sample-00", "sample-01"]
    assert r["images"] == 4 and r["samples"] == 2 and len(r["per_sample"]) == 2
    assert r["per_image"][0]["image"].startswith("sample-00/benchmark-000000/")
    assert res["extra"]["run"]["seeds"] == [7, 8] and (out / "best_worst.png").is_file()
    # the resolution must be the model's; the synthetic data takes no --data; a folder vantage did not write
    with pytest.raises(EvaluationError, match=r"evaluates at 64x64 px but the checkpoint's '3dim' model works at 16"
                                              r"x16; add --resolution 16"):
        evaluate_checkpoint(ckpt, "synthetic-v1", tmp_path / "x", device="cpu", progress=False, log=lambda s: None)
    with pytest.raises(EvaluationError, match="--resolution must be >= 8 px, got 4"):
        evaluate_checkpoint(ckpt, "synthetic-v1", tmp_path / "x", resolution=4, device="cpu", progress=False,
                            log=lambda s: None)
    # --resolution: a 16 px model on the 64 px protocol, recorded as an override
    assert main(["evaluate", "--checkpoint", str(ckpt), "--protocol", "synthetic-v1", "--out", str(tmp_path / "r"),
                 "--device", "cpu", "--objects", "1", "--steps", "1", "--resolution", "16"]) == 0
    capsys.readouterr()
    doc = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert doc["run"]["overrides"] == {"objects": 1, "steps": 1, "resolution": 16}
    assert "resolution=16" in doc["result"]["notes"][0] and doc["result"]["images"] == 23
    assert {Image.open(f).size for f in (tmp_path / "r" / "pred").rglob("*.png")} == {(16, 16)}
    assert {Image.open(f).size for f in (tmp_path / "r" / "gt").rglob("*.png")} == {(16, 16)}
    with pytest.raises(EvaluationError, match="leave out --data"):
        evaluate_checkpoint(ckpt, proto, tmp_path / "x", data=tmp_path, device="cpu", progress=False,
                            log=lambda s: None)
    foreign = tmp_path / "foreign"
    (foreign / "pred").mkdir(parents=True)
    with pytest.raises(EvaluationError, match="is not a previous evaluation but holds pred/"):
        evaluate_checkpoint(ckpt, proto, foreign, device="cpu", progress=False, log=lambda s: None)
    assert main(["evaluate", "--checkpoint", str(ckpt), "--protocol", "srn-cars-v1", "--out", str(tmp_path / "y"),
                 "--device", "cpu"]) == 2
    assert "128x128 px" in capsys.readouterr().err


def write_srn(root: Path, names: list[str], views: int = 4, size: int = 24) -> None:
    """A tiny SRN-layout dataset (cars_test/<instance>/rgb, pose, intrinsics.txt) of random images."""
    from vantage.cameras import hemisphere_cameras
    from vantage.data.formats.common import up_to_z_rotation

    cams = hemisphere_cameras(views, generator=torch.Generator().manual_seed(1), resolution=size, radius=1.3)
    stored = up_to_z_rotation("+y").T.float() @ cams.c2w  # the reader turns SRN's +y-up world to +z-up
    rng = np.random.default_rng(0)
    for name in names:
        d = root / "cars_test" / name
        (d / "rgb").mkdir(parents=True)
        (d / "pose").mkdir()
        for i in range(views):
            np.savetxt(d / "pose" / f"{i:06d}.txt", stored[i].reshape(1, 16).numpy(), fmt="%.9f")
            Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(d / "rgb" / f"{i:06d}.png")
        k = cams.K[0]
        lines = [f"{k[0, 0]:.6f} {k[0, 2]:.6f} {k[1, 2]:.6f} 0.", "0. 0. 0.", "1.", f"{size} {size}"]
        (d / "intrinsics.txt").write_text("\n".join(lines) + "\n")


def test_checkpoint_mode_on_a_dataset_folder(ckpt, tmp_path, capsys, monkeypatch):
    write_srn(tmp_path / "srn", ["car1", "car2"])
    proto = write_protocol(tmp_path / "srn16.json", dataset={"format": "srn", "split": "test"}, objects=None,
                           input_views=[1], target_views="all-others", metrics={"names": ["psnr", "ssim"]},
                           sampling={"autoregressive": False})
    out = tmp_path / "srn_eval"
    assert main(["evaluate", "--checkpoint", str(ckpt), "--protocol", str(proto), "--out", str(out)]) == 2
    assert "give its folder with --data PATH" in capsys.readouterr().err
    assert main(["evaluate", "--checkpoint", str(ckpt), "--protocol", str(proto), "--out", str(out),
                 "--data", str(tmp_path / "srn"), "--device", "cpu"]) == 0
    doc = json.loads((out / "metrics.json").read_text())
    assert doc["result"]["images"] == 6 and sorted(p.name for p in (out / "gt").iterdir()) == ["car1", "car2"]
    assert sorted(p.stem for p in (out / "gt" / "car1").iterdir()) == ["000000", "000002", "000003"]
    assert Image.open(out / "gt" / "car1" / "000000.png").size == (16, 16)  # resized to the protocol's 16 px
    # the split folder itself is accepted too
    out2 = tmp_path / "srn_eval2"
    assert main(["evaluate", "--checkpoint", str(ckpt), "--protocol", str(proto), "--out", str(out2),
                 "--data", str(tmp_path / "srn" / "cars_test"), "--objects", "1"]) == 0

    import vantage.sampling.orbit as orbit

    real = orbit.autoregressive_orbit

    def broken(*args, **kwargs):  # a model that diverges
        res = real(*args, **kwargs)
        res.images[:, -1] = float("nan")
        return res

    monkeypatch.setattr(orbit, "autoregressive_orbit", broken)
    assert main(["evaluate", "--checkpoint", str(ckpt), "--protocol", str(proto), "--out", str(tmp_path / "nan"),
                 "--data", str(tmp_path / "srn"), "--objects", "1"]) == 2
    assert "NaN or infinite values for object 'car1', target view(s) [3]" in capsys.readouterr().err


def test_checkpoint_mode_with_the_interpolated_strategy(ckpt, tmp_path, capsys):
    proto = write_protocol(tmp_path / "interp.json", objects=1, metrics={"names": ["psnr"]},
                           sampling={"strategy": "interpolated", "steps": 1, "order": "alternating"})
    out = tmp_path / "eval"
    assert main(["evaluate", "--checkpoint", str(ckpt), "--protocol", str(proto), "--out", str(out)]) == 0
    doc = json.loads((out / "metrics.json").read_text())
    assert doc["run"]["strategy"] == "interpolated" and doc["result"]["images"] == 2
    with pytest.raises(ProtocolError, match="strategy"):
        protocol_from_dict({**BASE, "sampling": {"strategy": "bogus"}})


def test_overshooting_samples_are_scored_as_saved(tmp_path, capsys):
    """An EDM model's raw samples can leave [-1, 1] (its samplers do not clip x̂0; a strongly perturbed tiny GeNVS
    reaches hundreds): the evaluation scores the clamped views it saves, and the 3D consistency fit accepts them
    (it refuses out-of-range images, which once failed a whole harness evaluation)."""
    genvs = {"resolution": 16, "encoder_ch": 8, "encoder_ch_mult": [1, 2], "volume_channels": 4, "volume_depth": 8,
             "volume_resolution": 8, "mlp_hidden": 16, "feature_channels": 6, "samples_stratified": 6,
             "samples_importance": 6, "render_resolution": 8, "ch": 16, "ch_mult": [1, 2], "num_res_blocks": 1,
             "attn_resolutions": [8], "num_heads": 2, "norm_groups": 4}
    run = save_tiny_run(tmp_path / "run", "genvs", genvs, scale=0.5)
    proto = write_protocol(tmp_path / "p.json", objects=1, target_views=[6, 12, 18],
                           metrics={"names": ["psnr", "ssim"], "consistency": {"grid": 8, "iters": 3}},
                           sampling={"steps": 2})
    out = tmp_path / "eval"
    assert main(["evaluate", "--checkpoint", str(run), "--protocol", str(proto), "--out", str(out)]) == 0
    capsys.readouterr()
    doc = json.loads((out / "metrics.json").read_text())
    assert len(doc["consistency"]["per_object"]) == 1 and doc["consistency"]["mean"]["psnr"] > 0
    again = evaluate_folders(out / "pred", out / "gt", progress=False)
    assert again["mean"]["psnr"] == pytest.approx(doc["result"]["mean"]["psnr"])
