"""`vantage train --data SHARD_DIR`: the rank streams (exactly once per epoch, independent of workers and
micro-batches), resume equivalence, the folder's pairs for every method, resizing, --dry-run and errors."""

from __future__ import annotations

import json
from collections import Counter

import pytest
import torch
import toy_method
from toy_method import fast_config, make_toy, toy_scenes

from vantage.cli.main import main
from vantage.data.formats.common import DatasetError
from vantage.data.pairs import ClipTooShortError, PairDataset, PairSampler
from vantage.data.shard_format import INDEX_NAME, shard_name
from vantage.data.shard_scenes import ShardPairs, ShardScenes
from vantage.data.shard_stream import ShardDataset
from vantage.data.shards import write_shards
from vantage.data.testing import ToyDataset
from vantage.train import DataSpec, Trainer, find_checkpoint, open_training_data, read_stats
from vantage.train.checkpoint import load_training_state
from vantage.train.data import build_loader
from vantage.train.shard_data import ShardStepSampler

FAST = ["--set", "train.num_workers=0", "--set", "train.progress=false", "--set", "train.tensorboard=false",
        "--set", "train.log_every=1"]


@pytest.fixture
def toy(monkeypatch):
    import vantage.methods as vm

    monkeypatch.setitem(vm.METHODS, toy_method.METHOD, "toy_method:ToyMethod")
    monkeypatch.setitem(vm.PRESETS, toy_method.PRESET, (toy_method.METHOD, {"resolution": 16, "channels": 4},
                                                        "test-only toy method"))


@pytest.fixture(scope="module")
def toy_shards(tmp_path_factory):
    """``toy_scenes()`` (6 scenes x 4 views, 16 px) in 3 shards."""
    out = tmp_path_factory.mktemp("toy_shards")
    write_shards(toy_scenes(), out, shard_size=2, progress=False)
    return out


@pytest.fixture(scope="module")
def ragged(tmp_path_factory):
    """7 objects with 2..6 views in 3 shards (as in test_shards.py)."""
    out = tmp_path_factory.mktemp("ragged")
    toy = ToyDataset(7, [3, 5, 4, 6, 3, 2, 5], resolution=8, seed=1)
    write_shards(toy, out, shard_size=3, progress=False)
    return out, toy


def stream(pairs, *, world=1, rank=0, batch=None, micro=1, steps=1, start=0, state=None, **kw):
    batch = batch or world * micro
    return ShardStepSampler(pairs, batch=batch, micro_batch=micro, rank=rank, world_size=world, seed=5,
                            start_step=start, end_step=start + steps, state=state, **kw)


def key(pair):
    return pair.scene_index, tuple(pair.cond.view_ids.tolist()), int(pair.target.view_ids[0])


# ---------------------------------------------------------------------- the stream
@pytest.mark.parametrize("world", [1, 2, 3])
def test_every_sample_once_per_epoch_in_shard_dataset_blocks(ragged, world):
    folder, toy = ragged
    pairs = ShardPairs(ShardScenes(folder), PairSampler(min_cond=1, max_cond=2), seed=5)
    for epoch in (0, 1, 2):
        seen = []
        for rank in range(world):
            items = stream(pairs, world=world, rank=rank).epoch_items(epoch, rank).tolist()
            got = sorted(int(pairs.samples[i]) for i in items)
            # the same block as ShardDataset's split (shuffled shard order, rank's contiguous block)
            ref = ShardDataset(folder, shuffle=True, seed=5, rank=rank, world_size=world)
            ref.set_epoch(epoch)
            assert got == sorted(o.meta["sample_index"] for o in ref), (world, epoch, rank)
            seen += got
        assert Counter(seen) == Counter(range(7)), (world, epoch)
    # pairs: those of ShardDataset(pair_sampler=...), which draws from (seed, epoch, global sample index)
    sampler = PairSampler(min_cond=1, max_cond=3, target_in_pool_prob=0.3)
    pairs = ShardPairs(ShardScenes(folder), sampler, seed=5)
    ref = ShardDataset(folder, seed=5, pair_sampler=sampler)
    ref.set_epoch(1)
    assert {key(pairs[(1, i)]) for i in range(7)} == {key(p) for p in ref}


