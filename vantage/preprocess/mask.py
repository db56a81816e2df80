"""Foreground masks of an object photographed on a near-uniform background, in plain numpy.

* :func:`label_components`: connected components of a boolean mask (8- or 4-connectivity), run-length
  based: horizontal runs are found with one vectorised pass, runs of neighbouring rows that touch are
  joined with a vectorised union-find (hook to the smaller root, then pointer jumping), and the labels
  are painted back. Linear in the number of pixels and runs; a 1024x1024 mask takes a few tens of ms.
* :func:`largest_component`, :func:`fill_holes`: the object is the largest 8-connected foreground
  component; background regions (4-connected, the dual connectivity) that do not reach the image
  border are holes and are filled, unless they are larger than :data:`MAX_HOLE` (5%) of the object's
  area: those are background seen through the object (a torus, a handle).
* :func:`threshold_mask`: the background colour is the per-channel median of a band of border pixels
  (robust as long as the object covers less than half of the border), the distance of every pixel to it
  is thresholded at ``median + k · 1.4826 · MAD`` of the border pixels' distances (a robust estimate of
  "k standard deviations of the background's noise"), never below ``min_threshold``. The distance is
  taken on a 3x3 box-filtered image, which divides per-pixel noise by 3; the one-pixel growth this
  causes at sharp edges is undone by :func:`trim_edges` (a ring pixel is object when its own distance
  is more than half that of its object neighbours: more than half covered).

All images here are ``(H, W, 3)`` float arrays in [0, 1]; masks are ``(H, W)`` bool arrays.
"""

from __future__ import annotations

import numpy as np

__all__ = ["label_components", "largest_component", "fill_holes", "border_band", "box3", "trim_edges", "threshold_mask",
           "MAD_K", "MIN_THRESHOLD", "UNIFORM_THRESHOLD", "MAX_HOLE"]

#: Threshold = median + MAD_K · 1.4826 · MAD of the border distances (1.4826 · MAD estimates a std).
MAD_K: float = 6.0
#: Smallest colour-distance threshold (RGB in [0, 1]): a noise-free background still tolerates 8-bit
#: rounding and compression.
MIN_THRESHOLD: float = 0.04
#: Holes in the mask larger than this fraction of the object's area stay background (a torus' hole, a
#: handle); smaller ones (highlights, background-coloured details) are filled.
MAX_HOLE: float = 0.05
#: A background whose threshold comes out above this (RGB distance) is not "near-uniform": the border is
#: textured or cluttered and thresholding cannot separate the object reliably.
UNIFORM_THRESHOLD: float = 0.25


def _runs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Horizontal runs of True in ``mask (H, W)``: ``(row, start, end)`` int64 arrays, end exclusive,
    sorted by row then start."""
    h, w = mask.shape
    padded = np.zeros((h, w + 2), dtype=np.int8)
    padded[:, 1:-1] = mask
    d = np.diff(padded, axis=1)  # d[:, k] = +1 where a run starts at column k, -1 where one ends at k
    rows, starts = np.nonzero(d == 1)
    _, ends = np.nonzero(d == -1)
    return rows.astype(np.int64), starts.astype(np.int64), ends.astype(np.int64)


def _union(n: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Root of each of ``n`` nodes joined by edges ``a[i] - b[i]`` (the smallest node of its component)."""
    parent = np.arange(n, dtype=np.int64)
    while a.size:
        pa, pb = parent[a], parent[b]
        differ = pa != pb
        if not differ.any():
            break
        a, b, pa, pb = a[differ], b[differ], pa[differ], pb[differ]
        np.minimum.at(parent, np.maximum(pa, pb), np.minimum(pa, pb))  # hook roots onto the smaller root
        while True:  # pointer jumping until every node points at its root
            nxt = parent[parent]
            if np.array_equal(nxt, parent):
                break
            parent = nxt
    return parent


