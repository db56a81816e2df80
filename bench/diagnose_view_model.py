"""Where does a single-view model (3DiM, relpose) lose to the copy-the-input baseline? Three measurements.

    python bench/diagnose_view_model.py CHECKPOINT [--out DIR] [--objects 16] [--offsets 1,2,6,12]
        [--t 0.7,0.9,0.98] [--sdedit 0.05,0.2,0.5] [--sdedit-offset 2]
        [--samples "ddpm,64,0;ddim,64,0"] [--orbit "ddpm,32,0,stochastic;ddim,8,0,single"]
        [--orbit-objects 4] [--threads 2]

All on held-out benchmark objects of the synthetic data (24-view ring at 30° elevation, view 0 the input),
PSNR on [0, 1] images, and always next to the copy-the-input baseline on the same views:

* ``x0``: one denoiser call on the ground-truth target noised to ``t`` (the schedule's σ(t)): PSNR of
  x̂0, i.e. the network's posterior mean, per ring offset ``k`` (k·15° from the input), and the same with
  the conditioning image swapped for another object's (how much the network uses the input view).
* ``sdedit``: start the model's default sampler from the ground truth noised to ``t`` (the remaining
  steps of its default ``σ`` grid) and score the end (Meng et al. 2022, SDEdit): which noise levels the
  model can denoise back to the truth.
* ``samples`` (only with ``--samples``): single-view samples from pure noise of the same offsets with
  each ``SAMPLER,STEPS,GUIDANCE[,option=value...]`` spec (e.g. ``euler_ancestral,64,0,s_noise=0.8``).
* ``orbit`` (only with ``--orbit``): the demo's 24-view orbits (its objects, seeds 0…, alternating
  order) with other sampler settings ``SAMPLER,STEPS,GUIDANCE,STRATEGY[,option=value...]``, scored as the
  demo does, also per angle from the input.

A sample is scored against one truth, so even a perfect model's samples have about twice the squared
error of its posterior mean (−3 dB): compare ``orbit`` with ``x0`` with that in mind (docs/3dim.md).
Prints the tables and writes ``diagnosis.json`` (+ ``sdedit.png``: input, truth, SDEdit ends) to ``--out``
(never over an existing ``diagnosis.json``).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import torch

from vantage.cameras import Cameras
from vantage.data.synthetic import SyntheticDataset
from vantage.diffusion.samplers import get_sampler
from vantage.eval import psnr, to_unit
from vantage.methods.base import ViewCond


def _floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",") if v.strip()]


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return round(psnr(to_unit(a.clamp(-1, 1)), to_unit(b)).mean().item(), 3)


def benchmark_objects(resolution: int, count: int, views: int = 24) -> list:
    """The demo's objects: the first ``count`` of the benchmark split (a 24-view ring at 30° elevation, view 0
    the input); ``views`` < 24 keeps every ``24 / views``-th view of the ring (``views`` must divide 24)."""
    if views < 2 or 24 % views:
        raise SystemExit(f"the benchmark ring has 24 views; --views must divide 24 (2, 3, 4, 6, 8, 12, 24), "
                         f"got {views}")
    ds = SyntheticDataset(split="benchmark", num_objects=count, views=24, resolution=resolution, layout="ring")
    return [ds.load(i, None if views == 24 else range(0, 24, 24 // views)) for i in range(len(ds))]


def angle_psnr(generated: torch.Tensor, objs: list) -> dict[str, dict[str, float]]:
    """Mean PSNR per angle from the input (folded to 0..180°) of orbits ``generated (B, V, 3, H, W)`` of ``objs``
    (view 0 the input, a ring of ``V`` views), next to the copy-the-input baseline at the same angle."""
    n_views = objs[0].images.shape[0]
    by_angle: dict[float, list[tuple[float, float]]] = {}
    for i, o in enumerate(objs):
        for v in range(1, n_views):
            deg = round(min(v, n_views - v) * 360 / n_views, 1)
            by_angle.setdefault(deg, []).append((_psnr(generated[i, v:v + 1], o.images[v:v + 1]),
                                                 _psnr(o.images[:1], o.images[v:v + 1])))
    return {f"{d:g}": {"psnr": round(sum(a for a, _ in v) / len(v), 2), "copy": round(sum(b for _, b in v) / len(v), 2)}
            for d, v in sorted(by_angle.items())}


def _sigma(method, t: float) -> torch.Tensor:
    """σ at the fraction ``t`` ∈ [0, 1] of the schedule (a discrete schedule's timestep ``t·(T − 1)``)."""
    if not 0.0 <= t <= 1.0:
        raise SystemExit(f"--t and --sdedit take fractions of the schedule in [0, 1], got {t}")
    from vantage.diffusion.schedules import DiscreteSchedule

    sched = method.schedule
    t_s = t * (sched.T - 1) if isinstance(sched, DiscreteSchedule) else t
    return sched.t_to_sigma(torch.tensor([t_s], dtype=torch.float64)).float()


def _stack(objs: list, view: int) -> tuple[torch.Tensor, Cameras]:
    return torch.stack([o.images[view] for o in objs]), Cameras.stack([o.cameras[view] for o in objs])


@torch.no_grad()
def x0_table(method, objs: list, offsets: list[int], ts: list[float], seed: int = 0) -> list[dict]:
    """Per ring offset ``k``: copy PSNR, and per ``t`` the x̂0 PSNR with the object's own input and with
    another object's (``roll(1)``; needs 2+ objects). ``(B, 3, H, W)`` batches of all objects at once."""
    den = method.single_view_denoiser(None)
    x_in, c_in = _stack(objs, 0)
    g = torch.Generator().manual_seed(seed)
    rows = []
    for k in offsets:
        x_t, c_t = _stack(objs, k)
        row = {"offset": k, "degrees": round(k * 360 / objs[0].images.shape[0], 1), "copy": _psnr(x_in, x_t)}
        for t in ts:
            s = _sigma(method, t)
            noisy = x_t + s * torch.randn(x_t.shape, generator=g)
            sig = s.expand(len(objs))
            own = den(noisy, sig, ViewCond(x_in, c_in, c_t))
            other = den(noisy, sig, ViewCond(x_in.roll(1, 0), c_in, c_t))
            row[f"x0@t={t:g}"] = _psnr(own, x_t)
            row[f"x0_swapped@t={t:g}"] = _psnr(other, x_t)
        rows.append(row)
    return rows


@torch.no_grad()
def sdedit_table(method, objs: list, ts: list[float], offset: int, seed: int = 0) -> tuple[list[dict], list]:
    """Start the default sampler at the ground truth of view ``offset`` noised to each ``t``; returns the
    rows (x̂0 and final PSNR, steps run) and the image rows ``[input, truth, end per t]``."""
    den = method.single_view_denoiser(None)
    sampler = get_sampler(method.config.default_sampler)
    grid = method.sampling_sigmas(method.config.default_steps, method.config.default_sampler)
    x_in, c_in = _stack(objs, 0)
    x_t, c_t = _stack(objs, offset)
    cond = ViewCond(x_in, c_in, c_t)
    rows, images = [], [x_in, x_t]
    for t in ts:
        s = _sigma(method, t)
        g = torch.Generator().manual_seed(seed)
        noisy = x_t + s * torch.randn(x_t.shape, generator=g)
        sigmas = torch.cat([s, grid[grid < float(s) * (1 - 1e-6)]])
        if float(sigmas[-1]) != 0.0:
            sigmas = torch.cat([sigmas, torch.zeros(1)])
        end = sampler(den, noisy, sigmas, cond, generator=g).clamp(-1, 1)
        rows.append({"t": t, "sigma": round(float(s), 4), "steps": len(sigmas) - 1,
                     "x0": _psnr(den(noisy, s.expand(len(objs)), cond), x_t), "end": _psnr(end, x_t)})
        images.append(end)
    return rows, images


def _sampler_spec(spec: str) -> tuple[str, int, float, dict[str, float]]:
    """``SAMPLER,STEPS,GUIDANCE[,option=value...]`` (options go to the sampler, e.g. ``s_noise=0.8``, ``eta=0.5``)."""
    parts = [v.strip() for v in spec.split(",")]
    if len(parts) < 3 or any("=" not in v for v in parts[3:]):
        raise SystemExit(f"--samples: each spec is SAMPLER,STEPS,GUIDANCE[,option=value...], got {spec!r}")
    return parts[0], int(parts[1]), float(parts[2]), {k: float(v) for k, v in (o.split("=", 1) for o in parts[3:])}


@torch.no_grad()
def samples_table(method, objs: list, specs: list[str], offsets: list[int], seed: int = 0) -> list[dict]:
    """Single-view samples from pure noise (conditioned on the input only) of each ring offset, per
    sampler spec: mean PSNR over the objects next to the copy baseline. ``(B, 3, H, W)`` batches."""
    x_in, c_in = _stack(objs, 0)
    rows = []
    for spec in specs:
        name, steps, w, options = _sampler_spec(spec)
        den = method.single_view_denoiser(w if w else None)
        sigmas = method.sampling_sigmas(steps, name)
        row: dict = {"spec": spec}
        for k in offsets:
            x_t, c_t = _stack(objs, k)
            g = torch.Generator().manual_seed(seed)
            x = torch.randn(x_t.shape, generator=g) * sigmas[0]
            out = get_sampler(name)(den, x, sigmas, ViewCond(x_in, c_in, c_t), generator=g, **options)
            row[f"k={k}"] = _psnr(out, x_t)
            row[f"copy k={k}"] = _psnr(x_in, x_t)
        rows.append(row)
    return rows


def orbit_table(method, objs: list, specs: list[str]) -> list[dict]:
    """The demo's orbits with each ``SAMPLER,STEPS,GUIDANCE,STRATEGY[,option=value...]`` spec: mean PSNR/SSIM of
    the 23 generated views and of the copy baseline, the per-object gain and the mean per angle from the input."""
    from vantage.cli.model_demo import orbit_metrics
    from vantage.sampling.orbit import autoregressive_orbit

    inputs = [o.select([0]) for o in objs]
    cams = Cameras.stack([o.cameras for o in objs])
    rows = []
    for spec in specs:
        parts = [v.strip() for v in spec.split(",")]
        if len(parts) < 4 or "=" in parts[3] or any("=" not in v for v in parts[4:]):
            raise SystemExit(f"--orbit: each spec is SAMPLER,STEPS,GUIDANCE,STRATEGY[,option=value...], "
                             f"got {spec!r}")
        sampler, steps, w, options = _sampler_spec(",".join(parts[:3] + parts[4:]))
        t0 = time.perf_counter()
        r = autoregressive_orbit(method, inputs, cams, strategy=parts[3], order="alternating", sampler=sampler,
                                 steps=steps, guidance=w, seed=list(range(len(objs))), sampler_options=options)
        gen = r.images.cpu()
        ms = [orbit_metrics(gen[i, 1:], o.images[1:], o.images[:1]) for i, o in enumerate(objs)]
        rows.append({
            "spec": spec, "nfe": r.nfe, "seconds": round(time.perf_counter() - t0, 1),
            **{k: round(sum(m[k] for m in ms) / len(ms), 3) for k in ms[0]},
            "gain_per_object": [round(m["psnr"] - m["baseline_psnr"], 2) for m in ms],
            "by_angle": angle_psnr(gen, objs),
        })
    return rows


def _print_rows(title: str, rows: list[dict]) -> None:
    print(f"\n{title}")
    for row in rows:
        print("  " + "  ".join(f"{k} {v}" for k, v in row.items()))


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint", type=Path)
    p.add_argument("--out", type=Path, default=None, help="folder for diagnosis.json and sdedit.png")
    p.add_argument("--objects", type=int, default=16, help="benchmark objects for x0 and sdedit (default 16)")
    p.add_argument("--offsets", default="1,2,6,12", help="ring offsets for x0 (15° each; default 1,2,6,12)")
    p.add_argument("--t", default="0.7,0.9,0.98", help="noise levels t for x0 (default 0.7,0.9,0.98)")
    p.add_argument("--sdedit", default="0.05,0.2,0.5", help="start levels t for sdedit ('' to skip)")
    p.add_argument("--sdedit-offset", type=int, default=2, help="ring offset of the sdedit target (default 2)")
    p.add_argument("--samples", default="", help="';'-separated SAMPLER,STEPS,GUIDANCE[,option=value...] specs: "
                   "single-view samples of the --offsets views")
    p.add_argument("--orbit", default="",
                   help="';'-separated SAMPLER,STEPS,GUIDANCE,STRATEGY[,option=value...] specs")
    p.add_argument("--orbit-objects", type=int, default=4, help="objects for orbits (the demo's 4)")
    p.add_argument("--threads", type=int, default=None, help="torch threads")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    if a.out is not None and (a.out / "diagnosis.json").exists():
        raise SystemExit(f"{a.out / 'diagnosis.json'} exists; choose another --out")
    if a.threads:
        torch.set_num_threads(a.threads)
    from vantage.train.checkpoint import load_checkpoint

    method = load_checkpoint(a.checkpoint).eval()
    if not hasattr(method, "single_view_denoiser") or not hasattr(method, "schedule"):
        raise SystemExit(f"{a.checkpoint}: a {type(method).__name__} checkpoint; this diagnosis needs a "
                         "single-view VP method (3DiM or relpose)")
    offsets = _ints(a.offsets)
    if a.objects < 2 or any(not 0 < k < 24 for k in offsets) or not 0 < a.sdedit_offset < 24:
        raise SystemExit("need --objects >= 2 and ring offsets in 1..23")
    objs = benchmark_objects(method.config.resolution, max(a.objects, a.orbit_objects))
    result: dict = {"command": "python bench/diagnose_view_model.py " + shlex.join(sys.argv[1:] if argv is None
                                                                                  else argv),
                    "checkpoint": str(a.checkpoint), "objects": a.objects}
    result["x0"] = x0_table(method, objs[:a.objects], offsets, _floats(a.t), a.seed)
    _print_rows(f"x0: one call on the noised truth, {a.objects} objects (PSNR dB)", result["x0"])
    if a.sdedit:
        result["sdedit"], images = sdedit_table(method, objs[:a.objects], _floats(a.sdedit), a.sdedit_offset, a.seed)
        _print_rows(f"sdedit: default sampler from the noised truth of offset {a.sdedit_offset}", result["sdedit"])
    if a.samples:
        result["samples"] = samples_table(method, objs[:a.objects], [s for s in a.samples.split(";") if s], offsets,
                                          a.seed)
        _print_rows(f"samples: single-view samples from noise, {a.objects} objects (PSNR dB)", result["samples"])
    if a.orbit:
        result["orbit"] = orbit_table(method, objs[:a.orbit_objects], [s for s in a.orbit.split(";") if s])
        _print_rows(f"orbit: the demo's {a.orbit_objects} objects, 23 generated views each", result["orbit"])
    if a.out is not None:
        a.out.mkdir(parents=True, exist_ok=True)
        (a.out / "diagnosis.json").write_text(json.dumps(result, indent=2))
        if a.sdedit:
            from vantage.viz import contact_sheet

            labels = ["input", "truth", *(f"sdedit t={t:g}" for t in _floats(a.sdedit))]
            contact_sheet(images, labels).save(a.out / "sdedit.png")
        print(f"\nwrote {a.out / 'diagnosis.json'}")
    return result


if __name__ == "__main__":
    main()
