"""Orbit strategies × single-view models: the evidence table of issue #6.

On held-out objects (the first ``--objects`` of the synthetic benchmark split, the demo's ring at 30° elevation
with ``--views`` evenly spaced views, view 0 the input), every model of ``--model`` generates the orbit of each
object with each strategy of ``--strategies``, with the model's sampler, steps and guidance (or those given) and
the same per-object seeds ``0..K-1`` for every strategy, so rows of one model differ by the strategy only:

* ``single``: every view conditioned on the input alone (plain single-view sampling);
* ``stochastic``: 3DiM's stochastic conditioning (Watson et al. 2022, "Novel View Synthesis with Diffusion
  Models", Sec. 3.2): at every denoiser call one view of the growing set, drawn at random;
* ``interpolated``: ViewFusion's interpolated denoising (Yang et al. 2024, CVPR, Sec. 3): every view in a window
  around the target is a branch of one batched call, fused with weights of temperatures ``T_in`` / ``T_auto``.
  ``--temperature-ablation`` adds the paper's ablation ``T_in ∈ {1/3, 0.5} × T_auto ∈ {1, 0.5, 0.1}``.

Each strategy runs in its own default generation order (:func:`vantage.sampling.strategy_choice.choose_strategy`,
as ``vantage sample`` does: ``alternating`` for interpolated, ``sequential`` otherwise; ``order=`` in a spec
overrides it). Columns: PSNR / SSIM of the generated views against the ground truth (mean over objects), the
copy-the-input baseline once per model; **adjacent PSNR**: consecutive frames of the closed orbit, input as frame
0 (:func:`vantage.eval.consistency.adjacent_view_score`). It is high for smooth orbits, low for flicker *and* for
large camera steps, so it is only comparable between rows with the same cameras: the ground-truth orbit's value
is given in parentheses. ``--consistency``: 3DiM's 3D consistency score (Sec. 5;
:func:`vantage.eval.consistency.consistency_score`, a voxel field fitted to alternate views renders the others),
with the ground-truth orbit's score as the ceiling. NFE: batch-level network calls per orbit (all branches of a
call count once, as :class:`~vantage.sampling.orbit.OrbitResult` counts); branch evals: single-view denoiser rows
per orbit, where interpolated denoising pays for its branches; s / orbit: sampling wall time / objects; peak
GiB on CUDA only. The JSON also holds per-object PSNR and the mean PSNR per angle from the input.

    python bench/compare_strategies.py --model 3dim=runs/3dim --model relpose=runs/relpose --out runs/strategies
    python bench/compare_strategies.py --model 3dim=runs/3dim --temperature-ablation --consistency --write-benchmarks
    python bench/compare_strategies.py --model 3dim=runs/3dim --objects 2 --views 6 --steps 8 \\
        --strategies "single;interpolated,t_in=1/3,t_auto=0.1;stochastic,order=alternating"

``--include DIR/strategies.json`` puts the rows of an earlier run (same objects, views and consistency settings,
other model labels) before this run's, each with the command and date that measured it: one table grows over
sessions without re-running the models already in it.

Prints the Markdown block; ``--out DIR`` writes ``strategies.json``, ``strategies.md`` and ``orbits.png`` (the
first object's orbit per row, every 3rd view, the ground truth last) and never over an existing
``strategies.json``; ``--write-benchmarks`` puts the block between ``<!-- strategies:begin -->`` and
``<!-- strategies:end -->`` of BENCHMARKS.md (only that block is replaced; appended when absent).
"""

from __future__ import annotations

import argparse
import datetime
import inspect
import json
import shlex
import sys
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the bench helpers beside this file

from diagnose_view_model import angle_psnr, benchmark_objects  # noqa: E402
from harness_report import hardware, hardware_line, replace_block, write_result  # noqa: E402

from vantage.sampling.strategy_choice import INTERPOLATED_DEFAULTS, choose_strategy  # noqa: E402

BENCHMARKS = Path(__file__).resolve().parents[1] / "BENCHMARKS.md"
BEGIN, END = "<!-- strategies:begin -->", "<!-- strategies:end -->"
DEFAULT_STRATEGIES = "single;stochastic;interpolated"
ABLATION = [f"interpolated,t_in={ti},t_auto={ta}" for ti in ("1/3", "0.5") for ta in ("1", "0.5", "0.1")]
#: options of choose_strategy a spec may set (guidance is global; walks, weights and fixed views are no orbits)
OPTIONS = sorted(set(inspect.signature(choose_strategy).parameters)
                 - {"method", "name", "names", "guidance", "input_views", "autoregressive", "walk_step", "weights"})


