"""DDP with two CPU processes (gloo) trains exactly like one process with the same global batch."""

from __future__ import annotations

import socket

import pytest
import torch
import torch.multiprocessing as mp
import toy_method
from toy_method import fast_config, make_toy, toy_scenes

from vantage.train import Trainer, find_checkpoint, read_stats
from vantage.train.checkpoint import load_training_state

pytestmark = pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                                reason="torch.distributed with gloo is not available")

# 1) deterministic loss: 2 processes x micro-batch 2 == 1 process x batch 4 (no accumulation)
# 2) noisy loss (uses the per-step generators): 2 processes x 2 == 1 process x 2 micro-batches of 2
JOBS = [("plain", {"duration": 4, "batch": 4, "micro_batch": 2, "ckpt_every": 0}, {}),
        ("noisy", {"duration": 3, "batch": 8, "micro_batch": 2, "ckpt_every": 0, "lr_schedule": "inv_sqrt"},
         {"noise": 0.2})]
SINGLE = {"plain": {"micro_batch": 4}, "noisy": {}}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_match_one(tmp_path, monkeypatch):
    import vantage.methods as vm

    monkeypatch.setitem(vm.METHODS, toy_method.METHOD, "toy_method:ToyMethod")
    jobs = [(str(tmp_path / f"ddp-{name}"), cfg, mk) for name, cfg, mk in JOBS]
    mp.spawn(toy_method.ddp_worker, args=(2, _free_port(), jobs), nprocs=2, join=True)
    for name, cfg, mk in JOBS:
        single = tmp_path / f"one-{name}"
        Trainer(make_toy(**mk), toy_scenes(), fast_config(**{**cfg, **SINGLE[name]}), single, log=lambda s: None).fit()
        ddp = tmp_path / f"ddp-{name}"
        a, b = read_stats(single), read_stats(ddp)
        assert [r["step"] for r in a] == [r["step"] for r in b] == list(range(1, cfg["duration"] + 1))
        assert all(r["world_size"] == 2 for r in b) and all(r["world_size"] == 1 for r in a)
        for x, y in zip(a, b):
            assert x["loss"] == pytest.approx(y["loss"], rel=1e-5, abs=1e-7), name
            assert x["grad_norm"] == pytest.approx(y["grad_norm"], rel=1e-5, abs=1e-7), name
        sa, sb = load_training_state(find_checkpoint(single)), load_training_state(find_checkpoint(ddp))
        for part in ("model", "ema"):
            x = sa[part] if part == "model" else sa[part]["module"]
            y = sb[part] if part == "model" else sb[part]["module"]
            for k in x:
                if k != "calls":
                    torch.testing.assert_close(x[k], y[k], rtol=0, atol=1e-5, msg=f"{name} {part} {k}")
        # the parameters moved: the comparison is not trivially between two initial states
        init = make_toy(**mk).state_dict()
        assert not torch.allclose(init["net.0.weight"], sb["model"]["net.0.weight"], atol=1e-3)
