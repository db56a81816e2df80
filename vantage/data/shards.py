"""Scale-out storage: any :class:`SceneDataset` as webdataset-style tar shards, a streaming reader
that splits *samples* (not shards) across DDP ranks and DataLoader workers, and random access.

This module holds the writer, :func:`write_shards` (one sample per object with PNG-encoded views,
``index.json`` written last), and re-exports the public names of the modules the rest is split into:

- :mod:`vantage.data.shard_format`: the folder layout and sample format, :func:`read_index`,
  :class:`ShardError`, sample decoding and :func:`draw_pair` (shared by the writer and both readers);
- :mod:`vantage.data.shard_stream`: :class:`ShardDataset`, the streaming reader, and its rule for splitting
  samples across ranks and workers (:func:`epoch_plan`);
- :mod:`vantage.data.shard_scenes`: random access, :class:`ShardScenes` (a :class:`SceneDataset`) and
  :class:`ShardPairs` (its training pairs).

``vantage train --data SHARD_DIR`` reads shards with :mod:`vantage.train.shard_data`. Every name in ``__all__``
imports from here (``from vantage.data.shards import ShardScenes``); the other shard modules import from
``shard_format``, never from this one (which imports them). See ``docs/data-pipeline.md``.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from vantage.data.pairs import seeded_generator
from vantage.data.shard_format import (
    FORMAT,
    INDEX_NAME,
    MAX_VIEWS,
    VERSION,
    ShardError,
    draw_pair,
    read_index,
    shard_name,
)
from vantage.data.shard_scenes import ShardPairs, ShardScenes
from vantage.data.shard_stream import ShardDataset, epoch_plan
from vantage.data.views import ObjectViews, SceneDataset

__all__ = ["FORMAT", "VERSION", "INDEX_NAME", "ShardError", "shard_name", "write_shards", "read_index",
           "epoch_plan", "draw_pair", "ShardDataset", "ShardScenes", "ShardPairs"]


# ---------------------------------------------------------------------- encoding
def _png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def _encode(obj: ObjectViews, key: str, source_index: int) -> tuple[list[tuple[str, bytes]], dict]:
    """Members ``[(name, bytes)]`` of one sample (json first) and a summary for the index."""
    n, (h, w) = len(obj), obj.resolution
    if n > MAX_VIEWS:
        raise ValueError(f"'{obj.name}' has {n} views; shards hold at most {MAX_VIEWS} per object")
    depth_scale = None
    if obj.depth is not None:
        d = obj.depth.detach().double()
        if not torch.isfinite(d).all() or (d < 0).any():
            raise ValueError(f"'{obj.name}': depth must be finite and >= 0 to be stored in a shard")
        depth_scale = float(d.max()) / 65535.0 if float(d.max()) > 0 else 1.0
    meta = json.loads(json.dumps(obj.meta, default=lambda v: v.tolist() if hasattr(v, "tolist") else str(v)))
    head = {"name": obj.name, "source_index": int(source_index), "num_views": n, "width": w, "height": h,
            "view_ids": obj.view_ids.tolist(), "c2w": obj.cameras.c2w.tolist(), "K": obj.cameras.K.tolist(),
            "has_masks": obj.masks is not None, "has_depth": obj.depth is not None,
            "depth_scale": depth_scale, "meta": meta}
    members = [(f"{key}.json", json.dumps(head).encode())]
    rgb = ((obj.images.detach().float() + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8)
    rgb = rgb.permute(0, 2, 3, 1).numpy()
    for j in range(n):
        members.append((f"{key}.{j:05d}.rgb.png", _png(rgb[j])))
        if obj.masks is not None:
            m = (obj.masks[j, 0].detach().float() * 255).round().clamp(0, 255).to(torch.uint8).numpy()
            members.append((f"{key}.{j:05d}.mask.png", _png(m)))
        if obj.depth is not None:
            q = (obj.depth[j, 0].detach().double() / depth_scale).round().clamp(0, 65535).numpy()
            members.append((f"{key}.{j:05d}.depth.png", _png(q.astype(np.uint16))))
    return members, {"resolution": (h, w), "masks": obj.masks is not None, "depth": obj.depth is not None,
                     "num_views": n}


class _Encoded(torch.utils.data.Dataset):
    """Loads and encodes objects (in DataLoader workers when ``num_workers > 0``)."""

    def __init__(self, dataset: SceneDataset, order: list[int]) -> None:
        self.dataset, self.order = dataset, order

    def __len__(self) -> int:
        return len(self.order)

    def __getitem__(self, pos: int) -> tuple[list[tuple[str, bytes]], dict]:
        src = self.order[pos]
        try:
            return _encode(self.dataset.load(src), f"{pos:09d}", src)
        except Exception as e:
            raise RuntimeError(f"write_shards: scene {src} ('{self.dataset.scene_name(src)}'): {e}") from e

    @staticmethod
    def identity(x):
        return x


def write_shards(dataset: SceneDataset, out_dir: str | Path, shard_size: int = 1000, *, progress: bool = True,
                 overwrite: bool = False, num_workers: int = 0, shuffle_seed: int | None = None) -> dict:
    """Write ``dataset`` as tar shards of ``shard_size`` objects each into ``out_dir``.

    One sample per object with all its views; images as 8-bit PNG (exact for images made of
    8-bit values), masks as 8-bit PNG, depth as 16-bit PNG with a per-object scale (error at
    most ``max_depth / 131070``). Shards are written as ``*.partial`` and renamed when complete;
    ``index.json`` is written last, so an interrupted run leaves no index (and the reader
    refuses the folder). Existing ``shard-*.tar`` / ``index.json`` in ``out_dir`` raise
    ``FileExistsError`` unless ``overwrite=True`` (then they are deleted first). The index lists, per
    shard, the view count and the byte offset of every sample (random access: :class:`ShardScenes`).

    Args:
        dataset: any :class:`SceneDataset`; every object is loaded once with ``load(i)``.
        out_dir: output folder (created).
        shard_size: objects per shard (aim for shards of ~100 MB-1 GB).
        progress: show a tqdm bar.
        overwrite: replace existing shards.
        num_workers: DataLoader workers that load and encode objects in parallel.
        shuffle_seed: write objects in a seeded random order (recommended when the source is
            sorted, e.g. by category, since readers stream contiguous blocks); None keeps order.

    Returns:
        The index (also written to ``out_dir/index.json``).
    """
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    total = len(dataset)
    if total == 0:
        raise ValueError(f"write_shards: the dataset {dataset.summary()} has no scenes to write")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    existing = sorted(out.glob("shard-*.tar*")) + sorted(out.glob(INDEX_NAME + "*"))
    if existing and not overwrite:
        raise FileExistsError(f"{out} already holds shards ({len(existing)} files, e.g. {existing[0].name}); "
                              "pass overwrite=True (CLI: --overwrite) to replace them")
    for f in sorted(existing, key=lambda p: p.name != INDEX_NAME):  # index.json first
        f.unlink()
    order = list(range(total))
    if shuffle_seed is not None:
        order = torch.randperm(total, generator=seeded_generator(shuffle_seed)).tolist()
    encoded = _Encoded(dataset, order)
    stream = (torch.utils.data.DataLoader(encoded, batch_size=None, num_workers=num_workers,
                                          collate_fn=_Encoded.identity) if num_workers > 0 else encoded)
    from tqdm.auto import tqdm

    shards: list[dict] = []
    resolutions: set[tuple[int, int]] = set()
    all_masks = all_depth = True
    tar = tmp = None
    for pos, (members, info) in enumerate(tqdm(stream, total=total, disable=not progress, desc="shards")):
        if pos % shard_size == 0:
            tmp = out / (shard_name(len(shards)) + ".partial")
            tar = tarfile.open(tmp, "w", format=tarfile.USTAR_FORMAT)
            shards.append({"file": shard_name(len(shards)), "count": 0, "num_views": [], "offsets": []})
        shards[-1]["offsets"].append(tar.offset)  # where the sample's first header (KEY.json) starts
        shards[-1]["num_views"].append(int(info["num_views"]))
        for name, data in members:
            ti = tarfile.TarInfo(name)
            ti.size, ti.mode = len(data), 0o644
            tar.addfile(ti, io.BytesIO(data))
        shards[-1]["count"] += 1
        resolutions.add(tuple(info["resolution"]))
        all_masks, all_depth = all_masks and info["masks"], all_depth and info["depth"]
        if shards[-1]["count"] == shard_size or pos == total - 1:
            tar.close()
            final = out / shards[-1]["file"]
            os.replace(tmp, final)
            shards[-1]["bytes"] = final.stat().st_size
    res, skipped = sorted(resolutions), list(getattr(dataset, "skipped", []))
    index = {"format": FORMAT, "version": VERSION, "num_samples": total,
             "resolution": list(res[0]) if len(res) == 1 else None, "resolutions": [list(r) for r in res],
             "has_masks": all_masks, "has_depth": all_depth, "shard_size": shard_size,
             "source": {"format": dataset.format_name, "num_scenes": total, "skipped": len(skipped),
                        "skipped_examples": [str(s) for s in skipped[:20]]},
             "shuffle_seed": shuffle_seed, "shards": shards}
    tmp_index = out / (INDEX_NAME + ".partial")
    tmp_index.write_text(_index_text(index))
    os.replace(tmp_index, out / INDEX_NAME)
    return index


def _index_text(index: dict) -> str:
    """``index.json``: indented, but one line per shard (its per-sample lists would take a line per number)."""
    head = json.dumps({k: v for k, v in index.items() if k != "shards"}, indent=1)
    shards = ",\n  ".join(json.dumps(s, separators=(",", ":")) for s in index["shards"])
    return head[:-2] + ',\n "shards": [\n  ' + shards + "\n ]\n}\n"