def parse_value(text: str) -> Any:
    """``true``/``false`` -> bool, an int, a float (``1/3`` too), else the string."""
    t = text.strip()
    if t.lower() in ("true", "false"):
        return t.lower() == "true"
    for conv in (int, float):
        try:
            return conv(t)
        except ValueError:
            pass
    num, slash, den = t.partition("/")
    try:
        return float(num) / float(den) if slash else t
    except (ValueError, ZeroDivisionError):
        return t


def strategy_specs(text: str, ablation: bool = False) -> list[tuple[str, str, dict[str, Any]]]:
    """``NAME[,option=value...]`` specs separated by ``;`` (+ the temperature ablation) as ``(spec, name, options)``;
    a spec equal to an earlier one (interpolated defaults filled in) is skipped. SystemExit for an unknown option."""
    out, seen = [], set()
    for spec in [s.strip() for s in text.split(";") if s.strip()] + (ABLATION if ablation else []):
        name, *parts = [p.strip() for p in spec.split(",")]
        if any("=" not in p for p in parts):
            raise SystemExit(f"--strategies: each spec is NAME[,option=value...], got {spec!r}")
        opts = {k.strip(): parse_value(v) for k, v in (p.split("=", 1) for p in parts)}
        bad = sorted(set(opts) - set(OPTIONS))
        if bad:
            raise SystemExit(f"--strategies {spec!r}: unknown option(s) {', '.join(bad)}; a spec may set "
                             f"{', '.join(OPTIONS)}")
        full = {**(INTERPOLATED_DEFAULTS if name == "interpolated" else {}), **opts}
        key = (name, tuple(sorted((k, float(v) if isinstance(v, int) else v) for k, v in full.items())))
        if key not in seen:
            seen.add(key)
            out.append((spec, name, opts))
    return out


def strategy_label(name: str, options: dict[str, Any], given: dict[str, Any]) -> str:
    """The table's name of a run: ``interpolated T_in=0.333 T_auto=0.1`` (+ the other options given)."""
    words = [name] + ([f"T_in={options['t_in']:.3g}", f"T_auto={options['t_auto']:.3g}"]
                      if name == "interpolated" else [])
    words += [f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in given.items()
              if k not in ("t_in", "t_auto", "order")]
    return " ".join(words)


def load_model(label: str, path: Path, device: str):
    """The checkpoint's method, refused unless it is a single-view diffusion model sampled with stochastic
    conditioning by default (3DiM ``3dim``, relpose ``relpose``)."""
    from vantage.sampling.strategy_choice import default_strategy_name
    from vantage.train.checkpoint import load_checkpoint

    method = load_checkpoint(path, device=device).eval()
    own = default_strategy_name(method)
    if own != "stochastic" or not hasattr(method, "single_view_denoiser"):
        raise SystemExit(f"--model {label}={path}: a '{method.name}' checkpoint (it samples with its own '{own}' "
                         f"strategy); comparing orbit strategies needs a single-view diffusion model with a "
                         f"single_view_denoiser (3DiM '3dim' or relpose 'relpose')")
    return method


def _mean(values: list[float]) -> float:
    return round(sum(values) / len(values), 4)


