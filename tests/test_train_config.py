"""Training config, lengths, overrides, learning-rate schedules and EMA math."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from vantage.data.pairs import sample_seed
from vantage.train.config import (
    TrainConfig,
    diff_configs,
    parse_images,
    parse_length,
    split_overrides,
    train_config_from_dict,
)
from vantage.train.data import StepBatchSampler
from vantage.train.ema import EMA, halflife_beta, power_beta, power_gamma, power_std
from vantage.train.schedule import learning_rate


def test_lengths_in_steps_or_images():
    assert parse_length(100, 64) == 100
    assert parse_length("100steps", 64) == 100
    assert parse_length("500kimg", 64) == math.ceil(500_000 / 64)
    assert parse_length("640img", 64) == 10
    assert parse_length("2.5mimg", 1000) == 2500
    assert parse_images("500kimg", 64) == 500_000 and parse_images(10, 64) == 640
    for bad in ("fast", "-3", "10 parsecs", True):
        with pytest.raises(ValueError, match="length"):
            parse_length(bad, 4)


def test_plan_keeps_the_global_batch_and_accumulates():
    cfg = TrainConfig(batch=32, micro_batch=4, duration="64img")
    p1, p4 = cfg.plan(1), cfg.plan(4)
    assert (p1.micro_batch, p1.accumulation) == (4, 8) and (p4.micro_batch, p4.accumulation) == (4, 2)
    assert p1.total_steps == p4.total_steps == 2
    assert TrainConfig(batch=12, micro_batch=5).plan(1).micro_batch == 4  # largest divisor of 12 below 5
    assert TrainConfig(batch=8).plan(2).accumulation == 1
    with pytest.raises(ValueError, match="divisible by the number of processes"):
        TrainConfig(batch=6).plan(4)
    assert p1.due(p1.log_every, 2) and not TrainConfig(log_every=3, duration=10).plan().due(3, 4)


def test_bad_fields_are_named():
    with pytest.raises(ValueError, match="lr_schedule"):
        TrainConfig(lr_schedule="linear")
    with pytest.raises(ValueError, match=r"unknown training field\(s\) \['lrr'\]"):
        train_config_from_dict({"lrr": 1.0})
    with pytest.raises(ValueError, match="ema_std"):
        TrainConfig(ema="power", ema_std=0.5)
    assert train_config_from_dict({"betas": [0.9, 0.99]}).betas == (0.9, 0.99)


def test_split_overrides_routes_fields_and_names_unknown_ones():
    method_items, train = split_overrides(["resolution=32", "train.lr=2e-4", "batch=8", "ema=power",
                                           "warmup=10kimg", "grad_clip=none"], {"resolution", "ch"})
    assert method_items == ["resolution=32"]
    assert train == {"lr": 2e-4, "batch": 8, "ema": "power", "warmup": "10kimg", "grad_clip": None}
    with pytest.raises(ValueError, match="nosuch.*method fields: \\['ch', 'resolution'\\]"):
        split_overrides(["nosuch=1"], {"resolution", "ch"})
    with pytest.raises(ValueError, match="no training field 'resolution'"):
        split_overrides(["train.resolution=1"], {"resolution"})
    assert diff_configs({"a": {"b": (1, 2), "c": 1}}, {"a": {"b": [1, 2], "c": 2}}) == ["a.c: 1 -> 2"]


def test_lr_schedules():
    lr = 1.0
    assert learning_rate(lr, 0, schedule="constant", warmup_steps=4) == pytest.approx(0.25)
    assert learning_rate(lr, 3, schedule="constant", warmup_steps=4) == pytest.approx(1.0)
    cos = [learning_rate(lr, s, schedule="cosine", total_steps=12, warmup_steps=2, min_ratio=0.1) for s in range(13)]
    assert cos[0] == pytest.approx(0.5) and cos[2] == pytest.approx(1.0)
    assert cos[7] == pytest.approx(0.55)  # half way through the decay: (1 + 0.1) / 2
    assert cos[12] == pytest.approx(0.1) and all(a >= b for a, b in zip(cos[2:], cos[3:]))
    inv = [learning_rate(lr, s, schedule="inv_sqrt", decay_ref_steps=100) for s in (0, 50, 100, 400, 10_000)]
    assert inv == pytest.approx([1.0, 1.0, 1.0, 0.5, 0.1])


def test_halflife_ema():
    beta = halflife_beta(batch=4, halflife_images=1000, images_before=10**9, rampup=0.05)
    assert beta ** (1000 / 4) == pytest.approx(0.5)
    assert halflife_beta(4, 1000, 0, 0.05) == 0.0  # the first update copies the weights
    assert halflife_beta(4, 1000, 400, 0.05) == pytest.approx(0.5 ** (4 / 20))  # ramp-up: 400 * 0.05 images


def test_power_ema_gamma_and_weights():
    assert power_gamma(0.05) == pytest.approx(16.97, abs=0.01)
    assert power_gamma(0.10) == pytest.approx(6.94, abs=0.01)
    for std in (0.02, 0.1, 0.2):
        assert power_std(power_gamma(std)) == pytest.approx(std, rel=1e-9)
    # EMA of a parameter sequence == the direct weighted sum w_tau = (tau^(g+1) - (tau-1)^(g+1)) / t^(g+1)
    model = nn.Linear(3, 2)
    ema = EMA(model, "power", std=0.1)
    g = ema.gamma
    history = []
    gen = torch.Generator().manual_seed(0)
    for t in range(1, 31):
        with torch.no_grad():
            for p in model.parameters():
                p.copy_(torch.randn(p.shape, generator=gen))
        history.append([p.detach().clone().double() for p in model.parameters()])
        ema.update(model, t)
    t = len(history)
    w = [(tau ** (g + 1) - (tau - 1) ** (g + 1)) / t ** (g + 1) for tau in range(1, t + 1)]
    assert sum(w) == pytest.approx(1.0)
    for i, p in enumerate(ema.module.parameters()):
        direct = sum(wt * h[i] for wt, h in zip(w, history))
        torch.testing.assert_close(p.double(), direct, rtol=1e-5, atol=1e-6)
    assert power_beta(g, 1) == 0.0


def test_step_sampler_global_batch_does_not_depend_on_world_size():
    n, batch = 7, 8

    def positions(world: int, micro: int, step: int) -> list[list[tuple[int, int]]]:
        out = []
        for r in range(world):
            s = StepBatchSampler(n, batch=batch, micro_batch=micro, rank=r, world_size=world, seed=5,
                                 start_step=step, end_step=step + 1)
            out.append([item for mb in s for item in mb])
        return out

    for step in (0, 3):
        one = positions(1, 8, step)[0]
        for world, micro in ((2, 2), (4, 1), (2, 4)):
            ranks = positions(world, micro, step)
            assert sorted(sum(ranks, [])) == sorted(one)
            assert ranks[0] != ranks[1]
    s = StepBatchSampler(n, batch=batch, micro_batch=8, seed=5, start_step=0, end_step=2)
    items = [item for mb in s for item in mb]
    assert sorted(i for e, i in items if e == 0) == list(range(n))  # epoch 0 is a permutation, then epoch 1
    assert sample_seed(1, 2, 3) != sample_seed(1, 2, 4)


def test_method_overrides_accept_python_spellings_of_null_and_booleans():
    from vantage.methods import parse_overrides
    from vantage.methods.threedim import ThreeDiMConfig

    got = parse_overrides(["concat_cond=True", "clip_x0=false", "emb_ch=None", "pose_mode=relative"],
                          ThreeDiMConfig)
    assert got == {"concat_cond": True, "clip_x0": False, "emb_ch": None, "pose_mode": "relative"}
