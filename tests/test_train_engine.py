"""The trainer on the toy method: resume equivalence, atomic checkpoints, NaN guard, load_checkpoint errors."""

from __future__ import annotations

import json

import pytest
import torch
import toy_method
from toy_method import fast_config, make_toy, toy_scenes

from vantage.train import CheckpointError, Trainer, TrainingDiverged, find_checkpoint, load_checkpoint, read_stats
from vantage.train.checkpoint import list_checkpoints, load_training_state
from vantage.train.trainer import ResumeError


@pytest.fixture
def toy(monkeypatch):
    import vantage.methods as vm

    monkeypatch.setitem(vm.METHODS, toy_method.METHOD, "toy_method:ToyMethod")
    monkeypatch.setitem(vm.PRESETS, toy_method.PRESET, (toy_method.METHOD, {}, "toy"))


class Killed(Exception):
    """Stands in for the process being killed."""


def train(run_dir, *, seed=0, kill_after=None, method_kw=None, **cfg):
    def hook(step, values):
        if kill_after is not None and step == kill_after:
            raise Killed

    trainer = Trainer(make_toy(seed, **(method_kw or {})), toy_scenes(), fast_config(**cfg), run_dir,
                      on_step_end=hook, log=lambda s: None)
    return trainer, trainer.fit()


def params(state):
    return {k: v for k, v in state.items() if k != "calls"}


def test_resume_continues_the_same_run(tmp_path, toy):
    cfg = {"duration": 5, "batch": 4, "micro_batch": 2, "ckpt_every": 2, "keep_checkpoints": 0}
    mk = {"noise": 0.3}  # the loss uses its generator: reseeding must match too
    _, whole = train(tmp_path / "whole", method_kw=mk, **cfg)
    with pytest.raises(Killed):  # killed after step 3: the newest checkpoint is step 2
        train(tmp_path / "split", method_kw=mk, kill_after=3, **cfg)
    assert [r["step"] for r in read_stats(tmp_path / "split")] == [1, 2, 3]
    assert find_checkpoint(tmp_path / "split").name == "step-000002"
    # different initial weights prove that the checkpoint is what counts
    _, resumed = train(tmp_path / "split", seed=123, method_kw=mk, **cfg)
    assert resumed.resumed_from == 2 and resumed.step == 5
    a, b = read_stats(tmp_path / "whole"), read_stats(tmp_path / "split")
    assert [r["step"] for r in b] == [1, 2, 3, 4, 5]
    for key in ("loss", "loss_l1", "lr", "grad_norm", "kimg"):
        assert [r[key] for r in a] == [r[key] for r in b], key
    sa = load_training_state(find_checkpoint(tmp_path / "whole"))
    sb = load_training_state(find_checkpoint(tmp_path / "split"))
    for part in ("model", "ema"):
        x = params(sa[part] if part == "model" else sa[part]["module"])
        y = params(sb[part] if part == "model" else sb[part]["module"])
        assert x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x), part
    assert [s for s, _ in list_checkpoints(tmp_path / "split")] == [2, 4, 5]
    # the EMA weights are the sampling weights; they differ from the raw ones
    m = load_checkpoint(tmp_path / "whole")
    assert torch.equal(m.net[0].weight, sa["ema"]["module"]["net.0.weight"])
    assert not torch.equal(sa["ema"]["module"]["net.0.weight"], sa["model"]["net.0.weight"])
    # one accumulation step of 2 x 2 equals one batch of 4 (deterministic loss)
    _, _ = train(tmp_path / "acc", duration=2, batch=4, micro_batch=2)
    _, _ = train(tmp_path / "one", duration=2, batch=4, micro_batch=4)
    for x, y in zip(read_stats(tmp_path / "acc"), read_stats(tmp_path / "one")):
        assert x["loss"] == pytest.approx(y["loss"], rel=1e-6) and x["grad_norm"] == pytest.approx(y["grad_norm"])


