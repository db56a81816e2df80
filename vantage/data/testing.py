"""A tiny in-memory :class:`~vantage.data.views.SceneDataset` for tests and examples.

:class:`ToyDataset` builds cheap, deterministic objects: orbit (or hemisphere) cameras and
images of 8-bit noise, so that a round trip through 8-bit PNG is exact. Every view carries its
identity in its first pixel (red = scene index mod 256, green = scene index // 256, blue = view
position mod 256), so a test can tell which scene/view an image came from and detect
duplicates with :meth:`ToyDataset.identify`.

Nothing here touches the disk; ``loads`` records every :meth:`ToyDataset.load` call (in the
process that made it) so that tests can check which views a consumer actually requested.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from vantage.cameras import Cameras, hemisphere_cameras, ring_cameras
from vantage.data.views import ObjectViews, SceneDataset

__all__ = ["ToyDataset", "uint8_to_unit", "unit_to_uint8"]


def uint8_to_unit(x: Tensor) -> Tensor:
    """8-bit values ``(..., H, W)`` (any integer dtype) -> float32 in [-1, 1]: ``v / 127.5 - 1``."""
    return x.to(torch.float32) / 127.5 - 1.0


def unit_to_uint8(x: Tensor) -> Tensor:
    """Float in [-1, 1] -> uint8, rounding to nearest; the inverse of :func:`uint8_to_unit`."""
    return ((x.to(torch.float32) + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8)


class ToyDataset(SceneDataset):
    """``num_scenes`` objects with ``num_views`` views each, generated on demand.

    Args:
        num_scenes: number of objects.
        num_views: views per object, one int for all or a sequence with one count per object
            (e.g. to imitate video clips of different lengths).
        resolution: image side ``H = W`` in pixels.
        seed: changes every image (and the hemisphere cameras).
        layout: ``"ring"`` (view ``i`` at azimuth ``2*pi*i/n``, elevation 30 deg, as NMR) or
            ``"hemisphere"`` (random upper-hemisphere cameras per object, as SRN).
        with_masks: include ``(N, 1, H, W)`` binary masks (a centred square).
        with_depth: include ``(N, 1, H, W)`` depth (non-zero inside the mask).

    Images are ``(N, 3, H, W)`` float32 made from 8-bit values (see :func:`uint8_to_unit`).
    """

    format_name = "toy"

    def __init__(self, num_scenes: int = 4, num_views: int | Sequence[int] = 8, resolution: int = 16,
                 seed: int = 0, *, layout: str = "ring", with_masks: bool = True,
                 with_depth: bool = True) -> None:
        super().__init__()
        if num_scenes < 0:
            raise ValueError(f"num_scenes must be >= 0, got {num_scenes}")
        counts = [int(num_views)] * num_scenes if isinstance(num_views, int) else [int(n) for n in num_views]
        if len(counts) != num_scenes:
            raise ValueError(f"num_views has {len(counts)} entries for {num_scenes} scenes")
        if any(n < 1 for n in counts):
            raise ValueError("every scene needs at least one view")
        if layout not in ("ring", "hemisphere"):
            raise ValueError(f"layout must be 'ring' or 'hemisphere', got '{layout}'")
        if resolution < 2:
            raise ValueError(f"resolution must be >= 2, got {resolution}")
        self.counts = counts
        self.resolution = int(resolution)
        self.seed = int(seed)
        self.layout = layout
        self.with_masks = with_masks
        self.with_depth = with_depth
        self.loads: list[tuple[int, tuple[int, ...]]] = []

    def __len__(self) -> int:
        return len(self.counts)

    def scene_name(self, index: int) -> str:
        return f"toy_{self._check_index(index):05d}"

    def num_views(self, index: int) -> int:
        return self.counts[self._check_index(index)]

    def _cameras(self, index: int) -> Cameras:
        n = self.counts[index]
        if self.layout == "ring":
            return ring_cameras(n, resolution=self.resolution)
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + index)
        return hemisphere_cameras(n, generator=g, resolution=self.resolution)

    def _image(self, index: int, view: int) -> Tensor:
        g = torch.Generator().manual_seed((self.seed * 1_000_003 + index) * 10_007 + view)
        r = self.resolution
        v = torch.randint(0, 256, (3, r, r), generator=g, dtype=torch.int64)
        v[:, 0, 0] = torch.tensor([index % 256, (index // 256) % 256, view % 256])
        return uint8_to_unit(v)

    def _mask(self) -> Tensor:
        r = self.resolution
        m = torch.zeros(1, r, r)
        m[:, r // 4: r - r // 4, r // 4: r - r // 4] = 1.0
        return m

    def load(self, index: int, views: Sequence[int] | None = None) -> ObjectViews:
        """Object ``index``; ``views`` are positions in ``range(num_views(index))``, kept in the
        given order. Returns ``images (N, 3, H, W)``, masks/depth ``(N, 1, H, W)``."""
        index = self._check_index(index)
        n = self.counts[index]
        pos = list(range(n)) if views is None else [int(v) for v in views]
        bad = [v for v in pos if not 0 <= v < n]
        if bad:
            raise IndexError(f"{self.scene_name(index)} has {n} views, requested {bad}")
        self.loads.append((index, tuple(pos)))
        r = self.resolution
        images = torch.stack([self._image(index, v) for v in pos]) if pos else torch.zeros(0, 3, r, r)
        cams = self._cameras(index)[torch.tensor(pos, dtype=torch.long)]
        masks = depth = None
        if self.with_masks or self.with_depth:
            m = self._mask().expand(len(pos), 1, -1, -1).clone()
            masks = m if self.with_masks else None
            if self.with_depth:
                ramp = torch.linspace(2.0, 3.0, self.resolution).view(1, 1, 1, -1)
                depth = m * (ramp + 0.01 * torch.tensor(pos, dtype=torch.float32).view(-1, 1, 1, 1))
        return ObjectViews(images=images, cameras=cams, masks=masks, depth=depth,
                           view_ids=torch.tensor(pos, dtype=torch.long), name=self.scene_name(index),
                           meta={"toy_index": index})

    @staticmethod
    def identify(images: Tensor) -> list[tuple[int, int]]:
        """``(scene index, view position)`` of each image in ``(..., 3, H, W)`` (flattened order)."""
        px = unit_to_uint8(images.reshape(-1, *images.shape[-3:])[:, :, 0, 0]).long()
        return [(int(p[0]) + 256 * int(p[1]), int(p[2])) for p in px]
