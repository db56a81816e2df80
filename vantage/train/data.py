"""Training data: the ``--data`` spec, resizing to the method's resolution, and the step sampler.

``--data`` is either

* ``synthetic`` or ``synthetic:SPLIT`` (default split ``train``): the embedded
  :class:`~vantage.data.synthetic.SyntheticDataset` rendered on the fly at the method's
  resolution. By default the *whole* split (``train``: 1,000,000 objects, 24-view ring) is
  used; nothing is rendered until a pair needs it, so the count costs nothing. Options
  (``-o num_objects=1000 -o layout=hemisphere -o views=50``) go to the dataset's constructor.
* a dataset path in any format :func:`~vantage.data.formats.open_dataset` reads (detected, or
  ``--format``); options go to the reader. Images whose size differs from the method's
  resolution are resized (antialiased bilinear, intrinsics scaled) with a message saying so;
  non-square images are an error (crop them, or use the reader's own ``resolution`` option
  where it has one).
* a shard folder written by ``vantage data shard`` (``index.json`` + ``shard-*.tar``; the folder
  or its ``index.json``): a :class:`~vantage.data.shards.ShardScenes`, resized like a folder,
  streamed by :class:`ShardStepSampler` (below). Reader options and single-image pairs do not
  apply to it.

Single-image pairs (VIVID's single-view training, :mod:`vantage.data.single_image`) are mixed in with the
options ``-o single_images=DIR`` (a folder of images, any size) and ``-o single_fraction=F`` (the fraction of
the pairs, default 0.25, in (0, 1)); ``single_focal``, ``single_crop``, ``single_max_deg`` (one range
``[pitch,yaw,roll]`` or a list of them), ``single_range_choice`` (``random`` or ``alternate``) and
``single_rotate_source`` set the cameras and rotations (defaults 0.9, 0.6, the VIVID reference's
``[[8.3,8.3,3.5],[5.5,5.5,0]]``, ``random``, ``true``). They work with any ``--data`` and are stored with the run
like the other options.

Batch composition (:class:`StepBatchSampler`): the pairs form one endless sequence, epoch after
epoch; position ``p`` is item ``perm_e[p % N]`` of epoch ``e = p // N`` (``perm_e`` is the
seeded permutation :class:`~vantage.data.pairs.RankSampler` uses). Step ``s`` takes positions
``[s*B, (s+1)*B)`` of the global batch ``B``; rank ``r`` takes the contiguous block
``[r*B/W, (r+1)*B/W)`` of it and cuts it into micro-batches. So the pairs of a step are the
same for any number of processes ``W`` and micro-batch size, and a resumed run starts exactly
at its step. (``RankSampler`` itself pads each epoch to a multiple of ``W``, which would make
the composition depend on ``W``; here epochs simply run into each other.)

Shards (:class:`ShardStepSampler`): each rank streams its own part of every epoch, as
:class:`~vantage.data.shards.ShardDataset` splits it: the shards in the order seeded by
``(seed, epoch)``, their samples concatenated, rank ``r`` taking the contiguous block
``[r*T//W, (r+1)*T//W)``, so every sample is used once per epoch over all ranks. Within its block
a rank leaves out the samples that give no pair and shuffles the rest in windows of
:data:`SHUFFLE_WINDOW` consecutive samples (seeded by ``(seed, epoch, W, r, window)``); its blocks
of epoch 0, 1, 2, ... form the rank's endless stream, of which step ``s`` takes items
``[s*B/W, (s+1)*B/W)``. DataLoader workers are handed whole micro-batches of that stream, so the
sequence does not depend on ``num_workers`` or ``micro_batch``; pairs are drawn from
``(seed, epoch, global sample index)`` (:func:`~vantage.data.shards.draw_pair`). The position of
every rank, ``(epoch, offset in its block)``, is saved in checkpoints (:meth:`ShardStepSampler.state`)
and a resumed run starts there, reading nothing before it (the index holds each sample's byte offset).
The steps of a run depend on ``W`` (the rank blocks do); resuming with another number of processes
starts every rank at the beginning of the next epoch that none had started.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vantage.data.formats.common import DatasetError, resize_views
from vantage.data.pairs import PairDataset, PairSampler, RankSampler, collate_pairs, seeded_generator
from vantage.data.shards import FORMAT, INDEX_NAME, ShardPairs, ShardScenes, epoch_plan
from vantage.data.views import ObjectViews, SceneDataset

__all__ = ["DataSpec", "open_training_data", "ResizedScenes", "WithSingleImages", "StepBatchSampler",
           "ShardStepSampler", "SHUFFLE_WINDOW", "make_pair_dataset", "step_sampler", "build_loader",
           "is_shard_folder"]

SYNTHETIC = "synthetic"
#: ``-o`` options of the single-image pairs (taken out before the reader's options) and their defaults.
SINGLE_OPTIONS = {"single_images": None, "single_fraction": 0.25, "single_focal": 0.9, "single_crop": 0.6,
                  "single_max_deg": [[8.3, 8.3, 3.5], [5.5, 5.5, 0.0]], "single_range_choice": "random",
                  "single_rotate_source": True}
#: Shard streams shuffle a rank's samples within windows of this many consecutive ones (reads stay local).
SHUFFLE_WINDOW = 1024
_WINDOW_KEY = 0x5748


@dataclass
class DataSpec:
    """What ``--data`` named (stored in ``config.json``; compared on resume).

    Attributes:
        spec: ``synthetic[:SPLIT]`` or the dataset path (made absolute).
        format: reader name, or None (detected).
        options: reader / synthetic-dataset options (``-o KEY=VALUE``).
    """

    spec: str
    format: str | None = None
    options: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def parse(cls, spec: str, format: str | None = None, options: dict[str, Any] | None = None) -> DataSpec:
        spec = str(spec)
        if not (spec == SYNTHETIC or spec.startswith(SYNTHETIC + ":")):
            spec = str(Path(spec).expanduser().resolve())
        options = dict(options or {})
        if options.get("single_images"):
            options["single_images"] = str(Path(str(options["single_images"])).expanduser().resolve())
        return cls(spec, format, options)

    @property
    def is_synthetic(self) -> bool:
        return self.spec == SYNTHETIC or self.spec.startswith(SYNTHETIC + ":")

    def to_dict(self) -> dict[str, Any]:
        return {"spec": self.spec, "format": self.format, "options": dict(self.options)}


class _WrappedScenes(SceneDataset):
    """A :class:`SceneDataset` that passes everything through to ``scenes`` (subclasses change some of it)."""

    def __init__(self, scenes: SceneDataset) -> None:
        super().__init__()
        self.scenes = scenes
        self.format_name, self.skipped = scenes.format_name, scenes.skipped

    def __len__(self) -> int:
        return len(self.scenes)

    def scene_name(self, index: int) -> str:
        return self.scenes.scene_name(index)

    def num_views(self, index: int) -> int:
        return self.scenes.num_views(index)

    def load(self, index: int, views: Sequence[int] | None = None) -> ObjectViews:
        return self.scenes.load(index, views)


class ResizedScenes(_WrappedScenes):
    """A :class:`SceneDataset` whose views are resized to ``resolution`` x ``resolution`` on load."""

    def __init__(self, scenes: SceneDataset, resolution: int) -> None:
        super().__init__(scenes)
        self.resolution = int(resolution)

    def load(self, index: int, views: Sequence[int] | None = None) -> ObjectViews:
        v = self.scenes.load(index, views)
        cams, images, masks, depth = resize_views(v.cameras, v.images, v.masks, v.depth, size=self.resolution,
                                                  where=f"scene '{v.name}'")
        return ObjectViews(images=images, cameras=cams, masks=masks, depth=depth, view_ids=v.view_ids,
                           name=v.name, meta=v.meta)


class WithSingleImages(_WrappedScenes):
    """The training scenes plus single-image pairs to mix in (:func:`make_pair_dataset` builds the
    :class:`~vantage.data.single_image.MixedPairs`); as a :class:`SceneDataset` it is the scenes."""

    def __init__(self, scenes: SceneDataset, singles_folder: str | Path, fraction: float, resolution: int,
                 **single_options: Any) -> None:
        from vantage.data.single_image import SingleImagePairs

        if not 0 < fraction < 1:
            raise DatasetError(f"-o single_fraction must be in (0, 1), got {fraction}")
        super().__init__(scenes)
        self.fraction = float(fraction)
        self.singles = SingleImagePairs(singles_folder, resolution, **single_options)


def open_training_data(data: DataSpec, resolution: int, log: Callable[[str], None] = print) -> SceneDataset:
    """Open ``data`` at the method's ``resolution`` (see the module docstring)."""
    single = {k: data.options.get(k, v) for k, v in SINGLE_OPTIONS.items()}
    stray = sorted(k for k in data.options if k.startswith("single_") and k not in SINGLE_OPTIONS)
    if stray:
        raise DatasetError(f"unknown option(s) {stray}; single-image options: {', '.join(SINGLE_OPTIONS)}")
    if any(k in data.options for k in SINGLE_OPTIONS) and not single["single_images"]:
        raise DatasetError("-o single_fraction/single_focal/...: give the image folder with -o single_images=DIR")
    scenes = _open_scenes(DataSpec(data.spec, data.format, {k: v for k, v in data.options.items()
                                                            if k not in SINGLE_OPTIONS}), resolution, log)
    if not single["single_images"]:
        return scenes
    if isinstance(scenes, ShardScenes):
        raise DatasetError(f"--data {data.spec}: single-image pairs (-o single_images) cannot be mixed into a "
                           f"shard stream; train on the dataset folder the shards were written from")
    try:
        mixed = WithSingleImages(scenes, single["single_images"], float(single["single_fraction"]), resolution,
                                 seed=0, focal=float(single["single_focal"]), crop=float(single["single_crop"]),
                                 max_deg=single["single_max_deg"], range_choice=single["single_range_choice"],
                                 rotate_source=single["single_rotate_source"])
    except (TypeError, ValueError) as e:
        raise DatasetError(f"-o single_*: {e}") from e
    log(f"mixing single-image pairs from {mixed.singles.folder} ({len(mixed.singles)} images) into "
        f"{mixed.fraction:.0%} of the training pairs")
    return mixed


