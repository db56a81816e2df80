"""Frame a user's photo the way the training views were framed: :func:`preprocess_image`.

Steps (each recorded in the returned ``info``, which :func:`reapply_preprocess` replays exactly):

1. **Read** (a path, a PIL image or an ``(H, W, 3|4)`` array). Straight alpha is premultiplied.
   An image larger than ``max_side`` (1024) on its longer side is first downscaled (antialiased, on
   premultiplied colour) to that size: every later step works on this *working image* (``work_size``).
2. **Mask** (``matting``): ``alpha`` uses the image's alpha channel; ``threshold`` finds the object on a
   near-uniform background (:func:`vantage.preprocess.mask.threshold_mask`: border median colour, MAD
   threshold, largest component, holes up to 5% of its area filled); a registered backend (``rembg``)
   runs a matting model.
   ``auto`` takes the alpha channel when there is a meaningful one (not all opaque), else thresholding
   when the background is near-uniform, else the rembg backend when it is available, else thresholding
   with a warning.
3. **Frame**: the mask's bounding box (``bbox``, working pixels, end exclusive) is centred in a square
   crop whose side is ``max(bbox width, bbox height) / object_fraction`` (``crop = [left, top, side]``,
   rounded to whole working pixels: the centre is exact to half a working pixel). Parts of the crop
   outside the image are background.
4. **Composite** the object on ``background`` (the training background; RGB in [0, 1]): with the image's
   own alpha for ``alpha``, with the mask otherwise; then **resize** the crop to ``resolution`` (bilinear,
   antialiased).

``object_fraction`` is the longest side of the object's bounding box over the image side. vantage's
synthetic data (:mod:`vantage.data.synthetic`: objects in a ball of radius 0.55-0.8, cameras at distance
2.5 with a 40° field of view) has a median of **0.63** (:data:`SYNTHETIC_OBJECT_FRACTION`; measured over
400 training objects x 4 ring views at 128 px: 10%-90% range 0.52-0.77; the hemisphere layout gives
0.625), and its objects are centred to within 3% of the frame. The background there is white.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from vantage.data.formats.common import DatasetError
from vantage.preprocess.mask import largest_component, threshold_mask
from vantage.preprocess.matting import MATTING_BACKENDS, get_matting

__all__ = ["preprocess_image", "reapply_preprocess", "PreprocessError", "NoObjectError", "PreprocessInfo",
           "read_image", "SYNTHETIC_OBJECT_FRACTION", "MAX_SIDE", "MASK_SOURCES", "describe"]

#: Median object fraction of vantage's synthetic training views (see the module docstring).
SYNTHETIC_OBJECT_FRACTION: float = 0.63
#: Longer side above which an image is downscaled before anything else.
MAX_SIDE: int = 1024
#: ``matting`` values besides registered backends.
MASK_SOURCES: tuple[str, ...] = ("auto", "threshold", "alpha")
_OPAQUE = 0.99  # an alpha channel with every pixel above this carries no mask
_FORMAT = 1


class PreprocessError(DatasetError):
    """An image that cannot be preprocessed; the message names it and says what was expected."""


class NoObjectError(PreprocessError):
    """No object was found in the image (empty mask)."""


class PreprocessInfo(dict):
    """The parameters and findings of one :func:`preprocess_image` call: a plain dict of JSON values
    (``json.dumps`` writes it), plus ``.mask``: the output-aligned mask ``(1, R, R)`` in [0, 1]."""

    mask: Tensor


def read_image(img: Any, name: str | None = None) -> tuple[np.ndarray, np.ndarray | None, str]:
    """``(rgb (H, W, 3) float32 in [0, 1] straight, alpha (H, W) or None, name)`` of a path, PIL image or
    ``(H, W, 3|4)`` uint8 / float-in-[0, 1] array; errors name the file and what was expected."""
    if isinstance(img, (str, Path)):
        path = Path(img)
        name = name or str(path)
        if not path.exists():
            raise FileNotFoundError(f"input not found: {path}")
        if not path.is_file():
            raise PreprocessError(f"{path}: is a folder, expected an image file (png, jpg, webp, ...)")
        try:
            with Image.open(path) as im:
                if max(im.size) > 4 * MAX_SIDE and im.format == "JPEG":
                    im.draft("RGB", tuple(math.ceil(s * 2 * MAX_SIDE / max(im.size)) for s in im.size))
                im.load()
                return (*_from_pil(im), name)
        except (OSError, ValueError, Image.DecompressionBombError, SyntaxError) as e:
            raise PreprocessError(f"{path}: cannot read as an image ({e})") from None
    name = name or "<image>"
    if isinstance(img, Image.Image):
        return (*_from_pil(img), name)
    arr = np.asarray(img)
    if arr.ndim != 3 or arr.shape[-1] not in (3, 4) or min(arr.shape[:2]) < 1:
        raise PreprocessError(f"{name}: expected an (H, W, 3) or (H, W, 4) image array, got shape {arr.shape}")
    arr = np.multiply(arr, 1 / 255, dtype=np.float32) if arr.dtype == np.uint8 else arr.astype(np.float32)
    if not np.isfinite(arr).all() or arr.min() < 0 or arr.max() > 1:
        raise PreprocessError(f"{name}: a float image array must hold values in [0, 1]")
    return arr[..., :3], (arr[..., 3] if arr.shape[-1] == 4 else None), name


def _from_pil(im: Image.Image) -> tuple[np.ndarray, np.ndarray | None]:
    has_alpha = im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (im.mode == "P" and "transparency" in im.info)
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        grey = np.asarray(im, dtype=np.float32) / 65535.0
        return np.repeat(grey[..., None], 3, -1).clip(0, 1), None
    if not has_alpha:
        return np.multiply(np.asarray(im.convert("RGB")), 1 / 255, dtype=np.float32), None
    rgba = np.multiply(np.asarray(im.convert("RGBA")), 1 / 255, dtype=np.float32)
    return rgba[..., :3], rgba[..., 3]


def _resize(x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``(H, W, C)`` float32 -> ``(size[1], size[0], C)``: bilinear, antialiased (as ``resize_maps``)."""
    if x.shape[1] == size[0] and x.shape[0] == size[1]:
        return x
    t = torch.from_numpy(np.ascontiguousarray(x)).permute(2, 0, 1)[None]
    t = F.interpolate(t, size=(size[1], size[0]), mode="bilinear", align_corners=False, antialias=True)
    return t[0].permute(1, 2, 0).numpy()


