"""Scale-out storage: any :class:`SceneDataset` as webdataset-style tar shards, a streaming reader
that splits *samples* (not shards) across DDP ranks and DataLoader workers, and random access.

Layout of ``out_dir`` (see ``docs/data-pipeline.md``)::

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

Splitting rule of :class:`ShardDataset`: in every epoch the shards are put in an order (seeded
by ``(seed, epoch)`` with ``shuffle``, else index order) and their samples concatenated into
one sequence of ``T`` samples. Rank ``r`` of ``W`` takes the contiguous block
``[r*T//W, (r+1)*T//W)`` and worker ``w`` of ``K`` the same rule inside the rank's block. The
blocks partition the sequence, so every sample appears exactly once per epoch for any ``T``,
``W`` and ``K`` (no "shards divisible by GPUs" rule; fewer shards than consumers is fine), and
a consumer reads few shards (the data is contiguous, the rest of a shard is skipped header by
header). Ranks get counts that differ by at most one; ``drop_last=True`` makes them equal.

Random access (:class:`ShardScenes`, a :class:`SceneDataset`; :class:`ShardPairs`, its training
pairs): ``index.json`` holds the byte offset of every sample, so ``load(i, views)`` seeks to sample
``i`` and reads its json and the requested views only. ``vantage train --data SHARD_DIR`` streams
with it (:class:`vantage.train.data.ShardStepSampler`: the rank blocks above, read in a resumable
order). Shard sets written before the offsets were recorded are scanned once when opened.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from vantage.cameras import Cameras
from vantage.data.formats.common import DatasetError, resize_views
from vantage.data.pairs import (
    ClipTooShortError,
    Pair,
    PairIndices,
    PairSampler,
    resolve_rank,
    seeded_generator,
    split_loaded,
)
from vantage.data.views import ObjectViews, SceneDataset, Skipped

__all__ = ["FORMAT", "VERSION", "INDEX_NAME", "ShardError", "shard_name", "write_shards", "read_index",
           "epoch_plan", "draw_pair", "ShardDataset", "ShardScenes", "ShardPairs"]

FORMAT, VERSION, INDEX_NAME = "vantage-shards", 1, "index.json"
MAX_VIEWS = 100_000


class ShardError(DatasetError, RuntimeError):
    """A shard or ``index.json`` is missing, corrupt or inconsistent; the message names the file.

    A :class:`~vantage.data.formats.common.DatasetError` (bad dataset input: the command line prints it as
    one line) and, as before, a ``RuntimeError``."""


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


def _block(total: int, part: int, parts: int) -> tuple[int, int]:
    return part * total // parts, (part + 1) * total // parts


def epoch_plan(counts: Sequence[int], epoch: int, *, seed: int = 0, shuffle: bool = False, rank: int = 0,
               world_size: int = 1, worker: int = 0, num_workers: int = 1, drop_last: bool = False
               ) -> list[tuple[int, int, int]]:
    """``[(shard, lo, hi)]``: the sample ranges one consumer reads in ``epoch``, in order (the splitting
    rule of the module docstring; ``counts`` are the shards' sample counts)."""
    order = (torch.randperm(len(counts), generator=seeded_generator(seed, epoch)).tolist() if shuffle
             else list(range(len(counts))))
    total = sum(counts)
    r_lo, r_hi = _block(total - total % world_size if drop_last else total, rank, world_size)
    w_lo, w_hi = _block(r_hi - r_lo, worker, num_workers)
    start, stop, pos, out = r_lo + w_lo, r_lo + w_hi, 0, []
    for s in order:
        lo, hi = max(start - pos, 0), min(stop - pos, counts[s])
        if lo < hi:
            out.append((s, lo, hi))
        pos += counts[s]
    return out


def draw_pair(sampler: PairSampler, seed: int, epoch: int, sample: int, num_views: int, name: str = ""
              ) -> PairIndices:
    """The views of global sample ``sample``'s pair in ``epoch``: drawn with ``seeded_generator(seed, epoch,
    sample)``, the same in every reader (:class:`ShardDataset`, :class:`ShardPairs`) and on every rank."""
    return sampler.sample(int(num_views), seeded_generator(seed, epoch, sample), name=name)


def _check_size(file: Path, expected: int | None) -> None:
    size = file.stat().st_size if file.exists() else None
    if size is None or (expected is not None and size != expected):
        raise ShardError(f"{file}: " + ("missing" if size is None else f"{size} bytes but {INDEX_NAME} "
                         f"says {expected}; the shard is truncated or was replaced"))


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
        return epoch_plan(self.counts, epoch, seed=self.seed, shuffle=self.shuffle, rank=rank,
                          world_size=world_size, worker=worker, num_workers=num_workers, drop_last=self.drop_last)

    def _consumer(self) -> tuple[int, int, int, int]:
        rank, world = resolve_rank(self._rank, self._world)
        info = torch.utils.data.get_worker_info()
        return (rank, world, 0, 1) if info is None else (rank, world, info.id, info.num_workers)

    def _check_size(self, s: int) -> None:
        _check_size(self.files[s], self.index["shards"][s].get("bytes"))

    def _raw(self, epoch: int, consumer: tuple[int, int, int, int]) -> Iterator[tuple]:
        """Undecoded ``(shard file, sample index, header, members, pair indices)`` of a consumer."""
        sampler, warned = self.pair_sampler, False
        for s, lo, hi in self.plan(epoch, *consumer):
            self._check_size(s)

            def select(k: int, head: dict, s: int = s) -> tuple[set[str] | None, object]:
                if sampler is None:
                    return None, None
                try:
                    idx = draw_pair(sampler, self.seed, epoch, self.offsets[s] + k, head["num_views"], head["name"])
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


# ---------------------------------------------------------------------- random access
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
