"""The two data structures every dataset and method share.

* :class:`ObjectViews`: all (or some) views of one object or scene, ``(N, C, H, W)``.
* :class:`ViewSet`: a batch of view sets ``(B, N, C, H, W)`` with a ``valid (B, N)`` mask for
  variable view counts. Padding slots hold zeros (images), identity cameras, and
  ``valid=False``; code must never read them.

Images are float in ``[-1, 1]`` (RGB composited on the dataset's background, white for the
object datasets). Masks are float in ``[0, 1]`` (1 = object). Depth is camera-z distance in
world units with ``0`` where nothing was hit (background). Cameras follow
:mod:`vantage.cameras` (OpenCV axes, pixel intrinsics).

Every dataset reader implements :class:`SceneDataset`: a ``torch`` map-style dataset of
objects/scenes with lazy, per-view loading, and a record of anything it skipped.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from vantage.cameras import Cameras

__all__ = ["ObjectViews", "ViewSet", "SceneDataset", "Skipped", "collate_views"]


@dataclass
class ObjectViews:
    """Views of one object/scene.

    Attributes:
        images: ``(N, 3, H, W)`` float in [-1, 1].
        cameras: :class:`Cameras` of shape ``(N,)``.
        masks: optional ``(N, 1, H, W)`` float in [0, 1] (1 = object).
        depth: optional ``(N, 1, H, W)`` camera-z depth, 0 = background.
        view_ids: ``(N,)`` long: the source index of each view (NMR ring index, video frame
            index, file index), used e.g. by absolute-azimuth models.
        name: identifier of the object/scene (folder name).
    """

    images: Tensor
    cameras: Cameras
    masks: Tensor | None = None
    depth: Tensor | None = None
    view_ids: Tensor | None = None
    name: str = ""
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.images.ndim != 4 or self.images.shape[1] != 3:
            raise ValueError(f"ObjectViews.images must be (N, 3, H, W), got {tuple(self.images.shape)}"
                             f" for '{self.name}'")
        n, _, h, w = self.images.shape
        if tuple(self.cameras.shape) != (n,):
            raise ValueError(f"ObjectViews.cameras must have shape ({n},), got {tuple(self.cameras.shape)}"
                             f" for '{self.name}'")
        if (self.cameras.width, self.cameras.height) != (w, h):
            raise ValueError(f"cameras are for {self.cameras.width}x{self.cameras.height} images but the "
                             f"images of '{self.name}' are {w}x{h}")
        for key in ("masks", "depth"):
            t = getattr(self, key)
            if t is not None and tuple(t.shape) != (n, 1, h, w):
                raise ValueError(f"ObjectViews.{key} must be ({n}, 1, {h}, {w}), got {tuple(t.shape)}"
                                 f" for '{self.name}'")
        if self.view_ids is None:
            self.view_ids = torch.arange(n)
        elif tuple(self.view_ids.shape) != (n,):
            raise ValueError(f"ObjectViews.view_ids must be ({n},), got {tuple(self.view_ids.shape)}")

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def resolution(self) -> tuple[int, int]:
        """``(H, W)``."""
        return self.images.shape[-2], self.images.shape[-1]

    def select(self, idx: Sequence[int] | Tensor) -> ObjectViews:
        """The views at positions ``idx`` (in this object's order)."""
        idx = torch.as_tensor(idx, dtype=torch.long)
        return ObjectViews(
            images=self.images[idx], cameras=self.cameras[idx],
            masks=None if self.masks is None else self.masks[idx],
            depth=None if self.depth is None else self.depth[idx],
            view_ids=self.view_ids[idx], name=self.name, meta=dict(self.meta))


@dataclass
class ViewSet:
    """A batch of view sets.

    Attributes:
        images: ``(B, N, 3, H, W)`` in [-1, 1]; zeros in invalid slots.
        cameras: :class:`Cameras` of shape ``(B, N)``.
        valid: ``(B, N)`` bool.
        view_ids: ``(B, N)`` long (-1 in invalid slots).
        masks, depth: optional ``(B, N, 1, H, W)``.
        names: ``B`` object names.
    """

    images: Tensor
    cameras: Cameras
    valid: Tensor
    view_ids: Tensor
    masks: Tensor | None = None
    depth: Tensor | None = None
    names: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.images.ndim != 5:
            raise ValueError(f"ViewSet.images must be (B, N, C, H, W), got {tuple(self.images.shape)}")
        b, n = self.images.shape[:2]
        for key in ("valid", "view_ids"):
            if tuple(getattr(self, key).shape) != (b, n):
                raise ValueError(f"ViewSet.{key} must be ({b}, {n}), got {tuple(getattr(self, key).shape)}")
        if tuple(self.cameras.shape) != (b, n):
            raise ValueError(f"ViewSet.cameras must be ({b}, {n}), got {tuple(self.cameras.shape)}")

    @property
    def batch_size(self) -> int:
        return self.images.shape[0]

    @property
    def num_views(self) -> int:
        return self.images.shape[1]

    @property
    def counts(self) -> Tensor:
        """``(B,)`` number of valid views per sample."""
        return self.valid.sum(dim=1)

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> ViewSet:
        """Move to ``device``; ``dtype`` applies to the floating tensors (images, masks, depth)."""
        def mv(t):
            return None if t is None else t.to(device=device, dtype=dtype)
        return ViewSet(images=mv(self.images), cameras=self.cameras.to(device=device),
                       valid=self.valid.to(device), view_ids=self.view_ids.to(device),
                       masks=mv(self.masks), depth=mv(self.depth), names=list(self.names))

    def index(self, idx: Tensor | slice | Sequence[int]) -> ViewSet:
        """Select batch entries (``idx`` indexes the batch dimension)."""
        def sel(t):
            return None if t is None else t[idx]
        kept = torch.arange(self.batch_size)[idx].reshape(-1).tolist()
        names = [self.names[i] for i in kept] if self.names else []
        return ViewSet(images=self.images[idx], cameras=self.cameras[idx], valid=self.valid[idx],
                       view_ids=self.view_ids[idx], masks=sel(self.masks), depth=sel(self.depth),
                       names=names)

    def packed(self) -> tuple[Tensor, Tensor]:
        """Valid views of all samples packed flat (no padding): ``(M, 3, H, W)`` and the
        ``(M,)`` batch index of each, in sample-then-view order (ragged batching)."""
        b_idx, n_idx = torch.nonzero(self.valid, as_tuple=True)
        return self.images[b_idx, n_idx], b_idx

    @classmethod
    def from_objects(cls, objects: Sequence[ObjectViews], max_views: int | None = None) -> ViewSet:
        """Pad and stack ``B`` :class:`ObjectViews` into one batch (see :func:`collate_views`)."""
        return collate_views(objects, max_views)


def collate_views(objects: Sequence[ObjectViews], max_views: int | None = None) -> ViewSet:
    """Pad a list of :class:`ObjectViews` (possibly different view counts) into a :class:`ViewSet`.

    All objects must share the image size; masks/depth are kept only if every object has them.
    """
    if not objects:
        raise ValueError("collate_views needs at least one ObjectViews")
    sizes = {o.resolution for o in objects}
    if len(sizes) > 1:
        raise ValueError(f"cannot batch views of different resolutions {sorted(sizes)}: "
                         + ", ".join(f"'{o.name}' {o.resolution}" for o in objects[:4]))
    h, w = sizes.pop()
    n = max(len(o) for o in objects) if max_views is None else max_views
    if any(len(o) > n for o in objects):
        raise ValueError(f"an object has more than max_views={n} views")
    b = len(objects)
    dtype = objects[0].images.dtype
    images = torch.zeros(b, n, 3, h, w, dtype=dtype)
    valid = torch.zeros(b, n, dtype=torch.bool)
    view_ids = torch.full((b, n), -1, dtype=torch.long)
    c2w = torch.eye(4).repeat(b, n, 1, 1)
    K = objects[0].cameras.K[0].repeat(b, n, 1, 1)
    has_masks = all(o.masks is not None for o in objects)
    has_depth = all(o.depth is not None for o in objects)
    masks = torch.zeros(b, n, 1, h, w) if has_masks else None
    depth = torch.zeros(b, n, 1, h, w) if has_depth else None
    for i, o in enumerate(objects):
        k = len(o)
        images[i, :k] = o.images
        valid[i, :k] = True
        view_ids[i, :k] = o.view_ids
        c2w[i, :k] = o.cameras.c2w
        K[i, :k] = o.cameras.K
        if masks is not None:
            masks[i, :k] = o.masks
        if depth is not None:
            depth[i, :k] = o.depth
    return ViewSet(images=images, cameras=Cameras(c2w, K, w, h), valid=valid, view_ids=view_ids,
                   masks=masks, depth=depth, names=[o.name for o in objects])


@dataclass
class Skipped:
    """One item a reader skipped, with the reason (reported, never dropped silently)."""

    path: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


class SceneDataset(torch.utils.data.Dataset):
    """Base class of every multi-view dataset: a map-style dataset of objects/scenes.

    Subclasses set ``format_name`` and implement :meth:`__len__`, :meth:`scene_name`,
    :meth:`num_views` and :meth:`load`. ``skipped`` lists what was skipped while indexing.
    """

    format_name: str = "base"

    def __init__(self) -> None:
        self.skipped: list[Skipped] = []

    def __len__(self) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    def scene_name(self, index: int) -> str:  # pragma: no cover - abstract
        raise NotImplementedError

    def num_views(self, index: int) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    def load(self, index: int, views: Sequence[int] | None = None) -> ObjectViews:  # pragma: no cover
        """Load object ``index``; ``views`` (positions in ``range(num_views(index))``) selects a
        subset without reading the other files."""
        raise NotImplementedError

    def __getitem__(self, index: int) -> ObjectViews:
        return self.load(index)

    def _check_index(self, index: int) -> int:
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"{type(self).__name__} has {n} scenes, index {index} is out of range")
        return index % n

    def summary(self) -> str:
        """One line: format, scene count and skipped count."""
        s = f"{self.format_name}: {len(self)} scenes"
        return s + (f", {len(self.skipped)} skipped" if self.skipped else "")