def test_stream_does_not_depend_on_workers_or_micro_batch(ragged):
    folder, _ = ragged
    pairs = ShardPairs(ShardScenes(folder), PairSampler(min_cond=1, max_cond=3), seed=5)

    def run(micro, workers):  # rank 1 of 2, 4 pairs per step
        out = []
        for b in build_loader(pairs, stream(pairs, world=2, rank=1, batch=8, micro=micro, steps=5),
                              num_workers=workers):
            for j in range(len(b)):
                cond = b.cond.view_ids[j][b.cond.valid[j]].tolist()
                out.append((int(b.scene_index[j]), tuple(cond), int(b.target.view_ids[j, 0])))
        return out

    one = run(4, 0)
    pairs[(0, 0)]  # shard files are now open in this process; forked workers must open their own
    assert len(one) == 20 and one == run(1, 0) == run(2, 2)
    # rank 1 has 3 or 4 samples per epoch (7 over 2 ranks): the 20 items run through its blocks epoch by epoch
    s = stream(pairs, world=2, rank=1, batch=8, micro=4, steps=5)
    items = [x for b in s for x in b]
    assert [x[0] for x in one] == [int(pairs.samples[i]) for _, i in items]
    epochs = sorted({e for e, _ in items})
    assert epochs == list(range(len(epochs))) and len(epochs) >= 5
    for e in epochs:
        got, block = [i for ee, i in items if ee == e], s.epoch_items(e, 1).tolist()
        assert got == block if e < epochs[-1] else got == block[:len(got)]


def test_short_samples_skipped_and_cursors(ragged):
    folder, _ = ragged
    scenes = ShardScenes(folder)
    with pytest.raises(ClipTooShortError, match=r"3 of 7 samples.*shard-000000\.tar:000000000 \('toy_00000'\)"):
        ShardPairs(scenes, PairSampler(min_cond=3, max_cond=3))
    with pytest.raises(ClipTooShortError, match="none of the 7 samples"):
        ShardPairs(scenes, PairSampler(min_cond=6, max_cond=6, on_short="skip"))
    pairs = ShardPairs(scenes, PairSampler(min_cond=3, max_cond=3, on_short="skip"), seed=5)
    assert pairs.samples.tolist() == [1, 2, 3, 6] and len(pairs.skipped) == 3
    for world in (1, 2):
        for rank in range(world):
            s = stream(pairs, world=world, rank=rank, micro=1, batch=world, steps=9)
            items = [b[0] for b in s]
            assert len(items) == 9
            # epoch by epoch, the rank's block of eligible samples, each once
            for e in {e for e, _ in items}:
                got = [i for ee, i in items if ee == e]
                assert len(set(got)) == len(got) and set(got) <= set(s.epoch_items(e, rank).tolist())
            # the cursor after n steps is where the stream continues
            for n in range(9):
                e, o = s.cursor_at(n, rank)
                assert (e, int(s.epoch_items(e, rank)[o])) == items[n]


def test_resume_state_with_another_world_size_or_changed_data(ragged, toy_shards):
    folder, _ = ragged
    pairs = ShardPairs(ShardScenes(folder), PairSampler(), seed=5)
    two = stream(pairs, world=2, rank=0, steps=7, batch=2)
    state = two.state(7)
    assert state["cursors"] == [list(two.cursor_at(7, r)) for r in range(2)] and state["world_size"] == 2
    notes = []
    one = stream(pairs, world=1, start=7, state=state, say=notes.append)
    e = max(c[0] + (c[1] > 0) for c in state["cursors"])
    assert one.cursor_at(7, 0) == (e, 0) and f"epoch {e}" in notes[0]
    e1, o1 = state["cursors"][1]
    same = stream(pairs, world=2, rank=1, start=7, steps=2, batch=2, state=state)
    assert next(iter(same))[0] == (e1, int(two.epoch_items(e1, 1)[o1]))
    other = ShardPairs(ShardScenes(toy_shards), PairSampler(), seed=5)
    with pytest.raises(DatasetError, match="the data changed"):
        stream(other, world=2, start=7, state=state)
    with pytest.raises(DatasetError, match="fewer than the 8 processes"):
        stream(pairs, world=8)


# ---------------------------------------------------------------------- training
def _recording(monkeypatch):
    seen = []
    real = toy_method.ToyMethod.loss

    def loss(self, batch, generator=None):
        seen.append((batch.scene_index.tolist(), batch.target.view_ids[:, 0].tolist()))
        return real(self, batch, generator)

    monkeypatch.setattr(toy_method.ToyMethod, "loss", loss)
    return seen


