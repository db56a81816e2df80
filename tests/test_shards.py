"""Tar shards: round trip, exactly-once splitting across ranks x workers, errors naming files."""

from __future__ import annotations

import io
import json
from collections import Counter

import numpy as np
import pytest
import torch
from PIL import Image

from vantage.data.pairs import ClipTooShortError, PairSampler
from vantage.data.shard_format import INDEX_NAME, ShardError, read_index, shard_name
from vantage.data.shard_scenes import ShardScenes
from vantage.data.shard_stream import ShardDataset
from vantage.data.shards import write_shards
from vantage.data.testing import ToyDataset


@pytest.fixture(scope="module")
def toy():
    return ToyDataset(7, [3, 5, 4, 6, 3, 2, 5], resolution=8, seed=1)


@pytest.fixture(scope="module")
def shards(tmp_path_factory, toy):
    out = tmp_path_factory.mktemp("shards")
    write_shards(toy, out, shard_size=3, progress=False)
    return out


def names_of(items):
    return [o.name for o in items]


def consume(ds: ShardDataset, workers: int):
    dl = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=workers, collate_fn=lambda x: x)
    return list(dl)


def test_round_trip_equal(shards, toy):
    folder, index = read_index(shards)
    assert index["num_samples"] == 7 and [s["count"] for s in index["shards"]] == [3, 3, 1]
    assert [s["file"] for s in index["shards"]] == [shard_name(i) for i in range(3)]
    assert index["resolution"] == [8, 8] and index["version"] == 1 and index["has_depth"]
    objs = list(ShardDataset(shards))
    assert names_of(objs) == [toy.scene_name(i) for i in range(7)]
    for i, o in enumerate(objs):
        src = toy.load(i)
        assert torch.equal(o.images, src.images)  # exact: 8-bit PNG of 8-bit values
        assert torch.equal(o.masks, src.masks)
        assert (o.depth - src.depth).abs().max() <= src.depth.max() / 65535
        assert torch.equal(o.cameras.c2w, src.cameras.c2w) and torch.equal(o.cameras.K, src.cameras.K)
        assert torch.equal(o.view_ids, src.view_ids)
        assert o.meta["toy_index"] == i and o.meta["sample_index"] == i


def test_round_trip_without_masks_depth_and_shuffled_write(tmp_path):
    toy = ToyDataset(5, 4, resolution=6, layout="hemisphere", with_masks=False, with_depth=False)
    index = write_shards(toy, tmp_path, shard_size=2, progress=False, shuffle_seed=3)
    assert not index["has_masks"] and not index["has_depth"]
    objs = list(ShardDataset(tmp_path))
    src_order = [o.meta["source_index"] for o in objs]
    assert sorted(src_order) == list(range(5)) and src_order != list(range(5))
    for o in objs:
        src = toy.load(o.meta["source_index"])
        assert o.masks is None and o.depth is None and o.name == src.name
        assert torch.equal(o.images, src.images) and torch.equal(o.cameras.c2w, src.cameras.c2w)


def test_parallel_writer_gives_identical_shards(tmp_path, toy):
    write_shards(toy, tmp_path / "a", shard_size=3, progress=False)
    write_shards(toy, tmp_path / "b", shard_size=3, progress=False, num_workers=2)
    for i in range(3):
        assert (tmp_path / "a" / shard_name(i)).read_bytes() == (tmp_path / "b" / shard_name(i)).read_bytes()


@pytest.mark.parametrize("world", [1, 2, 3])
@pytest.mark.parametrize("workers", [0, 1, 2])
def test_exactly_once_per_epoch(shards, toy, world, workers):
    # 7 samples in 3 shards: with 3 ranks x 2 workers there are more consumers than shards.
    for epoch in (0, 1):
        seen, per_rank = [], []
        for rank in range(world):
            ds = ShardDataset(shards, shuffle=True, seed=4, rank=rank, world_size=world, shuffle_buffer=2)
            ds.set_epoch(epoch)
            got = names_of(consume(ds, workers))
            assert len(got) == len(ds)
            per_rank.append(len(got))
            seen += got
        assert Counter(seen) == Counter(toy.scene_name(i) for i in range(7)), (world, workers, epoch)
        assert max(per_rank) - min(per_rank) <= 1


def test_plan_partitions_samples_for_many_consumers(shards):
    ds = ShardDataset(shards, shuffle=True, seed=0)
    for world in (1, 2, 3, 5):
        for workers in (1, 2, 4):
            seen = Counter()
            for r in range(world):
                for w in range(workers):
                    for s, lo, hi in ds.plan(2, r, world, w, workers):
                        seen.update((s, k) for k in range(lo, hi))
            assert set(seen.values()) == {1} and len(seen) == 7