def run_row(method, objs: list, choice, sampling: dict, consistency: int | None,
            device: str) -> tuple[dict, torch.Tensor]:
    """One (model, strategy) row: the orbits of all ``objs`` in one batch and their scores; and the first orbit."""
    from vantage.cameras import Cameras
    from vantage.cli.model_demo import orbit_metrics
    from vantage.eval.consistency import adjacent_view_score, consistency_score
    from vantage.sampling.orbit import autoregressive_orbit

    evals = [0]

    def count(info: dict) -> None:  # single-view denoiser rows: calls × active branches (1 per sample but interp.)
        active = getattr(info["strategy"], "last_active", None)
        rows = int(active.sum()) if active is not None else len(info["samples"])
        evals[0] += info["strategy"].calls * rows

    cuda = torch.device(device).type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    r = autoregressive_orbit(method, [o.select([0]) for o in objs], Cameras.stack([o.cameras for o in objs]),
                             strategy=choice.strategy, strategy_options=choice.options, order=choice.order,
                             seed=list(range(len(objs))), device=device, callback=count, **sampling)
    gen = r.images.float().cpu().clamp(-1, 1)  # scored as an image is viewed (EDM samplers do not clip x̂0)
    ms = [orbit_metrics(gen[i, 1:], o.images[1:], o.images[:1]) for i, o in enumerate(objs)]
    adj = [adjacent_view_score(gen[i], cyclic=True) for i in range(len(objs))]
    row = {**{k: _mean([m[k] for m in ms]) for k in ms[0]},
           "adjacent_psnr": _mean([a["psnr"] for a in adj]), "adjacent_ssim": _mean([a["ssim"] for a in adj]),
           "nfe": r.nfe, "branch_evals": evals[0] / len(objs), "seconds_per_orbit": round(r.seconds / len(objs), 3),
           "psnr_per_object": [round(m["psnr"], 3) for m in ms], "by_angle": angle_psnr(gen, objs)}
    if cuda:
        row["peak_memory_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 3)
    if consistency:
        cs = [consistency_score(gen[i], o.cameras, iters=consistency, device=device) for i, o in enumerate(objs)]
        row.update(consistency_psnr=_mean([c["psnr"] for c in cs]), consistency_ssim=_mean([c["ssim"] for c in cs]))
    return row, gen[0]


def truth_scores(objs: list, consistency: int | None, device: str) -> dict:
    """The ground-truth orbits' adjacent-view (and 3D consistency) scores: the values to read the rows against."""
    from vantage.eval.consistency import adjacent_view_score, consistency_score

    out = {"gt_adjacent_psnr": _mean([adjacent_view_score(o.images, cyclic=True)["psnr"] for o in objs])}
    if consistency:
        out["gt_consistency_psnr"] = _mean([consistency_score(o.images, o.cameras, iters=consistency,
                                                              device=device)["psnr"] for o in objs])
    return out


def _num(v: float | None, digits: int = 2) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


def markdown_table(rows: list[dict], consistency: bool) -> str:
    """One row per (model, strategy), the copy-the-input baseline after each model's rows."""
    peak = any("peak_memory_gib" in r for r in rows)
    head = (["model", "strategy", "order", "PSNR ↑", "SSIM ↑", "adjacent PSNR (GT)"]
            + ["3D consistency PSNR (GT)"] * consistency + ["NFE / orbit", "branch evals / orbit", "s / orbit"]
            + ["peak GiB"] * peak)
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * 3 + "---:|" * (len(head) - 3)]
    for i, r in enumerate(rows):
        cells = [r["model"], r["label"], r["order"], _num(r["psnr"]), _num(r["ssim"], 3),
                 f"{_num(r['adjacent_psnr'])} ({_num(r['gt_adjacent_psnr'])})"]
        cells += [f"{_num(r.get('consistency_psnr'))} ({_num(r.get('gt_consistency_psnr'))})"] * consistency
        secs = r["seconds_per_orbit"]
        cells += [str(r["nfe"]), f"{r['branch_evals']:g}", _num(secs, 1 if secs >= 10 else 2)]
        cells += [_num(r.get("peak_memory_gib"))] * peak
        lines.append("| " + " | ".join(cells) + " |")
        if i + 1 == len(rows) or rows[i + 1]["model"] != r["model"]:
            base = [r["model"], "copy the input view", "–", _num(r["baseline_psnr"]), _num(r["baseline_ssim"], 3)]
            lines.append("| " + " | ".join(base + ["–"] * (len(head) - len(base))) + " |")
    return "\n".join(lines)


def render_block(result: dict) -> str:
    """The Markdown printed, written to ``strategies.md`` and (with markers) into BENCHMARKS.md."""
    s = result["settings"]
    lines = [BEGIN, "### Orbit strategies on single-view models (`bench/compare_strategies.py`, issue #6)", "",
             f"Measured {result['date']} on {hardware_line(result['hardware'])}.", "",
             f"The same {s['objects']} held-out synthetic benchmark objects ({s['views']}-view ring at 30° elevation, "
             f"view 0 the input, {s['views'] - 1} views generated) and per-object seeds for every strategy, so the "
             "rows of a model differ by the strategy only: single view, 3DiM's stochastic conditioning (Watson et al. "
             "2022) and ViewFusion's interpolated denoising (Yang et al. 2024) at temperatures T_in / T_auto. PSNR / "
             "SSIM against the ground-truth views; adjacent PSNR between consecutive frames of the closed orbit, the "
             "ground-truth orbit's in parentheses (only comparable for the same cameras)"
             + ("; 3D consistency: 3DiM's score with the ground truth's as the ceiling" if s["consistency"] else "")
             + "; NFE: batch-level network calls per orbit; branch evals: single-view denoiser rows per orbit.", "",
             "```", result["command"], "```", ""]
    for inc in result.get("included", []):
        lines += [f"The rows of {', '.join(f'`{m}`' for m in inc['models'])} come from an earlier run "
                  f"(`{inc['path']}`), measured {inc['date']} on {hardware_line(inc['hardware'])}:", "",
                  "```", inc["command"], "```", ""]
    lines += [markdown_table(result["rows"], bool(s["consistency"])), ""]
    lines += [f"* `{label}` ({m['checkpoint']}, {m['method']}): {m['sampler']}, {m['steps']} steps, guidance "
              f"{m['guidance']:g}" + (f", options {m['sampler_options']}" if m["sampler_options"] else "")
              for label, m in s["models"].items()]
    return "\n".join(lines + [END]) + "\n"