def _open_scenes(data: DataSpec, resolution: int, log: Callable[[str], None]) -> SceneDataset:
    if "resolution" in data.options and data.is_synthetic:
        raise DatasetError("the synthetic data is rendered at the method's resolution; set it with "
                           "--set resolution=N instead of -o resolution=N")
    if data.is_synthetic:
        from vantage.data.synthetic import SPLITS, SyntheticDataset

        split = data.spec.partition(":")[2] or "train"
        if split not in SPLITS:
            raise DatasetError(f"--data {data.spec}: unknown synthetic split '{split}'; splits: {', '.join(SPLITS)}")
        try:
            return SyntheticDataset(split, resolution=resolution, **data.options)
        except TypeError as e:
            raise DatasetError(f"--data {data.spec}: bad option ({e}); options are SyntheticDataset's: "
                               f"num_objects, views, layout, elevation, seed, radius, fov_deg, shadows, "
                               f"supersample") from e
        except (ValueError, IndexError) as e:
            raise DatasetError(f"--data {data.spec}: {e}") from e
    from vantage.data.formats import open_dataset

    path = Path(data.spec)
    if not path.exists():
        raise FileNotFoundError(f"--data: dataset path does not exist: {path} (or use --data synthetic)")
    if is_shard_folder(path):
        return _open_shards(path, data, resolution, log)
    try:
        scenes = open_dataset(path, data.format, **data.options)
    except TypeError as e:
        raise DatasetError(f"--data {path}: bad reader option ({e}); see docs/datasets.md") from e
    if len(scenes) == 0:
        raise DatasetError(f"--data {path}: the dataset has no scenes")
    first = scenes.load(0, views=[0])
    h, w = first.resolution
    if (h, w) == (resolution, resolution):
        return scenes
    if h != w:
        raise DatasetError(f"--data {path}: images are {w}x{h} (not square) but the method works at "
                           f"{resolution}x{resolution}; crop them first or use the reader's resolution option")
    log(f"note: dataset images are {w}x{h}; resizing them to the method's {resolution}x{resolution} "
        f"(antialiased bilinear, intrinsics scaled)")
    return ResizedScenes(scenes, resolution)


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


