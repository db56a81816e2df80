"""The files ``vantage evaluate`` writes: ``metrics.json``, ``metrics.md``, CSV tables, the best/worst sheet.

:func:`write_report` takes the result of :func:`vantage.eval.evaluate.evaluate_folders` (plus run
settings) and writes into the output folder:

* ``metrics.json``: ``tool`` ("vantage evaluate"), ``vantage_version``, ``mode``, the ``protocol``
  (its fields, name and version) or null, ``metric_settings`` (with the conventions in words), run
  settings (checkpoint mode), ``consistency`` (when scored) and ``result`` (means, per object, per
  image, set metrics, skipped metrics with the reason, notes, best and worst images);
* ``metrics.md``: the same as Markdown tables (model and copy-the-input baseline, set metrics: FID,
  KID, joint FID, FD-DINOv2, joint FD-DINOv2; per object);
* ``per_image.csv`` and, for images in object sub-folders, ``per_object.csv``;
* ``best_worst.png``: the (up to) four best and four worst images by PSNR over their truths.

:func:`prepare_evaluation_dir` guards the output folder like every vantage command: new or empty,
or ``overwrite``; it also says whether the folder holds a previous evaluation.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from vantage import __version__
from vantage.eval.evaluate import list_images, load_rgb
from vantage.eval.protocol import MetricSettings, Protocol
from vantage.eval.scorer import PER_IMAGE_METRICS, PSNR_CAP, SET_METRIC_LABELS
from vantage.outputs import OutputExistsError, prepare_output_dir

__all__ = ["TOOL", "write_report", "prepare_evaluation_dir"]

TOOL = "vantage evaluate"


def prepare_evaluation_dir(out: str | Path, overwrite: bool = False, *, create: bool = True) -> tuple[Path, bool]:
    """Check (and by default create) ``out`` -> ``(path, whether it holds a previous evaluation)``.

    ``out`` must be new or empty; a non-empty one only with ``overwrite`` (as every vantage command). A
    previous evaluation is a folder whose ``metrics.json`` was written by ``vantage evaluate``.
    ``create=False`` only checks, so that nothing is created before the inputs have been checked.
    """
    out = Path(out)
    previous = False
    try:
        previous = json.loads((out / "metrics.json").read_text()).get("tool") == TOOL
    except (OSError, ValueError, AttributeError):
        pass
    if out.exists() and not out.is_dir():
        raise OutputExistsError(f"output path {out} exists and is a file, not a folder")
    if not create:
        if out.is_dir() and any(out.iterdir()) and not overwrite:
            raise OutputExistsError(f"output folder {out} already exists and is not empty"
                                    + (" (it holds a previous evaluation)" if previous else "")
                                    + "; choose another --out or pass --overwrite to replace its files")
        return out, previous
    try:
        prepare_output_dir(out, overwrite)
    except OutputExistsError as e:
        if previous:
            raise OutputExistsError(f"{e} (it holds a previous evaluation)") from None
        raise
    return out, previous


def _fmt(v: Any, digits: int = 3) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


def _metric_line(s: MetricSettings) -> str:
    window = "11x11 Gaussian, σ 1.5" if s.ssim_window == "gaussian" else "7x7 uniform (scikit-image default)"
    over = "per-object means" if s.average == "objects" else "images"
    joint = ("; joint FID: FID of the concatenated Inception features [target ‖ its source view] (VIVID)"
             if "jfid" in s.names else "")
    dino = ("; FD-DINOv2: Fréchet distance of DINOv2 ViT-L/14 CLS features, bicubic resize to 224 (as EDM2)"
            if {"fd_dinov2", "jfd_dinov2"} & set(s.names) else "")
    joint_dino = ("; joint FD-DINOv2: the same of the concatenated DINOv2 features [target ‖ its source view] (VIVID)"
                  if "jfd_dinov2" in s.names else "")
    return (f"PSNR on [0, 1] images with peak {s.psnr_data_range:g} (identical images: {PSNR_CAP:g} dB); SSIM "
            f"{window}; LPIPS-{s.lpips_net} v0.1; mean over {over}{joint}{dino}{joint_dino}")


def _markdown(doc: dict[str, Any], settings: MetricSettings) -> str:
    r = doc["result"]
    cols = [m for m in PER_IMAGE_METRICS if r["mean_over_images"].get(m) is not None]
    head = {"psnr": "PSNR (dB) ↑", "ssim": "SSIM ↑", "lpips": "LPIPS ↓"}
    title = doc["protocol"]["label"] if doc.get("protocol") else "files"
    lines = [f"# Evaluation: {title}", "", f"vantage {doc['vantage_version']}, mode `{doc['mode']}`, "
             f"{r['images']} images. Predictions: `{r['pred']}`; ground truth: `{r['gt']}`.", "",
             "| | images | " + " | ".join(head[c] for c in cols) + " |", "|---|---|" + "---|" * len(cols)]
    rows = [("generated", r["images"], r["mean"])]
    if "baseline" in r:
        rows.append(("copy-the-input baseline", r["baseline"]["images"], r["baseline"]["mean"]))
    for label, count, mean in rows:
        lines.append(f"| {label} | {count} | " + " | ".join(_fmt(mean.get(c), 2 if c == "psnr" else 3)
                                                                 for c in cols) + " |")
    lines += ["", f"Conventions: {_metric_line(settings)}."]
    sm = r["set_metrics"]
    if sm:
        parts = [f"FID {sm['fid']:.2f}" if "fid" in sm else "",
                 f"KID×10³ {1e3 * sm['kid_mean']:.2f} ± {1e3 * sm['kid_std']:.2f}" if "kid_mean" in sm else "",
                 f"joint FID {sm['jfid']:.2f}" if "jfid" in sm else "",
                 f"FD-DINOv2 {sm['fd_dinov2']:.2f}" if "fd_dinov2" in sm else "",
                 f"joint FD-DINOv2 {sm['jfd_dinov2']:.2f}" if "jfd_dinov2" in sm else ""]
        lines += ["", f"Set metrics over {sm['set_size']} images: " + ", ".join(p for p in parts if p) + "."]
    for m, why in r["skipped"].items():  # the whole reason: which file, where it was looked for, how to get it
        lines += ["", f"**{SET_METRIC_LABELS.get(m, m.upper())} skipped**: "
                      + " ".join(line.strip() for line in why.splitlines())]
    for note in r["notes"]:
        lines += ["", f"Note: {note}"]
    cons = doc.get("consistency")
    if cons:
        lines += ["", "## 3D consistency score", "", "| views | PSNR (dB) | SSIM |", "|---|---|---|",
                  f"| generated | {_fmt(cons['mean']['psnr'], 2)} | {_fmt(cons['mean']['ssim'])} |",
                  f"| ground truth (ceiling) | {_fmt(cons['ceiling']['psnr'], 2)} | {_fmt(cons['ceiling']['ssim'])} |"]
    adj = doc.get("adjacent_views")
    if adj:
        g, t = adj["generated"], adj["ground_truth"]
        reproj = "reprojection_mae" in g
        lines += ["", "## Adjacent views", "", f"Pairs: {adj['pairs']}."
                  + (f" Reprojection: {adj['reprojection']}." if reproj else ""), "",
                  "| views | PSNR (dB) | SSIM |" + (" reprojection error ↓ |" if reproj else ""),
                  "|---|---|---|" + ("---|" if reproj else "")]
        for label, m in (("generated", g), ("ground truth (reference)", t)):
            lines.append(f"| {label} | {_fmt(m.get('psnr'), 2)} | {_fmt(m.get('ssim'))} |"
                         + (f" {_fmt(m.get('reprojection_mae'), 4)} |" if reproj else ""))
    if r["per_object"]:
        shown = r["per_object"][:50]
        lines += ["", f"## Per object ({len(shown)} of {len(r['per_object'])})", "",
                  "| object | images | " + " | ".join(head[c] for c in cols) + " |", "|---|---|" + "---|" * len(cols)]
        lines += [f"| {p['object']} | {p['images']} | " + " | ".join(_fmt(p.get(c), 2 if c == "psnr" else 3)
                                                                   for c in cols) + " |" for p in shown]
    return "\n".join(lines) + "\n"


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    fields = [k for k in dict.fromkeys(k for r in rows for k in r) if any(r.get(k) is not None for r in rows)]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        w.writeheader()
        w.writerows({k: ("" if v is None else v) for k, v in r.items()} for r in rows)


def _sheet(result: dict[str, Any], background: Sequence[float]):
    from vantage.viz import contact_sheet

    pred, gt = list_images(result["pred"]), list_images(result["gt"])
    rows, labels = [], []
    for which in ("best", "worst"):
        names = result[which]
        if not names:
            continue
        truth = [n.split("/", 1)[1] if result.get("samples", 1) > 1 else n for n in names]  # "sample-KK/..."
        imgs = [(load_rgb(pred[n], background), load_rgb(gt[t], background)) for n, t in zip(names, truth)]
        h, w = imgs[0][1].shape[-2:]

        def fit(t: Tensor, h: int = h, w: int = w) -> Tensor:
            return t if t.shape[-2:] == (h, w) else F.interpolate(t[None], size=(h, w), mode="nearest")[0]

        rows += [torch.stack([fit(p) for p, _ in imgs]), torch.stack([fit(g) for _, g in imgs])]
        labels += [f"{which}: prediction", f"{which}: truth"]
    return contact_sheet(rows, labels) if rows else None


def write_report(out: str | Path, result: dict[str, Any], *, settings: MetricSettings, mode: str,
                 protocol: Protocol | None = None, background: Sequence[float] = (1.0, 1.0, 1.0),
                 extra: dict[str, Any] | None = None) -> list[str]:
    """Write ``metrics.json``, ``metrics.md``, ``per_image.csv`` [, ``per_object.csv``] and ``best_worst.png``
    into ``out``; returns the file names written. ``extra`` (run settings, consistency) goes into the JSON."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    doc: dict[str, Any] = {"tool": TOOL, "vantage_version": __version__, "mode": mode,
                           "protocol": ({"label": protocol.label, "source": protocol.source, **protocol.to_dict()}
                                        if protocol is not None else None),
                           "metric_settings": {"names": list(settings.names), "ssim_window": settings.ssim_window,
                                               "psnr_data_range": settings.psnr_data_range,
                                               "lpips_net": settings.lpips_net, "average": settings.average,
                                               "conventions": _metric_line(settings)},
                           **(extra or {}), "result": result}
    (out / "metrics.json").write_text(json.dumps(doc, indent=1))
    (out / "metrics.md").write_text(_markdown(doc, settings))
    _write_csv(out / "per_image.csv", result["per_image"])
    files = ["metrics.json", "metrics.md", "per_image.csv"]
    if result["per_object"]:
        _write_csv(out / "per_object.csv", result["per_object"])
        files.append("per_object.csv")
    sheet = _sheet(result, background)
    if sheet is not None:
        sheet.save(out / "best_worst.png")
        files.append("best_worst.png")
    return files
