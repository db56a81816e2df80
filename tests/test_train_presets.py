"""Presets that bring training defaults: layering (built-in < preset < command line), resume, checks, --list."""

from __future__ import annotations

import json

import pytest
import toy_method

import vantage.methods as vm
from vantage.cli.main import main
from vantage.train import TrainConfig
from vantage.train.config import check_train_defaults, resolve_train_config

FAST = ["--set", "train.num_workers=0", "--set", "train.progress=false", "--set", "train.tensorboard=false"]
EDM = "toy-edm"
EDM_TRAIN = {"lr": 0.002, "lr_schedule": "inv_sqrt", "lr_decay_ref": 7, "ema": "power", "ema_std": 0.1,
             "betas": (0.9, 0.99), "grad_clip": None, "batch": 4}


@pytest.fixture
def toy(monkeypatch):
    monkeypatch.setitem(vm.METHODS, toy_method.METHOD, "toy_method:ToyMethod")
    monkeypatch.setitem(vm.PRESETS, EDM, (toy_method.METHOD, {"resolution": 16, "channels": 4}, "toy, EDM2 training"))
    monkeypatch.setitem(vm.PRESET_TRAIN, EDM, check_train_defaults(EDM_TRAIN, where=f"preset '{EDM}'"))


def dry_run_config(capsys, *argv: str) -> dict:
    assert main(["train", EDM, "--data", "synthetic", "-o", "num_objects=4", "--dry-run", *FAST, *argv]) == 0
    text = capsys.readouterr().out
    return json.loads(text[text.index("{"):text.rindex("}") + 1])


def test_preset_train_defaults_are_applied(toy, capsys):
    cfg = dry_run_config(capsys)
    train = cfg["train"]
    assert (train["lr"], train["lr_schedule"], train["lr_decay_ref"], train["ema"], train["ema_std"]) == (
        0.002, "inv_sqrt", 7, "power", 0.1)
    assert train["betas"] == [0.9, 0.99] and train["grad_clip"] is None and train["batch"] == 4
    assert train["warmup"] == TrainConfig().warmup  # not in the preset: the built-in default
    sources = cfg["train_sources"]
    assert sources["lr"] == sources["ema"] == f"preset {EDM}" and "warmup" not in sources
    assert sources["num_workers"] == "override"  # FAST's --set


def test_command_line_overrides_preset_defaults(toy, capsys):
    cfg = dry_run_config(capsys, "--set", "train.lr=0.005", "--set", "ema=halflife", "--batch", "2", "--steps", "9")
    train, sources = cfg["train"], cfg["train_sources"]
    assert (train["lr"], train["ema"], train["batch"], train["duration"]) == (0.005, "halflife", 2, 9)
    assert train["lr_schedule"] == "inv_sqrt" and train["ema_std"] == 0.1  # the rest of the preset stays
    assert {k: sources[k] for k in ("lr", "ema", "batch", "duration", "lr_schedule")} == {
        "lr": "override", "ema": "override", "batch": "override", "duration": "override",
        "lr_schedule": f"preset {EDM}"}


def test_a_method_name_gets_no_preset_defaults(toy, capsys):
    assert main(["train", toy_method.METHOD, "--data", "synthetic", "-o", "num_objects=4", "--dry-run", *FAST]) == 0
    text = capsys.readouterr().out
    cfg = json.loads(text[text.index("{"):text.rindex("}") + 1])
    assert cfg["train"]["lr_schedule"] == TrainConfig().lr_schedule and cfg["train"]["ema"] == TrainConfig().ema


def test_resume_keeps_the_stored_values_when_the_preset_changes(toy, tmp_path, capsys, monkeypatch):
    run = tmp_path / "run"
    assert main(["train", EDM, "--data", "synthetic", "-o", "num_objects=4", "--out", str(run), "--steps", "2",
                 *FAST]) == 0
    stored = json.loads((run / "config.json").read_text())
    assert stored["train"]["lr"] == 0.002 and stored["train_sources"]["lr"] == f"preset {EDM}"
    # the preset changes after the run started: the resumed run keeps what it was started with
    monkeypatch.setitem(vm.PRESET_TRAIN, EDM, check_train_defaults({**EDM_TRAIN, "lr": 0.5, "ema": "decay"}))
    capsys.readouterr()
    assert main(["train", "--out", str(run), "--steps", "3", *FAST]) == 0
    assert "resuming" in capsys.readouterr().out
    resumed = json.loads((run / "config.json").read_text())
    assert (resumed["train"]["lr"], resumed["train"]["ema"], resumed["train"]["duration"]) == (0.002, "power", 3)
    assert resumed["train_sources"]["lr"] == f"preset {EDM}" and resumed["train_sources"]["duration"] == "override"
    # naming the preset again changes nothing either
    assert main(["train", EDM, "--data", "synthetic", "--out", str(run), "--steps", "4", *FAST]) == 0
    assert json.loads((run / "config.json").read_text())["train"]["lr"] == 0.002
    # a stored train config that lacks a field (older vantage) still resumes: the field takes its built-in default
    old = json.loads((run / "config.json").read_text())
    del old["train"]["lr_min_ratio"], old["train_sources"]
    (run / "config.json").write_text(json.dumps(old))
    assert main(["train", "--out", str(run), "--steps", "5", *FAST]) == 0
    again = json.loads((run / "config.json").read_text())
    assert again["train"]["lr_min_ratio"] == TrainConfig().lr_min_ratio and again["train"]["lr"] == 0.002
    assert again["train_sources"] == {"duration": "override", "num_workers": "override", "progress": "override",
                                      "tensorboard": "override"}


