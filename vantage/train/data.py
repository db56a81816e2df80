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
  or its ``index.json``): a :class:`~vantage.data.shard_scenes.ShardScenes`, resized like a folder,
  streamed by :class:`~vantage.train.shard_data.ShardStepSampler`. Reader options and single-image
  pairs do not apply to it.

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

Shards (:mod:`vantage.train.shard_data`): opening a shard folder, and
:class:`~vantage.train.shard_data.ShardStepSampler`, which streams each rank's part of every epoch and saves its
position in checkpoints; :func:`step_sampler` picks it for shard pairs. This module re-exports its public names.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from vantage.data.formats.common import DatasetError, resize_views
from vantage.data.pairs import PairDataset, PairSampler, RankSampler, collate_pairs
from vantage.data.shard_scenes import ShardPairs, ShardScenes
from vantage.data.views import ObjectViews, SceneDataset
from vantage.train.shard_data import SHUFFLE_WINDOW, ShardStepSampler, _open_shards, is_shard_folder

__all__ = ["DataSpec", "open_training_data", "ResizedScenes", "WithSingleImages", "StepBatchSampler",
           "ShardStepSampler", "SHUFFLE_WINDOW", "make_pair_dataset", "step_sampler", "build_loader",
           "is_shard_folder"]

SYNTHETIC = "synthetic"
#: ``-o`` options of the single-image pairs (taken out before the reader's options) and their defaults.
SINGLE_OPTIONS = {"single_images": None, "single_fraction": 0.25, "single_focal": 0.9, "single_crop": 0.6,
                  "single_max_deg": [[8.3, 8.3, 3.5], [5.5, 5.5, 0.0]], "single_range_choice": "random",
                  "single_rotate_source": True}


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


def make_pair_dataset(scenes: SceneDataset, sampler: PairSampler, seed: int) -> PairDataset | ShardPairs:
    """A :class:`PairDataset`; the synthetic data (every object has the same view count) is checked once
    instead of scene by scene. With :class:`WithSingleImages`, a
    :class:`~vantage.data.single_image.MixedPairs` of the scenes' pairs and the single-image pairs; with
    shards (:class:`~vantage.data.shard_scenes.ShardScenes`), a
    :class:`~vantage.data.shard_scenes.ShardPairs`."""
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