def test_ctrl_c_stops_after_the_step_with_a_checkpoint_and_resumes_exactly(tmp_path, toy):
    import os
    import signal

    cfg = {"duration": 5, "batch": 4, "micro_batch": 2, "ckpt_every": 4, "keep_checkpoints": 0}
    mk = {"noise": 0.3}
    _, whole = train(tmp_path / "whole", method_kw=mk, **cfg)

    def interrupt(step, values):
        if step == 3:  # a real SIGINT, as Ctrl-C sends it, in the middle of the run
            os.kill(os.getpid(), signal.SIGINT)

    before = signal.getsignal(signal.SIGINT)
    trainer = Trainer(make_toy(0, **mk), toy_scenes(), fast_config(**cfg), tmp_path / "split",
                      on_step_end=interrupt, log=lambda s: None)
    stopped = trainer.fit()
    assert stopped.stopped and stopped.step == 3 and stopped.checkpoint.name == "step-000003"
    assert signal.getsignal(signal.SIGINT) is before  # the handler is removed again
    _, resumed = train(tmp_path / "split", seed=123, method_kw=mk, **cfg)
    assert resumed.resumed_from == 3 and resumed.step == 5 and not resumed.stopped
    a, b = read_stats(tmp_path / "whole"), read_stats(tmp_path / "split")
    for key in ("loss", "grad_norm", "lr"):
        assert [r[key] for r in a] == [r[key] for r in b], key
    # request_stop() (e.g. from a notebook) does the same
    t2 = Trainer(make_toy(0, **mk), toy_scenes(), fast_config(**cfg), tmp_path / "api",
                 on_step_end=lambda step, v: t2.request_stop() if step == 1 else None, log=lambda s: None)
    r2 = t2.fit()
    assert r2.stopped and r2.step == 1 and r2.checkpoint.name == "step-000001"


def test_resume_refuses_another_config_but_accepts_a_longer_run(tmp_path, toy):
    train(tmp_path / "r", duration=2)
    with pytest.raises(ResumeError, match=r"train\.lr: 0\.01 -> 0\.02"):
        train(tmp_path / "r", duration=2, lr=2e-2)
    with pytest.raises(ResumeError, match=r"config\.noise: 0\.0 -> 0\.5"):
        train(tmp_path / "r", duration=2, method_kw={"noise": 0.5})
    _, res = train(tmp_path / "r", duration=3, log_every=3)
    assert res.resumed_from == 2 and res.step == 3
    assert json.loads((tmp_path / "r" / "config.json").read_text())["train"]["duration"] == 3
    # a run written before a field existed (here: removed from the stored config) resumes while the new
    # field keeps its default, and is refused when it is set to something else
    stored = json.loads((tmp_path / "r" / "config.json").read_text())
    noise = stored["config"].pop("noise")
    stored["train"].pop("grad_clip")
    for ckpt in (tmp_path / "r" / "checkpoints").glob("step-*"):
        (ckpt / "config.json").write_text(json.dumps({**stored, "step": 3}))
    (tmp_path / "r" / "config.json").write_text(json.dumps(stored))
    _, res = train(tmp_path / "r", duration=4, log_every=4)
    assert res.resumed_from == 3 and res.step == 4 and noise == 0.0
    with pytest.raises(ResumeError, match=r"config\.noise"):
        train(tmp_path / "r", duration=5, method_kw={"noise": 0.5})


def test_a_kill_while_writing_leaves_the_last_checkpoint(tmp_path, toy, monkeypatch):
    run = tmp_path / "run"
    train(run, duration=2, ckpt_every=1)
    import vantage.train.checkpoint as ck

    real_save = torch.save

    def dying_save(obj, f, *a, **k):
        real_save({"half": torch.zeros(3)}, f)  # a partial file, then the "kill"
        raise Killed

    monkeypatch.setattr(ck.torch, "save", dying_save)
    with pytest.raises(Killed):
        train(run, duration=3, ckpt_every=1)
    monkeypatch.setattr(ck.torch, "save", real_save)
    leftovers = [p.name for p in (run / "checkpoints").iterdir() if p.name.startswith(".tmp-")]
    assert leftovers == [f".tmp-step-000003-{__import__('os').getpid()}"]
    assert find_checkpoint(run).name == "step-000002"
    assert (run / "checkpoints" / "latest").read_text().strip() == "step-000002"
    assert isinstance(load_checkpoint(run), toy_method.ToyMethod)
    # a stale `latest` and an incomplete step folder are ignored too
    (run / "checkpoints" / "latest").write_text("step-000099\n")
    (run / "checkpoints" / "step-000007").mkdir()
    (run / "checkpoints" / "step-000007" / "config.json").write_text("{}")
    assert find_checkpoint(run).name == "step-000002"
    _, res = train(run, duration=3, ckpt_every=1)
    assert res.resumed_from == 2 and find_checkpoint(run).name == "step-000003"
    assert not [p for p in (run / "checkpoints").iterdir() if p.name.startswith(".tmp-")]


