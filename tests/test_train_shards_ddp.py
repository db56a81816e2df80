"""DDP from shards with two CPU processes (gloo): each rank streams its own block of every epoch (every
sample once per epoch over the ranks), the global batch is split with accumulation, and a run resumed
from a checkpoint continues both ranks' streams exactly."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
import toy_method
from toy_method import fast_config, make_toy, toy_scenes

from vantage.data.shards import write_shards
from vantage.train import find_checkpoint, read_stats
from vantage.train.checkpoint import load_training_state

pytestmark = pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                                reason="torch.distributed with gloo is not available")

CFG = {"batch": 4, "micro_batch": 1, "ckpt_every": 0, "log_every": 1}  # per rank: 2 micro-batches of 1


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, shards: str, jobs: list, out: str) -> None:
    import torch.distributed as dist

    from vantage.train import DataSpec, Trainer, open_training_data, setup_distributed

    torch.set_num_threads(1)
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    dist.init_process_group("gloo", rank=rank, world_size=world)
    seen: list = []
    real = toy_method.ToyMethod.loss

    def loss(self, batch, generator=None):
        seen.append(batch.scene_index.tolist())
        return real(self, batch, generator)

    toy_method.ToyMethod.loss = loss
    try:
        toy_method.register()
        for name, run_dir, duration in jobs:
            seen.clear()
            data = DataSpec.parse(shards)
            scenes = open_training_data(data, 16, log=lambda s: None)
            Trainer(make_toy(noise=0.2), scenes, fast_config(**CFG, duration=duration), run_dir, data=data,
                    dist=setup_distributed("cpu"), log=lambda s: None).fit()
            Path(out, f"{name}-{rank}.json").write_text(json.dumps(seen))
    finally:
        dist.destroy_process_group()


def test_two_processes_stream_their_blocks_and_resume(tmp_path):
    shards = tmp_path / "shards"
    write_shards(toy_scenes(), shards, shard_size=2, progress=False)  # 6 samples: 3 per rank and epoch
    whole, split = str(tmp_path / "whole"), str(tmp_path / "split")
    jobs = [("whole", whole, 5), ("first", split, 2), ("rest", split, 5)]  # "rest" resumes "first" at step 2
    mp.spawn(_worker, args=(2, _free_port(), str(shards), jobs, str(tmp_path)), nprocs=2, join=True)

    def seen(name, rank):
        return [s for batch in json.loads((tmp_path / f"{name}-{rank}.json").read_text()) for s in batch]

    for rank in (0, 1):
        assert len(seen("whole", rank)) == 10  # 5 steps x 2 micro-batches of 1
        assert seen("whole", rank) == seen("first", rank) + seen("rest", rank)
    for epoch in range(3):
        both = seen("whole", 0)[3 * epoch:3 * epoch + 3] + seen("whole", 1)[3 * epoch:3 * epoch + 3]
        assert sorted(both) == list(range(6)), epoch
    a, b = read_stats(whole), read_stats(split)
    assert [r["step"] for r in b] == [1, 2, 3, 4, 5] and all(r["world_size"] == 2 for r in a)
    for x, y in zip(a, b):
        assert x["loss"] == pytest.approx(y["loss"], rel=1e-6) and x["grad_norm"] == pytest.approx(y["grad_norm"])
    state = load_training_state(find_checkpoint(split))["data"]
    assert state["world_size"] == 2 and state["cursors"] == [[3, 1], [3, 1]]  # 10 items of 3 per epoch