def test_resolve_train_config_layers():
    preset = {"lr": 0.01, "ema": "power"}
    cfg, sources = resolve_train_config({"lr": 0.02, "batch": 8}, preset_defaults=preset, preset="p")
    assert (cfg.lr, cfg.ema, cfg.batch, cfg.lr_schedule) == (0.02, "power", 8, TrainConfig().lr_schedule)
    assert sources == {"batch": "override", "ema": "preset p", "lr": "override"}
    stored = {"train": {**TrainConfig(lr=0.003).to_dict(), "ema": "decay"}, "train_sources": {"ema": "preset p"}}
    del stored["train"]["ema_std"]
    cfg, sources = resolve_train_config({"duration": 5}, preset_defaults=preset, stored=stored, preset="p")
    assert (cfg.lr, cfg.ema, cfg.ema_std, cfg.duration) == (0.003, "decay", TrainConfig().ema_std, 5)
    assert sources == {"duration": "override", "ema": "preset p"}


def test_bad_train_defaults_are_refused_at_registration(monkeypatch):
    monkeypatch.setattr(vm, "PRESETS", dict(vm.PRESETS))
    monkeypatch.setattr(vm, "PRESET_TRAIN", dict(vm.PRESET_TRAIN))
    with pytest.raises(ValueError, match=r"preset 'bad-one': unknown training field\(s\) \['lrr'\]") as e:
        vm.register_preset("bad-one", "3dim", {}, "bad", train={"lr": 1e-3, "lrr": 2})
    assert "lr_schedule" in str(e.value)  # the known fields are listed
    with pytest.raises(ValueError, match=r"preset 'bad-two': bad train default: train\.ema must be one of"):
        vm.register_preset("bad-two", "3dim", {}, "bad", train={"ema": "fancy"})
    with pytest.raises(ValueError, match=r"preset 'bad-three'.*train\.lr_decay_ref"):
        vm.register_preset("bad-three", "3dim", {}, "bad", train={"lr_decay_ref": "soon"})
    assert not {"bad-one", "bad-two", "bad-three"} & (set(vm.PRESETS) | set(vm.PRESET_TRAIN))
    vm.register_preset("good", "3dim", {}, "good", train={"betas": [0.9, 0.99]})
    assert vm.PRESET_TRAIN["good"] == {"betas": (0.9, 0.99)}


def test_list_shows_training_defaults(toy, capsys):
    assert main(["train", "--list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    i = next(i for i, line in enumerate(lines) if line.startswith(EDM + " "))
    assert lines[i + 1].split(":", 1)[0].strip() == "training defaults"
    assert "lr=0.002" in lines[i + 1] and "lr_schedule=inv_sqrt" in lines[i + 1] and "betas=[0.9,0.99]" in lines[i + 1]
    j = next(i for i, line in enumerate(lines) if line.startswith("vivid-shapes32 "))
    assert "ema=power" in lines[j + 1] and "lr_schedule=inv_sqrt" in lines[j + 1]
    k = next(i for i, line in enumerate(lines) if line.startswith("3dim-shapes32 "))
    assert "training defaults" not in lines[k + 1]
    assert any("--set train.FIELD=VALUE override them" in line for line in lines)


def test_shipped_presets_training_defaults():
    presets = vm.all_presets()
    assert set(vm.PRESET_TRAIN) <= set(presets)
    for name, values in vm.PRESET_TRAIN.items():
        check_train_defaults(values, where=name)
    # the default model's preset trains with the built-in defaults (runs/r1 and the documented command rely on it)
    assert vm.preset_train_defaults("3dim-shapes32") == {}
    for name in ("vivid-shapes32", "vivid-shapes64", "vivid-re10k64", "vivid-uncond", "vivid-sr256"):
        t = vm.preset_train_defaults(name)
        assert (t["lr_schedule"], t["ema"], t["betas"], t["grad_clip"]) == ("inv_sqrt", "power", (0.9, 0.99), None)
        assert t["ema_std"] in (0.05, 0.10) and t["lr_decay_ref"] >= 1
    assert vm.preset_train_defaults("vivid-re10k64")["batch"] == 1024
