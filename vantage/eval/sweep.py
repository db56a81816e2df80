"""Sweeps of ``vantage evaluate``: a metric against the number of input views, or against the network calls.

``vantage evaluate --checkpoint RUN --protocol P --out DIR --sweep-views 1,2,3,6`` (or ``--sweep-steps 4,8,16,32``)
runs one checkpoint-mode evaluation per value (:func:`~vantage.eval.evaluate_model.evaluate_checkpoint`) into
``DIR/views-K/`` (``DIR/steps-K/``), each a complete evaluation with its own ``metrics.json``, and writes:

* ``sweep.json``: the settings, and one row per value: PSNR, SSIM, LPIPS (when computed), the
  copy-the-nearest-input baseline, NFE and seconds per generated view, the 3D consistency score when
  the protocol asks for it, the folder;
* ``sweep.md``: the same as a Markdown table;
* ``sweep.png``: PSNR, SSIM (and LPIPS when computed) against the number of input views (with the copy
  baseline) or against the NFE per view (each point labelled with its steps).

Views sweep: the protocol must name its input views as a list; its first input view starts ``K`` input
views spread evenly over each object's views in id order (on the 24-view ring from view 0: 1 -> [0],
2 -> [0, 12], 3 -> [0, 8, 16], 6 -> [0, 4, ..., 20]), the same view ids for every object (taken from the
first object; an object without them is an error, or skipped with ``missing_views: skip``). The targets
are the protocol's targets minus every input view of every count in the sweep, so that each count is
scored on the same targets. Steps sweep: ``--steps K`` for each value (the protocol's sampler).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from vantage.eval.evaluate_model import evaluate_checkpoint
from vantage.eval.protocol import Protocol, load_protocol
from vantage.eval.protocol_data import _view_ids, open_protocol_dataset, select_objects
from vantage.eval.report import prepare_evaluation_dir
from vantage.eval.scorer import EvaluationError

__all__ = ["spread_views", "sweep_view_sets", "sweep_checkpoint", "SWEEPS"]

SWEEPS = ("views", "steps")


def spread_views(ids: Sequence[int], first: int, k: int) -> list[int]:
    """``k`` view ids spread evenly over ``ids`` (in id order, cyclically), starting at ``first``."""
    ids = sorted(ids)
    if first not in ids:
        raise EvaluationError(f"input view {first} is not among the object's views ({min(ids)}..{max(ids)})")
    if not 1 <= k <= len(ids):
        raise EvaluationError(f"cannot spread {k} input views over {len(ids)} views")
    n, p0 = len(ids), ids.index(first)
    out = [ids[(p0 + round(j * n / k)) % n] for j in range(k)]
    if len(set(out)) != k:  # cannot happen for k <= n with round(j n / k) strictly increasing; kept as a guard
        raise EvaluationError(f"spreading {k} views over {n} repeated a view: {out}")
    return out


def sweep_view_sets(protocol: Protocol, ids: Sequence[int], counts: Sequence[int]) -> tuple[dict[int, list[int]],
                                                                                             list[int]]:
    """``({count: input view ids}, target view ids)`` of a views sweep on an object whose views are ``ids``."""
    if not isinstance(protocol.input_views, list):
        raise EvaluationError(f"a views sweep needs a protocol whose input_views is a list of view ids; "
                              f"{protocol.label} has {json.dumps(protocol.input_views)}")
    first = protocol.input_views[0]
    sets = {k: spread_views(ids, first, k) for k in counts}
    used = {v for s in sets.values() for v in s}
    base = list(ids) if protocol.target_views == "all-others" else list(protocol.target_views)
    targets = [v for v in base if v not in used and v not in protocol.input_views]
    if not targets:
        raise EvaluationError(f"the views sweep {list(counts)} uses every target view of {protocol.label} as an input "
                              f"({sorted(used)}); sweep fewer views")
    return sets, targets


def _row(value: int, folder: Path, run: dict[str, Any]) -> dict[str, Any]:
    r, info = run["result"], run["extra"]["run"]
    views = sum(o["targets"] for o in info["objects"])
    base = r.get("baseline", {}).get("mean", {})
    cons = run["extra"].get("consistency") or {}
    return {"value": value, "folder": folder.name, "images": r["images"], "psnr": r["mean"].get("psnr"),
            "ssim": r["mean"].get("ssim"), "lpips": r["mean"].get("lpips"),
            "baseline_psnr": base.get("psnr"), "baseline_ssim": base.get("ssim"), "steps": info["steps"],
            "nfe_per_view": info["nfe"] / views, "seconds_per_view": info["seconds_sampling"] / (
                views * info["samples_per_target"]),
            "consistency_psnr": cons.get("mean", {}).get("psnr"), "inputs": info["objects"][0]["inputs"]}


def sweep_checkpoint(checkpoint: str | Path, protocol: Protocol | str | Path, out: str | Path, *, sweep: str,
                     values: Sequence[int], data: str | Path | None = None, device: str = "cpu",
                     objects: int | None = None, steps: int | None = None, resolution: int | None = None,
                     guidance: float | None = None, guide: str | Path | None = None,
                     sr_checkpoint: str | Path | None = None, overwrite: bool = False,
                     progress: bool = True, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the sweep (module docstring) into ``out`` (new or empty, or ``overwrite``); returns the ``sweep.json``
    document plus ``files``."""
    if sweep not in SWEEPS:
        raise EvaluationError(f"sweep must be one of {', '.join(SWEEPS)}, got '{sweep}'")
    values = list(dict.fromkeys(int(v) for v in values))
    if not values or any(v < 1 for v in values):
        raise EvaluationError(f"--sweep-{sweep} needs positive integers, got {list(values)}")
    if sweep == "steps" and steps is not None:
        raise EvaluationError("--steps and --sweep-steps do not go together: the sweep sets the steps")
    protocol, out = load_protocol(protocol), Path(out)
    views: dict[int, tuple[list[int], list[int]]] = {}
    if sweep == "views":
        ds = open_protocol_dataset(protocol, data, resolution or protocol.resolution)
        ids = _view_ids(ds, select_objects(ds, protocol, objects)[0])
        sets, targets = sweep_view_sets(protocol, ids, values)
        views = {k: (sets[k], targets) for k in values}
    prepare_evaluation_dir(out, overwrite, create=False)  # checked here; created by the first evaluation, after
    rows = []  # its own checks (a sweep that fails before generating anything leaves no folder behind)
    for v in sorted(values):
        sub = out / f"{sweep}-{v}"
        sub, previous = prepare_evaluation_dir(sub, overwrite, create=False)
        log(f"[sweep] {sweep} = {v}" + (f": inputs {views[v][0]}" if sweep == "views" else "") + f" -> {sub}")
        run = evaluate_checkpoint(checkpoint, protocol, sub, data=data, device=device, objects=objects,
                                  steps=v if sweep == "steps" else steps, resolution=resolution, guidance=guidance,
                                  guide=guide, sr_checkpoint=sr_checkpoint, views=views.get(v), previous=previous,
                                  progress=progress, log=log)
        rows.append(_row(v, sub, run))
    doc = {"tool": "vantage evaluate --sweep", "sweep": sweep, "values": sorted(values),
           "checkpoint": str(checkpoint), "protocol": protocol.label,
           "targets": views[values[0]][1] if views else None, "rows": rows}
    (out / "sweep.json").write_text(json.dumps(doc, indent=1))
    (out / "sweep.md").write_text(sweep_markdown(doc))
    plot = ["sweep.png"] if save_sweep_plot(doc, out / "sweep.png") else []
    return {**doc, "files": ["sweep.json", "sweep.md", *plot] + [f"{r['folder']}/" for r in rows]}


