"""The one trainer of every method: DDP, accumulation, AdamW, EMA, NaN guard, resume.

It uses nothing but the :class:`~vantage.methods.base.Method` contract: ``pair_sampler()``,
``loss(batch, generator)``, ``preview(batch, generator)`` (optional), ``to_json()`` and the
parameters.

One optimizer step (global batch ``B`` = ``W`` processes x ``A`` micro-steps x ``M`` pairs):

1. every rank runs its ``A`` micro-batches (:func:`~vantage.train.data.step_sampler`; shards: each
   rank's stream position is saved in checkpoints); micro-batch ``c = rank * A + m`` of step ``s`` gets
   ``torch.Generator`` seeded from ``(seed, s, c)`` for ``method.loss`` (and the global ``torch`` RNG from
   ``(seed, s, c, 1)``). With the same ``M`` a run is identical for any ``W`` (shards: the steps' pairs depend
   on ``W``); a resumed run repeats exactly what the uninterrupted one would have done.
2. ``loss / A`` is back-propagated (DDP averages over ``W``, so the gradient is the mean over the
   global batch, as in one process); DDP synchronises only on the last micro-step (``no_sync``).
3. the gradient norm is computed (and clipped); if it or the loss is not finite on any rank the
   step is skipped (no optimizer/EMA update) and counted; ``max_bad_steps`` in a row abort.
4. AdamW steps with the scheduled learning rate; the EMA (rank 0) is updated, and with ``ema_posthoc`` the
   post-hoc power EMAs too (:mod:`vantage.train.posthoc_ema`; snapshots every ``ema_posthoc_every``).

Progress is counted in images (``kimg``); logs, preview grids and checkpoints are written by rank 0
at their intervals and at the end. Ctrl-C or SIGTERM (or :meth:`Trainer.request_stop`) stops the
run after the current step with a checkpoint (:mod:`vantage.train.stop`). Whether ``run_dir`` is a
new run, one to resume or one to restart is decided in :mod:`vantage.train.resume`; stats and preview
grids are written by :mod:`vantage.train.logging`. See ``docs/training.md``.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vantage.data.pairs import PairBatch, sample_seed
from vantage.data.views import SceneDataset
from vantage.methods.base import Method
from vantage.outputs import OutputExistsError
from vantage.train.checkpoint import RUN_FORMAT, load_training_state, save_checkpoint
from vantage.train.config import TrainConfig
from vantage.train.data import DataSpec, build_loader, make_pair_dataset, step_sampler
from vantage.train.distributed import DistContext
from vantage.train.ema import EMA
from vantage.train.logging import IntervalStats, RunLogger, SamplePreviews, peak_memory_mb, truncate_stats
from vantage.train.posthoc_ema import PosthocEMA, remove_snapshots_after
from vantage.train.resume import ResumeError, comparable, prepare_run_dir
from vantage.train.schedule import lr_at
from vantage.train.stop import StopRequest

__all__ = ["Trainer", "TrainResult", "TrainingDiverged", "ResumeError"]


class TrainingDiverged(RuntimeError):
    """Too many consecutive steps with a non-finite loss or gradient."""


@dataclass
class TrainResult:
    """Where a finished (or already complete) run stands."""

    run_dir: Path
    step: int
    images: int
    resumed_from: int | None
    checkpoint: Path | None
    last: dict = field(default_factory=dict)
    stopped: bool = False  # stopped early on request (Ctrl-C, SIGTERM, request_stop)


class _LossModule(nn.Module):
    """``forward`` = ``method.loss``, so that DDP sees a forward pass."""

    def __init__(self, method: nn.Module) -> None:
        super().__init__()
        self.method = method

    def forward(self, batch: PairBatch, generator: torch.Generator) -> dict[str, torch.Tensor]:
        return self.method.loss(batch, generator)


def _close_loader(batches: Any) -> None:
    """Stop a DataLoader iterator's worker processes now. The iterator sits in a reference cycle, so without this
    its workers outlive ``fit()`` until the garbage collector runs: idle processes holding memory in a program that
    trains several runs in one process (``bench/harness.py``)."""
    shutdown = getattr(batches, "_shutdown_workers", None)  # torch's own clean-up, as in its __del__
    if callable(shutdown):
        shutdown()


def _drop_snapshots(run_dir: Path, step: int) -> int:
    """:func:`remove_snapshots_after`, with a foreign or broken file in ``ema_snapshots/`` as a :class:`ResumeError`."""
    try:
        return remove_snapshots_after(run_dir, step)
    except ValueError as e:
        raise ResumeError(f"{e}; move it out of {Path(run_dir) / 'ema_snapshots'} (vantage does not delete files it "
                          f"did not write)") from None


class Trainer:
    """Train ``method`` on ``scenes`` with ``config``, writing into ``run_dir``.

    Args:
        method: any :class:`~vantage.methods.base.Method` (moved to ``dist.device``).
        scenes: the training scenes (see :func:`vantage.train.data.open_training_data`).
        config: the :class:`TrainConfig`.
        run_dir: the run folder (new, empty, or an earlier run to resume); None only for :meth:`dry_run`.
        data: the :class:`DataSpec` recorded in ``config.json`` (compared on resume).
        preset: the preset name recorded in ``config.json``.
        dist: the :class:`DistContext` (default: one process on the method's device).
        log: where rank 0's messages go (default: ``print``, through tqdm while the bar is shown).
        on_step_end: called as ``on_step_end(step, values)`` after every step (``values``: this step's
            global means); raising from it stops the run like a kill would (used by tests).
        train_sources: where the training values that are not built-in defaults came from (``field ->
            "preset NAME" | "override"``, see :func:`~vantage.train.config.resolve_train_config`); recorded in
            ``config.json`` as ``"train_sources"``.
    """

    def __init__(self, method: Method, scenes: SceneDataset, config: TrainConfig, run_dir: str | Path | None,
                 *, data: DataSpec | None = None, preset: str | None = None, dist: DistContext | None = None,
                 log: Callable[[str], None] | None = None,
                 on_step_end: Callable[[int, dict[str, float]], None] | None = None,
                 train_sources: dict[str, str] | None = None) -> None:
        if dist is None:
            param = next(method.parameters(), None)
            dist = DistContext(device=param.device if param is not None else torch.device("cpu"))
        self.dist, self.config = dist, config
        self.plan = config.plan(dist.world_size)
        self.method = method.to(dist.device)
        self.scenes, self.data = scenes, data or DataSpec("<in-memory>")
        self.preset = preset
        self.train_sources = dict(train_sources or {})
        self.run_dir = None if run_dir is None else Path(run_dir)
        self.pairs = make_pair_dataset(scenes, method.pair_sampler(), config.seed)
        self._log = log or print
        self.on_step_end = on_step_end
        self._bar = None
        self._stop: StopRequest | None = None
        self._previews: SamplePreviews | None = None

    # ------------------------------------------------------------------ config
    def say(self, msg: str) -> None:
        """Print on rank 0 (through tqdm while the progress bar is shown)."""
        if not self.dist.is_main:
            return
        if self._bar is not None and not self._bar.disable:
            self._bar.write(msg)
        else:
            self._log(msg)

    def run_config(self) -> dict[str, Any]:
        """The resolved ``config.json``: method json + training config + data + versions."""
        from vantage import __version__

        p = self.plan
        data = {**self.data.to_dict(), "num_scenes": len(self.scenes), "format_name": self.scenes.format_name}
        return {"format": RUN_FORMAT, "vantage_version": __version__, **self.method.to_json(), "preset": self.preset,
                "train": self.config.to_dict(), "train_sources": self.train_sources, "data": data,
                "world_size": p.world_size, "micro_batch": p.micro_batch, "accumulation": p.accumulation,
                "total_steps": p.total_steps, "device": str(self.dist.device)}

    comparable = staticmethod(comparable)  # kept as Trainer.comparable (see vantage.train.resume)

    def _prepare_run_dir(self) -> dict:
        """Rank 0: decide new / resume / restart, check the config, write ``config.json``."""
        assert self.run_dir is not None
        return prepare_run_dir(self.run_dir, self.run_config(), method_config=self.method.config,
                               train_config=self.config, say=self.say)

    # ------------------------------------------------------------------ dry run
    def dry_run(self) -> dict[str, Any]:
        """Print the resolved config (rank 0) and load one micro-batch per rank (printing its shapes)."""
        if self.dist.is_main:
            self._log(json.dumps(self.run_config(), indent=2))
        sampler = step_sampler(self.pairs, self.plan, rank=self.dist.rank, world_size=self.dist.world_size,
                               seed=self.config.seed, start_step=0, end_step=1, say=self.say)
        batch = next(iter(build_loader(self.pairs, sampler, num_workers=self.config.num_workers)))
        shapes = {"cond.images": tuple(batch.cond.images.shape), "cond.valid": tuple(batch.cond.valid.shape),
                  "target.images": tuple(batch.target.images.shape), "scenes": batch.scene_index.tolist()}
        scenes = shapes["scenes"]
        shown = dict(shapes, scenes=str(scenes[:8])[:-1] + (", ...]" if len(scenes) > 8 else "]"))
        p = self.plan
        print(f"rank {self.dist.rank}/{self.dist.world_size}: micro-batch {p.micro_batch} x {p.accumulation} "
              f"accumulation step(s) x {p.world_size} process(es) = global batch {p.batch}; "
              + ", ".join(f"{k} {v}" for k, v in shown.items()), flush=True)
        return shapes

    # ------------------------------------------------------------------ training
    def fit(self) -> TrainResult:
        """Train to ``duration`` (resuming from the newest checkpoint of ``run_dir`` if there is one)."""
        if self.run_dir is None:
            raise ValueError("Trainer.fit needs a run_dir")
        ctx, cfg, plan = self.dist, self.config, self.plan
        decision = None
        if ctx.is_main:
            try:
                decision = self._prepare_run_dir()
            except (OutputExistsError, ResumeError) as e:
                decision = {"error": type(e).__name__, "message": str(e)}
        decision = ctx.broadcast(decision)
        if "error" in decision:
            raise (OutputExistsError if decision["error"] == "OutputExistsError" else ResumeError)(decision["message"])
        ctx.barrier()

        method, device = self.method, ctx.device
        method.train()
        opt = torch.optim.AdamW(method.parameters(), lr=cfg.lr, betas=cfg.betas, eps=cfg.eps,
                                weight_decay=cfg.weight_decay)
        ema = (EMA(method, cfg.ema, batch=plan.batch, halflife_images=plan.ema_halflife_images, rampup=cfg.ema_rampup,
                   decay=cfg.ema_decay, std=cfg.ema_std) if ctx.is_main else None)
        posthoc = (PosthocEMA(method, cfg.ema_posthoc_stds, shared=ema) if cfg.ema_posthoc and ctx.is_main else None)
        self._posthoc = posthoc
        start, elapsed, interval, bad_total, bad_run = 0, 0.0, IntervalStats(), 0, 0
        resumed_from = data_state = None
        if decision["checkpoint"] is not None:
            state = load_training_state(decision["checkpoint"], map_location=device)
            method.load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
            if ema is not None:
                ema.load_state_dict(state["ema"])
            if posthoc is not None:
                if "posthoc_ema" not in state:
                    raise ResumeError(f"{decision['checkpoint']} holds no post-hoc EMA state (train.ema_posthoc)")
                posthoc.load_state_dict(state["posthoc_ema"])
            start = resumed_from = int(state["step"])
            elapsed, interval = float(state.get("elapsed_s", 0.0)), IntervalStats(state.get("interval"))
            bad_total, bad_run = int(state.get("bad_steps_total", 0)), int(state.get("bad_steps_in_a_row", 0))
            data_state = state.get("data")  # shards: every rank's stream position
            if ctx.is_main:
                dropped = truncate_stats(self.run_dir, start)
                if dropped:
                    self.say(f"dropped {dropped} stats line(s) logged after step {start} (the run died after them)")
                if posthoc is not None and (gone := _drop_snapshots(self.run_dir, start)):
                    self.say(f"removed {gone} EMA snapshot(s) written after step {start} (they are written again)")
        elif posthoc is not None and ctx.is_main and (gone := _drop_snapshots(self.run_dir, 0)):
            # a start from step 0 in a run folder that died before its first checkpoint: its snapshots belong to
            # the dead attempt (perhaps with other widths or learning rate), never mixed into this run's
            self.say(f"removed {gone} EMA snapshot(s) of an earlier attempt that left no checkpoint")
        if start >= plan.total_steps:
            self.say(f"the run is already at step {start} of {plan.total_steps}; nothing to do "
                     f"(pass a larger --steps to continue it)")
            return TrainResult(self.run_dir, start, start * plan.batch, resumed_from, decision["checkpoint"] and
                               Path(decision["checkpoint"]))

        loss_module = _LossModule(method)
        ddp = None
        model: nn.Module = loss_module
        if ctx.distributed:
            from torch.nn.parallel import DistributedDataParallel

            ddp = model = DistributedDataParallel(loss_module, device_ids=None,
                                                  find_unused_parameters=cfg.find_unused_parameters)
        if cfg.compile:
            if device.type == "cuda":
                model = torch.compile(model)
            else:
                self.say("note: train.compile is only used on CUDA; training uncompiled on CPU")
        self._sampler = sampler = step_sampler(self.pairs, plan, rank=ctx.rank, world_size=ctx.world_size,
                                               seed=cfg.seed, start_step=start, end_step=plan.total_steps,
                                               state=data_state, say=self.say)
        batches = iter(build_loader(self.pairs, sampler, num_workers=cfg.num_workers,
                                    pin_memory=device.type == "cuda"))
        logger = RunLogger(self.run_dir, tensorboard=cfg.tensorboard, log=self.say) if ctx.is_main else None
        if ctx.is_main and self._previews is None:  # kept across fit() calls: the note on no preview() comes once
            self._previews = SamplePreviews(self.run_dir, self.pairs, count=cfg.preview_count, seed=cfg.seed,
                                            device=device, say=self.say)
        previews = self._previews
        from tqdm.auto import tqdm

        self._bar = tqdm(total=plan.total_steps * plan.batch, initial=start * plan.batch, unit="img",
                         unit_scale=True, dynamic_ncols=True, desc="train",
                         disable=not (ctx.is_main and cfg.progress))
        self.say(f"training {method.to_json()['method']} for {plan.total_steps} steps "
                 f"({plan.total_steps * plan.batch / 1000:g} kimg), global batch {plan.batch} = {ctx.world_size} "
                 f"process(es) x {plan.accumulation} x {plan.micro_batch}, on {device}")
        keys: list[str] | None = None
        last: dict[str, float] = {}
        ckpt_path = None
        t_last = time.perf_counter()
        A, bf16 = plan.accumulation, cfg.precision == "bf16"
        self._stop = stop = StopRequest(self.say)
        stopped_at = None
        try:
            stop.__enter__()
            for step in range(start, plan.total_steps):
                lr = lr_at(cfg, plan, step)
                for group in opt.param_groups:
                    group["lr"] = lr
                sums: torch.Tensor | None = None
                for m in range(A):
                    batch = next(batches).to(device)
                    chunk = ctx.rank * A + m
                    torch.manual_seed(sample_seed(cfg.seed, step, chunk, 1))
                    gen = torch.Generator(device=device).manual_seed(sample_seed(cfg.seed, step, chunk))
                    sync = ddp.no_sync() if ddp is not None and m < A - 1 else contextlib.nullcontext()
                    with sync:
                        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                            out = model(batch, gen)
                        loss = _check_loss(out, method)
                        (loss.float() / A).backward()
                    if keys is None:
                        keys = ["loss"] + sorted(k for k, v in out.items() if k != "loss" and _is_scalar(v))
                    vals = torch.stack([_scalar(out.get(k), device) for k in keys])
                    sums = vals if sums is None else sums + vals
                grad_norm = torch.nn.utils.clip_grad_norm_(method.parameters(), cfg.grad_clip or float("inf"))
                flag = torch.tensor([float(stop.requested)], dtype=torch.float64, device=device)
                reduced = ctx.all_reduce_sum(torch.cat([sums, grad_norm.detach().to(device).double().reshape(1), flag]))
                reduced = reduced.cpu()  # one device sync per step; the stop flag rides along
                means = (reduced[:-2] / (ctx.world_size * A)).tolist()
                gnorm = float(reduced[-2]) / ctx.world_size
                stopping = float(reduced[-1]) > 0
                done = step + 1
                interval.steps += 1
                if not (math.isfinite(means[0]) and math.isfinite(gnorm)):
                    opt.zero_grad(set_to_none=True)
                    bad_total, bad_run = bad_total + 1, bad_run + 1
                    interval.skipped += 1
                    self.say(f"step {done}: non-finite loss ({means[0]}) or gradient norm ({gnorm}); step skipped "
                             f"({bad_run} in a row, {bad_total} in all)")
                    if bad_run >= cfg.max_bad_steps:
                        raise TrainingDiverged(f"{bad_run} consecutive steps with a non-finite loss or gradient "
                                               f"(up to step {done}); training stopped. Lower train.lr, enable "
                                               f"train.grad_clip, or check the data.")
                    last = {"loss": means[0], "grad_norm": gnorm}
                else:
                    opt.step()
                    opt.zero_grad(set_to_none=True)
                    bad_run = 0
                    if ema is not None:
                        ema.update(method, done)
                    if posthoc is not None:
                        posthoc.update(method, done)
                    last = {**dict(zip(keys, means)), "grad_norm": gnorm}
                    interval.add(last)
                self._bar.update(plan.batch)
                self._bar.set_postfix(loss=f"{last['loss']:.4g}", kimg=f"{done * plan.batch / 1000:.4g}", refresh=False)
                now = time.perf_counter()
                interval.seconds += now - t_last
                elapsed += now - t_last
                t_last = now
                if plan.due(plan.log_every, done):
                    if logger is not None:
                        logger.write(self._record(done, lr, interval, elapsed, bad_total))
                    interval = IntervalStats()
                if previews is not None and plan.due(plan.sample_every, done):
                    previews.write(ema.module, done)
                if posthoc is not None and plan.due(plan.ema_posthoc_every, done):  # before the checkpoint of `done`
                    posthoc.save(self.run_dir, done, done * plan.batch, method.to_json()["method"])
                if plan.due(plan.ckpt_every, done):
                    if ctx.is_main:
                        ckpt_path = self._save(done, opt, ema, elapsed, interval, bad_total, bad_run)
                    ctx.barrier()
                t_last = time.perf_counter()  # writing files does not count as training time
                if self.on_step_end is not None:
                    self.on_step_end(done, last)
                stopping = stopping or (not ctx.distributed and stop.requested)  # DDP: the flag of the all-reduce
                if stopping and done < plan.total_steps:
                    if posthoc is not None and not plan.due(plan.ema_posthoc_every, done):
                        posthoc.save(self.run_dir, done, done * plan.batch, method.to_json()["method"])
                    if not plan.due(plan.ckpt_every, done):
                        if ctx.is_main:
                            ckpt_path = self._save(done, opt, ema, elapsed, interval, bad_total, bad_run)
                        ctx.barrier()
                    stopped_at = done
                    break
        finally:
            stop.__exit__()
            _close_loader(batches)
            self._bar.close()
            self._bar = None
            if logger is not None:
                logger.close()
        if stopped_at is not None:
            self.say(f"stopped on request at step {stopped_at} ({stopped_at * plan.batch / 1000:g} kimg); checkpoint "
                     f"{ckpt_path}; run the same command again to resume")
            return TrainResult(self.run_dir, stopped_at, stopped_at * plan.batch, resumed_from, ckpt_path, last,
                               stopped=True)
        self.say(f"done: step {plan.total_steps}, {plan.total_steps * plan.batch / 1000:g} kimg, "
                 f"checkpoint {ckpt_path}")
        return TrainResult(self.run_dir, plan.total_steps, plan.total_steps * plan.batch, resumed_from, ckpt_path, last)

    def request_stop(self) -> None:
        """Stop after the current step with a checkpoint, as Ctrl-C does (e.g. from ``on_step_end``)."""
        if getattr(self, "_stop", None) is not None:
            self._stop.request()

    # ------------------------------------------------------------------ helpers
    def _record(self, done: int, lr: float, interval: IntervalStats, elapsed: float, bad_total: int) -> dict[str, Any]:
        p = self.plan
        means = interval.means()
        rec: dict[str, Any] = {"step": done, "kimg": done * p.batch / 1000}
        rec.update({k: v for k, v in means.items() if k != "grad_norm"})
        rec.update({"lr": lr, "grad_norm": means.get("grad_norm", float("nan")),
                    "images_per_s": interval.steps * p.batch / max(interval.seconds, 1e-9),
                    "peak_mem_mb": peak_memory_mb(self.dist.device), "time_s": elapsed,
                    "skipped_steps": interval.skipped, "skipped_total": bad_total, "world_size": p.world_size})
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in rec.items()}

    def _save(self, done: int, opt: torch.optim.Optimizer, ema: EMA, elapsed: float, interval: IntervalStats,
              bad_total: int, bad_run: int) -> Path:
        from vantage import __version__

        cuda = self.dist.device.type == "cuda"
        state = {"model": self.method.state_dict(), "optimizer": opt.state_dict(), "ema": ema.state_dict(),
                 "step": done, "images": done * self.plan.batch, "elapsed_s": elapsed, "interval": interval.state(),
                 "bad_steps_total": bad_total, "bad_steps_in_a_row": bad_run, "world_size": self.dist.world_size,
                 "vantage_version": __version__, "data": self._sampler.state(done),
                 "rng": {"torch": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state_all() if cuda else []}}
        if getattr(self, "_posthoc", None) is not None:
            state["posthoc_ema"] = self._posthoc.state_dict()
        config = {**self.run_config(), "step": done, "images": done * self.plan.batch}
        path = save_checkpoint(self.run_dir, done, config=config, weights=ema.module.state_dict(),
                               training_state=state, keep=self.config.keep_checkpoints)
        return path


def _is_scalar(v: Any) -> bool:
    return (isinstance(v, torch.Tensor) and v.numel() == 1) or (isinstance(v, (int, float)) and not isinstance(v, bool))


def _scalar(v: Any, device: torch.device) -> torch.Tensor:
    if v is None or not _is_scalar(v):
        return torch.tensor(float("nan"), dtype=torch.float64, device=device)
    return (v.detach().reshape(()) if isinstance(v, torch.Tensor) else torch.tensor(v)).to(device, torch.float64)


def _check_loss(out: Any, method: nn.Module) -> torch.Tensor:
    name = getattr(method, "name", type(method).__name__)
    if not isinstance(out, dict) or "loss" not in out:
        raise TypeError(f"method '{name}': loss() must return a dict with a 'loss' entry, got {type(out).__name__}")
    loss = out["loss"]
    if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
        raise TypeError(f"method '{name}': loss()['loss'] must be a scalar tensor, got "
                        f"{tuple(loss.shape) if isinstance(loss, torch.Tensor) else type(loss).__name__}")
    return loss.reshape(())
