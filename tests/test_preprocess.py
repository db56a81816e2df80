"""`vantage preprocess` and :mod:`vantage.preprocess`: masks (alpha, uniform-background threshold, matting
backends), framing (centred, scaled to the object fraction, composited), the parameters JSON that repeats a
run, warnings and errors, the CLI, and `vantage sample`'s input loader using it. Test images are drawn here:
an off-centre object with antialiased edges on a uniform noisy background, RGBA cut-outs, a huge image."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from vantage.cli.main import main
from vantage.preprocess import (
    MATTING_BACKENDS,
    SYNTHETIC_OBJECT_FRACTION,
    MattingBackend,
    NoObjectError,
    PreprocessError,
    preprocess_image,
    reapply_preprocess,
)
from vantage.preprocess.mask import fill_holes, label_components, threshold_mask
from vantage.sampling.inputs import load_input, load_inputs

pytestmark = pytest.mark.usefixtures("single_thread")

BG = (0.85, 0.86, 0.88)


def scene(h: int = 200, w: int = 260, cy: float = 120, cx: float = 170, *, noise: float = 0.02, seed: int = 0,
          bg=BG, ss: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """``(image (h, w, 3) float in [0, 1], true mask (h, w))``: an ellipse and a box in two colours (with a
    near-background spot inside, a hole to fill) centred near ``(cx, cy)``, edges antialiased by
    ``ss``-times supersampling, Gaussian noise of std ``noise``."""
    yy, xx = np.mgrid[:h * ss, :w * ss] / ss
    ell = ((yy - cy) / 40) ** 2 + ((xx - cx) / 28) ** 2 < 1
    box = (np.abs(yy - (cy - 35)) < 18) & (np.abs(xx - (cx + 20)) < 30)
    col = np.empty((h * ss, w * ss, 3))
    col[:] = bg
    col[ell], col[box] = (0.75, 0.25, 0.15), (0.2, 0.4, 0.7)
    col[(np.abs(yy - cy - 10) < 6) & (np.abs(xx - cx) < 6)] = (bg[0] + 0.01, bg[1] + 0.01, bg[2])
    truth = (ell | box).reshape(h, ss, w, ss).mean((1, 3)) > 0.5
    img = col.reshape(h, ss, w, ss, 3).mean((1, 3))
    img = img + np.random.default_rng(seed).normal(0, noise, img.shape)
    return np.clip(img, 0, 1).astype(np.float32), truth


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


def bbox(mask: np.ndarray) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(mask)
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def save_uint8(img: np.ndarray, path) -> None:
    Image.fromarray((img * 255).round().astype(np.uint8)).save(path)


# ------------------------------------------------------------------------------------------------ masks
def test_components_and_holes():
    m = np.zeros((7, 9), dtype=bool)
    m[1, 1] = m[2, 2] = True  # diagonal neighbours: one component with 8-connectivity, two with 4
    m[1:6, 4:8] = True
    m[3, 5:7] = False  # a hole inside the block
    labels, areas = label_components(m, 8)
    assert len(areas) == 2 and sorted(areas.tolist()) == [2, 18] and labels[1, 1] == labels[2, 2] == 1
    assert len(label_components(m, 4)[1]) == 3
    assert (label_components(np.zeros((3, 3), bool))[1]).size == 0
    filled = fill_holes(m)
    assert filled[3, 5] and filled[3, 6] and not filled[0, 0] and filled.sum() == m.sum() + 2
    assert np.array_equal(fill_holes(m, max_area=1), m)  # the 2-pixel hole is larger than allowed
    ndimage = pytest.importorskip("scipy.ndimage")  # cross-check on random masks where scipy is installed
    rng = np.random.default_rng(1)
    for _ in range(20):
        r = rng.random(tuple(rng.integers(1, 30, 2))) < rng.random()
        for conn, st in ((8, np.ones((3, 3))), (4, None)):
            lab, areas = label_components(r, conn)
            ref, n = ndimage.label(r, structure=st)
            assert len(areas) == n and len(set(zip(lab[r].tolist(), ref[r].tolist()))) == n
        assert np.array_equal(fill_holes(r), ndimage.binary_fill_holes(r))


@pytest.mark.parametrize("noise", [0.0, 0.03])
def test_threshold_mask_matches_the_drawn_object(noise):
    img, truth = scene(noise=noise)
    mask, info = threshold_mask(img)
    assert iou(mask, truth) > 0.95 and info["uniform"] and info["holes_filled"] > 0
    assert np.allclose(info["background_estimate"], BG, atol=0.01)
    # repeating with the estimated colour and threshold gives the same mask
    again, _ = threshold_mask(img, background=info["background_estimate"], threshold=info["threshold"])
    assert np.array_equal(again, mask)


def test_large_holes_stay_background():
    h = w = 120
    yy, xx = np.mgrid[:h, :w]
    r = np.hypot(yy - 60, xx - 60)
    img = np.full((h, w, 3), 0.9, dtype=np.float32)
    img[(r < 40) & (r > 18)] = (0.2, 0.3, 0.8)  # a ring: its hole is background seen through the object
    img[(r < 32) & (r > 26) & (np.abs(yy - 60) < 3) & (xx < 60)] = (0.91, 0.9, 0.9)  # a background-coloured detail
    mask, info = threshold_mask(img)
    assert not mask[60, 60] and mask[60, 29] and info["holes_filled"] > 0


# ------------------------------------------------------------------------------------------------ framing
def test_object_is_centred_scaled_and_composited():
    img, truth = scene()
    out, info = preprocess_image(img, 64, 0.6)
    assert out.shape == (3, 64, 64) and out.min() >= -1 and out.max() <= 1
    assert info["mask"]["source"] == "threshold" and info["warnings"] == [] and info["touches_border"] == []
    x0, y0, x1, y1 = info["bbox"]
    t = bbox(truth)
    assert all(abs(a - b) <= 1 for a, b in zip((x0, y0, x1, y1), t))
    m = info.mask[0].numpy() > 0.5
    bx0, by0, bx1, by1 = bbox(m)
    assert abs((bx0 + bx1) / 2 - 32) <= 1 and abs((by0 + by1) / 2 - 32) <= 1  # centred
    assert abs(max(bx1 - bx0, by1 - by0) - 0.6 * 64) <= 2  # scaled to the object fraction
    background = ~torch.from_numpy(fill_holes(info.mask[0].numpy() > 0))
    assert torch.allclose(out[:, background], torch.ones(3, int(background.sum())), atol=1e-5)  # on white
    assert info["scale"] == pytest.approx(64 / info["crop"][2])
    json.dumps(info)  # JSON-able as it is
    # the original object colours survive inside
    assert out[:, by0 + 3:by1 - 3, bx0 + 3:bx1 - 3].std() > 0.2
    grey, _ = preprocess_image(img, 48, background=(0.5, 0.5, 0.5))
    assert torch.allclose(grey[:, 0, 0], torch.zeros(3), atol=1e-6)  # (0.5 * 2 - 1)
    assert abs(max(np.ptp(np.nonzero(_.mask[0].numpy() > 0.5)[k]) + 1 for k in (0, 1))
               - SYNTHETIC_OBJECT_FRACTION * 48) <= 2


def test_rgba_image_uses_its_alpha(tmp_path):
    h, w = 90, 120
    rng = np.random.default_rng(0)
    rgba = np.zeros((h, w, 4), dtype=np.uint8)
    rgba[..., :3] = rng.integers(0, 256, (h, w, 3))  # garbage colour under full transparency
    rgba[20:50, 70:110, :3] = (30, 160, 60)
    rgba[20:50, 70:110, 3] = 255
    rgba[19, 70:110, :3], rgba[19, 70:110, 3] = (30, 160, 60), 100  # a faint edge
    path = tmp_path / "cutout.png"
    Image.fromarray(rgba, "RGBA").save(path)
    out, info = preprocess_image(path, 32, 0.5)
    assert info["mask"] == {"source": "alpha"} and info["bbox"] == [70, 20, 110, 50]
    m = info.mask[0].numpy()
    corners = out[:, [0, 0, -1, -1], [0, -1, 0, -1]]
    assert torch.allclose(corners, torch.ones_like(corners), atol=1e-5)  # the background, not the garbage
    assert np.allclose(out[:, 16, 16].numpy(), np.array([30, 160, 60]) / 127.5 - 1, atol=1e-5)
    assert abs(max(bbox(m > 0.5)[2] - bbox(m > 0.5)[0], bbox(m > 0.5)[3] - bbox(m > 0.5)[1]) - 16) <= 1
    with pytest.raises(PreprocessError, match="no alpha channel"):
        preprocess_image(rgba[..., :3], 32, matting="alpha")
    rgba[..., 3] = 0
    with pytest.raises(NoObjectError, match="transparent"):
        preprocess_image(rgba, 32)


def test_warnings_and_errors(tmp_path):
    img, _ = scene(cx=25)  # the ellipse reaches past the left border
    _, info = preprocess_image(img, 32)
    assert info["touches_border"] == ["left"] and any("cropped" in w for w in info["warnings"])
    uniform = np.full((40, 50, 3), 0.3, dtype=np.float32)
    with pytest.raises(NoObjectError, match="no object found"):
        preprocess_image(uniform, 32, name="flat.png")
    noisy = np.clip(uniform + np.random.default_rng(0).normal(0, 0.05, uniform.shape), 0, 1)
    with pytest.raises(NoObjectError, match="flat"):
        preprocess_image(noisy, 32, name="flat")
    fake = tmp_path / "notes.png"
    fake.write_text("not an image")
    with pytest.raises(PreprocessError, match=r"notes\.png: cannot read as an image"):
        preprocess_image(fake, 32)
    text = tmp_path / "x.txt"
    text.write_text("hi")
    with pytest.raises(PreprocessError, match=r"x\.txt: cannot read"):
        preprocess_image(text, 32)
    with pytest.raises(FileNotFoundError, match="missing.png"):
        preprocess_image(tmp_path / "missing.png", 32)
    with pytest.raises(PreprocessError, match="folder"):
        preprocess_image(tmp_path, 32)
    with pytest.raises(PreprocessError, match=r"\(H, W, 3\)"):
        preprocess_image(np.zeros((4, 4)), 32)
    with pytest.raises(ValueError, match="object_fraction"):
        preprocess_image(img, 32, 1.5)
    small = np.full((40, 40, 3), 0.9, dtype=np.float32)
    small[15:25, 15:25] = (0.1, 0.2, 0.3)
    _, info = preprocess_image(small, 128)  # a 10-pixel object upscaled 8x
    assert any("blurry" in w for w in info["warnings"])


def test_huge_image_is_downscaled_first():
    h, w = 2400, 3000
    yy, xx = np.ogrid[:h, :w]
    img = np.full((h, w, 3), 235, dtype=np.uint8)
    img[((yy - 1000) / 500.0) ** 2 + ((xx - 1900) / 700.0) ** 2 < 1] = (40, 90, 160)
    out, info = preprocess_image(img, 64)
    assert info["size"] == [w, h] and max(info["work_size"]) == 1024 and info["work_scale"] < 0.35
    x0, y0, x1, y1 = info["bbox_original"]
    assert abs(x0 - 1200) < 8 and abs(x1 - 2600) < 8 and abs(y0 - 500) < 8 and abs(y1 - 1500) < 8
    m = info.mask[0].numpy() > 0.5
    bx0, _, bx1, _ = bbox(m)
    assert abs((bx0 + bx1) / 2 - 32) <= 1 and abs(bx1 - bx0 - SYNTHETIC_OBJECT_FRACTION * 64) <= 2


def test_parameters_repeat_the_output(tmp_path):
    img, _ = scene(noise=0.03, seed=4)
    path = tmp_path / "obj.png"
    save_uint8(img, path)
    out, info = preprocess_image(path, 40, 0.7, (0.9, 0.9, 0.9))
    params = json.loads(json.dumps(info))
    again, info2 = reapply_preprocess(path, params)
    assert torch.equal(again, out) and torch.equal(info2.mask, info.mask) and info2["crop"] == info["crop"]
    small, info = preprocess_image(img, 64, 0.05)  # a crop far larger than the image: shrunk before padding
    assert info["crop"][2] > 1024 and torch.equal(reapply_preprocess(img, json.loads(json.dumps(info)))[0], small)
    x0, y0, x1, y1 = bbox(info.mask[0].numpy() > 0.5)
    assert abs((x0 + x1) / 2 - 32) <= 1 and abs((y0 + y1) / 2 - 32) <= 1
    rgba = np.zeros((30, 40, 4), dtype=np.uint8)
    rgba[5:20, 10:30] = (200, 10, 10, 255)
    a_out, a_info = preprocess_image(rgba, 24)
    assert torch.equal(reapply_preprocess(rgba, json.loads(json.dumps(a_info)))[0], a_out)
    with pytest.raises(PreprocessError, match="made for a 260x200 image"):
        reapply_preprocess(rgba, params)
    with pytest.raises(PreprocessError, match="not vantage preprocess parameters"):
        reapply_preprocess(path, {"crop": [0, 0, 1]})


def test_matting_backends(monkeypatch):
    img, truth = scene(noise=0.0)
    rembg = MATTING_BACKENDS["rembg"]
    reason = rembg.unavailable()
    if reason is not None:  # this machine: rembg or its model file is missing; never downloaded
        assert "not installed" in reason or "missing" in reason
        with pytest.raises(PreprocessError, match="--matting rembg is not available"):
            preprocess_image(img, 32, matting="rembg")
    # a pluggable backend: here one that knows the true mask
    monkeypatch.setitem(MATTING_BACKENDS, "oracle", MattingBackend(
        "oracle", lambda photo: truth.astype(np.float32), lambda: None, lambda: "oracle:v1"))
    out, info = preprocess_image(img, 32, matting="oracle")
    assert info["mask"]["source"] == "oracle" and info["mask"]["model"] == "oracle:v1"
    assert info["bbox"] == list(bbox(truth))
    # auto on a cluttered background: not uniform; without a backend a warning says so
    gone = MattingBackend("rembg", rembg.run, lambda: "not here", rembg.describe)
    monkeypatch.setitem(MATTING_BACKENDS, "rembg", gone)
    clutter = np.random.default_rng(0).random((80, 80, 3)).astype(np.float32)
    clutter[20:60, 20:60] = (0.1, 0.9, 0.1)
    _, info = preprocess_image(clutter, 32)
    assert not info["mask"]["uniform"] and any("not uniform" in w and "not here" in w for w in info["warnings"])


# ------------------------------------------------------------------------------------------------ CLI
def test_cli_end_to_end(tmp_path, capsys):
    img, _ = scene()
    a, b = tmp_path / "a.png", tmp_path / "b.jpg"
    save_uint8(img, a)
    edge, _ = scene(cx=25, noise=0.01)
    save_uint8(edge, b)
    out = tmp_path / "out"
    assert main(["preprocess", str(a), str(b), "--out", str(out), "--resolution", "32"]) == 0
    said = capsys.readouterr().out
    assert "uniform-background threshold" in said and "warning:" in said and "cropped" in said
    assert sorted(p.name for p in out.iterdir()) == ["a.json", "a.png", "a_mask.png", "b.json", "b.png", "b_mask.png"]
    pa = json.loads((out / "a.json").read_text())
    assert pa["resolution"] == 32 and pa["object_fraction"] == SYNTHETIC_OBJECT_FRACTION
    assert pa["files"] == {"image": "a.png", "mask": "a_mask.png"} and len(pa["bbox"]) == 4
    assert np.asarray(Image.open(out / "a.png")).shape == (32, 32, 3)
    assert np.asarray(Image.open(out / "a_mask.png")).shape == (32, 32)
    # the parameters repeat the run exactly
    again = tmp_path / "again"
    assert main(["preprocess", str(a), str(b), "--out", str(again), "--params", str(out)]) == 0
    for name in ("a.png", "b.png", "a_mask.png"):
        assert np.array_equal(np.asarray(Image.open(out / name)), np.asarray(Image.open(again / name)))
    capsys.readouterr()
    # never overwrite without --overwrite; nothing is created when an image fails
    assert main(["preprocess", str(a), "--out", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    flat = tmp_path / "flat.png"
    Image.new("RGB", (20, 20), (90, 90, 90)).save(flat)
    assert main(["preprocess", str(a), str(flat), "--out", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err
    assert "flat.png" in err and "no object" in err and not (tmp_path / "none").exists()
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"\x89PNG garbage")
    assert main(["preprocess", str(junk), "--out", str(tmp_path / "j")]) == 2
    assert "junk.png: cannot read" in capsys.readouterr().err
    assert main(["preprocess", str(a), str(tmp_path / "a.jpg"), "--out", str(tmp_path / "dup")]) == 2
    assert "rename" in capsys.readouterr().err
    assert main(["preprocess", str(a), "--out", str(tmp_path / "p"), "--params", str(out), "--resolution", "8"]) == 2
    assert "leave out --resolution" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["preprocess", str(a), "--out", str(tmp_path / "bg"), "--background", "pink"])
    capsys.readouterr()
    # settings from a checkpoint's config.json (a config without object_fraction: the synthetic framing)
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"method": "3dim", "config": {"resolution": 24},
                                                 "data": {"spec": "path/to/cars"}}))
    black = tmp_path / "black"
    assert main(["preprocess", str(a), "--out", str(black), "--checkpoint", str(run), "--background", "0,0,0"]) == 0
    said = capsys.readouterr().out
    assert "object fraction 0.63" in said and "path/to/cars" in said
    arr = np.asarray(Image.open(black / "a.png"))
    assert arr.shape == (24, 24, 3) and (arr[0, 0] == 0).all()


# ------------------------------------------------------------------------------------------------ sampling
def test_sample_inputs_are_preprocessed(tmp_path):
    img, _ = scene()
    path = tmp_path / "photo.png"
    save_uint8(img, path)
    inp = load_input(path, 32)
    assert len(inp.preprocessing) == 1 and inp.preprocessing[0]["mask"]["source"] == "threshold"
    assert any(n.startswith("preprocessed the image") for n in inp.notes)
    assert any("resized the input image from 260x200" in n for n in inp.notes)
    assert inp.views.images.shape == (1, 3, 32, 32) and inp.views.masks.shape == (1, 1, 32, 32)
    assert inp.views.meta["preprocess"]["crop"] == inp.preprocessing[0]["crop"]
    m = inp.views.masks[0, 0].numpy() > 0.5
    x0, y0, x1, y1 = bbox(m)
    assert abs((x0 + x1) / 2 - 16) <= 1 and abs((y0 + y1) / 2 - 16) <= 1
    assert inp.views.cameras.width == 32 and not inp.posed
    plain = load_input(path, 32, preprocess=False)
    assert plain.preprocessing == [] and not any("preprocessed" in n for n in plain.notes)
    assert not torch.equal(plain.views.images, inp.views.images)
    flat = tmp_path / "flat.png"
    Image.new("RGB", (32, 32), (200, 30, 30)).save(flat)
    one = load_input(flat, 32)  # nothing to frame: used as it is, with a note
    assert one.preprocessing == [] and any("no object found" in n for n in one.notes)
    assert np.array_equal(np.asarray(Image.open(flat)), ((one.views.images[0] + 1) * 127.5).round().byte()
                          .permute(1, 2, 0).numpy())
    both = load_inputs([path, flat], 32, object_fraction=0.5)
    assert len(both.preprocessing) == 1 and both.preprocessing[0]["object_fraction"] == 0.5
    assert any(n.startswith("photo.png: preprocessed") for n in both.notes)