def _f(v: Any, digits: int) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


def sweep_markdown(doc: dict[str, Any]) -> str:
    """``sweep.md``: one row per value."""
    head = "input views | inputs" if doc["sweep"] == "views" else "steps"
    cols = "| " + head + " | PSNR (dB) ↑ | SSIM ↑ | LPIPS ↓ | copy nearest PSNR | copy nearest SSIM | NFE / view | " \
           "s / view | 3D consistency PSNR |"
    lines = [f"# Sweep over {doc['sweep']}: {doc['protocol']}", "", f"Checkpoint `{doc['checkpoint']}`."
             + (f" Targets (every count): view ids {doc['targets']}." if doc["targets"] else ""), "", cols,
             "|" + "---|" * (cols.count("|") - 1)]
    for r in doc["rows"]:
        key = f"{r['value']} | {','.join(map(str, r['inputs']))}" if doc["sweep"] == "views" else f"{r['value']}"
        lines.append(f"| {key} | {_f(r['psnr'], 2)} | {_f(r['ssim'], 3)} | {_f(r['lpips'], 3)} | "
                     f"{_f(r['baseline_psnr'], 2)} | {_f(r['baseline_ssim'], 3)} | {_f(r['nfe_per_view'], 1)} | "
                     f"{_f(r['seconds_per_view'], 3)} | {_f(r['consistency_psnr'], 2)} |")
    return "\n".join(lines) + "\n"


def save_sweep_plot(doc: dict[str, Any], path: Path) -> bool:
    """PSNR, SSIM and LPIPS (those the protocol computed) against the input views (with the copy baseline) or
    against the NFE per view; ``False`` (nothing written) when none was computed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = doc["rows"]
    metrics = [(m, label) for m, label in (("psnr", "PSNR (dB)"), ("ssim", "SSIM"), ("lpips", "LPIPS"))
               if all(r[m] is not None for r in rows)]
    if not metrics:
        return False
    views = doc["sweep"] == "views"
    xs = [r["value"] if views else r["nfe_per_view"] for r in rows]
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.5 * len(metrics), 3.4), squeeze=False)
    for ax, (m, label) in zip(axes[0], metrics):
        ax.plot(xs, [r[m] for r in rows], "o-", label="model")
        if views and m != "lpips":
            ax.plot(xs, [r[f"baseline_{m}"] for r in rows], "s--", color="gray", label="copy nearest input")
        else:
            for x, r in zip(xs, rows):
                steps = f"{r['value']} step{'' if r['value'] == 1 else 's'}"
                ax.annotate(steps, (x, r[m]), fontsize=7, textcoords="offset points", xytext=(3, 3))
        ax.set_xscale("log", base=2)
        ax.set_xticks(xs, [f"{x:g}" for x in xs])
        ax.set(xlabel="input views" if views else "NFE per view", ylabel=label)
        ax.legend(fontsize=8)
    fig.suptitle(f"{doc['protocol']}: {doc['sweep']} sweep", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
