"""Scale-out storage: any :class:`SceneDataset` as webdataset-style tar shards, and a reader that
splits *samples* (not shards) across DDP ranks and DataLoader workers.

Layout of ``out_dir`` (see ``docs/data-pipeline.md``)::

    index.json            format, version, resolution, one entry {file, count, bytes} per shard
    shard-000000.tar      samples 0 .. shard_size-1, one sample per object, in write order
    shard-000001.tar      ...

Inside a shard, sample ``k`` (its key ``f"{k:09d}"`` is the global sample index) is the
consecutive members ``KEY.json`` (name, cameras, view ids, depth scale, meta), then per view
``j``: ``KEY.{j:05d}.rgb.png`` (8-bit RGB), ``KEY.{j:05d}.mask.png`` (8-bit L) and
``KEY.{j:05d}.depth.png`` (16-bit; depth = value * depth_scale). The json comes first so a
reader can pick views before reading any image. Plain ``tarfile`` writes and reads them; the
files also open with the ``webdataset`` library (key = name up to the first dot).

Splitting rule of :class:`ShardDataset`: in every epoch the shards are put in an order (seeded
by ``(seed, epoch)`` with ``shuffle``, else index order) and their samples concatenated into
one sequence of ``T`` samples. Rank ``r`` of ``W`` takes the contiguous block
``[r*T//W, (r+1)*T//W)`` and worker ``w`` of ``K`` the same rule inside the rank's block. The
blocks partition the sequence, so every sample appears exactly once per epoch for any ``T``,
``W`` and ``K`` (no "shards divisible by GPUs" rule; fewer shards than consumers is fine), and
a consumer reads few shards (the data is contiguous, the rest of a shard is skipped header by
header). Ranks get counts that differ by at most one; ``drop_last=True`` makes them equal.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from vantage.cameras import Cameras
from vantage.data.pairs import (
    ClipTooShortError,
    Pair,
    PairSampler,
    resolve_rank,
    seeded_generator,
    split_loaded,
)
from vantage.data.views import ObjectViews, SceneDataset

__all__ = ["FORMAT", "VERSION", "INDEX_NAME", "ShardError", "shard_name", "write_shards", "read_index",
           "ShardDataset"]

FORMAT, VERSION, INDEX_NAME = "vantage-shards", 1, "index.json"
MAX_VIEWS = 100_000


class ShardError(RuntimeError):
    """A shard or ``index.json`` is missing, corrupt or inconsistent; the message names the file."""


def shard_name(i: int) -> str:
    """File name of shard ``i``: ``shard-000000.tar``."""
    return f"shard-{i:06d}.tar"


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
    return members, {"resolution": (h, w), "masks": obj.masks is not None, "depth": obj.depth is not None}


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
    ``FileExistsError`` unless ``overwrite=True`` (then they are deleted first).

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
            shards.append({"file": shard_name(len(shards)), "count": 0})
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
    tmp_index.write_text(json.dumps(index, indent=1))
    os.replace(tmp_index, out / INDEX_NAME)
    return index


# ---------------------------------------------------------------------- reading
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


def _key(member: str) -> str:
    return member.rsplit("/", 1)[-1].split(".", 1)[0]


def _iter_shard(path: Path, lo: int, hi: int, select: Callable[[int, dict], tuple[set[str] | None, object]]
                ) -> Iterator[tuple[int, dict, dict[str, bytes], object]]:
    """Samples ``lo <= k < hi`` of a shard: ``(k, header, {suffix: bytes}, extra)``.

    ``select(k, header)`` returns ``(suffixes to read or None for all, extra)``; members not
    selected are skipped without reading their data, as are samples outside ``[lo, hi)``.
    """
    k, cur, head, files, want, extra = -1, None, None, {}, None, None
    try:
        with tarfile.open(path, "r:") as tar:
            for m in tar:
                if not m.isfile():
                    continue
                key = _key(m.name)
                if key != cur:
                    if cur is not None and lo <= k < hi:
                        yield k, head, files, extra
                    k, cur, head, files = k + 1, key, None, {}
                    if k >= hi:
                        return
                if k < lo:
                    continue
                suffix = m.name.rsplit("/", 1)[-1][len(key) + 1:]
                if suffix == "json":
                    head = json.loads(tar.extractfile(m).read())
                    want, extra = select(k, head)
                elif head is None:
                    raise ShardError(f"{path}: sample {key} does not start with {key}.json")
                elif want is None or suffix in want:
                    files[suffix] = tar.extractfile(m).read()
            if cur is not None and lo <= k < hi:
                yield k, head, files, extra
    except (ShardError, ClipTooShortError):
        raise
    except (tarfile.TarError, OSError, EOFError, ValueError) as e:
        raise ShardError(f"{path}: corrupt or unreadable shard ({type(e).__name__}: {e})") from e
    if k + 1 < hi:
        raise ShardError(f"{path}: holds {k + 1} samples but {INDEX_NAME} says at least {hi}; "
                         "the shard is truncated or the index is stale")


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


def _block(total: int, part: int, parts: int) -> tuple[int, int]:
    return part * total // parts, (part + 1) * total // parts


class ShardDataset(torch.utils.data.IterableDataset):
    """Streams the objects (or training pairs) of a shard folder written by :func:`write_shards`.

    Yields :class:`ObjectViews` (``images (N, 3, H, W)``; batch with
    :func:`~vantage.data.views.collate_views`), or, with ``pair_sampler``, one
    :class:`~vantage.data.pairs.Pair` per object (batch with
    :func:`~vantage.data.pairs.collate_pairs`); pair views are drawn with
    ``seeded_generator(seed, epoch, sample_index)``, so a sample's pair is the same whatever
    the rank/worker split, and only the chosen views are read and decoded.

    Args:
        path: the shard folder or its ``index.json``.
        shuffle: shuffle the shard order per epoch and mix samples through a buffer.
        seed: base seed of the shard order, shuffle buffer and pairs.
        rank, world_size: this process's DDP rank (default: ``torch.distributed``'s, else 0/1).
        drop_last: leave out the last ``T % world_size`` samples of each epoch's sequence so
            that every rank gets exactly ``T // world_size``.
        repeat: iterate epochs ``epoch, epoch+1, ...`` forever (step-based training); each
            consumer advances its own epoch, and every epoch is still exactly-once.
        shuffle_buffer: samples held (as undecoded bytes) per consumer to mix the order when
            ``shuffle``; 0 disables it.
        pair_sampler: yield pairs instead of objects; short objects follow ``on_short``
            (``"skip"`` drops them with one warning per consumer).

    Call :meth:`set_epoch` before each epoch; it reaches DataLoader workers that are created per
    epoch (the default), not ``persistent_workers=True`` (use ``repeat=True`` there).
    """

    def __init__(self, path: str | Path, *, shuffle: bool = False, seed: int = 0, rank: int | None = None,
                 world_size: int | None = None, drop_last: bool = False, repeat: bool = False,
                 shuffle_buffer: int = 100, pair_sampler: PairSampler | None = None) -> None:
        super().__init__()
        self.root, self.index = read_index(path)
        self.files = [self.root / s["file"] for s in self.index["shards"]]
        self.counts = [int(s["count"]) for s in self.index["shards"]]
        self.offsets = np.concatenate([[0], np.cumsum(self.counts)]).astype(int).tolist()
        self.shuffle, self.seed, self.drop_last, self.repeat = shuffle, int(seed), drop_last, repeat
        self.shuffle_buffer, self.pair_sampler = int(shuffle_buffer), pair_sampler
        dist = torch.distributed
        if (rank is None or world_size is None) and dist.is_available() and dist.is_initialized():
            rank, world_size = resolve_rank(rank, world_size)  # kept for spawned DataLoader workers
        self._rank, self._world = rank, world_size
        self.epoch = 0

    @property
    def num_samples(self) -> int:
        """Objects in the whole shard set."""
        return self.offsets[-1]

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _epoch_total(self, world: int) -> int:
        t = self.num_samples
        return t - t % world if self.drop_last else t

    def __len__(self) -> int:
        """Samples this rank yields per epoch (all its workers together)."""
        rank, world = resolve_rank(self._rank, self._world)
        lo, hi = _block(self._epoch_total(world), rank, world)
        return hi - lo

    def plan(self, epoch: int, rank: int, world_size: int, worker: int = 0, num_workers: int = 1
             ) -> list[tuple[int, int, int]]:
        """``[(shard, lo, hi)]``: the sample ranges one consumer reads in ``epoch``, in order."""
        order = (torch.randperm(len(self.files), generator=seeded_generator(self.seed, epoch)).tolist()
                 if self.shuffle else list(range(len(self.files))))
        r_lo, r_hi = _block(self._epoch_total(world_size), rank, world_size)
        w_lo, w_hi = _block(r_hi - r_lo, worker, num_workers)
        start, stop, pos, out = r_lo + w_lo, r_lo + w_hi, 0, []
        for s in order:
            lo, hi = max(start - pos, 0), min(stop - pos, self.counts[s])
            if lo < hi:
                out.append((s, lo, hi))
            pos += self.counts[s]
        return out

    def _consumer(self) -> tuple[int, int, int, int]:
        rank, world = resolve_rank(self._rank, self._world)
        info = torch.utils.data.get_worker_info()
        return (rank, world, 0, 1) if info is None else (rank, world, info.id, info.num_workers)

    def _check_size(self, s: int) -> None:
        expected, file = self.index["shards"][s].get("bytes"), self.files[s]
        size = file.stat().st_size if file.exists() else None
        if size is None or (expected is not None and size != expected):
            raise ShardError(f"{file}: " + ("missing" if size is None else f"{size} bytes but {INDEX_NAME} "
                             f"says {expected}; the shard is truncated or was replaced"))

    def _raw(self, epoch: int, consumer: tuple[int, int, int, int]) -> Iterator[tuple]:
        """Undecoded ``(shard file, sample index, header, members, pair indices)`` of a consumer."""
        sampler, warned = self.pair_sampler, False
        for s, lo, hi in self.plan(epoch, *consumer):
            self._check_size(s)

            def select(k: int, head: dict, s: int = s) -> tuple[set[str] | None, object]:
                if sampler is None:
                    return None, None
                g = seeded_generator(self.seed, epoch, self.offsets[s] + k)
                try:
                    idx = sampler.sample(int(head["num_views"]), g, name=head["name"])
                except ClipTooShortError as e:
                    if sampler.on_short == "error":
                        raise ClipTooShortError(f"{self.files[s]}: {e}") from e
                    return set(), None
                return {f"{j:05d}.{kind}.png" for j in set(idx.cond) | {idx.target}
                        for kind in ("rgb", "mask", "depth")}, idx

            for k, head, files, pair in _iter_shard(self.files[s], lo, hi, select):
                if sampler is not None and pair is None:
                    if not warned:
                        warnings.warn(f"{self.files[s]}: skipping objects too short for the pair sampler "
                                      f"(first: '{head['name']}')", stacklevel=2)
                        warned = True
                    continue
                yield self.files[s], self.offsets[s] + k, head, files, pair

    def _decode(self, item: tuple) -> ObjectViews | Pair:
        file, gidx, head, files, pair = item
        where = f"{file} sample {gidx:09d} ('{head.get('name', '?')}')"
        needed = (list(range(int(head["num_views"]))) if pair is None
                  else sorted(set(pair.cond) | {pair.target}))
        obj = _decode(head, files, needed, where)
        obj.meta.update(shard=file.name, sample_index=gidx, source_index=head.get("source_index"))
        return obj if pair is None else split_loaded(obj, needed, pair, gidx)

    def __iter__(self) -> Iterator:
        consumer = self._consumer()
        epoch = self.epoch
        while True:
            stream = self._raw(epoch, consumer)
            if self.shuffle and self.shuffle_buffer > 0:
                stream = _buffered(stream, self.shuffle_buffer, seeded_generator(self.seed, epoch, *consumer))
            for item in stream:
                yield self._decode(item)
            if not self.repeat:
                return
            epoch += 1


def _buffered(stream: Iterator, size: int, g: torch.Generator) -> Iterator:
    """Shuffle buffer: hold ``size`` items, yield a random one as each new item arrives."""
    buf: list = []
    for item in stream:
        buf.append(item)
        if len(buf) >= size:
            j = int(torch.randint(len(buf), (1,), generator=g))
            buf[j], buf[-1] = buf[-1], buf[j]
            yield buf.pop()
    while buf:
        j = int(torch.randint(len(buf), (1,), generator=g))
        buf[j], buf[-1] = buf[-1], buf[j]
        yield buf.pop()
