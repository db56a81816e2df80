"""The synthetic dataset: objects, splits, on-the-fly loading, and the on-disk format."""

from __future__ import annotations

import json
import pickle
from itertools import combinations
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vantage.cameras import ring_cameras
from vantage.data.formats import detect_format, open_dataset
from vantage.data.formats.common import DatasetError
from vantage.data.render import KINDS
from vantage.data.synthetic import (
    BENCHMARK,
    SPLITS,
    SyntheticDataset,
    SyntheticObject,
    make_object,
    object_seed,
    render_object,
)
from vantage.data.synthetic import support_point as support
from vantage.data.synthetic_io import DEPTH_SCALE, SyntheticFolderDataset, write_synthetic_dataset
from vantage.data.views import collate_views
from vantage.outputs import OutputExistsError


# ----------------------------------------------------------------------------- objects and splits
def test_objects_are_deterministic_by_seed():
    assert make_object(42) == make_object(42)
    assert make_object(42) != make_object(43)
    a = SyntheticDataset("val", 3, views=4, resolution=24).load(2)
    b = SyntheticDataset("val", 3, views=4, resolution=24).load(2)
    assert torch.equal(a.images, b.images) and torch.equal(a.depth, b.depth)


def test_benchmark_objects_never_change():
    """Golden values: the benchmark split is what every evaluation uses; changing the generator
    changes every reported number, so it must be a deliberate (versioned) decision."""
    obj = make_object(SPLITS["benchmark"].base)
    assert [p.kind for p in obj.parts] == ["sphere", "torus", "cone", "box"]
    assert [p.pattern for p in obj.parts] == ["checks", "dots", "dots", "dots"]
    np.testing.assert_allclose(obj.parts[0].size, [0.456554], atol=1e-4)
    np.testing.assert_allclose(obj.parts[1].center, [0.265009, 0.248758, -0.078522], atol=1e-4)
    assert [p.kind for p in make_object(SPLITS["benchmark"].base + 2).parts] == ["box", "box"]


def test_splits_are_disjoint_and_indexed():
    ranges = {k: range(s.base, s.base + s.count) for k, s in SPLITS.items()}
    for (ka, a), (kb, b) in combinations(ranges.items(), 2):
        assert a.stop <= b.start or b.stop <= a.start, f"splits {ka} and {kb} overlap"
    assert SPLITS["val"].count == SPLITS["test"].count == 1000 and SPLITS["benchmark"].count == 100
    assert object_seed("test", 5) == SPLITS["test"].base + 5
    with pytest.raises(IndexError):
        object_seed("benchmark", 100)
    with pytest.raises(ValueError, match="unknown split"):
        object_seed("holdout", 0)
    # seed = first index: object i of an offset dataset is object seed + i of the split
    assert SyntheticDataset("val", 2, seed=10).object(1) == SyntheticDataset("val", 20).object(11)
    assert SyntheticDataset("val", 2, seed=10).scene_name(1) == "val-000011"
    with pytest.raises(ValueError, match="cannot take"):
        SyntheticDataset("val", 10, seed=995)


def test_object_variety_and_size():
    objs = [make_object(s) for s in range(80)]
    kinds = {p.kind for o in objs for p in o.parts}
    assert len(kinds) >= 6 and kinds <= set(KINDS), kinds
    assert {len(o.parts) for o in objs} == {1, 2, 3, 4}
    assert len({p.pattern for o in objs for p in o.parts}) >= 5
    gen = torch.Generator().manual_seed(0)
    dirs = torch.nn.functional.normalize(torch.randn(200, 3, generator=gen), dim=1)
    for o in objs:
        assert any(p.mark_cos <= 1 for p in o.parts), "every object carries a marked face"
        pts = torch.cat([support(p, dirs @ p.R) @ p.R.T + torch.tensor(p.center) for p in o.parts])
        assert pts.norm(dim=1).max() < 0.82, f"object {o.seed} leaves the unit ball"
        assert pts.norm(dim=1).max() > 0.5, f"object {o.seed} is tiny"


def test_front_and_back_views_differ():
    ds = SyntheticDataset("train", 12, views=24, resolution=32)
    for i in range(len(ds)):
        o = ds.load(i, views=[0, 12])
        front, back = o.images
        assert (front - back).abs().mean() > 0.02, f"object {i}: front and back look the same"
        assert (front - back.flip(-1)).abs().mean() > 0.02, f"object {i}: back is the mirrored front"


