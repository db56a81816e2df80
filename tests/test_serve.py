"""`vantage serve`: the plain functions behind the page on tiny random 3DiM and ViewFusion checkpoints (image in,
views out, benchmark objects, weight maps, progress, every bad input), the command line, and one end-to-end run
in headless Chromium driven by Selenium (skipped, with the reason, where gradio, selenium, chromium or
chromedriver is missing)."""

from __future__ import annotations

import io
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from helpers import save_tiny_run
from PIL import Image

from vantage.cli.main import main
from vantage.methods import build_method
from vantage.serve import GenerateRequest, ResultStore, ServeEngine, ServeError, default_checkpoint
from vantage.train.checkpoint import save_checkpoint

pytestmark = pytest.mark.usefixtures("single_thread")

TINY = dict(resolution=16, ch=16, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(8,), num_heads=2, emb_ch=32,
            norm_groups=8, ray_octaves_origin=4, ray_octaves_dir=2, default_sampler="euler", default_steps=2)
VF_TINY = dict(resolution=16, ch=8, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(8,), norm_groups=4,
               default_steps=2, max_views=2)
CHROMIUM, CHROMEDRIVER = shutil.which("chromium") or "/usr/bin/chromium", "/usr/bin/chromedriver"


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return save_tiny_run(tmp_path_factory.mktemp("run"), "3dim", TINY, 0.02)


@pytest.fixture(scope="module")
def vf_ckpt(tmp_path_factory) -> Path:
    return save_tiny_run(tmp_path_factory.mktemp("vf_run"), "viewfusion", VF_TINY, 0.05)


@pytest.fixture(scope="module")
def photo(tmp_path_factory) -> Path:
    rgba = np.zeros((40, 60, 4), dtype=np.uint8)
    rgba[..., 0], rgba[10:30, 20:45, 3] = 200, 255  # a red box, transparent around it
    path = tmp_path_factory.mktemp("photos") / "photo.png"
    Image.fromarray(rgba, "RGBA").save(path)
    return path


@pytest.fixture
def engine(ckpt, tmp_path) -> ServeEngine:
    return ServeEngine(ckpt, device="cpu", views=3, steps=2, store=ResultStore(tmp_path / "results"))


def test_an_image_in_views_out(engine, photo):
    img, notes = engine.preview(image=photo)
    assert img.shape == (16, 16, 3) and img.dtype == np.uint8
    assert any("alpha channel" in n for n in notes) and any("default camera" in n for n in notes)
    seen: list[tuple[float, str]] = []
    res = engine.generate(GenerateRequest(image=str(photo), seed=1), progress=lambda f, m: seen.append((f, m)))
    assert [p.name for p in res.frames] == ["000.png", "001.png", "002.png"]
    assert all(Image.open(p).size == (16, 16) for p in res.frames)
    assert np.array_equal(np.asarray(Image.open(res.frames[0])), np.asarray(Image.open(res.input_image)))  # the input
    assert Image.open(res.gif).n_frames == 3 and res.weight_maps == []
    assert res.captions[0].endswith("(the input)") and "+120°" in res.captions[1] and "elevation 30°" in res.captions[1]
    fractions = [f for f, _ in seen]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert any("view 2 of 2: step 2 of 2" in m for _, m in seen)
    summary = json.loads((res.folder / "result.json").read_text())
    assert summary["generated"] == 2 and summary["steps"] == 2 and summary["strategy"] == "stochastic"
    assert res.folder.parent == engine.store.root and "3dim" in res.describe()
    # the same request again: the same views (seeded), in a new folder
    again = engine.generate(GenerateRequest(image=str(photo), seed=1))
    assert again.folder != res.folder
    assert np.array_equal(np.asarray(Image.open(again.frames[2])), np.asarray(Image.open(res.frames[2])))