def make_pair_dataset(scenes: SceneDataset, sampler: PairSampler, seed: int) -> PairDataset | ShardPairs:
    """A :class:`PairDataset`; the synthetic data (every object has the same view count) is checked once
    instead of scene by scene. With :class:`WithSingleImages`, a
    :class:`~vantage.data.single_image.MixedPairs` of the scenes' pairs and the single-image pairs; with
    shards (:class:`~vantage.data.shards.ShardScenes`), a :class:`~vantage.data.shards.ShardPairs`."""
    from vantage.data.synthetic import SyntheticDataset

    if isinstance(scenes, ShardScenes):
        return ShardPairs(scenes, sampler, seed=seed)

    if isinstance(scenes, WithSingleImages):
        from vantage.data.single_image import MixedPairs

        if sampler.mode == "ring":
            raise DatasetError("single-image pairs have no ring positions: the method's ring pair sampling "
                               "cannot be mixed with -o single_images")
        scenes.singles.seed = seed
        return MixedPairs(make_pair_dataset(scenes.scenes, sampler, seed), scenes.singles, scenes.fraction)
    if isinstance(scenes, SyntheticDataset):
        reason = sampler.check(scenes.views)
        if reason is not None:
            raise DatasetError(f"the synthetic data cannot give training pairs: every object {reason}")
        return PairDataset(scenes, sampler, seed=seed, check_scenes=False)
    return PairDataset(scenes, sampler, seed=seed)