def _work_size(w: int, h: int, max_side: int) -> tuple[int, int]:
    if max(w, h) <= max_side:
        return w, h
    f = max_side / max(w, h)
    return max(1, round(w * f)), max(1, round(h * f))


def _mask(photo: np.ndarray, alpha: np.ndarray | None, source: str, name: str, fixed: dict | None,
          warnings: list[str]) -> tuple[np.ndarray, np.ndarray | None, dict]:
    """``(binary mask for framing, soft alpha to composite with or None for the binary mask, mask info)``."""
    fixed = fixed or {}
    if source == "auto":
        if alpha is not None and float(alpha.min()) < _OPAQUE:
            source = "alpha"
        else:
            mask, info = threshold_mask(photo)
            if info["uniform"]:
                return mask, None, {"source": "threshold", **info}
            backend = MATTING_BACKENDS.get("rembg")
            reason = backend.unavailable() if backend else "no matting backend is registered"
            if backend is not None and reason is None:
                source = "rembg"
            else:
                warnings.append(f"the background is not uniform (threshold {info['threshold']:.2f}): the "
                                f"threshold mask may be poor; cut the object out (an RGBA image) or make rembg "
                                f"available ({reason})")
                return mask, None, {"source": "threshold", **info}
    if source == "alpha":
        if alpha is None:
            raise PreprocessError(f"{name}: has no alpha channel (--matting alpha needs an RGBA image); use "
                                  f"--matting auto or threshold")
        return alpha > 0.5, alpha, {"source": "alpha"}
    if source == "threshold":
        keys = ("background", "threshold", "border", "mad_k", "min_threshold", "max_hole")
        given = {k: fixed[k if k != "background" else "background_estimate"] for k in keys
                 if (k if k != "background" else "background_estimate") in fixed}
        mask, info = threshold_mask(photo, **given)
        return mask, None, {"source": "threshold", **info}
    backend = get_matting(source)
    reason = backend.unavailable()
    if reason:
        raise PreprocessError(f"{name}: --matting {source} is not available: {reason}")
    soft = np.clip(np.asarray(backend.run((photo * 255).round().astype(np.uint8)), dtype=np.float32), 0, 1)
    if soft.shape != photo.shape[:2]:
        raise PreprocessError(f"{name}: matting backend {source} returned a {soft.shape} mask for a "
                              f"{photo.shape[:2]} image")
    mask, n = largest_component(soft > 0.5)
    return mask, soft, {"source": source, "model": backend.describe(), "components": n}


def _bbox(mask: np.ndarray) -> list[int]:
    ys, xs = np.nonzero(mask)
    return [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]


def _crop(x: np.ndarray, left: int, top: int, side: int, fill: Sequence[float]) -> np.ndarray:
    """The ``side``-square of ``x (H, W, C)`` at ``(left, top)``, ``fill`` outside the image."""
    h, w, c = x.shape
    out = np.empty((side, side, c), dtype=np.float32)
    out[...] = np.asarray(fill, dtype=np.float32)
    x0, y0, x1, y1 = max(left, 0), max(top, 0), min(left + side, w), min(top + side, h)
    if x1 > x0 and y1 > y0:
        out[y0 - top:y1 - top, x0 - left:x1 - left] = x[y0:y1, x0:x1]
    return out


