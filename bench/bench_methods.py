"""Method benchmarks: training throughput and memory, sampling cost, and the interpolated strategy's memory bound.

Three sub-benchmarks, selected by flags (any combination; ``--all`` for every one):

* ``--train``: one training step of every preset = ``method.loss`` (under bf16 autocast for ``bf16``), backward,
  gradient clipping at 1 and an AdamW step: the trainer's step without its EMA update, logging and data loader.
  The batches are drawn from the embedded synthetic data exactly as the trainer draws them (the method's pair
  sampler, seed 0) and rendered into memory *before* timing, so the renderer is not timed. ``--warmup`` steps,
  then ``--repeats`` timed passes over the same ``--steps`` batches; images/s = steps x batch / best pass. Each
  row runs in a fresh process; peak memory: on CPU the peak resident set of that process (``VmHWM``; unlike
  ``ru_maxrss`` it does not inherit the parent's peak through fork + exec), in total and as the increase over the
  RSS after building the model and the batches (what training adds); on CUDA ``torch.cuda.max_memory_allocated``.
  ``--attention sdpa,naive`` also times each row with the attention written as the reference implementations
  write it (einsum ``q kᵀ``, an explicit softmax in float32, einsum with ``v``; :func:`vantage.nn.attention_naive`),
  the same weights and outputs otherwise (presets without a :class:`vantage.nn.Attention` block are refused).
* ``--sample``: one ``--orbit``-view orbit (24: the input view is copied, 23 are generated) from view 0 of a
  synthetic test object, batch 1, with each preset's default sampler, steps, guidance and strategy (what
  ``vantage sample`` uses), untrained weights (timing only: the cost does not depend on the weights). Seconds
  per generated view come from the orbit's per-view callback (first, median and last view: ViewFusion's
  composed set grows by one view per step). GeNVS also runs with its per-set feature-image cache disabled
  (every denoiser call re-runs the encoder, the field and the volume renderer), in the same process, and VIVID
  also with its unconditional guide network (``vivid-shapes32-uncond``, untrained) at the default weight 1.5.
* ``--branches``: peak memory and time of *one* call of the ``interpolated`` set denoiser (ViewFusion's
  interpolated denoising, :mod:`vantage.sampling.interpolated`) around a preset's single-view denoiser, batch
  1, with 1, 2, 4, 8, 16 views in the window (window 360 degrees: every view of the set is a branch), all
  branches in one network call and chunked with ``max_rows``. Each row in a fresh process: a warm-up call with
  one view, then the measured call (peak RSS increase on CPU), then the best time of ``--repeats`` calls.

    python bench/bench_methods.py --train --threads 2
    python bench/bench_methods.py --sample --threads 2
    python bench/bench_methods.py --branches --threads 2
    python bench/bench_methods.py --all --device cuda --batch 64 --compile      # on a GPU
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # harness beside this file

from bench_xunet import rss_mib, sync  # noqa: E402  (VmRSS / VmHWM in MiB; CUDA sync)
from harness import DEFAULT_METHODS, TINY  # noqa: E402
from harness_report import hardware, hardware_line  # noqa: E402

#: training-only extra rows: ViewFusion with one conditioning view per sample (one UNet row per image)
EXTRA_TRAIN = {"viewfusion-shapes32": ("viewfusion-shapes32 (1 view)", {"max_views": 1})}


# ------------------------------------------------------------------------------------------- helpers
def memory_start(device: torch.device) -> float:
    """Start a peak-memory measurement; returns the baseline (MiB). On CPU (Linux): freed heap memory is handed
    back (``malloc_trim``) and the process's peak RSS is reset to its current RSS (``/proc/self/clear_refs``)."""
    sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return torch.cuda.memory_allocated(device) / 2**20
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass
    return rss_mib()


def memory_peak(device: torch.device) -> float:
    sync(device)
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else rss_mib("VmHWM")