def test_drop_last_equal_counts(shards):
    counts, seen = [], []
    for rank in range(3):
        ds = ShardDataset(shards, rank=rank, world_size=3, drop_last=True)
        got = names_of(ds)
        counts.append(len(got))
        seen += got
    assert counts == [2, 2, 2] and len(set(seen)) == 6


def test_shuffle_by_epoch(shards):
    ds = ShardDataset(shards, shuffle=True, seed=0, shuffle_buffer=4)
    orders = []
    for e in (0, 0, 1, 2):
        ds.set_epoch(e)
        orders.append(names_of(ds))
    assert orders[0] == orders[1] and sorted(orders[2]) == sorted(orders[0])
    assert orders[2] != orders[0] or orders[3] != orders[0]


def test_repeat_continues_with_next_epoch(shards):
    ds = ShardDataset(shards, shuffle=True, seed=0, repeat=True, rank=1, world_size=2)
    one = ShardDataset(shards, shuffle=True, seed=0, rank=1, world_size=2)
    expect = []
    for e in (0, 1, 2):
        one.set_epoch(e)
        expect += names_of(one)
    it = iter(ds)
    assert [next(it).name for _ in expect] == expect


def test_pair_stream_deterministic_per_sample(shards, toy):
    sampler = PairSampler(min_cond=1, max_cond=3, target_in_pool_prob=0.3)

    def pairs(world, workers):
        out = {}
        for rank in range(world):
            ds = ShardDataset(shards, shuffle=True, seed=9, rank=rank, world_size=world, pair_sampler=sampler)
            for p in consume(ds, workers):
                key = (tuple(p.cond.view_ids.tolist()), int(p.target.view_ids[0]), p.target_in_cond)
                assert ToyDataset.identify(p.cond.images) == [(p.scene_index, v) for v in key[0]]
                assert p.scene_index not in out
                out[p.scene_index] = key
        return out

    ref = pairs(1, 0)
    assert sorted(ref) == list(range(7))
    assert pairs(3, 2) == ref


def test_pair_stream_short_objects(shards):
    short = PairSampler(min_cond=3, max_cond=3)  # needs 4 views; objects with 3 and 2 views are short
    with pytest.raises(ClipTooShortError, match="shard-000000.tar.*toy_00000"):
        list(ShardDataset(shards, pair_sampler=short))
    skip = PairSampler(min_cond=3, max_cond=3, on_short="skip")
    with pytest.warns(UserWarning, match="skipping"):
        got = list(ShardDataset(shards, pair_sampler=skip))
    assert sorted(p.scene_index for p in got) == [1, 2, 3, 6]


def test_webdataset_reads_the_shards(shards, toy):
    import webdataset as wds  # in the `test` extra: vantage itself never imports it

    raw = list(wds.WebDataset(str(shards / shard_name(1)), shardshuffle=False))
    assert [s["__key__"] for s in raw] == ["000000003", "000000004", "000000005"]
    ours = ShardScenes(shards)
    for s in raw:
        obj, head = ours.load(int(s["__key__"])), json.loads(s["json"])
        assert head["name"] == obj.name == toy.scene_name(int(s["__key__"])) and head["num_views"] == len(obj)
        assert {k for k in s if not k.startswith("__")} == {"json"} | {
            f"{j:05d}.{kind}.png" for j in range(len(obj)) for kind in ("rgb", "mask", "depth")}
    decoded = next(iter(wds.WebDataset(str(shards / shard_name(1)), shardshuffle=False).decode("rgb8")))
    obj, head = ours.load(3), json.loads(raw[0]["json"])
    rgb = torch.tensor(decoded["00002.rgb.png"]).permute(2, 0, 1).float() / 127.5 - 1.0
    assert torch.equal(rgb, obj.images[2]) and torch.equal(rgb, toy.load(3).images[2])
    assert isinstance(decoded["json"], dict) and decoded["json"]["view_ids"] == obj.view_ids.tolist()
    # webdataset's image decoders make 8-bit RGB of everything; the 16-bit depth is exact from the raw bytes
    depth = np.array(Image.open(io.BytesIO(raw[0]["00002.depth.png"]))).astype(np.float64) * head["depth_scale"]
    assert torch.equal(torch.from_numpy(depth).float(), obj.depth[2, 0])


