"""Scoring predicted images against ground truth: ``vantage evaluate --pred DIR --gt DIR``.

Images are matched by their path relative to each folder **without the extension** (a PNG
prediction matches a JPG truth); other files are ignored. A ground-truth image without a
prediction, a prediction without a truth, two files with the same name and different extensions,
images of different sizes and non-finite values are errors that name the files. Images
(PNG/JPG/JPEG/WEBP, alpha composited on the protocol's background, 16-bit PNGs scaled) are read
as ``(3, H, W)`` in [-1, 1] and scored by :class:`~vantage.eval.scorer.Scorer` (per-image PSNR,
SSIM, LPIPS; FID, KID, FD-DINOv2 and the joint metrics over the whole set). The joint FID and the
joint FD-DINOv2 (``jfid``, ``jfd_dinov2``, VIVID's: :data:`~vantage.eval.scorer.SOURCE_METRICS`)
also need the source (input) view of every target, given as ``sources`` (``--inputs DIR``; see
:func:`match_sources`). A metric whose weight file is missing is skipped (the file is named).

An image in a sub-folder belongs to the object named by that sub-folder (``obj/000012.png`` ->
``obj``); means are over images, or of per-object means (``average="objects"``, pixelNeRF's way).

:func:`vantage.eval.report.write_report` writes the results; :mod:`vantage.eval.evaluate_model`
produces the folders from a checkpoint and reuses all of this.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from vantage.data.formats.common import IMAGE_EXTENSIONS, DatasetError, load_image
from vantage.eval.protocol import MetricSettings
from vantage.eval.scorer import (  # Scorer and the metric names are re-exported (older imports)
    DINOV2_METRICS,
    INCEPTION_METRICS,
    PER_IMAGE_METRICS,
    PSNR_CAP,
    SET_METRICS,
    SOURCE_METRICS,
    EvaluationError,
    Scorer,
    _listing,
    describe_metrics,
    source_metrics,
)

__all__ = ["EvaluationError", "Scorer", "list_images", "match_folders", "match_sources", "check_sizes", "load_rgb",
           "evaluate_folders", "summarise", "combine_samples", "PER_IMAGE_METRICS", "SET_METRICS", "INCEPTION_METRICS",
           "DINOV2_METRICS", "SOURCE_METRICS", "PSNR_CAP"]


# --------------------------------------------------------------------------------------- folders
def list_images(folder: str | Path) -> dict[str, Path]:
    """``{relative path without extension (posix): file}`` of every image below ``folder``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder not found: {folder}")
    out: dict[str, Path] = {}
    for p in sorted(folder.rglob("*")):
        if not p.is_file() or p.suffix.lower() not in IMAGE_EXTENSIONS:
            continue
        key = p.relative_to(folder).with_suffix("").as_posix()
        if key in out:
            raise EvaluationError(f"{out[key]} and {p} have the same name with different extensions; "
                                  f"images are matched by name without extension, keep one")
        out[key] = p
    if not out:
        raise EvaluationError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) found in {folder}")
    return out


def match_folders(pred_dir: str | Path, gt_dir: str | Path) -> list[tuple[str, Path, Path]]:
    """``[(name, prediction, truth)]`` sorted by name; an error lists missing and extra images."""
    if Path(pred_dir).resolve() == Path(gt_dir).resolve():
        raise EvaluationError(f"--pred and --gt are the same folder ({pred_dir})")
    pred, gt = list_images(pred_dir), list_images(gt_dir)
    missing, extra = sorted(set(gt) - set(pred)), sorted(set(pred) - set(gt))
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"{len(missing)} ground-truth image(s) have no prediction: {_listing(missing)}")
        if extra:
            parts.append(f"{len(extra)} prediction(s) have no ground truth: {_listing(extra)}")
        raise EvaluationError(f"{pred_dir} and {gt_dir} do not hold the same images (matched by relative path "
                              f"without extension): " + "; ".join(parts))
    return [(k, pred[k], gt[k]) for k in sorted(gt)]