def read_included(path: Path, a: argparse.Namespace, labels: set[str]) -> dict:
    """An earlier run's ``strategies.json`` for ``--include``: ``{"entries": [where each model's rows were measured
    (the file's own includes first)], "models": its settings per model, "rows": its rows}``. SystemExit unless it was
    written by this script with the same objects, views and consistency settings and other model labels."""
    try:
        prior = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise SystemExit(f"--include {path}: cannot read it as JSON ({e})") from None
    if not isinstance(prior, dict) or prior.get("tool") != "bench/compare_strategies.py":
        raise SystemExit(f"--include {path}: not a strategies.json written by bench/compare_strategies.py")
    s = prior["settings"]
    mine = {"objects": a.objects, "views": a.views, "consistency": a.consistency,
            "consistency_iters": a.consistency_iters if a.consistency else None}
    diff = [f"{k} {s.get(k)} (this run: {v})" for k, v in mine.items() if s.get(k) != v]
    if diff:
        raise SystemExit(f"--include {path}: its rows were measured with other settings: {', '.join(diff)}")
    clash = sorted(labels & set(s["models"]))
    if clash:
        raise SystemExit(f"--include {path}: model label(s) {', '.join(clash)} also given with --model")
    nested = prior.get("included", [])
    inner = {m for n in nested for m in n["models"]}
    own = {"path": str(path), "command": prior["command"], "date": prior["date"], "hardware": prior["hardware"],
           "models": [m for m in s["models"] if m not in inner]}
    return {"entries": [*nested, own], "models": s["models"], "rows": prior["rows"]}


