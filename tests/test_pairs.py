"""Pair sampling: modes, probabilities, per-sample determinism, ragged collate, rank split."""

from __future__ import annotations

import math

import pytest
import torch

from vantage.data.pairs import (
    FRAME_GAP_PRESETS,
    ClipTooShortError,
    PairDataset,
    PairSampler,
    RankSampler,
    collate_pairs,
    sample_seed,
    seeded_generator,
)
from vantage.data.testing import ToyDataset


def draws(sampler: PairSampler, n_views: int, count: int, seed: int = 0):
    return [sampler.sample(n_views, seeded_generator(seed, i)) for i in range(count)]


def pair_key(p):
    cond, target = tuple(p.cond.view_ids.tolist()), tuple(p.target.view_ids.tolist())
    return p.scene_index, cond, target, p.target_in_cond


# ---------------------------------------------------------------------- sampler
def test_view_count_within_bounds_and_roughly_uniform():
    s = PairSampler(min_cond=2, max_cond=5)
    out = draws(s, 24, 2000)
    counts = torch.bincount(torch.tensor([len(p.cond) for p in out]), minlength=7)
    assert counts[:2].sum() == 0 and counts[6:].sum() == 0
    for k in range(2, 6):  # 500 expected each; 5 sigma ~ 97
        assert abs(int(counts[k]) - 500) < 100, counts
    for p in out:
        assert len(set(p.cond)) == len(p.cond)
        assert p.target not in p.cond
        assert all(0 <= c < 24 for c in p.cond + (p.target,))


def test_count_capped_by_small_scene():
    out = draws(PairSampler(min_cond=1, max_cond=6), 3, 200)
    assert max(len(p.cond) for p in out) == 2  # only two other views exist


def test_target_in_pool_probability():
    n = 4000
    out = draws(PairSampler(min_cond=1, max_cond=3, target_in_pool_prob=0.1), 10, n)
    hits = sum(p.target_in_cond for p in out)
    sigma = math.sqrt(n * 0.1 * 0.9)
    assert abs(hits - 0.1 * n) < 5 * sigma, hits
    for p in out:
        assert (p.target in p.cond) == p.target_in_cond
        assert len(set(p.cond)) == len(p.cond)
    assert not any(p.target_in_cond for p in draws(PairSampler(max_cond=3), 10, 500))
    assert all(p.cond == (p.target,) for p in draws(PairSampler(target_in_pool_prob=1.0), 10, 50))


def test_shuffle_flag():
    ordered = draws(PairSampler(min_cond=4, max_cond=4, shuffle=False), 24, 100)
    assert all(list(p.cond) == sorted(p.cond) for p in ordered)
    shuffled = draws(PairSampler(min_cond=4, max_cond=4, shuffle=True), 24, 100)
    assert any(list(p.cond) != sorted(p.cond) for p in shuffled)


@pytest.mark.parametrize("preset", ["mid", "long"])
def test_frame_gap_presets_respected(preset):
    lo, hi = FRAME_GAP_PRESETS[preset]
    assert (lo, hi) == {"mid": (30, 60), "long": (60, 120)}[preset]
    out = draws(PairSampler(min_cond=1, max_cond=3, mode="frame_gap", frame_gap=preset), 300, 1000)
    gaps = [abs(c - p.target) for p in out for c in p.cond]
    assert min(gaps) >= lo and max(gaps) <= hi
    assert min(gaps) <= lo + 3 and max(gaps) >= hi - 3  # the whole range is used
    assert {p.target for p in out} >= {0, 299}  # both ends of the clip can be targets


def test_frame_gap_minimal_and_short_clips():
    s = PairSampler(mode="frame_gap", frame_gap=(5, 8))
    assert s.check(5) is not None and s.check(6) is None
    out = draws(s, 6, 50)
    assert {(p.target, p.cond) for p in out} == {(0, (5,)), (5, (0,))}
    with pytest.raises(ClipTooShortError, match="clip_x"):
        s.sample(5, seeded_generator(0), name="clip_x")
    # 3 conditioning frames need lo + 3 frames
    assert PairSampler(min_cond=3, max_cond=3, mode="frame_gap", frame_gap=(5, 8)).check(7) is not None


