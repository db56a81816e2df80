"""The trainer's shard path: opening a shard folder given as ``--data`` (:func:`is_shard_folder`), and
:class:`ShardStepSampler`, the step sampler that streams it, with its resume position.

A shard folder (``index.json`` + ``shard-*.tar``, written by ``vantage data shard``) opens as a
:class:`~vantage.data.shard_scenes.ShardScenes`, resized to the method's resolution on load; reader options
and single-image pairs do not apply to it.

The stream (:class:`ShardStepSampler`): each rank streams its own part of every epoch, as
:class:`~vantage.data.shard_stream.ShardDataset` splits it: the shards in the order seeded by
``(seed, epoch)``, their samples concatenated, rank ``r`` taking the contiguous block
``[r*T//W, (r+1)*T//W)``, so every sample is used once per epoch over all ranks. Within its block
a rank leaves out the samples that give no pair and shuffles the rest in windows of
:data:`SHUFFLE_WINDOW` consecutive samples (seeded by ``(seed, epoch, W, r, window)``); its blocks
of epoch 0, 1, 2, ... form the rank's endless stream, of which step ``s`` takes items
``[s*B/W, (s+1)*B/W)``. DataLoader workers are handed whole micro-batches of that stream, so the
sequence does not depend on ``num_workers`` or ``micro_batch``; pairs are drawn from
``(seed, epoch, global sample index)`` (:func:`~vantage.data.shard_format.draw_pair`). The position of
every rank, ``(epoch, offset in its block)``, is saved in checkpoints (:meth:`ShardStepSampler.state`)
and a resumed run starts there, reading nothing before it (the index holds each sample's byte offset).
The steps of a run depend on ``W`` (the rank blocks do); resuming with another number of processes
starts every rank at the beginning of the next epoch that none had started.

The rest of ``--data`` (specs, dataset folders, the synthetic data, :class:`~vantage.train.data.StepBatchSampler`
and :func:`~vantage.train.data.step_sampler`, which picks the sampler) is in :mod:`vantage.train.data`, which
re-exports the public names of this module. The shard readers are :mod:`vantage.data.shard_scenes` and
:mod:`vantage.data.shard_stream`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from vantage.data.formats.common import DatasetError
from vantage.data.pairs import seeded_generator
from vantage.data.shard_format import FORMAT, INDEX_NAME
from vantage.data.shard_scenes import ShardPairs, ShardScenes
from vantage.data.shard_stream import epoch_plan

if TYPE_CHECKING:
    from vantage.train.data import DataSpec

__all__ = ["ShardStepSampler", "SHUFFLE_WINDOW", "is_shard_folder"]

#: Shard streams shuffle a rank's samples within windows of this many consecutive ones (reads stay local).
SHUFFLE_WINDOW = 1024
_WINDOW_KEY = 0x5748


def is_shard_folder(path: Path) -> bool:
    """Whether ``path`` is a shard folder (or its ``index.json``), complete or not (a folder of shards whose
    index is missing or broken counts, so that the shard reader says what is wrong)."""
    if path.is_file():
        return path.name == INDEX_NAME
    if not path.is_dir():
        return False
    if (path / INDEX_NAME).is_file():
        with open(path / INDEX_NAME, "rb") as f:
            if f'"{FORMAT}"'.encode() in f.read(4096):
                return True
    return any(path.glob("shard-*.tar*"))


def _open_shards(path: Path, data: DataSpec, resolution: int, log: Callable[[str], None]) -> ShardScenes:
    if data.format not in (None, "shards"):
        raise DatasetError(f"--data {path} is a shard folder (index.json + shard-*.tar); leave out --format "
                           f"{data.format} (or give --format shards)")
    if data.options:
        raise DatasetError(f"--data {path} is a shard folder: reader options ({', '.join(sorted(data.options))}) "
                           f"do not apply to it; give them to `vantage data shard` when writing the shards")
    scenes = ShardScenes(path, resolution=resolution, log=log)
    if len(scenes) == 0:
        raise DatasetError(f"--data {path}: {scenes.root / INDEX_NAME} lists no samples")
    index = scenes.index
    sizes = sorted({tuple(int(v) for v in r) for r in (index.get("resolutions") or [index.get("resolution")])
                    if r})
    odd = [f"{w}x{h}" for h, w in sizes if h != w]
    if odd:
        raise DatasetError(f"--data {path}: the shards hold {', '.join(odd)} images (not square) but the method "
                           f"works at {resolution}x{resolution}; write the shards from cropped images (or with "
                           f"the reader's resolution option)")
    other = [f"{w}x{h}" for h, w in sizes if (h, w) != (resolution, resolution)]
    if other:
        log(f"note: the shards' images are {', '.join(other)}; resizing them to the method's "
            f"{resolution}x{resolution} on load (antialiased bilinear, intrinsics scaled)")
    return scenes


class ShardStepSampler(torch.utils.data.Sampler):
    """Yields the micro-batches of steps ``start_step .. end_step - 1`` of one rank from a shard set.

    Micro-batches are lists of ``(epoch, item)`` for :class:`~vantage.data.shard_scenes.ShardPairs`; the rank's
    stream and its cursors are described in the module docstring. ``state`` is what
    :meth:`state` returned in the checkpoint the run resumes from (None: a new run).
    """

    def __init__(self, pairs: ShardPairs, *, batch: int, micro_batch: int, rank: int = 0, world_size: int = 1,
                 seed: int = 0, start_step: int = 0, end_step: int = 1, state: dict | None = None,
                 window: int = SHUFFLE_WINDOW, say: Callable[[str], None] = print) -> None:
        per_rank = batch // world_size
        if batch % world_size or per_rank % micro_batch:
            raise ValueError(f"batch {batch} does not split into {world_size} ranks of micro-batches of {micro_batch}")
        scenes = pairs.scenes
        self.counts, self.first = scenes.counts, scenes.first
        self.total, self.num_pairs = len(scenes), len(pairs)
        if self.num_pairs < world_size:
            raise DatasetError(f"{scenes.root}: {self.num_pairs} sample(s) give training pairs, fewer than the "
                               f"{world_size} processes; every process streams its own part of the shards")
        ok = np.zeros(self.total, dtype=bool)
        ok[pairs.samples] = True
        self.cum_ok = np.concatenate([[0], np.cumsum(ok)]).astype(np.int64)  # cum_ok[g] = item of sample g
        self.ok, self.uniform = ok, bool(ok.all())
        self.batch, self.micro, self.rank, self.world = batch, micro_batch, rank, world_size
        self.per_rank, self.accumulation = per_rank, per_rank // micro_batch
        self.seed, self.start, self.end, self.window = int(seed), start_step, end_step, int(window)
        self.root = scenes.root
        self._counts: dict[tuple[int, int], int] = {}
        self._items_of: tuple[int, np.ndarray] | None = None
        self.base_step, self.base = self._base(state, start_step, say)
        self._memo: dict[int, tuple[int, tuple[int, int]]] = {}

    def __len__(self) -> int:
        return max(self.end - self.start, 0) * self.accumulation

    # ------------------------------------------------------------------ the rank streams
    def _base(self, state: dict | None, start_step: int, say: Callable[[str], None]
              ) -> tuple[int, list[tuple[int, int]]]:
        """``(step, cursors of every rank at that step)`` the streams are counted from."""
        if not state or state.get("kind") != "shards":
            return 0, [(0, 0)] * self.world
        if (state.get("num_samples"), state.get("num_pairs")) != (self.total, self.num_pairs):
            raise DatasetError(f"{self.root}: the checkpoint was taken with {state.get('num_samples')} samples "
                               f"({state.get('num_pairs')} giving pairs), the shards now have {self.total} "
                               f"({self.num_pairs}); the data changed, so the run cannot continue its data "
                               f"sequence. Start a new --out")
        cursors = [(int(e), int(o)) for e, o in state["cursors"]]
        if state.get("world_size") == self.world and state.get("window") == self.window:
            return int(state["step"]), cursors
        epoch = max(e + (o > 0) for e, o in cursors)
        say(f"note: the checkpoint's shard streams ({state.get('world_size')} process(es), shuffle window "
            f"{state.get('window')}) cannot be continued with {self.world} process(es) (window {self.window}): "
            f"positions are per process, so every process starts at the beginning of epoch {epoch} (the rest of "
            f"the epoch in progress is left out)")
        return start_step, [(epoch, 0)] * self.world

    def epoch_count(self, epoch: int, rank: int) -> int:
        """Items of ``rank``'s block of ``epoch``."""
        key = (epoch if not self.uniform else 0, rank)
        if key not in self._counts:
            spans = epoch_plan(self.counts, epoch, seed=self.seed, shuffle=True, rank=rank, world_size=self.world)
            self._counts[key] = int(sum(self.cum_ok[self.first[s] + hi] - self.cum_ok[self.first[s] + lo]
                                        for s, lo, hi in spans))
            if len(self._counts) > 4096:
                self._counts.clear()
        n = self._counts[key]
        if n == 0:
            raise DatasetError(f"{self.root}: process {rank} of {self.world} has no sample that gives a training "
                               f"pair in epoch {epoch} (its block holds only short ones); use fewer processes")
        return n

    def epoch_items(self, epoch: int, rank: int) -> np.ndarray:
        """Items of ``rank``'s block of ``epoch`` in stream order (shuffled within windows)."""
        spans = epoch_plan(self.counts, epoch, seed=self.seed, shuffle=True, rank=rank, world_size=self.world)
        g = np.concatenate([np.arange(self.first[s] + lo, self.first[s] + hi) for s, lo, hi in spans]
                           or [np.zeros(0, np.int64)])
        items = self.cum_ok[g[self.ok[g]]]
        for j, a in enumerate(range(0, len(items), self.window)):
            chunk = items[a:a + self.window]
            gen = seeded_generator(self.seed, epoch, _WINDOW_KEY, self.world, rank, j)
            items[a:a + self.window] = chunk[torch.randperm(len(chunk), generator=gen).numpy()]
        return items

    def advance(self, cursor: tuple[int, int], n: int, rank: int) -> tuple[int, int]:
        """The cursor ``n`` items after ``cursor`` in ``rank``'s stream."""
        e, o = cursor
        if self.uniform:  # every block of a rank has the same length
            q, o = divmod(o + n, self.epoch_count(e, rank))
            return e + q, o
        while o + n >= (c := self.epoch_count(e, rank)):
            n, e, o = n - (c - o), e + 1, 0
        return e, o + n

    def cursor_at(self, step: int, rank: int) -> tuple[int, int]:
        """``(epoch, offset)`` of ``rank``'s stream after ``step`` steps."""
        if step < self.base_step:
            raise ValueError(f"step {step} is before the step {self.base_step} the streams are counted from")
        s0, c0 = self._memo.get(rank, (self.base_step, self.base[rank]))
        if step < s0:
            s0, c0 = self.base_step, self.base[rank]
        cursor = self.advance(c0, (step - s0) * self.per_rank, rank)
        self._memo[rank] = (step, cursor)
        return cursor

    def state(self, step: int) -> dict:
        """What a checkpoint after ``step`` steps stores: every rank's cursor (plus what must match on resume)."""
        return {"kind": "shards", "step": int(step), "world_size": self.world, "window": self.window,
                "num_samples": self.total, "num_pairs": self.num_pairs,
                "cursors": [list(self.cursor_at(step, r)) for r in range(self.world)]}

    def _items(self, epoch: int) -> np.ndarray:
        if self._items_of is None or self._items_of[0] != epoch:
            self.epoch_count(epoch, self.rank)  # raises for an empty block
            self._items_of = (epoch, self.epoch_items(epoch, self.rank))
        return self._items_of[1]

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        e, o = self.cursor_at(self.start, self.rank)
        items = self._items(e)
        for _ in range(len(self)):
            out: list[tuple[int, int]] = []
            while len(out) < self.micro:
                if o >= len(items):
                    e, o = e + 1, 0
                    items = self._items(e)
                take = min(self.micro - len(out), len(items) - o)
                out += [(e, int(i)) for i in items[o:o + take]]
                o += take
            yield out