def match_sources(names: Sequence[str], inputs_dir: str | Path) -> dict[str, Path]:
    """The source (input) image of each target ``name``, found in ``inputs_dir``, for the joint metrics.

    A target's source is the image with the same relative name (``inputs/obj/000030.png`` for the
    target ``obj/000030``), else the only image in the target's object folder (the layout checkpoint
    mode writes: ``inputs/<object>/<input view>.png``; ``obj/000030`` -> ``inputs/obj/000000.png``).
    Targets without a source, or whose object folder holds several images, are an error naming them.
    """
    inputs = list_images(inputs_dir)
    by_object: dict[str, list[Path]] = {}
    for key, path in inputs.items():
        by_object.setdefault(key.rpartition("/")[0], []).append(path)
    out: dict[str, Path] = {}
    missing, ambiguous = [], []
    for name in names:
        if name in inputs:
            out[name] = inputs[name]
            continue
        found = by_object.get(name.rpartition("/")[0], [])
        if len(found) == 1:
            out[name] = found[0]
        else:
            (ambiguous if found else missing).append(name)
    if missing or ambiguous:
        parts = []
        if missing:
            parts.append(f"{len(missing)} target(s) have no source image: {_listing(missing)}")
        if ambiguous:
            parts.append(f"{len(ambiguous)} target(s) have several candidates in their object folder: "
                         f"{_listing(ambiguous)}")
        raise EvaluationError(f"{inputs_dir}: the joint metrics ({', '.join(SOURCE_METRICS)}) need the source (input) "
                              f"view of every target, as an image with the target's relative name or as the only image "
                              f"of its object folder; " + "; ".join(parts))
    return out