class Killed(Exception):
    pass


def _train(run, shards, *, seed=0, kill_after=None, **cfg):
    def hook(step, values):
        if kill_after is not None and step == kill_after:
            raise Killed

    data = DataSpec.parse(str(shards))
    scenes = open_training_data(data, 16, log=lambda s: None)
    return Trainer(make_toy(seed, noise=0.3), scenes, fast_config(**cfg), run, data=data, on_step_end=hook,
                   log=lambda s: None).fit()


def test_resume_from_shards_continues_the_same_stream(tmp_path, toy_shards, monkeypatch, single_thread):
    cfg = {"duration": 5, "batch": 4, "micro_batch": 2, "ckpt_every": 2, "keep_checkpoints": 0}
    seen = _recording(monkeypatch)
    _train(tmp_path / "whole", toy_shards, **cfg)
    whole, seen[:] = list(seen), []
    with pytest.raises(Killed):  # killed after step 3: the newest checkpoint is step 2
        _train(tmp_path / "split", toy_shards, kill_after=3, **cfg)
    assert seen == whole[:6]
    seen[:] = []
    res = _train(tmp_path / "split", toy_shards, seed=123, **{**cfg, "num_workers": 1})  # workers may change
    assert res.resumed_from == 2 and res.step == 5
    assert seen == whole[4:]  # steps 3..5: the same samples and the same pairs
    a, b = read_stats(tmp_path / "whole"), read_stats(tmp_path / "split")
    assert [r["step"] for r in b] == [1, 2, 3, 4, 5]
    for k in ("loss", "grad_norm", "lr", "kimg"):
        assert [r[k] for r in a] == [r[k] for r in b], k
    # 5 steps x 4 pairs of 6 per epoch: epoch 3, offset 2; every epoch holds each scene once
    state = load_training_state(find_checkpoint(tmp_path / "split"))["data"]
    assert state["cursors"] == [[3, 2]] and state["world_size"] == 1 and state["num_samples"] == 6
    flat = [s for scenes, _ in whole for s in scenes]
    for e in range(3):
        assert sorted(flat[6 * e:6 * e + 6]) == list(range(6))
    config = json.loads((tmp_path / "whole" / "config.json").read_text())
    assert config["data"]["format_name"] == "shards" and config["data"]["num_scenes"] == 6


def test_every_method_gets_the_folder_pairs_from_shards(toy_shards):
    import dataclasses

    from test_train_methods import TINY

    import vantage.methods as vm
    from vantage.methods.base import config_from_dict

    scenes, shards = toy_scenes(), ShardScenes(toy_shards)
    samplers = {}
    for name in vm.METHODS:
        try:
            cls = vm.method_class(name)
        except ModuleNotFoundError:
            continue
        cfg = config_from_dict(cls.config_class, TINY.get(name, {"resolution": 16}), where=name)
        sampler = cls(cfg).pair_sampler()
        samplers[repr(dataclasses.astuple(sampler))] = sampler
    assert samplers
    for extra in (PairSampler(min_cond=1, max_cond=2, mode="ring", ring_size=4, ring_gap=(1, 1)),
                  PairSampler(min_cond=1, max_cond=2, mode="frame_gap", frame_gap=(1, 2), shuffle=False)):
        samplers[repr(extra)] = extra  # the other modes (ViewFusion on NMR, VIVID's frame gaps)
    for sampler in samplers.values():
        folder, streamed = PairDataset(scenes, sampler, seed=3), ShardPairs(shards, sampler, seed=3)
        assert len(folder) == len(streamed) == 6
        for e in (0, 1):
            for i in range(6):
                a, b = folder[(e, i)], streamed[(e, i)]
                assert key(a) == key(b), sampler
                assert torch.equal(a.cond.images, b.cond.images) and torch.equal(a.target.images, b.target.images)
                assert torch.equal(a.cond.cameras.c2w, b.cond.cameras.c2w)


