"""bench/ship_default_model.py: the shipped files, the size limit, and a TRAINING.md command that rebuilds
the run's exact configuration (running it on the run resumes it: nothing differs)."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest
from helpers import load_bench_script

from vantage.cli.main import main

pytestmark = pytest.mark.usefixtures("single_thread")

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "ship_default_model.py"
TINY = ["--set", "resolution=16", "--set", "ch=16", "--set", "ch_mult=[1,2]", "--set", "attn_resolutions=[8]",
        "--set", "num_heads=2", "--set", "emb_ch=32", "--set", "norm_groups=8", "--set", "pose_mode=absolute"]


def _ship_module():
    return load_bench_script("ship_default_model")


def test_ship_writes_the_files_and_a_command_that_rebuilds_the_run(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "3dim-shapes32", "--data", "synthetic", "--out", str(run), "--steps", "1", "--batch", "2",
                 *TINY, "--set", "train.lr=3e-4", "--set", "train.precision=bf16", "--set", "train.warmup=0",
                 "--set", "train.progress=false", "--set", "train.tensorboard=false"]) == 0
    ship = _ship_module()
    assets = tmp_path / "assets"
    ship.main([str(run), "--hardware", "test machine", "--assets", str(assets)])
    assert sorted(p.name for p in assets.iterdir()) == ["TRAINING.md", "config.json", "loss.png", "model.safetensors",
                                                        "stats.jsonl"]
    text = (assets / "TRAINING.md").read_text()
    assert "test machine" in text and "step 1" in text
    cmd = next(line for line in text.splitlines() if line.startswith("vantage train"))
    assert "--set pose_mode=absolute" in cmd and "--set train.lr=0.0003" in cmd and "--set prediction" not in cmd
    capsys.readouterr()
    # the rebuilt command on the same run folder: the stored config and the command's agree, nothing to do
    argv = shlex.split(cmd)[1:]
    argv[argv.index("--out") + 1] = str(run)
    assert main(argv) == 0
    assert "nothing to do" in capsys.readouterr().out
    # an existing default model is not replaced without --overwrite; a non-3DiM run is refused
    with pytest.raises(SystemExit, match="--overwrite"):
        ship.main([str(run), "--assets", str(assets)])
    # sampling defaults set at shipping: checked, written to the shipped config, said in TRAINING.md
    other = tmp_path / "assets2"
    ship.main([str(run), "--assets", str(other), "--sampling", "default_sampler=euler_ancestral",
               "--sampling", 'default_sampler_options={"s_noise":0.7}'])
    shipped = json.loads((other / "config.json").read_text())["config"]
    assert shipped["default_sampler"] == "euler_ancestral" and shipped["default_sampler_options"] == {"s_noise": 0.7}
    assert "set at shipping with `--sampling`: default_sampler, default_sampler_options" in \
        (other / "TRAINING.md").read_text()
    from vantage.train.checkpoint import load_checkpoint

    assert load_checkpoint(other).config.default_sampler_options == {"s_noise": 0.7}
    for bad, msg in ((["--sampling", "ch=8"], "sets only"),
                     (["--sampling", "default_sampler=ddpm", "--sampling", 'default_sampler_options={"s_noise":0.7}'],
                      "has no option 's_noise'")):
        with pytest.raises(SystemExit, match=msg):
            ship.main([str(run), "--assets", str(tmp_path / "bad"), *bad])
    cfg = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**cfg, "method": "viewfusion"}))
    with pytest.raises(SystemExit, match="3DiM run"):
        ship.main([str(run), "--assets", str(tmp_path / "other"), "--overwrite"])


def test_the_rebuilt_command_accounts_for_a_presets_training_defaults():
    """A value equal to the preset's training default needs no --set; one that differs from it does, even when
    it equals the trainer's built-in default."""
    from vantage.methods import preset_train_defaults
    from vantage.train import TrainConfig

    ship = _ship_module()
    preset = "vivid-shapes32"
    given = preset_train_defaults(preset)
    assert given["lr"] != TrainConfig().lr  # else this test checks nothing
    train = {**vars(TrainConfig()), **given, "duration": 10, "batch": 4}
    config = {"method": "vivid", "preset": preset, "data": {"spec": "synthetic"}, "config": {}, "train": train}
    assert "train.lr=" not in ship.train_command(config)
    config["train"] = {**train, "lr": TrainConfig().lr}
    assert f"--set train.lr={TrainConfig().lr}" in ship.train_command(config)


def test_the_rebuilt_command_in_a_fresh_process_knows_the_presets(tmp_path):
    """The preset registry fills as method modules are imported; the ship script alone must still see the preset
    (else every config field would come out as a --set)."""
    import subprocess
    import sys

    from vantage.methods import build_method

    cfg = {"method": "3dim", "preset": "3dim-shapes32", "data": {"spec": "synthetic"},
           "config": build_method("3dim-shapes32").to_json()["config"], "train": {"duration": 5, "batch": 4}}
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg))
    code = (f"import sys, json; sys.path.insert(0, {str(SCRIPT.parent)!r}); import ship_default_model as s; "
            f"print(s.train_command(json.load(open({str(path)!r}))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "vantage train 3dim-shapes32 --data synthetic --out RUN_DIR --steps 5 --batch 4", out
