"""Training pairs: (1..k conditioning views, one target view) drawn from one object or clip.

* :class:`PairSampler` (config) decides *which* view positions form a pair, in three modes:
  ``"random"`` (distinct views uniformly), ``"ring"`` (views on an index ring such as NMR's
  24 azimuths, optionally within a wrapped index distance of the target) and ``"frame_gap"``
  (video: conditioning frames within a frame gap of the target, RealEstate10K style).
* :class:`PairDataset` wraps any :class:`~vantage.data.views.SceneDataset`; item ``i`` of epoch
  ``e`` is a pure function of ``(seed, e, i)`` (its own ``torch.Generator``), so a pair does not
  depend on batch size, worker count, rank or the order in which items are fetched. It loads
  only the views it needs with ``scenes.load(index, views=...)``.
* :class:`RankSampler` splits the item indices of an epoch across DDP ranks and yields
  ``(epoch, index)`` tuples, so that the epoch reaches persistent DataLoader workers too.
* :func:`collate_pairs` batches pairs into a :class:`PairBatch`: ``cond`` ``(B, K)`` with a
  ``valid`` mask for ragged view counts and ``target`` ``(B, 1)``.

See ``docs/data-pipeline.md`` for shapes, seeding and splitting rules.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator, Sequence, Sized
from dataclasses import dataclass

import torch
from torch import Tensor

from vantage.data.views import ObjectViews, SceneDataset, Skipped, ViewSet, collate_views

__all__ = ["FRAME_GAP_PRESETS", "ClipTooShortError", "PairSampler", "PairIndices", "Pair", "PairBatch",
           "PairDataset", "RankSampler", "collate_pairs", "sample_seed", "seeded_generator",
           "resolve_rank"]

#: Frame-gap presets of RealEstate10K pair sampling: inclusive ``(min, max)`` |target - cond| in frames.
FRAME_GAP_PRESETS: dict[str, tuple[int, int]] = {"mid": (30, 60), "long": (60, 120)}
MODES = ("random", "ring", "frame_gap")


class ClipTooShortError(ValueError):
    """A scene/clip has too few views (frames) to form a pair under the sampler's rules."""


def sample_seed(*keys: int) -> int:
    """A 63-bit seed that is a stable hash of integer ``keys`` (e.g. ``seed, epoch, index``).

    Stable across processes, platforms and Python's hash randomisation.
    """
    text = ",".join(str(int(k)) for k in keys).encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "little") >> 1


