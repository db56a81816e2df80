"""The on-disk format of a shard set: the folder layout, ``index.json`` and the decoding of a sample.

Layout of a shard folder (the ``out_dir`` of :func:`~vantage.data.shards.write_shards`; see
``docs/data-pipeline.md``)::

    index.json            format, version, resolution, one entry per shard: {file, count, bytes,
                          num_views, offsets} (views and byte offset of each of its samples)
    shard-000000.tar      samples 0 .. shard_size-1, one sample per object, in write order
    shard-000001.tar      ...

Inside a shard, sample ``k`` (its key ``f"{k:09d}"`` is the global sample index) is the
consecutive members ``KEY.json`` (name, cameras, view ids, depth scale, meta), then per view
``j``: ``KEY.{j:05d}.rgb.png`` (8-bit RGB), ``KEY.{j:05d}.mask.png`` (8-bit L) and
``KEY.{j:05d}.depth.png`` (16-bit; depth = value * depth_scale). The json comes first so a
reader can pick views before reading any image. Plain ``tarfile`` writes and reads them; the
files also open with the ``webdataset`` library (key = name up to the first dot; tested).

This module holds what the writer and both readers share: the names and limits above, :class:`ShardError`,
:func:`read_index` (reads and checks the index), the shard size check, sample decoding and :func:`draw_pair`
(the pair of a sample, the same in every reader). The writer is :func:`vantage.data.shards.write_shards`, the
readers :class:`vantage.data.shard_stream.ShardDataset` (streaming) and
:class:`vantage.data.shard_scenes.ShardScenes` / :class:`~vantage.data.shard_scenes.ShardPairs` (random
access); :mod:`vantage.data.shards` re-exports the public names of all of them.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from vantage.cameras import Cameras
from vantage.data.formats.common import DatasetError
from vantage.data.pairs import PairIndices, PairSampler, seeded_generator
from vantage.data.views import ObjectViews

__all__ = ["FORMAT", "VERSION", "INDEX_NAME", "MAX_VIEWS", "ShardError", "shard_name", "read_index", "draw_pair"]

FORMAT, VERSION, INDEX_NAME = "vantage-shards", 1, "index.json"
MAX_VIEWS = 100_000


class ShardError(DatasetError, RuntimeError):
    """A shard or ``index.json`` is missing, corrupt or inconsistent; the message names the file.

    A :class:`~vantage.data.formats.common.DatasetError` (bad dataset input: the command line prints it as
    one line) and, as before, a ``RuntimeError``."""


def shard_name(i: int) -> str:
    """File name of shard ``i``: ``shard-000000.tar``."""
    return f"shard-{i:06d}.tar"


def read_index(path: str | Path) -> tuple[Path, dict]:
    """``(folder, index)`` of the shards at ``path`` (the folder or its ``index.json``); checks
    the format, version, counts and that every shard file exists."""
    path = Path(path)
    file = path if path.name == INDEX_NAME or path.is_file() else path / INDEX_NAME
    if not file.exists():
        raise FileNotFoundError(f"{file}: shard index not found (write_shards writes it last; a missing "
                                "index means the folder is not a shard set or the write was interrupted)")
    try:
        index = json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ShardError(f"{file}: not valid JSON ({e})") from e
    if not isinstance(index, dict) or index.get("format") != FORMAT:
        found = index.get("format") if isinstance(index, dict) else type(index).__name__
        raise ShardError(f"{file}: not a vantage shard index (format {found!r}, expected {FORMAT!r})")
    if index.get("version") != VERSION:
        raise ShardError(f"{file}: shard format version {index.get('version')} is not supported "
                         f"(this vantage reads version {VERSION})")
    try:
        counts = [int(s["count"]) for s in index["shards"]]
        names = [str(s["file"]) for s in index["shards"]]
    except (KeyError, TypeError, ValueError) as e:
        raise ShardError(f"{file}: malformed 'shards' list ({e!r})") from e
    if sum(counts) != index.get("num_samples"):
        raise ShardError(f"{file}: shard counts add up to {sum(counts)}, num_samples is "
                         f"{index.get('num_samples')}")
    missing = [n for n in names if not (file.parent / n).is_file()]
    if missing:
        raise ShardError(f"{file.parent}: {len(missing)} shard(s) listed in {INDEX_NAME} are missing: "
                         + ", ".join(missing[:5]))
    return file.parent, index


def _check_size(file: Path, expected: int | None) -> None:
    size = file.stat().st_size if file.exists() else None
    if size is None or (expected is not None and size != expected):
        raise ShardError(f"{file}: " + ("missing" if size is None else f"{size} bytes but {INDEX_NAME} "
                         f"says {expected}; the shard is truncated or was replaced"))


# ---------------------------------------------------------------------- decoding (both readers)
def _key(member: str) -> str:
    return member.rsplit("/", 1)[-1].split(".", 1)[0]


def _png_array(data: bytes, where: str) -> np.ndarray:
    try:
        return np.array(Image.open(io.BytesIO(data)))
    except Exception as e:
        raise ShardError(f"{where}: cannot decode PNG ({e})") from e


def _decode(head: dict, files: dict[str, bytes], views: list[int], where: str) -> ObjectViews:
    """ObjectViews ``(len(views), 3, H, W)`` of the views at positions ``views``."""
    def get(suffix: str) -> bytes:
        if suffix not in files:
            raise ShardError(f"{where}: member {suffix} is missing (truncated or hand-edited shard?)")
        return files[suffix]

    try:
        return _decode_views(head, get, views, where)
    except ShardError:
        raise
    except (KeyError, TypeError, ValueError, IndexError) as e:
        raise ShardError(f"{where}: malformed sample ({type(e).__name__}: {e})") from e


def _decode_views(head: dict, get: Callable[[str], bytes], views: list[int], where: str) -> ObjectViews:
    idx = torch.tensor(views, dtype=torch.long)
    rgb = np.stack([_png_array(get(f"{j:05d}.rgb.png"), where) for j in views])
    images = torch.from_numpy(rgb).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    masks = depth = None
    if head["has_masks"]:
        m = np.stack([_png_array(get(f"{j:05d}.mask.png"), where) for j in views])
        masks = torch.from_numpy(m).float().unsqueeze(1) / 255.0
    if head["has_depth"]:
        d = np.stack([_png_array(get(f"{j:05d}.depth.png"), where).astype(np.float64) for j in views])
        depth = (torch.from_numpy(d) * head["depth_scale"]).float().unsqueeze(1)
    cams = Cameras(torch.tensor(head["c2w"], dtype=torch.float32)[idx],
                   torch.tensor(head["K"], dtype=torch.float32)[idx], head["width"], head["height"])
    return ObjectViews(images=images, cameras=cams, masks=masks, depth=depth,
                       view_ids=torch.tensor(head["view_ids"], dtype=torch.long)[idx], name=head["name"],
                       meta=dict(head.get("meta") or {}))


def draw_pair(sampler: PairSampler, seed: int, epoch: int, sample: int, num_views: int, name: str = ""
              ) -> PairIndices:
    """The views of global sample ``sample``'s pair in ``epoch``: drawn with ``seeded_generator(seed, epoch,
    sample)``, the same in every reader (:class:`~vantage.data.shard_stream.ShardDataset`,
    :class:`~vantage.data.shard_scenes.ShardPairs`) and on every rank."""
    return sampler.sample(int(num_views), seeded_generator(seed, epoch, sample), name=name)