def test_nan_guard_skips_and_aborts(tmp_path, toy, monkeypatch):
    real_loss = toy_method.ToyMethod.loss
    calls = {"n": 0}
    poison = {2}

    def loss(self, batch, generator=None):
        calls["n"] += 1
        out = real_loss(self, batch, generator)
        if calls["n"] in poison:
            out["loss"] = out["loss"] * float("nan")
        return out

    monkeypatch.setattr(toy_method.ToyMethod, "loss", loss)
    seen = []

    def hook(step, values):
        seen.append({k: v.clone() for k, v in trainer.method.state_dict().items()})

    trainer = Trainer(make_toy(), toy_scenes(), fast_config(duration=3), tmp_path / "nan", on_step_end=hook,
                      log=lambda s: None)
    trainer.fit()
    assert torch.equal(seen[0]["net.0.weight"], seen[1]["net.0.weight"])  # step 2 skipped: no update
    assert not torch.equal(seen[1]["net.0.weight"], seen[2]["net.0.weight"])
    stats = read_stats(tmp_path / "nan")
    assert [r["skipped_steps"] for r in stats] == [0, 1, 0] and stats[-1]["skipped_total"] == 1
    assert stats[1].get("loss") is None and all(torch.isfinite(v).all() for v in seen[-1].values())
    poison.update(range(1, 100))
    with pytest.raises(TrainingDiverged, match="3 consecutive steps"):
        train(tmp_path / "diverged", duration=10, max_bad_steps=3)


def test_load_checkpoint_errors(tmp_path, toy):
    run = tmp_path / "run"
    train(run, duration=1)
    ckpt = find_checkpoint(run)
    assert load_checkpoint(ckpt / "model.safetensors").config.channels == 4  # a file inside works too
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_checkpoint(tmp_path / "nowhere")
    with pytest.raises(CheckpointError, match="neither a run folder"):
        load_checkpoint(tmp_path)
    cfg = json.loads((ckpt / "config.json").read_text())
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "model.safetensors").write_bytes((ckpt / "model.safetensors").read_bytes()[:50])
    (bad / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_checkpoint(bad)
    (bad / "config.json").write_text(json.dumps({**cfg, "method": "nosuchmethod"}))
    with pytest.raises(CheckpointError, match="unknown method 'nosuchmethod'"):
        load_checkpoint(bad)
    (bad / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(bad)
    (bad / "model.safetensors").write_bytes((ckpt / "model.safetensors").read_bytes())
    (bad / "config.json").write_text(json.dumps({**cfg, "config": {**cfg["config"], "channels": 6}}))
    with pytest.raises(CheckpointError, match=r"net\.0\.weight: saved \(4, 3, 3, 3\), config needs \(6, 3, 3, 3\)"):
        load_checkpoint(bad)
    from safetensors.torch import load_file, save_file

    state = load_file(str(ckpt / "model.safetensors"))
    state["extra.weight"] = torch.zeros(1)
    del state["net.2.bias"]
    save_file(state, str(bad / "model.safetensors"))
    (bad / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=r"missing keys: net\.2\.bias; unexpected keys: extra\.weight"):
        load_checkpoint(bad)
    with pytest.raises(CheckpointError, match="no complete checkpoint"):
        run2 = tmp_path / "run2"
        (run2 / "checkpoints").mkdir(parents=True)
        (run2 / "config.json").write_text(json.dumps({"format": "vantage-run"}))
        load_checkpoint(run2)


def test_bf16_autocast_on_cpu_keeps_fp32_weights(tmp_path, toy):
    trainer, res = train(tmp_path / "bf16", duration=2, precision="bf16", ema="power", ema_std=0.1)
    stats = read_stats(tmp_path / "bf16")
    assert res.step == 2 and all(r["loss"] is not None and r["loss"] > 0 for r in stats)
    assert all(p.dtype == torch.float32 for p in load_checkpoint(tmp_path / "bf16").parameters())
    assert trainer.run_config()["train"]["precision"] == "bf16"


def _children() -> int:
    """Processes whose parent is this one (Linux /proc)."""
    import os

    me, n = str(os.getpid()), 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                n += f.read().rsplit(")", 1)[1].split()[1] == me
        except OSError:
            pass
    return n


@pytest.mark.skipif(not __import__("os").path.isdir("/proc"), reason="counts child processes through /proc (Linux)")
def test_data_loader_workers_end_with_fit(tmp_path, toy):
    """The loader's worker processes stop when fit() returns (also when it fails), not when the garbage collector
    finds the iterator's reference cycle: a harness training several runs in one process kept them all alive."""
    import gc

    gc.disable()  # what the collector would clean up later must already be gone
    try:
        base = _children()
        train(tmp_path / "a", duration=3, batch=4, num_workers=2, ckpt_every=3)
        assert _children() == base
        with pytest.raises(Killed):
            train(tmp_path / "b", duration=3, batch=4, num_workers=2, ckpt_every=3, kill_after=1)
        assert _children() == base
    finally:
        gc.enable()