def test_frame_gap_dataset_error_and_skip():
    ds = ToyDataset(3, [100, 20, 31], resolution=4)
    s = PairSampler(mode="frame_gap", frame_gap="mid")
    with pytest.raises(ClipTooShortError, match="toy_00001"):
        PairDataset(ds, s)
    pd = PairDataset(ds, PairSampler(mode="frame_gap", frame_gap="mid", on_short="skip"))
    assert len(pd) == 2 and [k.path for k in pd.skipped] == ["toy_00001"]
    for i in range(len(pd)):
        p = pd[i]
        assert all(30 <= abs(c - int(p.target.view_ids[0])) <= 60 for c in p.cond.view_ids.tolist())


def test_ring_mode():
    s = PairSampler(min_cond=1, max_cond=3, mode="ring", ring_size=24, ring_gap=(1, 2))
    assert s.check(24) is None and "ring_size=24" in s.check(23)
    out = draws(s, 24, 1000)
    for p in out:
        for c in p.cond:
            d = abs(c - p.target)
            assert 1 <= min(d, 24 - d) <= 2
    assert any(p.target == 0 and 23 in p.cond for p in out)  # wraps around
    assert {len(p.cond) for p in out} == {1, 2, 3}
    full = draws(PairSampler(min_cond=23, max_cond=23, mode="ring"), 24, 5)
    assert all(sorted(p.cond) == [c for c in range(24) if c != p.target] for p in full)
    ds = ToyDataset(3, [24, 12, 24], resolution=4)
    with pytest.raises(ClipTooShortError, match="toy_00001"):
        PairDataset(ds, s)
    pd = PairDataset(ds, PairSampler(mode="ring", ring_size=24, on_short="skip"))
    assert len(pd) == 2 and pd.skipped[0].path == "toy_00001"


@pytest.mark.parametrize("kwargs", [dict(min_cond=0), dict(min_cond=3, max_cond=2), dict(mode="orbit"),
                                    dict(target_in_pool_prob=1.5), dict(frame_gap="short"),
                                    dict(frame_gap=(10, 5)), dict(ring_gap=(0, 3)), dict(on_short="ignore")])
def test_sampler_validation(kwargs):
    with pytest.raises(ValueError):
        PairSampler(**kwargs)


# ---------------------------------------------------------------------- dataset
def test_loads_only_needed_views():
    ds = ToyDataset(4, 12, resolution=8)
    pd = PairDataset(ds, PairSampler(min_cond=1, max_cond=4, target_in_pool_prob=0.5), seed=3)
    for i in range(len(pd)):
        ds.loads.clear()
        p = pd[i]
        assert ds.loads == [(p.scene_index, tuple(sorted(set(p.cond.view_ids.tolist())
                                                         | set(p.target.view_ids.tolist()))))]
        # images really are those views of that scene
        assert ToyDataset.identify(p.cond.images) == [(p.scene_index, v) for v in p.cond.view_ids.tolist()]
        assert ToyDataset.identify(p.target.images) == [(p.scene_index, int(p.target.view_ids[0]))]


def test_sample_seed_is_stable():
    assert sample_seed(0, 0, 0) == sample_seed(0, 0, 0) != sample_seed(0, 0, 1)
    assert sample_seed(1, 2, 3) == 1517167407554927345  # changing the hash changes every pair
    assert 0 <= sample_seed(2**70, -5) < 2**63


def _loader_keys(pd, epochs, batch_size, workers, persistent=False):
    sampler = RankSampler(len(pd), rank=0, world_size=1, seed=5)
    dl = torch.utils.data.DataLoader(pd, batch_size=batch_size, num_workers=workers, sampler=sampler,
                                     collate_fn=list, persistent_workers=persistent and workers > 0)
    out = []
    for e in epochs:
        sampler.set_epoch(e)
        out.append([pair_key(p) for batch in dl for p in batch])
    return out, [sampler.rank_indices(e) for e in epochs]