def seeded_generator(*keys: int) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded with :func:`sample_seed` of ``keys``."""
    return torch.Generator().manual_seed(sample_seed(*keys))


def resolve_rank(rank: int | None = None, world_size: int | None = None) -> tuple[int, int]:
    """``(rank, world_size)``: the explicit values, else ``torch.distributed``'s when it is
    initialised, else ``(0, 1)``."""
    if rank is None or world_size is None:
        dist = torch.distributed
        initialised = dist.is_available() and dist.is_initialized()
        rank = rank if rank is not None else (dist.get_rank() if initialised else 0)
        world_size = world_size if world_size is not None else (dist.get_world_size() if initialised else 1)
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
    return int(rank), int(world_size)


@dataclass(frozen=True)
class PairIndices:
    """View positions (in ``range(num_views)`` of the scene) of one pair."""

    target: int
    cond: tuple[int, ...]
    target_in_cond: bool


@dataclass
class PairSampler:
    """How a pair (``k`` conditioning views + one target) is drawn from one scene's views.

    Attributes:
        min_cond: smallest number of conditioning views ``k`` (>= 1).
        max_cond: largest ``k``; each sample draws ``k`` uniformly in ``[min_cond, max_cond]``
            (ViewFusion: 1..6). When a scene has fewer usable views, ``k`` is capped at what it
            has (never below ``min_cond``: such scenes are "too short", see ``on_short``).
        mode: ``"random"``: target uniform over all views, conditioning views uniform among
            the others. ``"ring"``: views are positions on an index ring (view ``i`` at azimuth
            ``2*pi*i/n``, NMR); conditioning views are restricted to a wrapped index distance
            ``ring_gap`` from the target, and ``ring_size`` can require an exact view count
            (for absolute-azimuth models such as ViewFusion-composable). ``"frame_gap"``:
            videos; every conditioning frame ``c`` satisfies ``lo <= |c - target| <= hi``.
        target_in_pool_prob: probability that the target itself is one of the ``k``
            conditioning views (ViewFusion training uses 0.1).
        shuffle: randomly order the conditioning views; if False they are in ascending position.
        ring_size: ``"ring"`` only: required number of views per scene (e.g. 24), or None.
        ring_gap: ``"ring"`` only: inclusive ``(lo, hi)`` wrapped index distance between each
            conditioning view and the target, ``1 <= lo <= hi``; None = any other view.
        frame_gap: ``"frame_gap"`` only: a preset name of :data:`FRAME_GAP_PRESETS` (``"mid"``
            30-60, ``"long"`` 60-120 frames) or an inclusive ``(lo, hi)`` with ``1 <= lo <= hi``.
            Gaps count positions in the dataset's view (frame) order.
        on_short: what :class:`PairDataset` (and the shard pair stream) does with a scene that
            cannot give ``min_cond`` conditioning views: ``"error"`` (raise
            :class:`ClipTooShortError` naming the scene) or ``"skip"`` (leave it out and record
            it in ``skipped``).
    """

    min_cond: int = 1
    max_cond: int = 1
    mode: str = "random"
    target_in_pool_prob: float = 0.0
    shuffle: bool = True
    ring_size: int | None = None
    ring_gap: tuple[int, int] | None = None
    frame_gap: str | tuple[int, int] = "mid"
    on_short: str = "error"

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"PairSampler.mode must be one of {MODES}, got '{self.mode}'")
        if not 1 <= self.min_cond <= self.max_cond:
            raise ValueError(f"need 1 <= min_cond <= max_cond, got {self.min_cond}, {self.max_cond}")
        if not 0.0 <= self.target_in_pool_prob <= 1.0:
            raise ValueError(f"target_in_pool_prob must be in [0, 1], got {self.target_in_pool_prob}")
        if self.on_short not in ("error", "skip"):
            raise ValueError(f"on_short must be 'error' or 'skip', got '{self.on_short}'")
        if isinstance(self.frame_gap, str) and self.frame_gap not in FRAME_GAP_PRESETS:
            raise ValueError(f"unknown frame_gap preset '{self.frame_gap}'; presets: "
                             f"{list(FRAME_GAP_PRESETS)}")
        for name in ("ring_gap", "frame_gap"):
            gap = getattr(self, name)
            if gap is not None and not isinstance(gap, str):
                if len(gap) != 2 or not 1 <= gap[0] <= gap[1]:
                    raise ValueError(f"{name} must be (lo, hi) with 1 <= lo <= hi, got {gap}")
                setattr(self, name, (int(gap[0]), int(gap[1])))

    @property
    def gap(self) -> tuple[int, int]:
        """The resolved inclusive ``(lo, hi)`` frame gap of ``"frame_gap"`` mode."""
        return FRAME_GAP_PRESETS[self.frame_gap] if isinstance(self.frame_gap, str) else self.frame_gap

    # ------------------------------------------------------------------ candidates
    def _ring_offsets(self, n: int) -> list[int]:
        lo, hi = self.ring_gap if self.ring_gap is not None else (1, n)
        return sorted({d % n for dist in range(lo, min(hi, n // 2) + 1) for d in (dist, -dist)} - {0})

    def _frame_counts(self, n: int) -> Tensor:
        """``(n,)`` number of conditioning candidates of each target frame."""
        lo, hi = self.gap
        t = torch.arange(n)
        left = ((t - lo) - (t - hi).clamp(min=0) + 1).clamp(min=0)
        right = ((t + hi).clamp(max=n - 1) - (t + lo) + 1).clamp(min=0)
        return left + right

    def _candidates(self, n: int, target: int) -> list[int]:
        if self.mode == "random":
            return [c for c in range(n) if c != target]
        if self.mode == "ring":
            return sorted((target + d) % n for d in self._ring_offsets(n))
        lo, hi = self.gap
        return [c for c in range(max(0, target - hi), min(n, target + hi + 1)) if abs(c - target) >= lo]

    def max_candidates(self, num_views: int) -> int:
        """The most conditioning candidates any target of a ``num_views`` scene has."""
        n = num_views
        if self.mode == "random":
            return n - 1
        if self.mode == "ring":
            return len(self._ring_offsets(n)) if n > 1 else 0
        return int(self._frame_counts(n).max()) if n > 0 else 0

    def check(self, num_views: int) -> str | None:
        """Why a scene with ``num_views`` views cannot give a pair, or None if it can."""
        if self.mode == "ring" and self.ring_size is not None and num_views != self.ring_size:
            return f"ring mode needs exactly ring_size={self.ring_size} views, the scene has {num_views}"
        have = self.max_candidates(num_views)
        if have < self.min_cond:
            what = {"random": "other views", "ring": f"views within ring_gap={self.ring_gap} of a target",
                    "frame_gap": f"frames within a gap of {self.gap} frames of a target"}[self.mode]
            return (f"has {num_views} views: at most {have} {what}, min_cond={self.min_cond} needed"
                    + (f" (clip needs >= {self.gap[0] + self.min_cond} frames)" if self.mode == "frame_gap"
                       else ""))
        return None

    # ------------------------------------------------------------------ drawing
    def sample(self, num_views: int, generator: torch.Generator, name: str = "") -> PairIndices:
        """Draw one pair from a scene with ``num_views`` views using ``generator`` only.

        Raises :class:`ClipTooShortError` (naming ``name``) when no pair exists.
        """
        reason = self.check(num_views)
        if reason is not None:
            raise ClipTooShortError(f"scene '{name}' {reason}")
        g = generator
        k = int(torch.randint(self.min_cond, self.max_cond + 1, (1,), generator=g))
        k = min(k, self.max_candidates(num_views))
        if self.mode == "frame_gap":
            eligible = torch.nonzero(self._frame_counts(num_views) >= k).flatten()
            target = int(eligible[torch.randint(len(eligible), (1,), generator=g)])
        else:
            target = int(torch.randint(num_views, (1,), generator=g))
        in_pool = bool(torch.rand((), generator=g) < self.target_in_pool_prob)
        cands = self._candidates(num_views, target)
        drawn = [cands[j] for j in torch.randperm(len(cands), generator=g)[: k - int(in_pool)].tolist()]
        cond = [target] + drawn if in_pool else drawn
        if self.shuffle:
            cond = [cond[j] for j in torch.randperm(len(cond), generator=g).tolist()]
        else:
            cond = sorted(cond)
        return PairIndices(target=target, cond=tuple(cond), target_in_cond=in_pool)


# ---------------------------------------------------------------------- dataset
@dataclass
class Pair:
    """One training example.

    Attributes:
        cond: ``k`` conditioning views, images ``(k, 3, H, W)``.
        target: the target view, images ``(1, 3, H, W)``.
        scene_index: index of the scene in the source dataset (or the shard sample index).
        target_in_cond: whether the target is also one of the conditioning views.
    """

    cond: ObjectViews
    target: ObjectViews
    scene_index: int
    target_in_cond: bool = False


@dataclass
class PairBatch:
    """A batch of pairs.

    Attributes:
        cond: :class:`ViewSet` ``(B, K)``, ``K`` = the largest ``k`` in the batch (or ``pad_to``);
            ``cond.valid (B, K)`` marks the real views, padding slots come last.
        target: :class:`ViewSet` ``(B, 1)``.
        scene_index: ``(B,)`` long.
        target_in_cond: ``(B,)`` bool.
    """

    cond: ViewSet
    target: ViewSet
    scene_index: Tensor
    target_in_cond: Tensor

    def __len__(self) -> int:
        return self.cond.batch_size

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> PairBatch:
        return PairBatch(self.cond.to(device, dtype), self.target.to(device, dtype),
                         self.scene_index.to(device), self.target_in_cond.to(device))


def collate_pairs(pairs: Sequence[Pair], pad_to: int | None = None) -> PairBatch:
    """Batch ``B`` pairs: ``cond`` ``(B, K, 3, H, W)`` with ``valid (B, K)``, ``target`` ``(B, 1, ...)``.

    ``pad_to`` fixes ``K`` (e.g. ``sampler.max_cond`` for constant shapes under ``torch.compile``).
    """
    if not pairs:
        raise ValueError("collate_pairs needs at least one Pair")
    return PairBatch(cond=collate_views([p.cond for p in pairs], pad_to),
                     target=collate_views([p.target for p in pairs], 1),
                     scene_index=torch.tensor([p.scene_index for p in pairs], dtype=torch.long),
                     target_in_cond=torch.tensor([p.target_in_cond for p in pairs], dtype=torch.bool))


def split_loaded(views: ObjectViews, needed: Sequence[int], idx: PairIndices, scene_index: int) -> Pair:
    """Cut a :class:`Pair` out of ``views`` holding positions ``needed`` (in that order)."""
    if len(views) != len(needed):
        raise ValueError(f"scene '{views.name}': asked for {len(needed)} views, got {len(views)}")
    where = {v: j for j, v in enumerate(needed)}
    return Pair(cond=views.select([where[c] for c in idx.cond]), target=views.select([where[idx.target]]),
                scene_index=scene_index, target_in_cond=idx.target_in_cond)


class PairDataset(torch.utils.data.Dataset):
    """Map-style dataset of pairs over a :class:`SceneDataset`.

    Item ``i`` uses scene ``eligible[i % num_scenes]`` (``samples_per_scene`` items per scene
    and epoch) and draws its views with ``seeded_generator(seed, epoch, i)``. Index it with an
    int (uses :meth:`set_epoch`'s epoch) or an ``(epoch, i)`` tuple (what :class:`RankSampler`
    yields; the reliable form with persistent workers).

    Args:
        scenes: any :class:`SceneDataset`.
        sampler: the :class:`PairSampler` config (default: one random conditioning view).
        seed: base seed.
        samples_per_scene: pairs per scene and epoch.
        check_scenes: read ``scenes.num_views(i)`` of every scene now and apply
            ``sampler.on_short`` (skipped scenes are listed in ``skipped``); if False, a short
            scene raises :class:`ClipTooShortError` when its item is fetched.
    """

    def __init__(self, scenes: SceneDataset, sampler: PairSampler | None = None, *, seed: int = 0,
                 samples_per_scene: int = 1, check_scenes: bool = True) -> None:
        self.scenes = scenes
        self.sampler = sampler or PairSampler()
        self.seed = int(seed)
        self.epoch = 0
        if samples_per_scene < 1:
            raise ValueError(f"samples_per_scene must be >= 1, got {samples_per_scene}")
        self.samples_per_scene = int(samples_per_scene)
        self.skipped: list[Skipped] = []
        self.scene_indices = list(range(len(scenes)))
        if check_scenes:
            kept, bad = [], []
            for s in self.scene_indices:
                reason = self.sampler.check(scenes.num_views(s))
                if reason is None:
                    kept.append(s)
                else:
                    bad.append(Skipped(scenes.scene_name(s), reason))
            if bad and self.sampler.on_short == "error":
                raise ClipTooShortError(f"{len(bad)} of {len(scenes)} scenes cannot give a pair "
                                        f"(pass on_short='skip' to leave them out; vivid: --set "
                                        f"pair_on_short=skip): "
                                        + "; ".join(str(b) for b in bad[:5]))
            self.scene_indices, self.skipped = kept, bad

    def set_epoch(self, epoch: int) -> None:
        """Epoch used by plain-int indexing."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.scene_indices) * self.samples_per_scene

    def indices(self, index: int, epoch: int | None = None) -> tuple[int, PairIndices]:
        """``(scene index, view positions)`` of item ``index``, without loading anything."""
        n = len(self)
        if not 0 <= index < n:
            raise IndexError(f"PairDataset has {n} items, index {index} is out of range")
        scene = self.scene_indices[index % len(self.scene_indices)]
        g = seeded_generator(self.seed, self.epoch if epoch is None else epoch, index)
        num = self.scenes.num_views(scene)
        return scene, self.sampler.sample(num, g, name=self.scenes.scene_name(scene))

    def __getitem__(self, index: int | tuple[int, int]) -> Pair:
        epoch, index = (int(index[0]), int(index[1])) if isinstance(index, tuple) else (None, int(index))
        scene, idx = self.indices(index, epoch)
        needed = sorted(set(idx.cond) | {idx.target})
        return split_loaded(self.scenes.load(scene, views=needed), needed, idx, scene)


