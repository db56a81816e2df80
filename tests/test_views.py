"""ObjectViews / ViewSet: shapes, ragged collation, packing, clear errors."""

from __future__ import annotations

import pytest
import torch

from vantage.cameras import orbit_cameras
from vantage.data.views import ObjectViews, ViewSet, collate_views


def make(n: int, res: int = 8, name: str = "obj", fill: float = 0.0) -> ObjectViews:
    imgs = torch.full((n, 3, res, res), fill) + torch.arange(n).view(n, 1, 1, 1) / 100
    return ObjectViews(imgs, orbit_cameras(n, resolution=res), masks=torch.ones(n, 1, res, res),
                       depth=torch.ones(n, 1, res, res), name=name)


def test_collate_pads_ragged_sets_and_packs_only_valid_views():
    a, b = make(3, name="a"), make(5, name="b", fill=0.5).select([4, 0])
    vs = collate_views([a, b])
    assert vs.images.shape == (2, 3, 3, 8, 8)
    assert vs.valid.tolist() == [[True, True, True], [True, True, False]]
    assert vs.view_ids.tolist() == [[0, 1, 2], [4, 0, -1]]
    assert vs.counts.tolist() == [3, 2]
    assert torch.equal(vs.images[1, 0], b.images[0])
    assert (vs.images[1, 2] == 0).all()
    assert torch.allclose(vs.cameras.c2w[1, 1], b.cameras.c2w[1])
    packed, owner = vs.packed()
    assert packed.shape == (5, 3, 8, 8) and owner.tolist() == [0, 0, 0, 1, 1]
    assert torch.equal(packed[3], b.images[0])
    sub = vs.index([1])
    assert sub.names == ["b"] and sub.images.shape[0] == 1
    assert vs.to("cpu", dtype=torch.float64).images.dtype == torch.float64


def test_collate_drops_masks_unless_every_object_has_them():
    a = make(2)
    b = make(2)
    b.masks = None
    assert collate_views([a, b]).masks is None
    assert collate_views([a, a]).masks is not None


def test_errors_name_the_object_and_the_shapes():
    cams = orbit_cameras(2, resolution=8)
    with pytest.raises(ValueError, match=r"'chair'.*|images must be \(N, 3, H, W\)"):
        ObjectViews(torch.zeros(2, 4, 8, 8), cams, name="chair")
    with pytest.raises(ValueError, match="16x16 images.*'car' are 8x8"):
        ObjectViews(torch.zeros(2, 3, 8, 8), orbit_cameras(2, resolution=16), name="car")
    with pytest.raises(ValueError, match=r"masks must be \(2, 1, 8, 8\)"):
        ObjectViews(torch.zeros(2, 3, 8, 8), cams, masks=torch.zeros(2, 8, 8))
    with pytest.raises(ValueError, match="different resolutions"):
        collate_views([make(2, res=8), make(2, res=16)])
    with pytest.raises(ValueError, match=r"valid must be \(1, 2\)"):
        ViewSet(torch.zeros(1, 2, 3, 8, 8), cams.reshape(1, 2), torch.ones(1, 3, dtype=torch.bool),
                torch.zeros(1, 2, dtype=torch.long))