def test_benchmark_objects_one_view_and_orbits(engine):
    assert engine.benchmark[:2] == ["benchmark-000000", "benchmark-000001"] and len(engine.benchmark) == 12
    img, notes = engine.preview(benchmark="benchmark-000002")
    assert img.shape == (16, 16, 3) and "ring" in notes[0]
    res = engine.generate(GenerateRequest(benchmark="benchmark-000002", views=4, sampler="heun", steps=1))
    assert len(res.frames) == 4 and sorted(res.summary["psnr"]) == ["1", "2", "3"]  # ring views are ground truth
    assert "PSNR" in res.captions[2] and "PSNR against the ground truth" in res.describe()
    one = engine.generate(GenerateRequest(benchmark="benchmark-000002", mode="view", azimuth=-45, elevation=10))
    assert len(one.frames) == 1 and one.gif is None and one.summary["generated"] == 1
    assert one.captions == ["#0: azimuth -45°, elevation 10°"] and one.summary["psnr_mean"] is None
    same = engine.generate(GenerateRequest(benchmark="benchmark-000002", mode="view", azimuth=0, elevation=30))
    assert same.summary["generated"] == 0 and "nothing was generated" in same.describe()


def test_viewfusion_weight_maps(vf_ckpt, photo, tmp_path):
    eng = ServeEngine(vf_ckpt, device="cpu", views=3, steps=2, store=ResultStore(tmp_path / "r"))
    assert eng.model_info().default_strategy == "composed"
    res = eng.generate(GenerateRequest(image=photo))
    assert res.summary["strategy"] == "composed" and len(res.weight_maps) == 2
    assert all(Image.open(p).width > 2 * 16 for p in res.weight_maps)
    with pytest.raises(ServeError, match="no classifier-free guidance"):
        eng.generate(GenerateRequest(image=photo, guidance=2.0))
    fixed = eng.generate(GenerateRequest(image=photo, strategy="interpolated", views=2))
    assert fixed.summary["order"] == "alternating" and fixed.weight_maps == []


def test_bad_inputs_are_errors_and_the_engine_keeps_working(engine, ckpt, photo, tmp_path):
    text = tmp_path / "notes.png"
    text.write_text("not an image at all")
    for bad in (text, tmp_path / "notes.txt"):
        bad.write_text("not an image at all")
        with pytest.raises(ServeError, match=f"{bad.name}: not an image"):
            engine.preview(image=bad)
    with pytest.raises(ServeError, match="no input"):
        engine.generate(GenerateRequest())
    with pytest.raises(ServeError, match="not both"):
        engine.preview(image=photo, benchmark="benchmark-000000")
    with pytest.raises(ServeError, match="unknown benchmark object"):
        engine.preview(benchmark="benchmark-999999")
    Image.new("RGB", (20, 20), "white").save(tmp_path / "blank.png")  # no object: used as it is, with a note
    assert any("no object found" in n for n in engine.preview(image=tmp_path / "blank.png")[1])
    cases = [(dict(strategy="composed"), "needs a ViewFusion checkpoint"), (dict(sampler="nope"), "unknown sampler"),
             (dict(steps=0), "steps must be in"), (dict(views=500), "number of views"),
             (dict(elevation=95.0), "elevation"), (dict(mode="spiral"), "unknown mode"),
             (dict(strategy="best"), "unknown strategy")]
    for extra, message in cases:
        with pytest.raises(ServeError, match=message):
            engine.generate(GenerateRequest(image=photo, **extra))
    # a huge photo is downscaled before anything else; a BMP is converted
    big = np.full((1800, 2600, 3), 235, dtype=np.uint8)
    big[500:1300, 900:1700] = (30, 90, 160)
    Image.fromarray(big).save(tmp_path / "huge.jpg", quality=90)
    img, notes = engine.preview(image=tmp_path / "huge.jpg")
    assert img.shape == (16, 16, 3) and any("downscaled from 2600x1800" in n for n in notes)
    Image.fromarray(big[::20, ::20]).save(tmp_path / "small.bmp")
    assert engine.preview(image=tmp_path / "small.bmp")[0].shape == (16, 16, 3)
    # checkpoints that do not load: the error names them, and the engine still serves the good one
    broken = tmp_path / "broken"
    shutil.copytree(ckpt, broken)
    weights = next(broken.glob("checkpoints/*/model.safetensors"))
    weights.write_bytes(weights.read_bytes()[:100])
    bad_config = tmp_path / "bad_config"
    shutil.copytree(ckpt, bad_config)
    next(bad_config.glob("checkpoints/*/config.json")).write_text("{not json")
    for path, message in ((tmp_path / "missing", "does not exist"), (tmp_path, "neither a run folder"),
                          (broken, "cannot load the checkpoint"), (bad_config, "not a readable vantage checkpoint")):
        with pytest.raises(ServeError, match=message):
            engine.generate(GenerateRequest(image=photo, checkpoint=path))
    assert len(engine.generate(GenerateRequest(image=photo, checkpoint=str(ckpt))).frames) == 3
    with pytest.raises(ServeError, match="no checkpoint"):
        ServeEngine(None, device="cpu").preview(image=photo)


