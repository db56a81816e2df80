"""Pictures a person looks at: contact sheets, camera plots, GIFs, weight maps.

Images follow the internal convention: float tensors in [-1, 1], ``(N, 3, H, W)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch import Tensor

from vantage.cameras import Cameras

__all__ = ["to_uint8", "contact_sheet", "plot_cameras", "save_gif", "heat_image", "weight_grid", "save_image_gif"]


def to_uint8(images: Tensor) -> np.ndarray:
    """``(..., 3, H, W)`` in [-1, 1] -> ``(..., H, W, 3)`` uint8."""
    x = ((images.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.movedim(-3, -1).cpu().numpy()


def contact_sheet(rows: Sequence[Tensor], row_labels: Sequence[str] | None = None,
                  pad: int = 2, label_width: int = 0, min_cell: int = 64) -> Image.Image:
    """Grid image: one row per ``(N_i, 3, H, W)`` tensor (rows may differ in N).

    Cells are upscaled (nearest) to at least ``min_cell`` pixels so small images stay visible.
    """
    if not rows:
        raise ValueError("contact_sheet needs at least one row")
    h, w = rows[0].shape[-2:]
    scale = max(1, -(-min_cell // max(h, w)))
    ch, cw = h * scale, w * scale
    if row_labels is not None and label_width == 0:
        label_width = 8 + 7 * max((len(s) for s in row_labels), default=0)
    ncol = max(r.shape[0] for r in rows)
    sheet = Image.new("RGB", (label_width + ncol * (cw + pad) + pad, len(rows) * (ch + pad) + pad), "white")
    draw = ImageDraw.Draw(sheet)
    for i, row in enumerate(rows):
        if row.shape[-2:] != (h, w):
            raise ValueError(f"contact_sheet row {i} has images of size {tuple(row.shape[-2:])}, "
                             f"expected {(h, w)}")
        y = pad + i * (ch + pad)
        if row_labels is not None:
            draw.text((4, y + ch // 2 - 5), row_labels[i], fill=(0, 0, 0))
        for j, img in enumerate(to_uint8(row)):
            tile = Image.fromarray(img).resize((cw, ch), Image.NEAREST)
            sheet.paste(tile, (label_width + pad + j * (cw + pad), y))
    return sheet


def plot_cameras(cameras: Cameras, path: str | Path, *, title: str = "cameras",
                 arrow: float | None = None, labels: bool = True) -> Path:
    """Save a 3D plot (PNG) of camera centres and viewing directions (world +z up).

    ``cameras`` of any batch shape is flattened. Each camera is drawn as a dot with an arrow
    along its viewing direction (camera +z) and a short tick along image-up (camera −y).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cams = cameras.flatten()
    c = cams.centers.detach().double().cpu().numpy()
    f = cams.forward.detach().double().cpu().numpy()
    up = -cams.R[..., :, 1].detach().double().cpu().numpy()
    extent = float(np.abs(c).max()) if len(c) else 1.0
    arrow = 0.25 * extent if arrow is None else arrow
    fig = plt.figure(figsize=(6, 6))
    ax = fig.add_subplot(projection="3d")
    ax.scatter(c[:, 0], c[:, 1], c[:, 2], c=np.arange(len(c)), cmap="viridis", s=18)
    ax.quiver(c[:, 0], c[:, 1], c[:, 2], f[:, 0], f[:, 1], f[:, 2], length=arrow, color="tab:red",
              linewidth=0.8, normalize=True)
    ax.quiver(c[:, 0], c[:, 1], c[:, 2], up[:, 0], up[:, 1], up[:, 2], length=arrow * 0.4,
              color="tab:blue", linewidth=0.6, normalize=True)
    ax.scatter([0], [0], [0], marker="*", color="black", s=60)
    if labels and len(c) <= 48:
        for i, p in enumerate(c):
            ax.text(p[0], p[1], p[2], str(i), fontsize=6)
    lim = extent * 1.1
    ax.set_xlim(-lim, lim)
    ax.set_ylim(-lim, lim)
    ax.set_zlim(-lim, lim)
    ax.set_xlabel("x")
    ax.set_ylabel("y")
    ax.set_zlabel("z (up)")
    ax.set_title(f"{title}\nred: viewing direction, blue: image up, star: origin", fontsize=9)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def save_gif(frames: Tensor, path: str | Path, fps: float = 8.0, min_size: int = 128) -> Path:
    """Save ``(T, 3, H, W)`` frames in [-1, 1] as a looping GIF (upscaled to ``min_size``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = frames.shape[-2:]
    scale = max(1, -(-min_size // max(h, w)))
    imgs = [Image.fromarray(f).resize((w * scale, h * scale), Image.NEAREST) for f in to_uint8(frames)]
    imgs[0].save(path, save_all=True, append_images=imgs[1:], duration=int(1000 / fps), loop=0)
    return path


# inferno-like colour map anchors (0 -> black, 1 -> light yellow), RGB in [0, 255]
_HEAT = torch.tensor([[0, 0, 4], [40, 11, 84], [101, 21, 110], [159, 42, 99], [212, 72, 66], [245, 125, 21],
                      [250, 193, 39], [252, 255, 164]], dtype=torch.float32)


def heat_image(values: Tensor) -> Tensor:
    """``(..., H, W)`` values in [0, 1] (clamped) -> ``(..., 3, H, W)`` in [-1, 1] through an
    inferno-like colour map (0 black, 0.5 red, 1 light yellow)."""
    v = values.detach().float().cpu().clamp(0, 1) * (len(_HEAT) - 1)
    lo = v.floor().long().clamp(max=len(_HEAT) - 2)
    frac = (v - lo)[..., None]
    rgb = _HEAT[lo] * (1 - frac) + _HEAT[lo + 1] * frac  # (..., H, W, 3)
    return (rgb / 127.5 - 1).movedim(-1, -3)


def weight_grid(views: Tensor, weights: Tensor, labels: Sequence[str], output: Tensor | None = None,
                title: str = "", min_cell: int = 64, pad: int = 4) -> Image.Image:
    """One composed prediction at a glance: row 1 the ``k`` conditioning views ``(k, 3, H, W)`` in
    [-1, 1] (and the ``output (3, H, W)`` at the right), row 2 their weights ``(k, 3, H, W)`` or
    ``(k, H, W)`` in [0, 1] (mean over colour channels) as heat maps on a fixed 0..1 scale (with a
    colour bar). Each column is labelled with ``labels[i]`` and the view's mean weight."""
    k = views.shape[0]
    if weights.ndim == 4:
        weights = weights.float().mean(dim=1)
    if weights.shape[0] != k or len(labels) != k or tuple(weights.shape[-2:]) != tuple(views.shape[-2:]):
        raise ValueError(f"weight_grid: {k} views {tuple(views.shape)}, weights {tuple(weights.shape)} and "
                         f"{len(labels)} labels do not match")
    h, w = views.shape[-2:]
    scale = max(1, -(-min_cell // max(h, w)))
    ch, cw = h * scale, w * scale
    text_h, col_w = 12, max(cw, 64)
    extra = 2 if output is not None else 1  # output column (or none) + colour bar column
    width = pad + (k + extra) * (col_w + pad) + 8
    if title:
        width = max(width, int(ImageDraw.Draw(Image.new("RGB", (1, 1))).textlength(title)) + 2 * pad)
    top = pad + (text_h + pad if title else 0)
    height = top + 2 * (ch + 2 * text_h + pad) + pad
    sheet = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(sheet)
    if title:
        draw.text((pad, pad), title, fill=(0, 0, 0))

    def cell(img: np.ndarray, col: int, row: int, caption: Sequence[str]) -> None:
        x, y = pad + col * (col_w + pad), top + row * (ch + 2 * text_h + pad)
        sheet.paste(Image.fromarray(img).resize((cw, ch), Image.NEAREST), (x, y))
        for i, line in enumerate(caption):
            draw.text((x, y + ch + 1 + i * text_h), line, fill=(0, 0, 0))

    heat = to_uint8(heat_image(weights))
    for i, (img, hm) in enumerate(zip(to_uint8(views), heat)):
        cell(img, i, 0, [labels[i]])
        cell(hm, i, 1, [f"mean w {float(weights[i].mean()):.2f}"])
    if output is not None:
        cell(to_uint8(output), k, 0, ["output"])
    bar = heat_image(torch.linspace(1, 0, h)[:, None].expand(h, w))
    cell(to_uint8(bar), k + extra - 1, 1, ["scale: top 1", "bottom 0"])
    return sheet


def save_image_gif(images: Sequence[Image.Image], path: str | Path, fps: float = 2.0) -> Path:
    """Save PIL images as a looping GIF; smaller ones are padded (white, top left) to the largest size."""
    if not images:
        raise ValueError("save_image_gif needs at least one image")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    size = (max(i.width for i in images), max(i.height for i in images))
    frames = []
    for img in images:
        canvas = Image.new("RGB", size, "white")
        canvas.paste(img.convert("RGB"), (0, 0))
        frames.append(canvas)
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=int(1000 / fps), loop=0)
    return path