def test_random_access_reads_only_what_it_needs(shards, toy, tmp_path):
    index = json.loads((shards / INDEX_NAME).read_text())
    assert [s["num_views"] for s in index["shards"]] == [[3, 5, 4], [6, 3, 2], [5]]
    assert all(s["offsets"][0] == 0 and s["offsets"] == sorted(s["offsets"]) for s in index["shards"])
    scenes = ShardScenes(shards)
    assert len(scenes) == 7 and scenes.num_views(3) == 6 and scenes.scene_name(3) == "shard-000001.tar:000000003"
    for i in range(7):
        o, src = scenes.load(i, views=[len(toy.load(i)) - 1, 0]), toy.load(i)
        assert o.name == src.name and o.meta["sample_index"] == i and o.meta["shard"] == shard_name(i // 3)
        assert torch.equal(o.images, src.images[[-1, 0]]) and torch.equal(o.view_ids, src.view_ids[[-1, 0]])
        assert torch.equal(o.cameras.c2w, src.cameras.c2w[[-1, 0]])
    with pytest.raises(IndexError, match="out of range"):
        scenes.load(5, views=[2])
    # an index written before the offsets were recorded: the shards are scanned once
    old = _copy(shards, tmp_path / "old")
    for s in index["shards"]:
        del s["offsets"], s["num_views"]
    (old / INDEX_NAME).write_text(json.dumps(index))
    notes = []
    again = ShardScenes(old, log=notes.append)
    assert "no sample offsets" in notes[0] and len(notes) == 1
    assert again.offsets.tolist() == scenes.offsets.tolist() and again.views.tolist() == scenes.views.tolist()
    assert torch.equal(again.load(4).images, toy.load(4).images)
    # resizing on load (the trainer's path for shards of another resolution)
    small = ShardScenes(shards, resolution=4).load(1, views=[2])
    assert small.images.shape == (1, 3, 4, 4) and small.cameras.width == 4 and small.depth.shape == (1, 1, 4, 4)


# ---------------------------------------------------------------------- errors
def test_overwrite_protection(tmp_path):
    big, small = ToyDataset(6, 2, resolution=4), ToyDataset(2, 2, resolution=4, seed=5)
    write_shards(big, tmp_path, shard_size=1, progress=False)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        write_shards(small, tmp_path, shard_size=1, progress=False)
    assert len(list(ShardDataset(tmp_path))) == 6  # untouched
    write_shards(small, tmp_path, shard_size=1, progress=False, overwrite=True)
    assert sorted(p.name for p in tmp_path.glob("shard-*")) == [shard_name(0), shard_name(1)]
    assert len(list(ShardDataset(tmp_path))) == 2


def _copy(src, dst):
    dst.mkdir()
    for f in src.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
    return dst


def test_missing_or_corrupt_index(tmp_path, shards):
    with pytest.raises(FileNotFoundError, match=INDEX_NAME):
        ShardDataset(tmp_path)
    bad = _copy(shards, tmp_path / "bad")
    (bad / INDEX_NAME).write_text("{not json")
    with pytest.raises(ShardError, match=f"bad/{INDEX_NAME}.*JSON"):
        ShardDataset(bad)
    (bad / INDEX_NAME).write_text(json.dumps({"format": "vantage-shards", "version": 99}))
    with pytest.raises(ShardError, match="version 99"):
        ShardDataset(bad)
    index = json.loads((shards / INDEX_NAME).read_text())
    index["num_samples"] = 8
    (bad / INDEX_NAME).write_text(json.dumps(index))
    with pytest.raises(ShardError, match="add up to 7"):
        ShardDataset(bad)


def test_missing_shard_named(tmp_path, shards):
    bad = _copy(shards, tmp_path / "bad")
    (bad / shard_name(1)).unlink()
    with pytest.raises(ShardError, match=shard_name(1)):
        ShardDataset(bad)


@pytest.mark.parametrize("damage", ["garbage", "truncate", "scramble_header", "scramble_png"])
def test_corrupt_shard_named(tmp_path, shards, damage):
    bad = _copy(shards, tmp_path / "bad")
    f = bad / shard_name(1)
    data = bytearray(f.read_bytes())
    if damage == "garbage":
        data = b"\x13" * 5000
    elif damage == "truncate":
        data = data[: len(data) // 2]
    else:  # same size, so only reading the content can notice
        at = 0 if damage == "scramble_header" else data.find(b"IDAT") + 8
        data[at: at + 300] = b"\x13" * 300
    f.write_bytes(bytes(data))
    ds = ShardDataset(bad)  # the index is fine; the error comes when the shard is read
    with pytest.raises(ShardError, match=shard_name(1)):
        list(ds)


def test_public_names_still_import_from_vantage_data_shards():
    # the readers and the format moved to shard_stream / shard_scenes / shard_format; shards re-exports them
    import vantage.data.shards as shards
    import vantage.train.data as train_data
    from vantage.data import shard_format, shard_scenes, shard_stream
    from vantage.train import shard_data

    for module, homes in ((shards, (shard_format, shard_stream, shard_scenes)), (train_data, (shard_data,))):
        names: dict = {}
        exec(f"from {module.__name__} import *", names)
        assert set(module.__all__) <= names.keys()
        for home in homes:
            assert all(getattr(module, n) is getattr(home, n) for n in home.__all__ if n in module.__all__)