def label_components(mask: np.ndarray, connectivity: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Connected components of ``mask (H, W)`` bool.

    Returns ``labels (H, W)`` int32 (0 = background, components numbered 1..n in raster order of
    their first pixel) and ``areas (n,)`` int64 (pixels per component, ``areas[i]`` for label ``i + 1``).
    ``connectivity`` is 8 (diagonal neighbours touch) or 4.
    """
    if connectivity not in (4, 8):
        raise ValueError(f"connectivity must be 4 or 8, got {connectivity}")
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 2:
        raise ValueError(f"mask must be (H, W), got shape {mask.shape}")
    h, w = mask.shape
    labels = np.zeros((h, w), dtype=np.int32)
    rows, starts, ends = _runs(mask)
    n = rows.size
    if n == 0:
        return labels, np.zeros(0, dtype=np.int64)
    # run b (row r) touches run a (row r - 1) when a.end > b.start - c and a.start < b.end + c
    c, stride = (1 if connectivity == 8 else 0), w + 2
    start_key, end_key = rows * stride + starts, rows * stride + ends  # both sorted
    prev = (rows - 1) * stride
    lo = np.searchsorted(end_key, prev + starts - c, side="right")
    hi = np.searchsorted(start_key, prev + ends + c, side="left")
    counts = np.maximum(hi - lo, 0)
    total = int(counts.sum())
    b = np.repeat(np.arange(n, dtype=np.int64), counts)
    a = np.repeat(lo, counts) + (np.arange(total, dtype=np.int64) - np.repeat(np.cumsum(counts) - counts, counts))
    roots = _union(n, a, b)
    _, run_label = np.unique(roots, return_inverse=True)  # roots are first runs: raster order
    lengths = ends - starts
    run_of_pixel = np.repeat(np.arange(n, dtype=np.int64), lengths)
    offset = np.arange(int(lengths.sum()), dtype=np.int64) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    flat = np.repeat(rows * w + starts, lengths) + offset
    labels.reshape(-1)[flat] = (run_label[run_of_pixel] + 1).astype(np.int32)
    areas = np.bincount(run_label, weights=lengths).astype(np.int64)
    return labels, areas


def largest_component(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """The largest 8-connected component of ``mask (H, W)`` (the first one on ties) and the number of
    components; an all-False mask gives itself and 0."""
    labels, areas = label_components(mask, 8)
    if areas.size == 0:
        return np.zeros_like(mask, dtype=bool), 0
    return labels == int(np.argmax(areas)) + 1, int(areas.size)


def fill_holes(mask: np.ndarray, max_area: int | None = None) -> np.ndarray:
    """``mask (H, W)`` with every background region that does not reach the image border filled
    (background is 4-connected, the dual of the foreground's 8-connectivity); with ``max_area`` only
    holes of at most that many pixels."""
    mask = np.asarray(mask, dtype=bool)
    labels, areas = label_components(~mask, 4)
    if areas.size == 0:
        return mask.copy()
    keep_open = np.zeros(areas.size + 1, dtype=bool)
    keep_open[np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])] = True
    if max_area is not None:
        keep_open[1:] |= areas > max_area
    keep_open[0] = False  # label 0 is the foreground itself
    return mask | ~keep_open[labels] & (labels > 0)


def border_band(img: np.ndarray, width: int) -> np.ndarray:
    """Pixels of the outer band of ``width`` pixels of ``img (H, W, C)``, as ``(N, C)``."""
    h, w = img.shape[:2]
    width = max(1, min(int(width), h // 2, w // 2) or 1)
    keep = np.zeros((h, w), dtype=bool)
    keep[:width], keep[-width:], keep[:, :width], keep[:, -width:] = True, True, True, True
    return img[keep]


def box3(img: np.ndarray) -> np.ndarray:
    """3x3 box filter of ``img (H, W, C)`` (edges replicated)."""
    h, w = img.shape[:2]
    p = np.pad(img, ((1, 1), (1, 1), (0, 0)), mode="edge")
    out = np.zeros_like(img, dtype=np.float32)
    for i in range(3):
        for j in range(3):
            out += p[i:i + h, j:j + w]
    return out / 9.0


def _max3(x: np.ndarray) -> np.ndarray:
    """3x3 maximum filter of ``x (H, W)`` (edges replicated)."""
    h, w = x.shape
    p = np.pad(x, 1, mode="edge")
    out = p[1:1 + h, 1:1 + w].copy()
    for i in range(3):
        for j in range(3):
            np.maximum(out, p[i:i + h, j:j + w], out=out)
    return out


def trim_edges(mask: np.ndarray, dist: np.ndarray) -> np.ndarray:
    """Undo the 1-pixel growth that thresholding a box-filtered image causes: a pixel on the outer ring of
    ``mask`` is kept only if its unfiltered distance ``dist (H, W)`` to the background colour is more than
    half the largest distance among its mask neighbours (a pixel mixing object and background colours is
    object when the object covers more than half of it)."""
    inner = ~_max3(~mask)  # pixels whose 3x3 neighbourhood is all mask
    ring = mask & ~inner
    contrast = _max3(np.where(mask, dist, 0.0))
    return mask & (~ring | (dist > 0.5 * contrast))


def threshold_mask(photo: np.ndarray, *, background: tuple[float, float, float] | None = None,
                   threshold: float | None = None, border: int | None = None, mad_k: float = MAD_K,
                   min_threshold: float = MIN_THRESHOLD, max_hole: float = MAX_HOLE) -> tuple[np.ndarray, dict]:
    """Foreground of ``photo (H, W, 3)`` in [0, 1] against a near-uniform background (module docstring).

    ``background`` (the photo's background colour) and ``threshold`` are estimated from a border band of
    ``border`` pixels (default: 2% of the shorter side, at least 1) unless given (to repeat an earlier
    run). Returns the mask after keeping the largest component and filling its holes of at most ``max_hole``
    times its area (larger ones are taken to be background seen through the object), and a dict:
    ``background_estimate``, ``threshold``, ``border``, ``mad_k``, ``min_threshold``, ``uniform`` (the
    threshold is at most :data:`UNIFORM_THRESHOLD`), ``components`` (before keeping the largest),
    ``kept_fraction`` (of the thresholded pixels) and ``holes_filled`` (pixels).
    """
    h, w = photo.shape[:2]
    border = max(1, round(0.02 * min(h, w))) if border is None else int(border)
    smooth = box3(photo.astype(np.float32))
    band = border_band(smooth, border)
    bg = np.median(band, axis=0) if background is None else np.asarray(background, dtype=np.float32)
    if threshold is None:
        d_band = np.linalg.norm(band - bg, axis=-1)
        med = float(np.median(d_band))
        mad = float(np.median(np.abs(d_band - med)))
        threshold = max(float(min_threshold), med + mad_k * 1.4826 * mad)
    raw = np.linalg.norm(smooth - bg, axis=-1) > threshold
    raw = trim_edges(raw, np.linalg.norm(photo.astype(np.float32) - bg, axis=-1))
    largest, n = largest_component(raw)
    filled = fill_holes(largest, max_area=int(max_hole * largest.sum()))
    info = {"background_estimate": [float(v) for v in bg], "threshold": float(threshold),  # exact: repeatable
            "border": border, "mad_k": mad_k, "min_threshold": min_threshold, "max_hole": max_hole,
            "uniform": bool(threshold <= UNIFORM_THRESHOLD), "components": n,
            "kept_fraction": round(float(largest.sum()) / max(1, int(raw.sum())), 6),
            "holes_filled": int(filled.sum() - largest.sum())}
    return filled, info