def test_default_checkpoint_and_result_store(monkeypatch, tmp_path):
    import vantage.cli.model_demo as model_demo

    assert default_checkpoint(tmp_path) == tmp_path
    monkeypatch.setattr(model_demo, "default_model_available", lambda: False)
    with pytest.raises(ServeError, match="--checkpoint"):
        default_checkpoint(None)
    monkeypatch.setattr(model_demo, "default_model_available", lambda: True)
    assert default_checkpoint("  ") == model_demo.DEFAULT_MODEL_DIR
    (tmp_path / "s" / "000007").mkdir(parents=True)  # an existing result folder is never reused
    store = ResultStore(tmp_path / "s", keep=2)
    made = [store.new() for _ in range(3)]
    assert [p.name for p in made] == ["000008", "000009", "000010"] and not made[0].exists() and made[2].is_dir()
    store.cleanup()
    assert (tmp_path / "s" / "000007").is_dir() and not made[2].exists()
    owned = ResultStore()
    owned.new()
    owned.cleanup()
    assert not owned.root.exists()


def test_cli_serve_errors(monkeypatch, capsys, tmp_path):
    import vantage.cli.model_demo as model_demo
    import vantage.cli.serve as serve_cmd

    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))  # where a ResultStore would go
    monkeypatch.setattr(serve_cmd, "gradio_available", lambda: False)
    assert main(["serve", "--checkpoint", str(tmp_path)]) == 2
    assert 'pip install -e ".[web]"' in capsys.readouterr().err
    monkeypatch.setattr(serve_cmd, "gradio_available", lambda: True)
    monkeypatch.setattr(model_demo, "default_model_available", lambda: False)
    assert main(["serve"]) == 2
    assert "give --checkpoint RUN_DIR" in capsys.readouterr().err
    assert main(["serve", "--checkpoint", str(tmp_path / "nothing")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["serve", "--checkpoint", str(tmp_path), "--views", "1"]) == 2
    assert "--views" in capsys.readouterr().err
    assert main(["serve", "--checkpoint", str(tmp_path)]) == 2  # no checkpoint in it: the temporary folder goes
    assert "neither a run folder" in capsys.readouterr().err and not any((tmp_path / "tmp").iterdir())


def test_the_plain_functions_do_not_import_gradio():
    code = ("import sys, vantage.serve, vantage.cli.main; vantage.cli.main.build_parser(); "
            "print('gradio' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# ------------------------------------------------------------------------------------ in a browser
def _browser_or_skip():
    missing = [what for what, ok in (("chromium", os.access(CHROMIUM, os.X_OK)),
                                     ("chromedriver", os.access(CHROMEDRIVER, os.X_OK))) if not ok]
    if missing:
        pytest.skip(f"{' and '.join(missing)} not installed (apt-get install chromium chromium-driver)")
    pytest.importorskip("gradio", reason="gradio is not installed (pip install -e '.[web]')")
    pytest.importorskip("selenium", reason="selenium is not installed (pip install -e '.[webtest]')")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.read()


@pytest.mark.filterwarnings("ignore:::gradio")  # gradio's own deprecation warnings (pandas)
def test_the_page_in_a_headless_browser(ckpt, photo, tmp_path, monkeypatch):
    _browser_or_skip()
    monkeypatch.setenv("GRADIO_ANALYTICS_ENABLED", "False")
    monkeypatch.setenv("SE_OFFLINE", "true")  # selenium's driver manager must not download anything
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    from vantage.serve.app import build_app, launch

    engine = ServeEngine(ckpt, device="cpu", views=2, steps=2, store=ResultStore(tmp_path / "results"))
    app = build_app(engine)
    port = _free_port()
    launch(app, engine, port=port, block=False, quiet=True)
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--window-size=1280,1400"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        driver.get(f"http://127.0.0.1:{port}/")
        wait = WebDriverWait(driver, 30)
        text = lambda elem_id: driver.find_element(By.ID, elem_id).text  # noqa: E731
        wait.until(lambda d: "ring" in text("vantage-preview-notes"))  # the default input: a benchmark object
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#vantage-upload input[type=file]"))
        driver.find_element(By.CSS_SELECTOR, "#vantage-upload input[type=file]").send_keys(str(photo))
        wait.until(lambda d: "default camera" in text("vantage-preview-notes"))  # the photo, preprocessed
        driver.find_element(By.ID, "vantage-generate").click()
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#vantage-gallery img")) >= 2)
        wait.until(lambda d: "view(s) generated" in text("vantage-result"))
        assert "1 view(s) generated with euler x 2 steps" in text("vantage-result")
        srcs = [img.get_attribute("src") for img in driver.find_elements(By.CSS_SELECTOR, "#vantage-gallery img")]
        frames = [Image.open(io.BytesIO(_fetch(src))) for src in dict.fromkeys(srcs)]
        assert len(frames) == 2 and all(f.size == (16, 16) for f in frames)
        assert np.asarray(frames[1].convert("RGB")).std() > 0  # a generated view, not a blank
        gif_src = driver.find_element(By.CSS_SELECTOR, "#vantage-gif img").get_attribute("src")
        assert Image.open(io.BytesIO(_fetch(gif_src))).n_frames == 2
        # a file that is not an image: an error on the page, and the server keeps serving
        bad = tmp_path / "notes.png"
        bad.write_text("not an image")
        driver.find_element(By.CSS_SELECTOR, "#vantage-upload button[aria-label='Clear']").click()
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#vantage-upload input[type=file]"))
        driver.find_element(By.CSS_SELECTOR, "#vantage-upload input[type=file]").send_keys(str(bad))
        wait.until(lambda d: "notes.png: not an image" in d.find_element(By.TAG_NAME, "body").text)
        # a checkpoint that does not load: an error on the page, and the server keeps serving
        box = driver.find_element(By.CSS_SELECTOR, "#vantage-checkpoint textarea, #vantage-checkpoint input")
        box.clear()
        box.send_keys(str(tmp_path / "no-such-run") + Keys.ENTER)
        wait.until(lambda d: "checkpoint path does not exist" in d.find_element(By.TAG_NAME, "body").text)
        assert _fetch(f"http://127.0.0.1:{port}/")
        if os.environ.get("VANTAGE_SERVE_SCREENSHOT"):
            driver.save_screenshot(os.environ["VANTAGE_SERVE_SCREENSHOT"])
    finally:
        driver.quit()
        app.close()


def test_the_page_uses_a_methods_own_default_strategy(tmp_path):
    from vantage.serve.models import choose_strategy, read_model_info

    m = build_method("regression", {"resolution": 16, "ch": 16, "ch_mult": (1, 2), "num_res_blocks": 1,
                                    "attn_resolutions": (8,), "norm_groups": 8, "emb_ch": 32, "encoder_ch": 8,
                                    "image_emb_dim": 16, "pose_emb_dim": 16})
    save_checkpoint(tmp_path / "run", 1, config={**m.to_json(), "step": 1}, weights=m.state_dict(), training_state={})
    info = read_model_info(tmp_path / "run")
    assert info.default_strategy == "single"
    assert choose_strategy(info, m, "auto")[1] == "single"
    with pytest.raises(Exception, match="genvs-pooled"):
        choose_strategy(info, m, "genvs-pooled")