class StepBatchSampler(torch.utils.data.Sampler):
    """Yields the micro-batches of steps ``start_step .. end_step - 1`` for one rank.

    Each micro-batch is a list of ``(epoch, index)`` items for :class:`PairDataset`; see the module
    docstring for the positions. ``micro_batch * accumulation * world_size == batch``.
    """

    def __init__(self, num_items: int, *, batch: int, micro_batch: int, rank: int = 0, world_size: int = 1,
                 seed: int = 0, start_step: int = 0, end_step: int = 1) -> None:
        if num_items < 1:
            raise ValueError("StepBatchSampler needs at least one item")
        per_rank = batch // world_size
        if batch % world_size or per_rank % micro_batch:
            raise ValueError(f"batch {batch} does not split into {world_size} ranks of micro-batches of {micro_batch}")
        self.n, self.batch, self.micro, self.rank, self.world = num_items, batch, micro_batch, rank, world_size
        self.seed, self.start, self.end = seed, start_step, end_step
        self.accumulation = per_rank // micro_batch
        self._perm_epoch, self._perm = -1, None

    def __len__(self) -> int:
        return max(self.end - self.start, 0) * self.accumulation

    def _item(self, position: int) -> tuple[int, int]:
        epoch, offset = divmod(position, self.n)
        if epoch != self._perm_epoch:
            self._perm = RankSampler(self.n, rank=0, world_size=1, seed=self.seed).rank_indices(epoch)
            self._perm_epoch = epoch
        return epoch, self._perm[offset]

    def micro_batch_positions(self, step: int, micro: int) -> range:
        """Global positions of micro-batch ``micro`` of this rank in step ``step``."""
        first = step * self.batch + (self.rank * self.accumulation + micro) * self.micro
        return range(first, first + self.micro)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for step in range(self.start, self.end):
            for m in range(self.accumulation):
                yield [self._item(p) for p in self.micro_batch_positions(step, m)]

    def state(self, step: int) -> None:
        """Nothing: the data position of map-style data is a function of the step."""
        return None


class ShardStepSampler(torch.utils.data.Sampler):
    """Yields the micro-batches of steps ``start_step .. end_step - 1`` of one rank from a shard set.

    Micro-batches are lists of ``(epoch, item)`` for :class:`~vantage.data.shards.ShardPairs`; the rank's
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


def step_sampler(pairs: PairDataset | ShardPairs, plan: Any, *, rank: int, world_size: int, seed: int,
                 start_step: int, end_step: int, state: dict | None = None,
                 say: Callable[[str], None] = print) -> StepBatchSampler | ShardStepSampler:
    """The micro-batch sampler of one rank for ``pairs`` (shards: :class:`ShardStepSampler`, resumed from the
    checkpoint's data ``state``; else :class:`StepBatchSampler`); ``plan`` is the run's ``TrainPlan``."""
    kw = dict(batch=plan.batch, micro_batch=plan.micro_batch, rank=rank, world_size=world_size, seed=seed,
              start_step=start_step, end_step=end_step)
    if isinstance(pairs, ShardPairs):
        return ShardStepSampler(pairs, state=state, say=say, **kw)
    return StepBatchSampler(len(pairs), **kw)


def build_loader(pairs: PairDataset | ShardPairs, sampler: StepBatchSampler | ShardStepSampler, *, num_workers: int = 0,
                 pin_memory: bool = False) -> torch.utils.data.DataLoader:
    """A DataLoader over ``pairs`` yielding :class:`~vantage.data.pairs.PairBatch` micro-batches with a
    constant number of conditioning slots (``pad_to = max_cond``)."""
    pad_to = pairs.sampler.max_cond
    return torch.utils.data.DataLoader(
        pairs, batch_sampler=sampler, num_workers=num_workers, pin_memory=pin_memory,
        collate_fn=functools.partial(collate_pairs, pad_to=pad_to), persistent_workers=False,
        prefetch_factor=4 if num_workers > 0 else None)
