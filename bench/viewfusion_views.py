"""ViewFusion (composable) on held-out objects: quality against the number of input views, learned weighting against
the mean, and sampler cost against the reference's 2000-step DDPM (the evidence of issue #5).

Spiegl et al. 2024, "ViewFusion: Learning Composable Diffusion Models for Novel View Synthesis": every input view
is denoised with the noisy target by the shared UNet, and the noise predictions are composed by a per-pixel softmax
of the predicted weight logits (Sec. 3.2, Eq. 6). On the first ``--objects`` objects of the synthetic benchmark
split (24-view ring at 30° elevation, never trained on), with ``k`` input views evenly spaced on the ring starting
at view 0 (k = 1: view 0; 2: 0, 12; 3: 0, 8, 16; 6: every 4th; 12: every 2nd) and the same ``--targets`` views
for every ``k`` (default 3, 9, 15, 21: 45° from the nearest input at k = 1, 15° at k = 12; never an input):

* **views**: PSNR / SSIM of the sampled targets against the ground truth for each ``k`` of ``--counts``, with the
  learned per-pixel weights (``softmax``, the paper) and with the plain mean of the per-view noise predictions
  (``mean``). ``mean`` here swaps the composition at sampling time on the same trained weights; the paper's
  no-weighting ablation trains a model with ``--set composition=mean`` (pass it as a second ``--checkpoint``).
  ``k`` above the training's ``max_views`` is extrapolation. Baseline: copy the input view nearest to the target.
* **nfe** (``--nfe``): at ``k = --nfe-views``, each ``SAMPLER,STEPS[,option=value...]`` spec on the same noise;
  NFE / view (network calls per generated view; one call runs ``k`` UNet rows), seconds / view (batched over all
  targets: wall time / targets), PSNR / SSIM and the paired PSNR difference to the first spec (by default the
  reference's DDPM over all 2000 steps of the schedule) with its standard error over the (object, target) pairs.

Every (object, target) pair gets its own noise seed, the same for every ``k``, composition and sampler, so rows
differ only by what the row names. PSNR / SSIM (Gaussian window 11 / σ 1.5) on [0, 1] images, averaged over images.

    python bench/viewfusion_views.py --checkpoint runs/vf32 --out runs/vf32-views
    python bench/viewfusion_views.py --checkpoint runs/vf32 --objects 2 --counts 1,3 --nfe "ddpm,2000;ddim,25"
    python bench/viewfusion_views.py --checkpoint runs/vf32 --write-benchmarks --threads 2

Prints the Markdown block; ``--out DIR`` writes ``views.json``, ``views.md``, ``views.png`` (PSNR against views
and against NFE) and ``samples.png`` (the first object: inputs, the samples of each ``k``, the truth), never over an
existing ``views.json``; ``--write-benchmarks`` puts the block between ``<!-- viewfusion-views:begin -->`` and
``<!-- viewfusion-views:end -->`` of BENCHMARKS.md (only that block is replaced; appended when absent).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import math
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the bench helpers beside this file

from compare_strategies import parse_value  # noqa: E402
from diagnose_view_model import benchmark_objects  # noqa: E402
from harness_report import hardware, hardware_line, replace_block, write_result  # noqa: E402

BENCHMARKS = Path(__file__).resolve().parents[1] / "BENCHMARKS.md"
BEGIN, END = "<!-- viewfusion-views:begin -->", "<!-- viewfusion-views:end -->"
RING = 24
DEFAULT_NFE = "ddpm,2000;ddpm,100;ddim,50;ddim,25;dpmpp_2m,20;dpmpp_2m,10"


def input_views(count: int, ring: int = RING) -> list[int]:
    """``count`` ring views evenly spaced from view 0 (rounded to the nearest view)."""
    if not 1 <= count <= ring:
        raise SystemExit(f"a view count must be in 1..{ring}, got {count}")
    return sorted({round(i * ring / count) % ring for i in range(count)})


def check_plan(counts: list[int], targets: list[int]) -> None:
    """SystemExit naming a target that is an input of some count, or a target off the ring."""
    bad = [t for t in targets if not 0 <= t < RING]
    if bad or not targets:
        raise SystemExit(f"--targets must be ring views 0..{RING - 1}, got {targets}")
    for k in counts:
        clash = sorted(set(targets) & set(input_views(k)))
        if clash:
            raise SystemExit(f"--targets {clash} are input views when {k} views are given ({input_views(k)}); "
                             f"choose targets that are never inputs")


def nearest_input(target: int, inputs: list[int]) -> int:
    """The input view nearest to ``target`` on the ring (the lower index on a tie)."""
    return min(inputs, key=lambda v: (min(abs(v - target), RING - abs(v - target)), v))


def checkpoint_kimg(path: Path) -> tuple[Path, float | None]:
    """The checkpoint folder that ``path`` names (a run's newest) and its training images in thousands."""
    from vantage.train.checkpoint import find_checkpoint, read_checkpoint_config

    ckpt = path if (path / "model.safetensors").is_file() else find_checkpoint(path) or path
    data = read_checkpoint_config(ckpt)
    step, batch = data.get("step"), (data.get("train") or {}).get("batch")
    return ckpt, (round(step * batch / 1000, 1) if isinstance(step, int) and isinstance(batch, int) else None)


def composition(method, name: str):
    """``method`` with ``config.composition = name`` (the same module; restore with the returned old config)."""
    old = method.config
    method.config = dataclasses.replace(old, composition=name)
    return old


def sample_targets(method, objs: list, inputs: list[int], targets: list[int], sampler: str, steps: int,
                   options: dict, device: str) -> tuple[torch.Tensor, int, float]:
    """``(O, T, 3, H, W)`` samples of ``targets`` of every object from its ``inputs`` in one batch, the network
    calls per sample and the wall time. Sample ``(o, t)`` draws its noise from seed ``1000 o + t``."""
    from vantage.cameras import Cameras
    from vantage.data.views import ViewSet
    from vantage.diffusion.noise import randn
    from vantage.diffusion.samplers import get_sampler
    from vantage.sampling.strategies import ViewSetCond

    pairs = [(o, t) for o in range(len(objs)) for t in targets]
    idx = torch.tensor(inputs)
    views = ViewSet(images=torch.stack([objs[o].images[idx] for o, _ in pairs]).to(device),
                    cameras=Cameras.stack([objs[o].cameras[idx] for o, _ in pairs]).to(device),
                    valid=torch.ones(len(pairs), len(inputs), dtype=torch.bool, device=device),
                    view_ids=idx.repeat(len(pairs), 1).to(device))
    cond = ViewSetCond(views, Cameras.stack([objs[o].cameras[t] for o, t in pairs]).to(device), inputs=len(inputs))
    gens = [torch.Generator().manual_seed(1000 * o + t) for o, t in pairs]
    sigmas = method.sampling_sigmas(steps, sampler).to(device)
    denoiser = method.set_denoiser()
    t0 = time.perf_counter()
    with torch.no_grad():
        x = randn((len(pairs), *objs[0].images.shape[1:]), gens, device=device) * float(sigmas[0])
        out = get_sampler(sampler)(denoiser, x, sigmas, cond, generator=gens, **options)
    seconds = time.perf_counter() - t0
    return out.float().cpu().clamp(-1, 1).reshape(len(objs), len(targets), *out.shape[1:]), denoiser.calls, seconds


def scores(gen: torch.Tensor, objs: list, targets: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image PSNR and SSIM ``(O·T,)`` of ``gen (O, T, 3, H, W)`` against the objects' target views."""
    from vantage.eval import psnr, ssim, to_unit

    truth = torch.stack([o.images[targets] for o in objs]).flatten(0, 1)
    a, b = to_unit(gen.flatten(0, 1)), to_unit(truth)
    return psnr(a, b).double(), ssim(a, b).double()


def _mean(t: torch.Tensor) -> float:
    return round(float(t.mean()), 4)


def view_rows(method, objs, counts, targets, compositions, sampler, steps, options, device) -> tuple[list, dict]:
    """One row per view count: each composition's PSNR / SSIM / s per view, and the copy-nearest baseline."""
    rows, firsts = [], {}
    for k in counts:
        inputs = input_views(k)
        copy = torch.stack([torch.stack([o.images[nearest_input(t, inputs)] for t in targets]) for o in objs])
        cp, cs = scores(copy, objs, targets)
        row: dict[str, Any] = {"views": k, "inputs": inputs, "copy_psnr": _mean(cp), "copy_ssim": _mean(cs)}
        for name in compositions:
            print(f"  {k} view(s) {inputs}, {name} ...", flush=True)
            old = composition(method, name)
            try:
                gen, nfe, secs = sample_targets(method, objs, inputs, targets, sampler, steps, options, device)
            finally:
                method.config = old
            p, s = scores(gen, objs, targets)
            row[name] = {"psnr": _mean(p), "ssim": _mean(s), "nfe": nfe, "unet_rows_per_view": nfe * k,
                         "seconds_per_view": round(secs / p.numel(), 4), "psnr_per_image": p.round(decimals=3).tolist()}
            firsts[(k, name)] = gen[0]
            print(f"    PSNR {row[name]['psnr']:.2f} dB SSIM {row[name]['ssim']:.3f} (copy {row['copy_psnr']:.2f}), "
                  f"{row[name]['seconds_per_view']:.2f} s / view", flush=True)
        rows.append(row)
    return rows, firsts


def parse_nfe(text: str) -> list[tuple[str, int, dict]]:
    """``SAMPLER,STEPS[,option=value...]`` specs separated by ``;`` (SystemExit for a malformed or unknown one)."""
    from vantage.diffusion.samplers import get_sampler

    specs = []
    for spec in [s.strip() for s in text.split(";") if s.strip()]:
        name, *rest = [p.strip() for p in spec.split(",")]
        try:
            get_sampler(name)
            steps = int(rest[0])
        except (KeyError, ValueError, IndexError) as e:
            raise SystemExit(f"--nfe {spec!r}: expected SAMPLER,STEPS[,option=value...] with a known sampler "
                             f"({e})") from None
        if steps < 1 or any("=" not in p for p in rest[1:]):
            raise SystemExit(f"--nfe {spec!r}: STEPS must be >= 1 and options option=value")
        specs.append((name, steps, {k: parse_value(v) for k, v in (p.split("=", 1) for p in rest[1:])}))
    return specs


def nfe_rows(method, objs, k: int, targets, specs, device) -> list[dict]:
    """One row per sampler spec at ``k`` input views, with the paired PSNR difference to the first spec."""
    inputs, rows, ref = input_views(k), [], None
    for name, steps, options in specs:
        print(f"  {name} x {steps} {options or ''} at {k} view(s) ...", flush=True)
        gen, nfe, secs = sample_targets(method, objs, inputs, targets, name, steps, options, device)
        p, s = scores(gen, objs, targets)
        ref = p if ref is None else ref
        d = p - ref
        se = float(d.std() / math.sqrt(d.numel())) if d.numel() > 1 else 0.0
        rows.append({"sampler": name, "steps": steps, "options": options, "nfe": nfe, "psnr": _mean(p),
                     "ssim": _mean(s), "seconds_per_view": round(secs / p.numel(), 4),
                     "delta_psnr": round(float(d.mean()), 4), "delta_psnr_se": round(se, 4)})
        print(f"    NFE {nfe}, PSNR {rows[-1]['psnr']:.2f} dB ({rows[-1]['delta_psnr']:+.2f} ± {se:.2f}), "
              f"{rows[-1]['seconds_per_view']:.2f} s / view", flush=True)
    return rows


def views_table(rows: list[dict], compositions: list[str]) -> str:
    head = ["input views", "inputs"] + [f"{c} {m}" for c in compositions for m in ("PSNR ↑", "SSIM ↑")]
    head += ["copy nearest PSNR", "copy nearest SSIM", "UNet rows / view", "s / view"]
    lines = ["| " + " | ".join(head) + " |", "|---:|---|" + "---:|" * (len(head) - 2)]
    for r in rows:
        c0 = r[compositions[0]]
        cells = [str(r["views"]), ",".join(map(str, r["inputs"]))]
        cells += [f"{r[c]['psnr']:.2f}" if m == "p" else f"{r[c]['ssim']:.3f}" for c in compositions for m in "ps"]
        cells += [f"{r['copy_psnr']:.2f}", f"{r['copy_ssim']:.3f}", str(c0["unet_rows_per_view"]),
                  f"{c0['seconds_per_view']:.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def nfe_table(rows: list[dict]) -> str:
    first = rows[0]
    lines = ["| sampler | steps | NFE / view | s / view | PSNR ↑ | SSIM ↑ | PSNR − first row (± s.e.) |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        name = r["sampler"] + "".join(f", {k}={v}" for k, v in r["options"].items())
        delta = "reference" if r is first else f"{r['delta_psnr']:+.2f} ± {r['delta_psnr_se']:.2f}"
        lines.append(f"| {name} | {r['steps']} | {r['nfe']} | {r['seconds_per_view']:.2f} | {r['psnr']:.2f} | "
                     f"{r['ssim']:.3f} | {delta} |")
    return "\n".join(lines)


def render_block(result: dict) -> str:
    """The Markdown printed, written to ``views.md`` and (with markers) into BENCHMARKS.md."""
    s = result["settings"]
    lines = [BEGIN, "### ViewFusion: input views, weighting and sampler cost (`bench/viewfusion_views.py`, issue #5)",
             "", f"Measured {result['date']} on {hardware_line(result['hardware'])}.", "",
             f"Checkpoint `{s['checkpoint']}` ("
             + (f"{s['kimg']:g} kimg, " if s["kimg"] is not None else "")
             + f"trained with {s['train_views']} views per sample). "
             f"{s['objects']} held-out synthetic benchmark objects, targets = ring views {s['targets']} of each "
             f"({s['objects'] * len(s['targets'])} images per cell), one noise seed per (object, target) shared by "
             "all rows; inputs evenly spaced from view 0. `mean` swaps the composition to the plain mean of the "
             "per-view noise predictions at sampling time, on the same weights.", "",
             "```", result["command"], "```", "",
             f"PSNR / SSIM against the number of input views ({s['sampler']} x {s['steps']}"
             + (f", {s['options']}" if s["options"] else "") + "):", "",
             views_table(result["views"], s["compositions"]), ""]
    if result.get("nfe"):
        lines += [f"Samplers at {s['nfe_views']} input views (PSNR difference paired per image):", "",
                  nfe_table(result["nfe"]), ""]
    return "\n".join(lines + [END]) + "\n"


def save_plots(result: dict, path: Path) -> None:
    """PSNR against the number of input views (each composition, the copy baseline) and against NFE."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s, rows = result["settings"], result["views"]
    fig, axes = plt.subplots(1, 2 if result.get("nfe") else 1, figsize=(10 if result.get("nfe") else 5, 3.6),
                             squeeze=False)
    ax = axes[0, 0]
    ks = [r["views"] for r in rows]
    for c in s["compositions"]:
        ax.plot(ks, [r[c]["psnr"] for r in rows], "o-", label=c)
    ax.plot(ks, [r["copy_psnr"] for r in rows], "s--", color="gray", label="copy nearest input")
    ax.set_xscale("log", base=2)
    ax.set_xticks(ks, [str(k) for k in ks])
    ax.set(xlabel="input views", ylabel="PSNR (dB)", title="held-out targets")
    ax.legend(fontsize=8)
    if result.get("nfe"):
        ax = axes[0, 1]
        for name in dict.fromkeys(r["sampler"] for r in result["nfe"]):
            pts = sorted((r["nfe"], r["psnr"]) for r in result["nfe"] if r["sampler"] == name)
            ax.plot(*zip(*pts), "o-", label=name)
        ref = result["nfe"][0]
        ax.axhline(ref["psnr"], color="gray", ls="--", lw=0.8, label=f"{ref['sampler']} x {ref['steps']}")
        ax.set_xscale("log")
        ax.set(xlabel="NFE per view", ylabel="PSNR (dB)", title=f"{s['nfe_views']} input views")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True, type=Path, help="a ViewFusion run or checkpoint folder")
    p.add_argument("--objects", type=int, default=8, help="held-out benchmark objects (default 8)")
    p.add_argument("--counts", default="1,2,3,6,12", help="numbers of input views (default 1,2,3,6,12)")
    p.add_argument("--targets", default="3,9,15,21", help="target ring views (never inputs)")
    p.add_argument("--compositions", default="softmax,mean", help="softmax and/or mean")
    p.add_argument("--sampler", default=None, help="sampler of the views table (default: the model's)")
    p.add_argument("--steps", type=int, default=None, help="its steps (default: the model's)")
    p.add_argument("--sampler-option", action="append", default=[], metavar="KEY=VALUE", help="repeatable")
    p.add_argument("--nfe", default=DEFAULT_NFE, help="';'-separated SAMPLER,STEPS specs ('' to skip), the first "
                   "the reference")
    p.add_argument("--nfe-views", type=int, default=3, help="input views of the sampler table (default 3)")
    p.add_argument("--nfe-objects", type=int, default=None, help="objects of the sampler table (default --objects)")
    p.add_argument("--out", type=Path, default=None, help="folder for views.json/.md/.png and samples.png")
    p.add_argument("--write-benchmarks", action="store_true", help="put the block into BENCHMARKS.md")
    p.add_argument("--threads", type=int, default=None, help="torch threads")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N (default: cuda when available)")
    a = p.parse_args(argv)
    if a.out is not None and (a.out / "views.json").exists():
        raise SystemExit(f"{a.out / 'views.json'} exists; choose another --out")
    if a.objects < 1 or (a.nfe_objects is not None and a.nfe_objects < 1):
        raise SystemExit("--objects and --nfe-objects must be >= 1")
    try:
        counts = [int(v) for v in a.counts.split(",") if v.strip()]
        targets = [int(v) for v in a.targets.split(",") if v.strip()]
    except ValueError:
        raise SystemExit(f"--counts and --targets take comma-separated integers, got {a.counts!r}, {a.targets!r}") \
            from None
    compositions = [c.strip() for c in a.compositions.split(",") if c.strip()]
    if not compositions or set(compositions) - {"softmax", "mean"}:
        raise SystemExit(f"--compositions takes softmax and/or mean, got {a.compositions!r}")
    if any("=" not in o for o in a.sampler_option):
        raise SystemExit("--sampler-option takes KEY=VALUE")
    check_plan(counts + [a.nfe_views], targets)
    specs = parse_nfe(a.nfe)
    if a.threads:
        torch.set_num_threads(a.threads)
    device = ("cuda" if torch.cuda.is_available() else "cpu") if a.device == "auto" else a.device
    from vantage.train.checkpoint import load_checkpoint

    method = load_checkpoint(a.checkpoint, device=device).eval()
    if method.name != "viewfusion":
        raise SystemExit(f"--checkpoint {a.checkpoint}: a '{method.name}' checkpoint; this benchmark needs a "
                         f"ViewFusion ('viewfusion') one")
    cfg = method.config
    sampler, steps = a.sampler or cfg.default_sampler, a.steps or cfg.default_steps
    options = {k.strip(): parse_value(v) for k, v in (o.split("=", 1) for o in a.sampler_option)}
    objs = benchmark_objects(cfg.resolution, max(a.objects, a.nfe_objects or 0))
    print(f"views table: {len(counts)} count(s) x {len(compositions)} composition(s), {a.objects} object(s) x "
          f"{len(targets)} target(s), {sampler} x {steps}", flush=True)
    rows, firsts = view_rows(method, objs[:a.objects], counts, targets, compositions, sampler, steps, options, device)
    nfe = []
    if specs:
        print(f"sampler table: {len(specs)} spec(s) at {a.nfe_views} view(s)", flush=True)
        nfe = nfe_rows(method, objs[:a.nfe_objects or a.objects], a.nfe_views, targets, specs, device)
    ckpt, kimg = checkpoint_kimg(a.checkpoint)
    command = "python bench/viewfusion_views.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    result = {"tool": "bench/viewfusion_views.py", "command": command, "date": datetime.date.today().isoformat(),
              "hardware": hardware(device),
              "settings": {"checkpoint": str(ckpt), "kimg": kimg, "objects": a.objects, "targets": targets,
                           "train_views": f"{cfg.min_views}-{cfg.max_views}", "compositions": compositions,
                           "sampler": sampler, "steps": steps, "options": options, "nfe_views": a.nfe_views,
                           "nfe_objects": a.nfe_objects or a.objects},
              "views": rows, "nfe": nfe}
    block = render_block(result)
    print("\n" + block, flush=True)
    if a.out is not None:
        from vantage.viz import contact_sheet

        write_result(a.out, "views", result, block)
        save_plots(result, a.out / "views.png")
        o = objs[0]
        sheet = [o.images[input_views(max(counts))]] + [firsts[(k, c)] for k in counts for c in compositions]
        labels = [f"inputs ({max(counts)})"] + [f"{k} view(s), {c}" for k in counts for c in compositions]
        contact_sheet(sheet + [o.images[targets]], labels + ["ground truth"], label_width=120).save(
            a.out / "samples.png")
        print(f"wrote {a.out / 'views.json'}, views.md, views.png and samples.png")
    if a.write_benchmarks:
        how = replace_block(BENCHMARKS, block, begin=BEGIN, end=END)
        print(f"{how} the viewfusion-views block in {BENCHMARKS}")
    return result


if __name__ == "__main__":
    main()
