"""Random access to a shard set: :class:`ShardScenes` (a :class:`SceneDataset`) and :class:`ShardPairs` (its
training pairs).

``index.json`` holds the byte offset of every sample, so ``load(i, views)`` seeks to sample ``i`` and reads its
json and the requested views only. ``vantage train --data SHARD_DIR`` streams with it
(:class:`vantage.train.shard_data.ShardStepSampler`: the rank blocks of :mod:`vantage.data.shard_stream`, read
in a resumable order). Shard sets written before the offsets were recorded are scanned once when opened.

The format is in :mod:`vantage.data.shard_format`, the writer in :mod:`vantage.data.shards`, the streaming
reader in :mod:`vantage.data.shard_stream`.
"""

from __future__ import annotations

import json
import os
import tarfile
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from vantage.data.formats.common import resize_views
from vantage.data.pairs import ClipTooShortError, Pair, PairIndices, PairSampler, split_loaded
from vantage.data.shard_format import INDEX_NAME, ShardError, _check_size, _decode, _key, draw_pair, read_index
from vantage.data.views import ObjectViews, SceneDataset, Skipped

__all__ = ["ShardScenes", "ShardPairs"]

_OPEN_FILES = 16  # shard files a process keeps open (per ShardScenes)


def _scan_shard(path: Path, count: int) -> tuple[list[int], list[int]]:
    """``(offsets, num_views)`` of the samples of a shard whose index entry lacks them (older writer)."""
    offsets, views, cur = [], [], None
    try:
        with tarfile.open(path, "r:") as tar:
            for m in tar:
                key = _key(m.name)
                if key != cur:
                    offsets.append(m.offset)
                    cur = key
                if m.name.rsplit("/", 1)[-1] == f"{key}.json":
                    views.append(int(json.loads(tar.extractfile(m).read())["num_views"]))
    except (tarfile.TarError, OSError, EOFError, ValueError, KeyError, TypeError) as e:
        raise ShardError(f"{path}: corrupt or unreadable shard ({type(e).__name__}: {e})") from e
    if len(offsets) != count or len(views) != count:
        raise ShardError(f"{path}: holds {len(offsets)} samples ({len(views)} with a json) but {INDEX_NAME} "
                         f"says {count}; the shard is truncated or the index is stale")
    return offsets, views


def _read_at(f, file: Path, pos: int, size: int) -> bytes:
    f.seek(pos)
    data = f.read(size)
    if len(data) != size:
        raise ShardError(f"{file}: ends at byte {pos + len(data)}, inside a member that needs {size} bytes from "
                         f"byte {pos} (truncated shard)")
    return data


