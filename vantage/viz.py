"""Pictures a person looks at: contact sheets, camera plots, GIFs.

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

__all__ = ["to_uint8", "contact_sheet", "plot_cameras", "save_gif"]


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