def test_determinism_independent_of_batch_size_workers_and_rank():
    ds = ToyDataset(6, 10, resolution=4, with_masks=False, with_depth=False)
    pd = PairDataset(ds, PairSampler(min_cond=1, max_cond=4, target_in_pool_prob=0.2), seed=11,
                     samples_per_scene=2)
    ref, order = _loader_keys(pd, [0, 1], 1, 0)
    for bs, workers, persistent in [(5, 0, False), (4, 2, True)]:
        got, _ = _loader_keys(pd, [0, 1], bs, workers, persistent)
        assert got == ref
    # the same item on another rank/world is the same pair; plain int indexing uses set_epoch
    for e in (0, 1):
        pd.set_epoch(e)
        assert [pair_key(pd[i]) for i in order[e]] == ref[e]
        direct = {i: pair_key(pd[(e, i)]) for i in range(len(pd))}
        for world in (2, 3):
            for rank in range(world):
                rs = RankSampler(len(pd), rank=rank, world_size=world, seed=5)
                rs.set_epoch(e)
                assert all(pair_key(pd[item]) == direct[item[1]] for item in rs)
    assert ref[0] != ref[1]  # a new epoch draws new pairs


def test_ragged_collate_valid_masks():
    ds = ToyDataset(5, 8, resolution=8)
    pd = PairDataset(ds, PairSampler(min_cond=1, max_cond=5), seed=2)
    pairs = [pd[i] for i in range(5)]
    ks = [len(p.cond) for p in pairs]
    assert len(set(ks)) > 1
    b = collate_pairs(pairs)
    assert b.cond.images.shape == (5, max(ks), 3, 8, 8)
    assert b.target.images.shape == (5, 1, 3, 8, 8) and b.target.valid.all()
    assert b.cond.valid.sum(1).tolist() == ks
    for i, p in enumerate(pairs):
        k = ks[i]
        assert torch.equal(b.cond.images[i, :k], p.cond.images)
        assert (b.cond.images[i, k:] == 0).all() and (b.cond.view_ids[i, k:] == -1).all()
        assert not b.cond.valid[i, k:].any()
    assert b.scene_index.tolist() == [p.scene_index for p in pairs]
    assert b.cond.masks.shape == (5, max(ks), 1, 8, 8)
    assert collate_pairs(pairs, pad_to=6).cond.images.shape[1] == 6


# ---------------------------------------------------------------------- ranks
@pytest.mark.parametrize("n", [1, 2, 10, 11])
@pytest.mark.parametrize("world", [1, 2, 3, 4])
def test_rank_split(n, world):
    for drop_last in (False, True):
        parts = [RankSampler(n, rank=r, world_size=world, seed=1, drop_last=drop_last, yield_epoch=False)
                 for r in range(world)]
        lists = [list(p) for p in parts]
        assert len({len(x) for x in lists}) == 1 and len(lists[0]) == len(parts[0])
        flat = [i for x in lists for i in x]
        if drop_last:
            assert len(flat) == len(set(flat)) == n - n % world  # no overlap, only the tail dropped
        else:
            assert set(flat) == set(range(n)) and len(flat) == math.ceil(n / world) * world
            assert len(flat) - len(set(flat)) == len(flat) - n  # only the padding repeats


def test_rank_sampler_epochs():
    s = RankSampler(50, rank=0, world_size=1, seed=0, yield_epoch=False)
    a = list(s)
    s.set_epoch(1)
    assert sorted(list(s)) == list(range(50)) and list(s) != a
    s.set_epoch(0)
    assert list(s) == a
    assert list(RankSampler(5, rank=1, world_size=2, shuffle=False)) == [(0, 1), (0, 3), (0, 0)]
    with pytest.raises(ValueError):
        RankSampler(5, rank=2, world_size=2)