def build(preset: str, tiny: bool, overrides: dict | None = None) -> Any:
    from vantage.methods import all_presets, build_method

    torch.manual_seed(0)
    return build_method(preset, {**(TINY.get(all_presets()[preset][0], {}) if tiny else {}), **(overrides or {})})


def synthetic_object(resolution: int, views: int) -> Any:
    from vantage.data.synthetic import SyntheticDataset

    return SyntheticDataset("test", num_objects=1, views=views, resolution=resolution).load(0)


# ------------------------------------------------------------------------------------------- training
class LossModule(torch.nn.Module):
    """``forward = method.loss`` (what ``torch.compile`` wraps, as in the trainer)."""

    def __init__(self, method: torch.nn.Module) -> None:
        super().__init__()
        self.method = method

    def forward(self, batch: Any, generator: torch.Generator) -> dict:
        return self.method.loss(batch, generator)


def train_job(job: dict) -> dict:
    """One training row (module docstring); runs in a fresh process unless ``--in-process``."""
    from vantage.data.pairs import sample_seed
    from vantage.data.synthetic import SyntheticDataset
    from vantage.train.data import StepBatchSampler, build_loader, make_pair_dataset

    device = torch.device(job["device"])
    method = build(job["preset"], job["tiny"], job["overrides"]).to(device).train()
    attention = job.get("attention", "sdpa")
    if attention != "sdpa":
        from vantage.nn.blocks import Attention, set_attention_impl

        if not any(isinstance(m, Attention) for m in method.modules()):
            raise SystemExit(f"{job['preset']}: no attention block of vantage.nn.blocks to switch to {attention!r}")
        set_attention_impl(method, attention)
    batch, steps = job["batch"], job["steps"]
    scenes = SyntheticDataset("train", num_objects=4096, resolution=method.config.resolution)
    pairs = make_pair_dataset(scenes, method.pair_sampler(), seed=0)
    sampler = StepBatchSampler(len(pairs), batch=batch, micro_batch=batch, seed=0, end_step=steps)
    batches = [b.to(device) for b in build_loader(pairs, sampler)]
    views = torch.cat([b.cond.valid.sum(dim=1) for b in batches]).float().mean().item()
    model: torch.nn.Module = LossModule(method)
    if job["compile"]:
        model = torch.compile(model)
    opt = torch.optim.AdamW(method.parameters(), lr=1e-4)
    bf16 = job["precision"] == "bf16"
    before = rss_mib("VmHWM")  # building the model and the batches
    base = memory_start(device)

    def step(i: int) -> None:
        torch.manual_seed(sample_seed(0, i, 0, 1))
        gen = torch.Generator(device=device).manual_seed(sample_seed(0, i, 0))
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            out = model(batches[i % steps], gen)
        out["loss"].float().backward()
        torch.nn.utils.clip_grad_norm_(method.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    for i in range(job["warmup"]):
        step(i)
    passes = []
    for _ in range(job["repeats"]):
        sync(device)
        t0 = time.perf_counter()
        for i in range(steps):
            step(i)
        sync(device)
        passes.append(time.perf_counter() - t0)
    peak, best, params = memory_peak(device), min(passes), sum(p.numel() for p in method.parameters())
    return {"preset": job["label"], "precision": job["precision"], "attention": attention, "parameters": params,
            "cond_views": views, "images_per_s": steps * batch / best, "step_s": best / steps,
            "passes_s": passes, "peak_mib": peak if device.type == "cuda" else max(peak, before),
            "added_mib": peak - base}


# ------------------------------------------------------------------------------------------- sampling
def uncached(method: Any) -> Any:
    """A GeNVS denoiser that renders the conditioning at every call (its content cache disabled)."""
    from vantage.methods.genvs_sampling import GeNVSDenoiser, as_view_set

    class Uncached(GeNVSDenoiser):
        def prepare(self, cond: Any) -> torch.Tensor:
            views, target, _ = as_view_set(cond)
            self.renders += 1
            return self.method.render(views, target)["features"]

    return Uncached(method)


def orbit_row(label: str, method: Any, model: Any, obj: Any, args: argparse.Namespace, steps: int) -> dict:
    """One orbit of ``model`` (the method, or an explicit single-view denoiser of it) from view 0 of ``obj``."""
    from vantage.diffusion.samplers import get_sampler
    from vantage.sampling import autoregressive_orbit
    from vantage.sampling.strategy_choice import choose_strategy

    cfg = method.config
    choice = choose_strategy(method)  # what `vantage sample` uses without --strategy
    stamps: list[float] = []
    best = None
    for _ in range(args.orbit_repeats):
        t0 = time.perf_counter()
        marks = [t0]
        res = autoregressive_orbit(model, obj.select([0]), obj.cameras, strategy=choice.strategy,
                                   strategy_options=choice.options, sampler=get_sampler(cfg.default_sampler),
                                   sigmas=method.sampling_sigmas(steps, cfg.default_sampler), seed=0,
                                   device=args.device,
                                   callback=lambda _, m=marks: m.append(time.perf_counter()))
        if best is None or res.seconds < best.seconds:
            best, stamps = res, marks
    per_view = [b - a for a, b in zip(stamps, stamps[1:])]
    n = int(best.generated.sum())
    row = {"preset": label, "sampler": f"{cfg.default_sampler} x {steps}", "strategy": choice.name,
           "guidance": cfg.default_guidance, "nfe_orbit": best.nfe, "nfe_view": best.nfe / n, "views": n,
           "orbit_s": best.seconds, "first_s": per_view[0], "median_s": statistics.median(per_view),
           "last_s": per_view[-1], "renders": getattr(model, "renders", None)}
    if choice.name == "composed":  # one UNet row per view of the set at every call
        row["unet_rows"] = int(best.nfe // n * best.set_sizes[best.generated].sum())
    return row


def sample_rows(args: argparse.Namespace) -> list[dict]:
    rows = []
    for preset in args.presets:
        first = len(rows)
        method = build(preset, args.tiny).to(args.device).eval()
        steps = args.sample_steps or method.config.default_steps
        obj = synthetic_object(method.config.resolution, args.orbit)
        with torch.no_grad():
            if method.name == "genvs":
                rows.append(orbit_row(preset, method, method.single_view_denoiser(), obj, args, steps))
                rows.append(orbit_row(preset + " (no cache)", method, uncached(method), obj, args, steps))
            else:
                rows.append(orbit_row(preset, method, method, obj, args, steps))
            if method.name == "vivid" and not args.tiny:
                guide = build(preset + "-uncond", args.tiny).to(args.device).eval()
                den = method.single_view_denoiser(guide=guide)
                rows.append(orbit_row(preset + " + uncond guide", method, den, obj, args, steps))
        for row in rows[first:]:
            print(json.dumps(row), flush=True)
    return rows


# ------------------------------------------------------------------------------------------- branches
def branch_job(job: dict) -> dict:
    """One ``interpolated`` set-denoiser call with ``views`` branches (module docstring); a fresh process."""
    from vantage.data.views import ViewSet
    from vantage.sampling.interpolated import InterpolatedDenoising
    from vantage.sampling.orbit import resolve_denoiser
    from vantage.sampling.strategies import ViewSetCond

    device = torch.device(job["device"])
    method = build(job["preset"], job["tiny"]).to(device).eval()
    k, res = job["views"], method.config.resolution
    obj = synthetic_object(res, 24)
    den = resolve_denoiser(method)

    def call(n: int, max_rows: int | None) -> torch.Tensor:
        views = ViewSet(images=obj.images[None, :n].to(device), cameras=obj.cameras[None, :n].to(device),
                        valid=torch.ones(1, n, dtype=torch.bool, device=device),
                        view_ids=torch.arange(n, device=device)[None])
        cond = ViewSetCond(views, obj.cameras[None, 20].to(device))
        strat = InterpolatedDenoising(den, window_deg=360.0, max_rows=max_rows)
        x = torch.randn(1, 3, res, res, generator=torch.Generator().manual_seed(0)).to(device) * 10.0
        out = strat(x, torch.full((1,), 10.0, device=device), cond)
        assert int(strat.last_active.sum()) == n, "every view should be a branch"
        return out

    with torch.no_grad():
        call(1, None)  # warm-up: lazy initialisation, not the call's memory
        base = memory_start(device)
        out = call(k, job["max_rows"])
        peak = memory_peak(device)
        times = []
        for _ in range(job["repeats"]):
            sync(device)
            t0 = time.perf_counter()
            call(k, job["max_rows"])
            sync(device)
            times.append(time.perf_counter() - t0)
        diff = (out - call(k, None)).abs().max().item() if job["max_rows"] else 0.0
    return {"preset": job["preset"], "views": k, "max_rows": job["max_rows"], "added_mib": peak - base,
            "seconds": min(times), "diff": diff}


# ------------------------------------------------------------------------------------------- driver
JOBS = {"train": train_job, "branch": branch_job}


def run_job(job: dict, args: argparse.Namespace) -> dict:
    """``job`` in a fresh process (its own peak memory), or in this one with ``--in-process`` (tests)."""
    if args.in_process:
        return JOBS[job["kind"]](job)
    cmd = [sys.executable, __file__, "--worker", json.dumps(job), "--threads", str(args.threads)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"worker failed for {job}:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def table(rows: list[dict], cols: list[tuple[str, str, str]]) -> str:
    """Markdown table: ``cols`` = ``(header, key, format)``."""
    head = ["| " + " | ".join(h for h, _, _ in cols) + " |", "|" + "|".join("---" if f == "s" else "---:"
                                                                          for *_, f in cols) + "|"]
    body = ["| " + " | ".join("" if r.get(k) is None else format(r[k], f) for _, k, f in cols) + " |" for r in rows]
    return "\n".join(head + body)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--train", action="store_true", help="training throughput and peak memory")
    p.add_argument("--sample", action="store_true", help="NFE and seconds per view and per orbit")
    p.add_argument("--branches", action="store_true", help="interpolated strategy: memory vs branches")
    p.add_argument("--all", action="store_true", help="all three")
    p.add_argument("--presets", default=",".join(DEFAULT_METHODS), help="comma-separated presets (train, sample)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=2, help="torch intra-op threads (CPU)")
    p.add_argument("--compile", action="store_true", help="torch.compile the training loss (meant for CUDA)")
    p.add_argument("--precisions", default="fp32,bf16", help="training precisions: fp32 and/or bf16 (autocast)")
    p.add_argument("--attention", default="sdpa", help="training attention kernels: sdpa (ours) and/or naive "
                   "(einsum + explicit fp32 softmax, the reference implementations' way); e.g. sdpa,naive")
    p.add_argument("--batch", type=int, default=16, help="global training batch")
    p.add_argument("--steps", type=int, default=4, help="timed training steps per pass")
    p.add_argument("--warmup", type=int, default=2, help="training warm-up steps")
    p.add_argument("--repeats", type=int, default=3, help="timed passes (training) / calls (branches); best kept")
    p.add_argument("--orbit", type=int, default=24, help="orbit views (the input's own view is copied)")
    p.add_argument("--orbit-repeats", type=int, default=1, help="orbits per row; the fastest is kept")
    p.add_argument("--sample-steps", type=int, default=None, help="override every preset's default steps")
    p.add_argument("--branch-presets", default="relpose-shapes32,3dim-shapes32")
    p.add_argument("--views", default="1,2,4,8,16", help="views in the window (branches)")
    p.add_argument("--max-rows", type=int, default=4, help="chunk size of the chunked branch rows")
    p.add_argument("--tiny", action="store_true", help="shrink every preset to bench/harness.py's 16 px size (tests)")
    p.add_argument("--in-process", action="store_true", help="no worker processes (memory is then not isolated)")
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.worker:
        job = json.loads(args.worker)
        print(json.dumps(JOBS[job["kind"]](job)))
        return {}
    args.presets = [s.strip() for s in args.presets.split(",") if s.strip()]
    if not args.attention or set(args.attention.split(",")) - {"sdpa", "naive"}:
        p.error(f"--attention takes sdpa and/or naive, got {args.attention!r}")
    if args.all:
        args.train = args.sample = args.branches = True
    if not (args.train or args.sample or args.branches):
        p.error("choose --train, --sample, --branches or --all")
    hw = hardware(args.device)
    command = "python bench/bench_methods.py " + " ".join(argv if argv is not None else sys.argv[1:])
    print(f"# {hardware_line(hw)}; {datetime.date.today()}\n# {command}", flush=True)
    out: dict[str, Any] = {"hardware": hw, "command": command, "date": str(datetime.date.today())}
    base = {"device": args.device, "tiny": args.tiny, "compile": args.compile}
    if args.train:
        rows = []
        for preset in args.presets:
            variants = [(preset, {})] + ([EXTRA_TRAIN[preset]] if preset in EXTRA_TRAIN else [])
            for label, overrides in variants:
                for precision, attention in [(p, a) for a in args.attention.split(",")
                                             for p in args.precisions.split(",")]:
                    job = {**base, "kind": "train", "preset": preset, "label": label, "overrides": overrides,
                           "precision": precision, "attention": attention, "batch": args.batch,
                           "steps": args.steps, "warmup": args.warmup, "repeats": args.repeats}
                    rows.append(run_job(job, args))
                    print(json.dumps(rows[-1]), flush=True)
        mem = "peak MiB (alloc)" if args.device.startswith("cuda") else "peak RSS MiB"
        print(f"\n## training, global batch {args.batch}, best of {args.repeats} x {args.steps} steps\n")
        print(table(rows, [("preset", "preset", "s"), ("parameters", "parameters", ",d"),
                           ("precision", "precision", "s"), ("attention", "attention", "s"),
                           ("cond views/img", "cond_views", ".2f"),
                           ("step s", "step_s", ".3f"), ("images/s", "images_per_s", ".1f"),
                           (mem, "peak_mib", ".0f"), ("added by training MiB", "added_mib", ".0f")]))
        out["train"] = rows
    if args.sample:
        rows = sample_rows(args)
        print(f"\n## sampling, batch 1, {args.orbit}-view orbit, untrained weights\n")
        print(table(rows, [("preset", "preset", "s"), ("sampler", "sampler", "s"), ("strategy", "strategy", "s"),
                           ("NFE/view", "nfe_view", ".0f"), ("s/view first", "first_s", ".3f"),
                           ("s/view median", "median_s", ".3f"), ("s/view last", "last_s", ".3f"),
                           ("NFE/orbit", "nfe_orbit", "d"), ("s/orbit", "orbit_s", ".1f"),
                           ("renders", "renders", "d"), ("UNet rows", "unet_rows", ",d")]))
        out["sample"] = rows
    if args.branches:
        rows = []
        for preset in [s for s in args.branch_presets.split(",") if s]:
            for k in [int(v) for v in args.views.split(",")]:
                for max_rows in (None, args.max_rows):
                    job = {**base, "kind": "branch", "preset": preset, "views": k, "max_rows": max_rows,
                           "repeats": args.repeats}
                    rows.append(run_job(job, args))
                    print(json.dumps(rows[-1]), flush=True)
        print(f"\n## interpolated strategy: one set-denoiser call, batch 1, best of {args.repeats}\n")
        print(table(rows, [("preset", "preset", "s"), ("views (branches)", "views", "d"),
                           ("max_rows", "max_rows", "d"), ("added MiB", "added_mib", ".1f"),
                           ("seconds", "seconds", ".4f"), ("max abs diff vs unchunked", "diff", ".1e")]))
        out["branches"] = rows
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