def _read_sample(f, file: Path, offset: int, key: str, views: set[int] | None) -> tuple[dict, dict[str, bytes]]:
    """``(header, {suffix: bytes})`` of sample ``key`` whose first header is at byte ``offset``, with the
    members of ``views`` only (all with None); stops after the last wanted view."""
    pos, head, files, last = offset, None, {}, (max(views) if views else -1)
    while True:
        f.seek(pos)
        buf = f.read(tarfile.BLOCKSIZE)
        if len(buf) < tarfile.BLOCKSIZE:
            if head is None:
                raise ShardError(f"{file}: ends at byte {pos + len(buf)}, before sample {key} ({INDEX_NAME} puts it "
                                 f"at byte {offset}); the shard is truncated or the index is stale")
            break  # the file ends without tar's end marker after a complete member
        try:
            info = tarfile.TarInfo.frombuf(buf, tarfile.ENCODING, "surrogateescape")
        except tarfile.EOFHeaderError:
            info = None
        except tarfile.HeaderError as e:
            raise ShardError(f"{file}: corrupt tar header at byte {pos} (sample {key}: {e}); the shard is damaged"
                             + (f" or {INDEX_NAME} is stale" if head is None else "")) from e
        name = info.name.rsplit("/", 1)[-1] if info is not None else ""
        if name.split(".", 1)[0] != key:
            if head is None:
                raise ShardError(f"{file}: {INDEX_NAME} puts sample {key} at byte {offset}, but the member there "
                                 f"is {'the end of the archive' if info is None else repr(info.name)}; the index "
                                 f"does not match the shard (rewritten without its index?)")
            break
        if not info.isreg():
            raise ShardError(f"{file}: member {info.name!r} is not a plain file (not written by vantage)")
        data_pos, suffix = pos + tarfile.BLOCKSIZE, name[len(key) + 1:]
        pos = data_pos + -(-info.size // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE
        if head is None:
            if suffix != "json":
                raise ShardError(f"{file}: sample {key} does not start with {key}.json")
            try:
                head = json.loads(_read_at(f, file, data_pos, info.size))
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise ShardError(f"{file}: {key}.json is not valid JSON ({e})") from e
            continue
        view = int(suffix[:5]) if suffix[:5].isdigit() else -1
        if views is not None and view > last:
            break
        if views is None or view in views:
            files[suffix] = _read_at(f, file, data_pos, info.size)
    return head, files


class ShardScenes(SceneDataset):
    """The objects of a shard folder with random access: a :class:`SceneDataset` whose ``load(i, views)``
    seeks to sample ``i`` (its byte offset is in ``index.json``) and reads its json and the requested views
    only.

    Scene ``i`` is global sample ``i`` (write order); ``scene_name(i)`` locates it (``shard-000001.tar:
    000000017``; the object's own name is ``load(i).name`` or :meth:`object_name`). With ``resolution``,
    views of another size are resized to ``resolution x resolution`` on load (antialiased bilinear,
    intrinsics scaled; non-square images are an error). Shard files are checked against the sizes in the
    index when opened; a shard set whose index has no offsets (written by an older vantage) is scanned once
    (headers and json of every sample; ``log`` says so). Each process keeps a few shard files open.
    """

    format_name = "shards"

    def __init__(self, path: str | Path, *, resolution: int | None = None,
                 log: Callable[[str], None] | None = None) -> None:
        super().__init__()
        self.root, self.index = read_index(path)
        entries = self.index["shards"]
        self.files = [self.root / e["file"] for e in entries]
        counts = [int(e["count"]) for e in entries]
        for file, e in zip(self.files, entries):
            _check_size(file, e.get("bytes"))
        offsets, views, scanned = [], [], 0
        for file, e, n in zip(self.files, entries, counts):
            if "offsets" in e and "num_views" in e:
                if len(e["offsets"]) != n or len(e["num_views"]) != n:
                    raise ShardError(f"{self.root / INDEX_NAME}: the entry of {file.name} lists {len(e['offsets'])} "
                                     f"offsets and {len(e['num_views'])} view counts for {n} samples")
                off, nv = e["offsets"], e["num_views"]
            else:
                if scanned == 0 and log is not None:
                    log(f"note: {self.root / INDEX_NAME} has no sample offsets (written by an older vantage); "
                        f"scanning the shards once (write them again to skip this)")
                off, nv = _scan_shard(file, n)
                scanned += 1
            offsets.append(np.asarray(off, dtype=np.int64))
            views.append(np.asarray(nv, dtype=np.int64))
        self.counts = counts
        self.first = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        self.offsets = np.concatenate(offsets) if offsets else np.zeros(0, np.int64)
        self.views = np.concatenate(views) if views else np.zeros(0, np.int64)
        self.shard_of = np.repeat(np.arange(len(counts)), counts)
        self.resolution = None if resolution is None else int(resolution)
        self._handles: OrderedDict | None = None
        self._pid = -1

    def __len__(self) -> int:
        return int(self.first[-1])

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_handles": None, "_pid": -1}  # open files stay with their process

    def scene_name(self, index: int) -> str:
        g = self._check_index(index)
        return f"{self.files[self.shard_of[g]].name}:{g:09d}"

    def num_views(self, index: int) -> int:
        return int(self.views[self._check_index(index)])

    def _file(self, s: int):
        if self._pid != os.getpid():  # a forked DataLoader worker opens its own files (no shared offsets)
            self._handles, self._pid = OrderedDict(), os.getpid()
        f = self._handles.pop(s, None)
        if f is None:
            try:
                f = open(self.files[s], "rb")  # noqa: SIM115 - cached, closed when evicted
            except OSError as e:
                raise ShardError(f"{self.files[s]}: cannot open the shard ({e})") from e
        self._handles[s] = f
        if len(self._handles) > _OPEN_FILES:
            self._handles.popitem(last=False)[1].close()
        return f

    def _read(self, g: int, views: set[int] | None) -> tuple[dict, dict[str, bytes]]:
        s = int(self.shard_of[g])
        try:
            return _read_sample(self._file(s), self.files[s], int(self.offsets[g]), f"{g:09d}", views)
        except OSError as e:
            raise ShardError(f"{self.files[s]}: cannot read sample {g:09d} ({e})") from e

    def object_name(self, index: int) -> str:
        """The object's name (read from its json)."""
        return str(self._read(self._check_index(index), set())[0].get("name", "?"))

    def load(self, index: int, views: Sequence[int] | None = None) -> ObjectViews:
        g = self._check_index(index)
        n = int(self.views[g])
        needed = list(range(n)) if views is None else [int(v) for v in views]
        bad = [v for v in needed if not 0 <= v < n]
        if bad:
            raise IndexError(f"{self.scene_name(g)} has {n} views; view positions {bad[:5]} are out of range")
        head, files = self._read(g, set(needed))
        file = self.files[self.shard_of[g]]
        where = f"{file} sample {g:09d} ('{head.get('name', '?')}')"
        if int(head.get("num_views", -1)) != n:
            raise ShardError(f"{where}: has {head.get('num_views')} views but {INDEX_NAME} says {n}; the index "
                             f"does not match the shard")
        obj = _decode(head, files, needed, where)
        obj.meta.update(shard=file.name, sample_index=g, source_index=head.get("source_index"))
        if self.resolution is None:
            return obj
        cams, images, masks, depth = resize_views(obj.cameras, obj.images, obj.masks, obj.depth,
                                                  size=self.resolution, where=where)
        return ObjectViews(images=images, cameras=cams, masks=masks, depth=depth, view_ids=obj.view_ids,
                           name=obj.name, meta=obj.meta)


class ShardPairs(torch.utils.data.Dataset):
    """Training pairs of a :class:`ShardScenes`, indexed like :class:`~vantage.data.pairs.PairDataset`.

    Item ``i`` is the ``i``-th sample that can give a pair (``samples[i]``, its global sample index);
    ``(epoch, i)`` draws its views with :func:`draw_pair`, i.e. ``seeded_generator(seed, epoch, sample)``,
    so a shard sample gets the same pair here as from ``ShardDataset(pair_sampler=...)``, whatever the rank,
    worker or order. View counts come from the index, so short samples are found without reading the shards:
    ``sampler.on_short="error"`` raises :class:`ClipTooShortError` naming them, ``"skip"`` leaves them out
    (listed in ``skipped``). ``scene_index`` of a pair is its global sample index.
    """

    def __init__(self, scenes: ShardScenes, sampler: PairSampler | None = None, *, seed: int = 0) -> None:
        self.scenes, self.sampler, self.seed, self.epoch = scenes, sampler or PairSampler(), int(seed), 0
        reasons = {int(n): self.sampler.check(int(n)) for n in np.unique(scenes.views)}
        short = np.isin(scenes.views, [n for n, r in reasons.items() if r is not None])
        bad = np.flatnonzero(short)
        self.samples = np.flatnonzero(~short)
        self.skipped = [Skipped(scenes.scene_name(int(g)), reasons[int(scenes.views[g])]) for g in bad]
        if len(bad) and (self.sampler.on_short == "error" or not len(self.samples)):
            listed = "; ".join(f"{scenes.scene_name(int(g))} ('{scenes.object_name(int(g))}') "
                               f"{reasons[int(scenes.views[g])]}" for g in bad[:5])
            what = (f"{len(bad)} of {len(scenes)} samples of {scenes.root} cannot give a pair" if len(self.samples)
                    else f"none of the {len(scenes)} samples of {scenes.root} can give a pair")
            raise ClipTooShortError(f"{what} (pass on_short='skip' to leave them out; vivid: --set "
                                    f"pair_on_short=skip): {listed}")

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.samples)

    def indices(self, index: int, epoch: int | None = None) -> tuple[int, PairIndices]:
        """``(global sample index, view positions)`` of item ``index``, without reading the shards."""
        if not 0 <= index < len(self):
            raise IndexError(f"ShardPairs has {len(self)} items, index {index} is out of range")
        g = int(self.samples[index])
        return g, draw_pair(self.sampler, self.seed, self.epoch if epoch is None else epoch, g,
                            self.scenes.views[g], self.scenes.scene_name(g))

    def __getitem__(self, index: int | tuple[int, int]) -> Pair:
        epoch, index = (int(index[0]), int(index[1])) if isinstance(index, tuple) else (None, int(index))
        g, idx = self.indices(index, epoch)
        needed = sorted(set(idx.cond) | {idx.target})
        return split_loaded(self.scenes.load(g, views=needed), needed, idx, g)
