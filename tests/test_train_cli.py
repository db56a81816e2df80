"""``vantage train``: --list, --dry-run, a real run with resume, and the errors a user can make."""

from __future__ import annotations

import json

import pytest
import toy_method

from vantage.cli.main import main
from vantage.train import read_stats

FAST = ["--set", "train.num_workers=0", "--set", "train.progress=false", "--set", "train.tensorboard=false"]


@pytest.fixture
def toy(monkeypatch):
    import vantage.methods as vm

    monkeypatch.setitem(vm.METHODS, toy_method.METHOD, "toy_method:ToyMethod")
    monkeypatch.setitem(vm.PRESETS, toy_method.PRESET, (toy_method.METHOD, {"resolution": 16, "channels": 4},
                                                        "test-only toy method"))


def test_list_shows_presets(toy, capsys):
    assert main(["train", "--list"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split() == ["preset", "method", "description"]
    assert "toy-tiny" in out and "test-only toy method" in out
    assert "3dim-shapes32" in out or "3dim" in out  # the real presets (or why 3dim is unavailable)


def test_help_documents_every_option(capsys):
    with pytest.raises(SystemExit) as e:
        main(["train", "--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    for opt in ("--list", "--data", "--out", "--steps", "--batch", "--device", "--set", "--dry-run", "--option",
                "--format", "torchrun", "train.lr"):
        assert opt in text, opt


def test_dry_run_prints_config_and_one_batch(toy, tmp_path, capsys):
    out = tmp_path / "never"
    assert main(["train", "toy-tiny", "--data", "synthetic", "-o", "num_objects=4", "--out", str(out),
                 "--batch", "6", "--set", "train.micro_batch=3", "--set", "channels=2", "--dry-run", *FAST]) == 0
    text = capsys.readouterr().out
    config = json.loads(text[text.index("{"):text.rindex("}") + 1])
    assert config["method"] == "toy" and config["config"]["channels"] == 2 and config["train"]["batch"] == 6
    assert config["accumulation"] == 2 and config["data"]["spec"] == "synthetic"
    assert config["data"]["options"] == {"num_objects": 4} and config["vantage_version"]
    assert "rank 0/1: micro-batch 3 x 2" in text and "cond.images (3, 1, 3, 16, 16)" in text
    assert "target.images (3, 1, 3, 16, 16)" in text
    assert not out.exists()


def test_train_a_dataset_folder_resume_and_refusals(toy, tmp_path, capsys):
    data = tmp_path / "data"
    assert main(["data", "render", "--out", str(data), "--objects", "2", "--views", "4", "--resolution", "24"]) == 0
    run = tmp_path / "run"
    args = ["train", "toy-tiny", "--data", str(data), "--out", str(run), "--batch", "2", *FAST]
    assert main([*args, "--steps", "2", "--set", "train.log_every=1"]) == 0
    out = capsys.readouterr().out
    assert "resizing them to the method's 16x16" in out
    assert [r["step"] for r in read_stats(run)] == [1, 2]
    assert (run / "loss.png").is_file() and (run / "checkpoints" / "step-000002" / "model.safetensors").is_file()
    # resume with only --out and a longer run
    assert main(["train", "--out", str(run), "--steps", "3", *FAST]) == 0
    assert "resuming" in capsys.readouterr().out and [r["step"] for r in read_stats(run)] == [1, 2, 3]
    # a change that is not allowed on resume is refused, naming the field
    assert main([*args, "--steps", "4", "--set", "train.lr=0.5"]) == 2
    err = capsys.readouterr().err
    assert "train.lr: 0.0001 -> 0.5" in err and "new --out" in err
    assert main(["train", "3dim-shapes32", "--out", str(run), "--data", "synthetic"]) == 2
    assert "holds a run of preset 'toy-tiny'" in capsys.readouterr().err


def test_user_errors(toy, tmp_path, capsys):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    assert main(["train", "toy-tiny", "--data", "synthetic", "--out", str(mine), "--steps", "1", *FAST]) == 2
    assert "does not hold a vantage training run" in capsys.readouterr().err
    assert (mine / "notes.txt").read_text() == "keep me" and sorted(p.name for p in mine.iterdir()) == ["notes.txt"]

    assert main(["train", "toy-tiny", "--data", "synthetic", "--dry-run", "--set", "widht=3"]) == 2
    err = capsys.readouterr().err
    assert "widht" in err and "channels" in err and "train.lr" not in err and "lr" in err
    assert main(["train", "toy-tiny", "--data", "synthetic", "--dry-run", "--set", "train.lrr=3"]) == 2
    assert "no training field 'lrr'" in capsys.readouterr().err
    assert main(["train", "toy-tiny", "--data", "synthetic", "--dry-run", "--set", "train.ema=fancy"]) == 2
    assert "train.ema must be one of" in capsys.readouterr().err
    assert main(["train", "nosuchpreset", "--data", "synthetic", "--dry-run"]) == 2
    assert "unknown preset or method 'nosuchpreset'" in capsys.readouterr().err

    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "readme.txt").write_text("not a dataset")
    assert main(["train", "toy-tiny", "--data", str(junk), "--dry-run"]) == 2
    assert "could not detect the dataset format" in capsys.readouterr().err
    assert main(["train", "toy-tiny", "--data", str(tmp_path / "missing"), "--dry-run"]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["train", "toy-tiny", "--data", "synthetic:nosplit", "--dry-run"]) == 2
    assert "unknown synthetic split 'nosplit'" in capsys.readouterr().err
    assert main(["train", "toy-tiny", "--data", "synthetic", "--batch", "4"]) == 2
    assert "--out RUN_DIR is required" in capsys.readouterr().err
    assert main(["train", "toy-tiny", "--data", "synthetic", "--device", "cuda:7", "--dry-run"]) == 2
    assert "--device" in capsys.readouterr().err