class RankSampler(torch.utils.data.Sampler):
    """Splits ``range(num_items)`` across DDP ranks, one epoch at a time.

    Each epoch: a permutation from ``seeded_generator(seed, epoch)`` (or ``0..n-1`` without
    ``shuffle``), then either *padded* (``drop_last=False``, default: the permutation is
    repeated cyclically up to a multiple of ``world_size``, so a few items appear twice in an
    epoch) or *trimmed* (``drop_last=True``: the last ``n % world_size`` items of the
    permutation are left out this epoch, so no item appears twice). Rank ``r`` takes positions
    ``r, r + world, r + 2 world, ...``: every rank gets the same count, ranks never overlap
    (apart from the padding), and the union over ranks covers every (kept) item. DataLoader
    workers need nothing else: the sampler runs in the main process of each rank.

    Yields ``(epoch, index)`` tuples (``yield_epoch=True``, for :class:`PairDataset`) or ints.
    ``num_items`` is a count or anything with ``len()`` (e.g. the :class:`PairDataset`).
    """

    def __init__(self, num_items: int | Sized, *, rank: int | None = None,
                 world_size: int | None = None, shuffle: bool = True, seed: int = 0,
                 drop_last: bool = False, yield_epoch: bool = True) -> None:
        self.num_items = num_items if isinstance(num_items, int) else len(num_items)
        self.rank, self.world_size = resolve_rank(rank, world_size)
        self.shuffle, self.seed, self.drop_last, self.yield_epoch = shuffle, int(seed), drop_last, yield_epoch
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        n, w = self.num_items, self.world_size
        return n // w if self.drop_last else math.ceil(n / w)

    def rank_indices(self, epoch: int | None = None) -> list[int]:
        """Item indices of this rank for ``epoch`` (default: the current one), in order."""
        epoch = self.epoch if epoch is None else epoch
        n = self.num_items
        perm = (torch.randperm(n, generator=seeded_generator(self.seed, epoch)) if self.shuffle
                else torch.arange(n))
        total = len(self) * self.world_size
        if total > n:
            perm = perm.repeat(math.ceil(total / max(n, 1)))
        return perm[:total][self.rank::self.world_size].tolist()

    def __iter__(self) -> Iterator[tuple[int, int] | int]:
        epoch = self.epoch
        for i in self.rank_indices(epoch):
            yield (epoch, i) if self.yield_epoch else i