def _run(img: Any, resolution: int, object_fraction: float, background: Sequence[float], matting: str,
         max_side: int, name: str | None, fixed: dict | None) -> tuple[Tensor, PreprocessInfo]:
    if not isinstance(resolution, int) or resolution < 1:
        raise ValueError(f"resolution must be a positive integer, got {resolution!r}")
    if not 0 < object_fraction <= 1:
        raise ValueError(f"object_fraction must be in (0, 1], got {object_fraction}")
    bg = [float(v) for v in background]
    if len(bg) != 3 or not all(0 <= v <= 1 for v in bg):
        raise ValueError(f"background must be 3 numbers in [0, 1] (RGB), got {background}")
    if matting not in MASK_SOURCES and matting not in MATTING_BACKENDS:
        raise ValueError(f"unknown matting '{matting}'; choose one of {', '.join((*MASK_SOURCES, *MATTING_BACKENDS))}")
    rgb, alpha, name = read_image(img, name)
    h, w = rgb.shape[:2]
    if fixed is not None and list(fixed["size"]) != [w, h]:
        raise PreprocessError(f"{name}: is {w}x{h} but the parameters were made for a "
                              f"{fixed['size'][0]}x{fixed['size'][1]} image")
    ww, wh = tuple(fixed["work_size"]) if fixed is not None else _work_size(w, h, max(max_side, resolution))
    if alpha is None:
        pm, a = _resize(rgb, (ww, wh)), np.ones((wh, ww), dtype=np.float32)
    else:  # resample premultiplied colour
        premul = _resize(np.concatenate([rgb * alpha[..., None], alpha[..., None]], -1), (ww, wh))
        pm, a = premul[..., :3], np.clip(premul[..., 3], 0, 1)
        alpha = a
    photo = np.clip(pm + (1 - a[..., None]) * np.asarray(bg, dtype=np.float32), 0, 1)  # on the output background
    warnings: list[str] = []
    mask, soft, mask_info = _mask(photo, alpha, fixed["mask"]["source"] if fixed else matting, name,
                                  fixed["mask"] if fixed else None, warnings)
    min_pixels = max(4, round(2e-4 * ww * wh))
    if int(mask.sum()) < min_pixels:
        what = {"alpha": "the alpha channel is (almost) fully transparent"}.get(
            mask_info["source"], "nothing differs from the background")
        extra = ""
        if mask_info["source"] == "threshold":
            bgc = ", ".join(f"{v:.2f}" for v in mask_info["background_estimate"])
            extra = f" ({bgc}) by more than the threshold {mask_info['threshold']:.3f}"
        raise NoObjectError(f"{name}: no object found (empty mask: {what}{extra}); is the image a uniform colour?")

    x0, y0, x1, y1 = _bbox(mask)
    if fixed is not None:
        left, top, side = (int(v) for v in fixed["crop"])
    else:
        side = max(1, round(max(x1 - x0, y1 - y0) / object_fraction))
        left, top = math.floor((x0 + x1 - side) / 2 + 0.5), math.floor((y0 + y1 - side) / 2 + 0.5)
    touching = [s for s, t in (("left", x0 == 0), ("top", y0 == 0), ("right", x1 == ww), ("bottom", y1 == wh)) if t]
    if touching:
        warnings.append(f"the object touches the image border ({', '.join(touching)}): it will be cropped "
                        f"(the part outside the photo is missing)")
    up = resolution / side
    if up > 4:
        warnings.append(f"the object is only {max(x1 - x0, y1 - y0)} px across: upscaled {up:.1f}x, it will be "
                        f"blurry")

    if soft is None:  # a binary mask: the photo inside it, the background outside
        m = mask.astype(np.float32)[..., None]
        comp = photo * m + np.asarray(bg, dtype=np.float32) * (1 - m)
        keep = mask.astype(np.float32)
    else:  # soft alpha (the image's own, or a matting model's): composite the premultiplied colour
        s = soft[..., None]
        comp = (pm if mask_info["source"] == "alpha" else photo * s) + (1 - s) * np.asarray(bg, dtype=np.float32)
        keep = soft
    layers = np.concatenate([comp, keep[..., None]], -1)
    limit, box = max(2 * resolution, MAX_SIDE), (left, top, side)
    if side > limit:  # a small object fraction: shrink first so that the padded crop stays small in memory
        k = limit / side
        layers = _resize(layers, (max(1, round(ww * k)), max(1, round(wh * k))))
        box = (math.floor(left * k + 0.5), math.floor(top * k + 0.5), limit)
    crop = _crop(layers, *box, [*bg, 0.0])
    out = np.clip(_resize(crop, (resolution, resolution)), 0, 1)
    image = torch.from_numpy(np.ascontiguousarray(out[..., :3])).permute(2, 0, 1) * 2 - 1
    f = ww / w
    info = PreprocessInfo({
        "format": _FORMAT, "source": name, "size": [w, h], "work_size": [ww, wh], "work_scale": f,
        "mask": mask_info, "bbox": [x0, y0, x1, y1], "bbox_original": [round(v / f, 3) for v in (x0, y0, x1, y1)],
        "object_fraction": float(object_fraction) if fixed is None else fixed["object_fraction"],
        "crop": [left, top, side], "scale": resolution / side * f, "resolution": resolution,
        "background": bg, "touches_border": touching, "warnings": warnings,
    })
    info.mask = torch.from_numpy(np.ascontiguousarray(out[..., 3]))[None]
    return image, info