def orbit_sheet(images: list[torch.Tensor], labels: list[str], path: Path) -> None:
    """Contact sheet of the rows (every 3rd view), resized to the largest resolution."""
    from vantage.viz import contact_sheet

    size = max(x.shape[-1] for x in images)
    rows = [torch.nn.functional.interpolate(x[::3], size=(size, size), mode="nearest") for x in images]
    contact_sheet(rows, labels).save(path)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", action="append", required=True, metavar="LABEL=PATH",
                   help="a checkpoint (run or checkpoint folder) and its name in the table; repeatable")
    p.add_argument("--objects", type=int, default=4, help="held-out benchmark objects (default 4, the demo's)")
    p.add_argument("--views", type=int, default=24, help="views per orbit, evenly spaced on the 24-view ring")
    p.add_argument("--strategies", default=DEFAULT_STRATEGIES, help="';'-separated NAME[,option=value...] specs")
    p.add_argument("--temperature-ablation", action="store_true",
                   help="add interpolated with T_in in {1/3, 0.5} x T_auto in {1, 0.5, 0.1}")
    p.add_argument("--sampler", default=None, help="sampler (default: each model's)")
    p.add_argument("--steps", type=int, default=None, help="sampling steps (default: each model's)")
    p.add_argument("--guidance", type=float, default=None, help="guidance weight (default: each model's)")
    p.add_argument("--sampler-option", action="append", default=[], metavar="KEY=VALUE",
                   help="sampler option (replaces the model's default_sampler_options); repeatable")
    p.add_argument("--consistency", action="store_true", help="3DiM's 3D consistency score (slow)")
    p.add_argument("--consistency-iters", type=int, default=500, help="field-fit iterations (default 500)")
    p.add_argument("--include", action="append", default=[], type=Path, metavar="STRATEGIES_JSON",
                   help="rows of an earlier run (its strategies.json) with the same objects, views and consistency "
                        "settings, put before this run's rows; repeatable")
    p.add_argument("--out", type=Path, default=None, help="folder for strategies.json/.md and orbits.png")
    p.add_argument("--write-benchmarks", action="store_true", help="put the block into BENCHMARKS.md")
    p.add_argument("--threads", type=int, default=None, help="torch threads")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N (default: cuda when available)")
    a = p.parse_args(argv)
    if a.out is not None and (a.out / "strategies.json").exists():
        raise SystemExit(f"{a.out / 'strategies.json'} exists; choose another --out")
    if a.objects < 1:
        raise SystemExit(f"--objects must be >= 1, got {a.objects}")
    if any("=" not in m for m in a.model + a.sampler_option):
        raise SystemExit("--model takes LABEL=PATH and --sampler-option KEY=VALUE")
    models = dict(m.split("=", 1) for m in a.model)
    if len(models) != len(a.model):
        raise SystemExit("--model: every LABEL must be different")
    specs = strategy_specs(a.strategies, a.temperature_ablation)
    included = [read_included(path, a, set(models)) for path in a.include]
    if a.threads:
        torch.set_num_threads(a.threads)
    device = ("cuda" if torch.cuda.is_available() else "cpu") if a.device == "auto" else a.device
    options = {k.strip(): parse_value(v) for k, v in (o.split("=", 1) for o in a.sampler_option)} or None
    from vantage.methods.base import sampler_options_for

    plans, settings_models = [], {}
    for label, path in models.items():  # load and check everything before any sampling
        method = load_model(label, Path(path), device)
        cfg = method.config
        w = cfg.default_guidance if a.guidance is None else a.guidance
        runs = []
        for spec, name, opts in specs:
            try:
                runs.append((spec, opts, choose_strategy(method, name, guidance=w, **opts)))
            except (ValueError, TypeError) as e:
                raise SystemExit(f"--strategies {spec!r} for --model {label}: {e}") from None
        settings_models[label] = {"checkpoint": path, "method": method.name, "resolution": cfg.resolution,
                                  "sampler": a.sampler or cfg.default_sampler, "steps": a.steps or cfg.default_steps,
                                  "guidance": w, "sampler_options": sampler_options_for(cfg, a.sampler)
                                  if options is None else options}
        plans.append((label, method, runs))
    sampling = {"sampler": a.sampler, "steps": a.steps, "guidance": a.guidance, "sampler_options": options}
    iters = a.consistency_iters if a.consistency else None
    objects: dict[int, list] = {}
    truth: dict[int, dict] = {}
    rows, sheet, labels = [], [], []
    total, done = sum(len(r) for _, _, r in plans), 0
    for label, method, runs in plans:
        res = method.config.resolution
        if res not in objects:
            objects[res] = benchmark_objects(res, a.objects, a.views)
            truth[res] = truth_scores(objects[res], iters, device)
        for spec, given, choice in runs:
            done += 1
            name = strategy_label(choice.name, choice.options, given)
            print(f"[{done}/{total}] {label}: {name} ({choice.order}), {a.objects} orbit(s) of {a.views - 1} "
                  f"views ...", flush=True)
            row, first = run_row(method, objects[res], choice, sampling, iters, device)
            row = {"model": label, "method": method.name, "spec": spec, "label": name, "strategy": choice.name,
                   "order": choice.order, "options": {k: v for k, v in choice.options.items() if v is not None},
                   **row, **truth[res]}
            rows.append(row)
            sheet.append(first)
            labels.append(f"{label} {name}")
            print(f"    PSNR {row['psnr']:.2f} dB (copy {row['baseline_psnr']:.2f}), NFE {row['nfe']}, "
                  f"{row['seconds_per_orbit']:.1f} s / orbit", flush=True)
    command = "python bench/compare_strategies.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    result = {"tool": "bench/compare_strategies.py", "command": command, "date": datetime.date.today().isoformat(),
              "hardware": hardware(device), "settings": {"objects": a.objects, "views": a.views, "seeds":
                                                         list(range(a.objects)), "consistency": a.consistency,
                                                         "consistency_iters": iters, "models": settings_models},
              "rows": rows}
    if included:  # earlier runs' rows first, as if measured in this one (their commands and dates are kept)
        result["rows"] = [r for inc in included for r in inc["rows"]] + rows
        result["settings"]["models"] = {**{k: v for inc in included for k, v in inc["models"].items()},
                                        **settings_models}
        result["included"] = [e for inc in included for e in inc["entries"]]
    block = render_block(result)
    print("\n" + block, flush=True)
    if a.out is not None:
        write_result(a.out, "strategies", result, block)
        first_res = max(objects)
        orbit_sheet(sheet + [objects[first_res][0].images], labels + ["ground truth"], a.out / "orbits.png")
        print(f"wrote {a.out / 'strategies.json'}, strategies.md and orbits.png")
    if a.write_benchmarks:
        how = replace_block(BENCHMARKS, block, begin=BEGIN, end=END)
        print(f"{how} the strategies block in {BENCHMARKS}")
    return result


if __name__ == "__main__":
    main()