# ----------------------------------------------------------------------------- on-the-fly dataset
def test_dataset_views_and_layouts():
    ds = SyntheticDataset("train", 3, views=8, resolution=20, layout="ring")
    full = ds.load(1)
    part = ds.load(1, views=[5, 2])
    assert full.images.shape == (8, 3, 20, 20) and full.masks.shape == full.depth.shape == (8, 1, 20, 20)
    assert part.view_ids.tolist() == [5, 2] and full.view_ids.tolist() == list(range(8))
    torch.testing.assert_close(part.images, full.images[[5, 2]], atol=1e-5, rtol=0)
    assert part.cameras.allclose(full.cameras[[5, 2]])
    assert ds.cameras(0).allclose(ring_cameras(8, resolution=20)), "ring = vantage.cameras.ring_cameras"
    assert ds.cameras(0).allclose(ds.cameras(2)), "the ring is the same for every object"
    assert full.meta["split"] == "train" and full.meta["seed"] == 1 and len(full.meta["parts"]) >= 1
    for layout in ("orbit", "hemisphere"):
        d = SyntheticDataset("train", 3, views=5, resolution=16, layout=layout)
        assert not d.cameras(0).allclose(d.cameras(1)), f"{layout}: cameras should differ per object"
        again = SyntheticDataset("train", 3, views=5, resolution=16, layout=layout)
        assert d.cameras(1).allclose(again.cameras(1)), f"{layout}: cameras must be stable per object"
        elev = d.cameras(2).spherical()[:, 0]
        assert (elev < torch.pi / 2).all(), "cameras are above the equator"
    with pytest.raises(ValueError, match="layout"):
        SyntheticDataset(layout="spiral")
    with pytest.raises(IndexError):
        ds.load(0, views=[8])


def test_benchmark_split_is_fixed():
    ds = SyntheticDataset("benchmark", resolution=32)
    assert len(ds) == BENCHMARK["num_objects"] == 100 and ds.views == 24 and ds.layout == "ring"
    for bad in ({"layout": "hemisphere"}, {"views": 12}, {"elevation": 20.0}, {"seed": 3}):
        with pytest.raises(ValueError, match="benchmark split is fixed"):
            SyntheticDataset("benchmark", **bad)


def test_picklable_and_works_in_dataloader_workers():
    ds = SyntheticDataset("val", 4, views=3, resolution=16)
    clone = pickle.loads(pickle.dumps(ds))
    assert torch.equal(clone.load(3).images, ds.load(3).images)
    loader = torch.utils.data.DataLoader(ds, batch_size=2, num_workers=2, collate_fn=collate_views)
    batches = list(loader)
    assert [b.names for b in batches] == [["val-000000", "val-000001"], ["val-000002", "val-000003"]]
    torch.testing.assert_close(batches[1].images[1], ds.load(3).images)