def preprocess_image(img: Any, resolution: int, object_fraction: float = SYNTHETIC_OBJECT_FRACTION,
                     background: Sequence[float] = (1.0, 1.0, 1.0), *, matting: str = "auto",
                     max_side: int = MAX_SIDE, name: str | None = None) -> tuple[Tensor, PreprocessInfo]:
    """Mask, recentre, scale, composite and resize one image (see the module docstring).

    Args:
        img: a file path, a PIL image or an ``(H, W, 3|4)`` array (uint8, or float in [0, 1]).
        resolution: output side ``R`` (the model's resolution).
        object_fraction: longest bounding-box side of the object over ``R`` (the training framing).
        background: RGB in [0, 1] the object is composited on (the training background, white).
        matting: ``auto`` | ``alpha`` | ``threshold`` | a registered backend (``rembg``).
        max_side: larger images are downscaled to this longer side first.
        name: how errors and ``info["source"]`` call the image (default: its path).

    Returns:
        ``image (3, R, R)`` in [-1, 1] and :class:`PreprocessInfo` (JSON-able parameters: ``size``,
        ``work_size``, ``mask`` (source, estimated background colour and threshold, ...), ``bbox``, ``crop``,
        ``scale``, ``background``, ``warnings``, ...; ``.mask`` is the ``(1, R, R)`` output mask).

    Raises:
        PreprocessError: unreadable or non-image input, an unavailable backend; NoObjectError: empty mask;
        FileNotFoundError: a missing file.
    """
    return _run(img, resolution, object_fraction, background, matting, max_side, name, None)


def reapply_preprocess(img: Any, params: dict, *, name: str | None = None) -> tuple[Tensor, PreprocessInfo]:
    """Repeat :func:`preprocess_image` with the parameters it wrote (``info`` or its JSON): the same working
    size, mask source, background colour estimate and threshold, crop, background and resolution, so the
    output is identical (a matting backend is run again)."""
    need = ("format", "size", "work_size", "mask", "crop", "resolution", "background", "object_fraction")
    missing = [k for k in need if k not in params]
    if missing or params.get("format") != _FORMAT:
        raise PreprocessError(f"{name or params.get('source', 'parameters')}: not vantage preprocess parameters "
                              f"(format {_FORMAT}; missing {', '.join(missing) or 'nothing'})")
    return _run(img, int(params["resolution"]), float(params["object_fraction"]), params["background"],
                params["mask"]["source"], MAX_SIDE, name, params)


def describe(info: dict) -> list[str]:
    """Human-readable lines saying what :func:`preprocess_image` did (for notes and the CLI): the summary,
    then ``warning: ...`` lines."""
    m = info["mask"]
    src = {"alpha": "the alpha channel", "threshold": "a uniform-background threshold"}.get(m["source"],
                                                                                          f"matting ({m['source']})")
    if m["source"] == "threshold":
        bgc = ",".join(f"{round(v * 255)}" for v in m["background_estimate"])
        src += f" (background {bgc}, colour distance > {m['threshold']:.3f})"
    x0, y0, x1, y1 = info["bbox"]
    (w, h), (ww, wh) = info["size"], info["work_size"]
    where = f"the {w}x{h} image" if [ww, wh] == [w, h] else f"the image downscaled from {w}x{h} to {ww}x{wh}"
    bg = "white" if list(info["background"]) == [1.0, 1.0, 1.0] else \
        ",".join(str(round(v * 255)) for v in info["background"])
    line = (f"object mask from {src}; the object ({x1 - x0}x{y1 - y0} px in {where}) recentred and scaled to "
            f"{info['object_fraction']:g} of the frame, composited on {bg}, {info['resolution']}x{info['resolution']}")
    return [line] + [f"warning: {wn}" for wn in info["warnings"]]