def _size(path: Path) -> tuple[int, int]:
    """``(width, height)`` of an image file from its header (nothing decoded); errors name the file."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return im.size
    except (OSError, UnidentifiedImageError) as e:
        raise EvaluationError(f"{path}: cannot read the image ({e})") from None


def check_sizes(pairs: Sequence[tuple[str, Path, Path]], baseline: dict[str, Path] | None = None) -> None:
    """Before anything is scored: every prediction (and baseline image) has its truth's size, else an error that
    lists every mismatch (how many, the first few with both sizes)."""
    bad = []
    for name, p, g in pairs:
        gs = _size(g)
        for what, q in (("prediction", p), ("baseline", None if baseline is None else baseline[name])):
            if q is not None and (qs := _size(q)) != gs:
                bad.append(f"{what} {q} is {qs[0]}x{qs[1]}, its ground truth {g} is {gs[0]}x{gs[1]}")
    if bad:
        more = f" (and {len(bad) - 5} more)" if len(bad) > 5 else ""
        raise EvaluationError(f"{len(bad)} image(s) do not have the size of their ground truth: "
                              + "; ".join(bad[:5]) + more)


def load_rgb(path: Path, background: Sequence[float] = (1.0, 1.0, 1.0)) -> Tensor:
    """An image file as ``(3, H, W)`` in [-1, 1] (alpha composited on ``background``); errors name the file."""
    try:
        img, _ = load_image(path, background=background)
    except DatasetError as e:
        raise EvaluationError(str(e)) from None
    if not torch.isfinite(img).all():
        raise EvaluationError(f"{path}: the image has NaN or infinite values")
    return img


def _mean(values: Sequence[Any]) -> float | None:
    vals = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return float(sum(vals) / len(vals)) if vals else None


def summarise(records: list[dict[str, Any]], average: str = "images", prefix: str = "") -> dict[str, Any]:
    """Means over images and of per-object means (``prefix`` selects e.g. ``baseline_`` columns).

    Returns ``{"mean", "mean_over_images", "mean_over_objects", "per_object"}``; ``mean`` is the one
    ``average`` names (over images when there are no objects).
    """
    keys = [m for m in PER_IMAGE_METRICS if any(r.get(prefix + m) is not None for r in records)]
    over_images = {m: _mean([r.get(prefix + m) for r in records]) for m in keys}
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        groups.setdefault(r["object"], []).append(r)
    per_object = [{"object": o, "images": len(rs), **{m: _mean([r.get(prefix + m) for r in rs]) for m in keys}}
                  for o, rs in groups.items()]
    has_objects = any(o for o in groups)
    over_objects = {m: _mean([p[m] for p in per_object]) for m in keys} if has_objects else None
    mean = over_objects if (average == "objects" and over_objects is not None) else over_images
    return {"mean": mean, "mean_over_images": over_images, "mean_over_objects": over_objects,
            "per_object": per_object if has_objects else []}


def _check_sources(joint: Sequence[str], sources: dict[str, Path] | str | Path | None,
                   names: Sequence[str]) -> dict[str, Path] | None:
    """The source image of every target in ``names`` for the ``joint`` metrics asked for (None without any)."""
    if not joint:
        return None
    what = describe_metrics(joint)
    if sources is None:
        raise EvaluationError(f"{what} {'pairs' if len(joint) == 1 else 'pair'} each target with its source (input) "
                              f"view, and no source images were given: pass the folder of input views (vantage "
                              f"evaluate --inputs DIR, e.g. the inputs/ folder of a checkpoint-mode evaluation)")
    if not isinstance(sources, dict):
        return match_sources(names, sources)
    lacking = [n for n in names if n not in sources]
    if lacking:
        raise EvaluationError(f"no source (input) image for {what} for {_listing(lacking)}")
    return sources


def evaluate_folders(pred_dir: str | Path, gt_dir: str | Path, *, settings: MetricSettings | None = None,
                     background: Sequence[float] = (1.0, 1.0, 1.0), baseline: dict[str, Path] | None = None,
                     sources: dict[str, Path] | str | Path | None = None, scorer: Scorer | None = None,
                     device: str | torch.device = "cpu", batch_size: int = 16, progress: bool = True,
                     baseline_what: str = "copy the nearest input view to each target view") -> dict[str, Any]:
    """Score every prediction in ``pred_dir`` against its truth in ``gt_dir`` (module docstring).

    ``baseline`` maps image names to another prediction (e.g. the nearest input view: the copy-the-input
    baseline, described by ``baseline_what``), scored the same way into ``baseline_*`` columns. ``sources`` maps
    image names to their source (input) view, or is a folder matched by :func:`match_sources`: the joint metrics
    (``jfid``, ``jfd_dinov2``) need it (an error when one is asked for without it; unused otherwise).
    Returns a JSON-friendly dict with ``per_image``, ``mean``, ``per_object``, ``set_metrics``,
    ``skipped``, ``notes``, ``best``, ``worst``.
    """
    t0 = time.perf_counter()
    settings = settings or MetricSettings()
    pairs = match_folders(pred_dir, gt_dir)
    if baseline is not None:
        lacking = [n for n, _, _ in pairs if n not in baseline]
        if lacking:
            raise EvaluationError(f"no baseline image for {_listing(lacking)}")
    check_sizes(pairs, baseline)
    sources = _check_sources(source_metrics(settings.names), sources, [n for n, _, _ in pairs])
    scorer = scorer or Scorer(settings, device)
    scorer.reset_features()  # set metrics of this folder only (a shared scorer)
    records: list[dict[str, Any]] = []
    chunks = [pairs[i:i + batch_size] for i in range(0, len(pairs), batch_size)]
    if progress:
        from tqdm.auto import tqdm

        chunks = tqdm(chunks, desc="scoring", unit="batch", leave=False)
    for chunk in chunks:
        loaded = []
        for name, p, g in chunk:
            pi, gi = load_rgb(p, background), load_rgb(g, background)
            if pi.shape != gi.shape:
                raise EvaluationError(f"{p} is {pi.shape[-1]}x{pi.shape[-2]} but its ground truth {g} is "
                                      f"{gi.shape[-1]}x{gi.shape[-2]}")
            bi = load_rgb(baseline[name], background) if baseline is not None else None
            if bi is not None and bi.shape != gi.shape:
                raise EvaluationError(f"baseline image {baseline[name]} is {bi.shape[-1]}x{bi.shape[-2]} but the "
                                      f"ground truth {g} is {gi.shape[-1]}x{gi.shape[-2]}")
            si = load_rgb(sources[name], background) if sources is not None else None
            loaded.append((name, pi, gi, bi, si))
        by_size: dict[tuple, list] = {}
        for item in loaded:  # sources may have another size than their targets (the feature networks resize)
            key = (tuple(item[1].shape), None if item[4] is None else tuple(item[4].shape))
            by_size.setdefault(key, []).append(item)
        for group in by_size.values():
            names = [x[0] for x in group]
            gt = torch.stack([x[2] for x in group])
            src = torch.stack([x[4] for x in group]) if sources is not None else None
            recs = scorer.score(names, torch.stack([x[1] for x in group]), gt, source=src)
            if baseline is not None:
                for r, rb in zip(recs, scorer.score(names, torch.stack([x[3] for x in group]), gt, features=False)):
                    r.update({f"baseline_{m}": rb[m] for m in PER_IMAGE_METRICS})
            records += recs
    order = {n: i for i, (n, _, _) in enumerate(pairs)}
    records.sort(key=lambda r: order[r["image"]])
    summary = summarise(records, settings.average)
    ranked = sorted((r for r in records if r["psnr"] is not None), key=lambda r: -r["psnr"])
    k = min(4, len(ranked) // 2) if len(ranked) > 1 else len(ranked)
    result = {"pred": str(pred_dir), "gt": str(gt_dir), "images": len(records), "average": settings.average,
              **summary, "set_metrics": scorer.set_metrics(), "skipped": dict(scorer.skipped),
              "notes": list(scorer.notes), "best": [r["image"] for r in ranked[:k]],
              "worst": [r["image"] for r in ranked[::-1][:k]], "per_image": records}
    if baseline is not None:
        b = summarise(records, settings.average, prefix="baseline_")
        result["baseline"] = {"what": baseline_what, "images": len(records),
                              "mean": b["mean"],
                              "mean_over_images": b["mean_over_images"], "mean_over_objects": b["mean_over_objects"],
                              "per_object": b["per_object"]}
    result["seconds"] = round(time.perf_counter() - t0, 3)
    return result


def combine_samples(per_sample: list[dict[str, Any]], pred_root: str | Path, gt_dir: str | Path,
                    average: str = "images") -> dict[str, Any]:
    """One result from :func:`evaluate_folders` results of several samples per target (``pred_root/sample-KK``).

    Image names get the prefix ``sample-KK/``; means are over all samples' images; set metrics
    (FID, KID, FD-DINOv2, the joint metrics) are the means of the per-sample values (also listed in ``per_sample``;
    a sample that lacks one does not count as 0).
    """
    records = []
    for k, r in enumerate(per_sample):
        records += [{**rec, "image": f"sample-{k:02d}/{rec['image']}", "sample": k} for rec in r["per_image"]]
    summary = summarise(records, average)
    ranked = sorted((r for r in records if r["psnr"] is not None), key=lambda r: -r["psnr"])
    k = min(4, len(ranked) // 2)
    set_keys = sorted({key for r in per_sample for key in r["set_metrics"]})
    combined = {"pred": str(pred_root), "gt": str(gt_dir), "images": len(records), "samples": len(per_sample),
                "average": average, **summary,
                "set_metrics": {key: _mean([r["set_metrics"].get(key) for r in per_sample]) for key in set_keys},
                "per_sample": [{"sample": j, "mean": r["mean"], "set_metrics": r["set_metrics"]}
                               for j, r in enumerate(per_sample)],
                "skipped": per_sample[0]["skipped"], "notes": per_sample[0]["notes"],
                "best": [r["image"] for r in ranked[:k]], "worst": [r["image"] for r in ranked[::-1][:k]],
                "per_image": records}
    if "baseline" in per_sample[0]:
        combined["baseline"] = per_sample[0]["baseline"]
    return combined