# ----------------------------------------------------------------------------- on disk
@pytest.fixture(scope="module")
def written(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synth") / "data"
    write_synthetic_dataset(root, split="val", num_objects=2, views=4, resolution=24, layout="hemisphere",
                            seed=7, progress=False)
    return root


def test_disk_round_trip_matches_on_the_fly(written):
    info = json.loads((written / "dataset.json").read_text())
    assert info["format"] == "vantage-synthetic" and info["count"] == 2 and info["complete"]
    assert info["layout"] == "hemisphere" and info["resolution"] == 24 and info["split"] == "val"
    disk = SyntheticFolderDataset(written)
    live = SyntheticDataset("val", 2, views=4, resolution=24, layout="hemisphere", seed=7)
    assert len(disk) == 2 and disk.skipped == []
    for i in range(2):
        a, b = disk.load(i), live.load(i)
        assert a.name == b.name == f"val-{7 + i:06d}"
        assert (a.images - b.images).abs().max() <= 1 / 255 + 1e-6
        assert torch.equal(a.masks, b.masks)
        assert (a.depth - b.depth).abs().max() <= DEPTH_SCALE / 2 + 1e-6
        assert a.cameras.allclose(b.cameras, atol=0) and torch.equal(a.view_ids, b.view_ids)
        assert a.meta["seed"] == b.meta["seed"] and a.meta["parts"] == b.meta["parts"]
    # the primitives stored in cameras.json are enough to re-render the object exactly
    doc = json.loads((written / "val-000008" / "cameras.json").read_text())
    again = render_object(SyntheticObject.from_dict(doc["object"]), live.cameras(1))
    assert torch.equal(again.images, live.load(1).images)
    sub = disk.load(1, views=[3, 0])
    assert sub.view_ids.tolist() == [3, 0] and torch.equal(sub.images, disk.load(1).images[[3, 0]])


def test_detect_and_registry(written, tmp_path):
    obj_dir = written / "val-000007"
    assert SyntheticFolderDataset.detect(written) and SyntheticFolderDataset.detect(obj_dir)
    assert detect_format(written) == "vantage" and detect_format(obj_dir) == "vantage"
    single = open_dataset(obj_dir)
    assert len(single) == 1 and single.scene_name(0) == "val-000007" and single.num_views(0) == 4
    (tmp_path / "dataset.json").write_text(json.dumps({"format": "something-else"}))
    assert not SyntheticFolderDataset.detect(tmp_path)
    (tmp_path / "dataset.json").write_text("{not json")
    assert not SyntheticFolderDataset.detect(tmp_path)
    assert not SyntheticFolderDataset.detect(tmp_path / "missing")


def _copy(written: Path, tmp_path: Path) -> Path:
    import shutil

    return Path(shutil.copytree(written, tmp_path / "copy"))


def test_malformed_files_are_named(written, tmp_path):
    root = _copy(written, tmp_path)
    cam_path = root / "val-000007" / "cameras.json"
    doc = json.loads(cam_path.read_text())
    doc["views"][1]["K"] = [[1.0, 0.0], [0.0, 1.0]]
    cam_path.write_text(json.dumps(doc))
    ds = SyntheticFolderDataset(root)
    with pytest.raises(DatasetError, match=r"val-000007/cameras\.json.*views\[1\]\.K must be 3x3"):
        ds.load(0)
    Image.new("RGB", (20, 24), "white").save(root / "val-000008" / "rgb" / "002.png")
    with pytest.raises(DatasetError, match=r"val-000008/rgb/002\.png.*20x24.*24x24"):
        ds.load(1)
    assert ds.load(1, views=[0, 1]).images.shape == (2, 3, 24, 24), "other views still load"
    (root / "val-000008" / "depth" / "003.png").unlink()
    with pytest.raises(DatasetError, match=r"missing image: .*val-000008/depth/003\.png"):
        ds.load(1, views=[3])
    cam_path.write_text("{broken")
    with pytest.raises(DatasetError, match=r"val-000007/cameras\.json: not valid JSON"):
        SyntheticFolderDataset(root).load(0)


def test_missing_objects(written, tmp_path):
    root = _copy(written, tmp_path)
    (root / "val-000008" / "cameras.json").unlink()
    ds = SyntheticFolderDataset(root)  # a complete dataset: the missing file is an error on load
    with pytest.raises(DatasetError, match=r"missing file: .*val-000008/cameras\.json"):
        ds.load(1)
    info = json.loads((root / "dataset.json").read_text())
    (root / "dataset.json").write_text(json.dumps({**info, "complete": False}))
    ds = SyntheticFolderDataset(root)  # an interrupted render: the written objects, the rest reported
    assert len(ds) == 1 and len(ds.skipped) == 1 and "val-000008" in ds.skipped[0].path
    with pytest.raises(IndexError):
        ds.load(0, views=[])


def test_overwrite_protection(tmp_path):
    user = tmp_path / "mine"
    user.mkdir()
    (user / "notes.txt").write_text("precious")
    with pytest.raises(OutputExistsError, match="not empty.*--overwrite"):
        write_synthetic_dataset(user, num_objects=1, views=2, resolution=16, progress=False)
    assert (user / "notes.txt").read_text() == "precious"
    assert sorted(p.name for p in user.iterdir()) == ["notes.txt"]
    write_synthetic_dataset(user, num_objects=1, views=2, resolution=16, progress=False, overwrite=True)
    assert (user / "notes.txt").read_text() == "precious"
    assert (user / "train-000000" / "cameras.json").is_file()
    # a previous vantage dataset is kept unless asked; with overwrite its own object folders go,
    # other files stay
    prev = tmp_path / "prev"
    write_synthetic_dataset(prev, num_objects=3, views=2, resolution=16, progress=False)
    (prev / "README.txt").write_text("keep me")
    with pytest.raises(OutputExistsError, match="not empty"):
        write_synthetic_dataset(prev, num_objects=2, views=2, resolution=16, seed=5, progress=False)
    assert len(SyntheticFolderDataset(prev)) == 3
    write_synthetic_dataset(prev, num_objects=2, views=2, resolution=16, seed=5, progress=False,
                            overwrite=True)
    assert sorted(p.name for p in prev.iterdir()) == ["README.txt", "dataset.json", "train-000005",
                                                      "train-000006"]
    assert len(SyntheticFolderDataset(prev)) == 2
    (tmp_path / "afile").write_text("x")
    with pytest.raises(OutputExistsError, match="is a file"):
        write_synthetic_dataset(tmp_path / "afile", num_objects=1, views=1, resolution=16, progress=False)


def test_rendering_in_worker_processes_writes_the_same_files(tmp_path):
    """``workers=2`` renders in two processes; every file (images, masks, depth, cameras, dataset.json) is
    byte-identical to the single-process render, in the same object folders."""
    kw = dict(split="val", num_objects=3, views=3, resolution=16, layout="orbit", seed=5, progress=False)
    one = write_synthetic_dataset(tmp_path / "one", **kw)
    two = write_synthetic_dataset(tmp_path / "two", workers=2, **kw)
    files = sorted(p.relative_to(one) for p in one.rglob("*") if p.is_file())
    assert len(files) == 1 + 3 * (1 + 3 * 3)
    assert files == sorted(p.relative_to(two) for p in two.rglob("*") if p.is_file())
    for f in files:
        assert (one / f).read_bytes() == (two / f).read_bytes(), f
    with pytest.raises(ValueError, match="workers must be >= 0"):
        write_synthetic_dataset(tmp_path / "three", workers=-1, **kw)
