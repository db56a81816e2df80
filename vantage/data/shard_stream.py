"""Streaming reader of a shard set: :class:`ShardDataset` and its splitting rule, :func:`epoch_plan`.

Splitting rule of :class:`ShardDataset`: in every epoch the shards are put in an order (seeded
by ``(seed, epoch)`` with ``shuffle``, else index order) and their samples concatenated into
one sequence of ``T`` samples. Rank ``r`` of ``W`` takes the contiguous block
``[r*T//W, (r+1)*T//W)`` and worker ``w`` of ``K`` the same rule inside the rank's block. The
blocks partition the sequence, so every sample appears exactly once per epoch for any ``T``,
``W`` and ``K`` (no "shards divisible by GPUs" rule; fewer shards than consumers is fine), and
a consumer reads few shards (the data is contiguous, the rest of a shard is skipped header by
header). Ranks get counts that differ by at most one; ``drop_last=True`` makes them equal.

The format and :func:`~vantage.data.shard_format.read_index` are in :mod:`vantage.data.shard_format`, the
writer in :mod:`vantage.data.shards`, random access in :mod:`vantage.data.shard_scenes`.
``vantage train --data SHARD_DIR`` gives each rank the blocks of this rule
(:class:`vantage.train.shard_data.ShardStepSampler`).
"""

from __future__ import annotations

import json
import tarfile
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch

from vantage.data.pairs import ClipTooShortError, Pair, PairSampler, resolve_rank, seeded_generator, split_loaded
from vantage.data.shard_format import INDEX_NAME, ShardError, _check_size, _decode, _key, draw_pair, read_index
from vantage.data.views import ObjectViews

__all__ = ["epoch_plan", "ShardDataset"]


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


class ShardDataset(torch.utils.data.IterableDataset):
    """Streams the objects (or training pairs) of a shard folder written by :func:`~vantage.data.shards.write_shards`.

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