def test_cli_trains_from_shards_with_resize_and_dry_run(toy, tmp_path, capsys, single_thread):
    shards = tmp_path / "shards"
    write_shards(ToyDataset(5, 3, resolution=8, seed=2), shards, shard_size=2, progress=False)
    assert main(["train", "toy-tiny", "--data", str(shards), "--out", str(tmp_path / "never"), "--batch", "4",
                 "--set", "train.micro_batch=2", "--dry-run", *FAST]) == 0
    text = capsys.readouterr().out
    assert "resizing them to the method's 16x16" in text and "8x8" in text
    assert "rank 0/1: micro-batch 2 x 2" in text and "target.images (2, 1, 3, 16, 16)" in text
    assert not (tmp_path / "never").exists()
    run = tmp_path / "run"
    assert main(["train", "toy-tiny", "--data", str(shards / INDEX_NAME), "--out", str(run), "--steps", "3",
                 "--batch", "4", *FAST]) == 0
    assert [r["step"] for r in read_stats(run)] == [1, 2, 3]
    assert json.loads((run / "config.json").read_text())["data"]["spec"] == str(shards / INDEX_NAME)
    assert main(["train", "--out", str(run), "--steps", "4", *FAST]) == 0  # resume: the stored data spec
    assert [r["step"] for r in read_stats(run)] == [1, 2, 3, 4]
    assert load_training_state(find_checkpoint(run))["data"]["cursors"] == [[3, 1]]  # 16 items, 5 per epoch


# ---------------------------------------------------------------------- errors
def _copy(src, dst):
    dst.mkdir()
    for f in src.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
    return dst


def test_errors_name_the_problem(toy, tmp_path, toy_shards, capsys):
    def train(data, *extra):
        code = main(["train", "toy-tiny", "--data", str(data), "--out", str(tmp_path / "run"), "--steps", "2",
                     "--batch", "2", *FAST, *extra])
        return code, capsys.readouterr().err

    missing = _copy(toy_shards, tmp_path / "missing")
    (missing / shard_name(1)).unlink()
    code, err = train(missing)
    assert code == 2 and shard_name(1) in err and "missing" in err
    truncated = _copy(toy_shards, tmp_path / "truncated")
    (truncated / shard_name(2)).write_bytes((truncated / shard_name(2)).read_bytes()[:1000])
    code, err = train(truncated)
    assert code == 2 and shard_name(2) in err and "truncated" in err
    garbage = _copy(toy_shards, tmp_path / "garbage")  # same sizes, so only reading them can notice
    for i in range(3):
        (garbage / shard_name(i)).write_bytes(b"\x13" * (garbage / shard_name(i)).stat().st_size)
    code, err = train(garbage)
    assert code == 2 and "garbage/shard-00000" in err and "corrupt tar header" in err
    no_index = _copy(toy_shards, tmp_path / "no_index")
    (no_index / INDEX_NAME).unlink()
    code, err = train(no_index)
    assert code == 2 and INDEX_NAME in err and "interrupted" in err
    empty = tmp_path / "empty"
    empty.mkdir()
    index = json.loads((toy_shards / INDEX_NAME).read_text())
    (empty / INDEX_NAME).write_text(json.dumps({**index, "num_samples": 0, "shards": []}))
    code, err = train(empty)
    assert code == 2 and "lists no samples" in err
    stale = _copy(toy_shards, tmp_path / "stale")
    index["shards"][1]["offsets"][1] = index["shards"][1]["offsets"][0]  # sample 3 -> where sample 2 is
    (stale / INDEX_NAME).write_text(json.dumps(index))
    with pytest.raises(DatasetError, match=f"{shard_name(1)}.*does not match the shard"):
        ShardScenes(stale).load(3)
    code, err = train(toy_shards, "-o", "split=train")
    assert code == 2 and "reader options (split) do not apply" in err
    code, err = train(toy_shards, "--format", "srn")
    assert code == 2 and "leave out --format srn" in err
    code, err = train(toy_shards, "-o", f"single_images={tmp_path}")
    assert code == 2 and "cannot be mixed into a shard stream" in err
    wide = tmp_path / "wide"
    write_shards(_Wide(), wide, progress=False)
    code, err = train(wide)
    assert code == 2 and "12x8 images (not square)" in err


class _Wide(ToyDataset):
    """Two 12x8 objects."""

    def __init__(self):
        super().__init__(2, 2, resolution=8)

    def load(self, index, views=None):
        from vantage.cameras import Cameras
        from vantage.data.views import ObjectViews

        v = super().load(index, views)
        images = torch.cat([v.images, v.images[..., :4]], dim=-1)
        return ObjectViews(images=images, cameras=Cameras(v.cameras.c2w, v.cameras.K, 12, 8), view_ids=v.view_ids,
                           name=v.name)
