"""Checkpoint mode of ``vantage evaluate``: run a protocol's objects through a model, then score the files.

For every object the protocol selects (:mod:`vantage.eval.protocol`): its input views and target
views are chosen by view id, resized to the protocol's resolution (centre crop first), put on the
protocol's background (when the views have masks), and the targets are generated from the inputs
with :func:`~vantage.sampling.orbit.autoregressive_orbit` (the protocol's sampler, steps,
guidance, strategy, order and autoregressive setting; ``None`` = the checkpoint's own default).
Sample ``k`` of the object at dataset position ``i`` uses the base seed
``sample_seed(seeds[k], i)`` (:func:`vantage.data.pairs.sample_seed`), so a result does not depend
on which other objects are evaluated.

Files written under ``out`` (then scored by :func:`vantage.eval.evaluate.evaluate_folders`):

* ``inputs/<object>/<view id>.png``: the input views;
* ``gt/<object>/<view id>.png``: the ground-truth targets;
* ``pred/<object>/<view id>.png`` (with several samples per target:
  ``pred/sample-00/<object>/<view id>.png``, ...): the generated targets.

The copy-the-input baseline (for every target, the input view whose camera centre is nearest, ties
broken by the angle between the viewing directions: :func:`nearest_inputs`) is scored with them. The
joint metrics (``jfid``, ``jfd_dinov2``) pair each target with the first input view as its source.
With ``metrics.adjacent_views``, each generated target against its nearest generated target (PSNR/SSIM) and, where
the data has depth (synthetic), the reprojection error between them through the true depth, with the same scores
of the true views as reference. When the protocol asks for it, the 3D consistency score
(:func:`vantage.eval.consistency_score`) of each object's input + generated views, with the same
score on the input + ground-truth views as the ceiling.
"""

from __future__ import annotations

import dataclasses
import re
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from PIL import Image

from vantage.cameras import Cameras
from vantage.data.formats.common import DatasetError
from vantage.data.views import ObjectViews
from vantage.eval.evaluate import combine_samples, evaluate_folders
from vantage.eval.evaluate_vivid import (
    at_resolution,
    attach_guide,
    describe_guidance,
    load_sr_stage,
    super_resolve_targets,
)
from vantage.eval.protocol import Protocol, load_protocol
from vantage.eval.protocol_data import _read_view_list, _view_ids, choose_views, open_protocol_dataset, select_objects
from vantage.eval.report import write_report
from vantage.eval.scorer import SET_METRIC_LABELS, EvaluationError, Scorer, source_metrics
from vantage.methods.base import sampler_options_for

if TYPE_CHECKING:
    from vantage.sampling.strategy_choice import StrategyChoice

__all__ = ["evaluate_checkpoint", "nearest_inputs", "open_protocol_dataset", "select_objects", "choose_views",
           "GENERATED_DIRS"]

GENERATED_DIRS = ("pred", "gt", "inputs")


def _on_background(views: ObjectViews, background: tuple[float, float, float], notes: list[str]) -> ObjectViews:
    """Views composited on white (every reader's convention) moved onto ``background`` via their masks."""
    if background == (1.0, 1.0, 1.0):
        return views
    if views.masks is None:
        notes.append(f"views of '{views.name}' have no masks: kept on their own background, not {list(background)}")
        return views
    bg = torch.tensor(background, dtype=views.images.dtype).view(1, 3, 1, 1)
    images = (views.images + 2 * (bg - 1) * (1 - views.masks)).clamp(-1, 1)
    return ObjectViews(images=images, cameras=views.cameras, masks=views.masks, depth=views.depth,
                       view_ids=views.view_ids, name=views.name, meta=views.meta)


def nearest_inputs(inputs: Cameras, targets: Cameras) -> list[int]:
    """For each target camera, the index of the input camera nearest to it: the smallest distance between camera
    centres, ties (within 1e-6 of the scene's scale) broken by the smallest angle between viewing directions."""
    d = torch.cdist(targets.centers.double().reshape(-1, 3), inputs.centers.double().reshape(-1, 3))  # (T, K)
    cos = targets.forward.double().reshape(-1, 3) @ inputs.forward.double().reshape(-1, 3).T  # (T, K)
    scale = max(float(d.max()), 1e-12)
    key = (d / scale / 1e-6).round() - cos * 1e-3  # distance first; the angle only decides between equal distances
    return key.argmin(dim=1).tolist()


def _folder_name(name: str) -> str:
    parts = [re.sub(r"[^\w.\-]", "_", p) for p in name.split("/") if p not in ("", ".", "..")]
    return "/".join(parts) or "object"


def _save(images: torch.Tensor, folder: Path, ids: list[int]) -> list[Path]:
    from vantage.viz import to_uint8

    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{v:06d}.png" for v in ids]
    for arr, p in zip(to_uint8(images.cpu()), paths):
        Image.fromarray(arr).save(p)
    return paths


# --------------------------------------------------------------------------------------- model
def _strategy(method: Any, protocol: Protocol, guidance: float) -> StrategyChoice:
    """The protocol's :class:`~vantage.sampling.strategy_choice.StrategyChoice` (the selection ``vantage sample``
    uses), or an :class:`EvaluationError`."""
    from vantage.sampling.strategy_choice import choose_strategy

    s = protocol.sampling
    try:
        return choose_strategy(method, s.strategy, guidance=guidance, max_context=s.max_context,
                               autoregressive=s.autoregressive, order=s.order,
                               names={"guidance": "the protocol's guidance", "autoregressive": "autoregressive: false"})
    except ValueError as e:
        raise EvaluationError(f"protocol {protocol.label}: sampling: {e}") from None


def _consistency(name: str, given: ObjectViews, truth: ObjectViews, generated: torch.Tensor, protocol: Protocol,
                 device: str, notes: list[str]) -> dict[str, Any] | None:
    """3D consistency score of input + generated views ``(T, 3, H, W)``, and its ceiling on input + truth."""
    from vantage.eval.consistency import consistency_score

    n = len(given) + len(truth)
    if n < 3:
        notes.append(f"3D consistency needs at least 3 views; '{name}' has {n}: not scored")
        return None
    c = protocol.metrics.consistency
    cams = Cameras.cat([given.cameras, truth.cameras])
    opts = dict(holdout=c.holdout, grid=c.grid, iters=c.iters, seed=0, background=list(protocol.background),
                device=device)
    score = consistency_score(torch.cat([given.images, generated]), cams, **opts)
    ceiling = consistency_score(torch.cat([given.images, truth.images]), cams, **opts)
    return {"object": name, "psnr": score["psnr"], "ssim": score["ssim"], "ceiling_psnr": ceiling["psnr"],
            "ceiling_ssim": ceiling["ssim"]}


def _adjacent(name: str, truth: ObjectViews, generated: torch.Tensor) -> dict[str, Any] | None:
    """Adjacent-view scores of the generated targets ``(T, 3, H, W)`` and of the truth: PSNR/SSIM of each target
    against its nearest target (:func:`~vantage.eval.consistency.nearest_pairs`) and, with depth, the reprojection
    error through the true depth (:func:`~vantage.eval.consistency.reprojection_error`)."""
    from vantage.eval.consistency import adjacent_view_score, nearest_pairs, reprojection_error

    if len(truth) < 2:
        return None
    pairs = nearest_pairs(truth.cameras)
    row: dict[str, Any] = {"object": name, "pairs": len(pairs)}
    for key, images in (("generated", generated), ("ground_truth", truth.images)):
        a = adjacent_view_score(images, pairs=pairs)
        row[key] = {"psnr": a["psnr"], "ssim": a["ssim"]}
        if truth.depth is not None:
            r = reprojection_error(images, truth.cameras, truth.depth, pairs=pairs)
            row[key].update(reprojection_mae=r["mae"], valid_fraction=r["valid_fraction"])
    return row


def _mean_adjacent(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Means over objects of :func:`_adjacent`'s rows (a metric absent or NaN for an object is left out)."""
    out: dict[str, Any] = {}
    for key in ("generated", "ground_truth"):
        metrics = dict.fromkeys(m for r in rows for m in r[key])
        vals = {m: [r[key][m] for r in rows if r[key].get(m) is not None and r[key][m] == r[key][m]] for m in metrics}
        out[key] = {m: (sum(v) / len(v) if v else None) for m, v in vals.items()}
    return out


def _clear_generated(out: Path, previous: bool) -> None:
    """Empty ``pred/``, ``gt/``, ``inputs/`` of a previous evaluation; refuse to touch them otherwise."""
    present = [d for d in GENERATED_DIRS if (out / d).exists()]
    if present and not previous:
        raise EvaluationError(f"{out} is not a previous evaluation but holds {', '.join(d + '/' for d in present)}; "
                              f"choose another --out (vantage does not delete folders it did not write)")
    for d in present:
        shutil.rmtree(out / d)


def evaluate_checkpoint(checkpoint: str | Path, protocol: Protocol | str | Path, out: str | Path, *,
                        data: str | Path | None = None, device: str = "cpu", objects: int | None = None,
                        steps: int | None = None, previous: bool = False, progress: bool = True,
                        guidance: float | None = None, guide: str | Path | None = None,
                        sr_checkpoint: str | Path | None = None, resolution: int | None = None,
                        views: tuple[list[int], list[int]] | None = None,
                        log: Callable[[str], None] = print) -> dict[str, Any]:
    """Generate the protocol's targets with ``checkpoint`` into ``out`` and score them (module docstring).

    ``out`` is created after the checks (check it first with :func:`vantage.eval.report.prepare_evaluation_dir`);
    ``previous`` allows emptying the generated folders of an earlier evaluation there. ``objects``, ``steps`` and
    ``resolution`` (evaluate at this size, e.g. a 32 px model on a 64 px protocol) override the protocol (recorded
    as such), and so do ``guidance`` and ``views`` (``(input view ids, target view ids)`` for every object, as
    :mod:`vantage.eval.sweep` uses); ``guide`` and ``sr_checkpoint`` are VIVID's
    guide network and super-resolution stage (:mod:`vantage.eval.evaluate_vivid`). Returns ``{"result", "files",
    "extra"}``.
    """
    from vantage.data.pairs import sample_seed
    from vantage.diffusion.samplers import get_sampler
    from vantage.sampling.inputs import fit_resolution
    from vantage.sampling.orbit import autoregressive_orbit
    from vantage.train.checkpoint import find_checkpoint, load_checkpoint

    t_start = time.perf_counter()
    protocol, out = load_protocol(protocol), Path(out)
    if steps is not None and steps < 1:
        raise EvaluationError(f"--steps must be >= 1, got {steps}")
    if resolution is not None:
        if resolution < 8:
            raise EvaluationError(f"--resolution must be >= 8 px, got {resolution}")
        protocol = dataclasses.replace(protocol, resolution=resolution)
    if views is not None:
        inputs_, targets_ = (list(v) for v in views)
        if not inputs_ or not targets_ or set(inputs_) & set(targets_):
            raise EvaluationError(f"views: need input and target view ids, none of them both, got {views}")
        protocol = dataclasses.replace(protocol, input_views=inputs_, target_views=targets_)
    method = load_checkpoint(checkpoint, device=device).eval()
    ckpt = Path(checkpoint)
    folder = ckpt if (ckpt / "model.safetensors").is_file() else (find_checkpoint(ckpt) or ckpt)
    cfg, res = method.config, protocol.resolution
    attach_guide(method, guide)
    sr, sr_folder = load_sr_stage(sr_checkpoint, method, res, device) if sr_checkpoint else (None, None)
    if cfg.resolution != res and sr is None:
        raise EvaluationError(f"protocol {protocol.label} evaluates at {res}x{res} px but the checkpoint's "
                              f"'{method.name}' model works at {cfg.resolution}x{cfg.resolution}; add --resolution "
                              f"{cfg.resolution} (recorded as an override) or use a protocol at {cfg.resolution} px")
    s = protocol.sampling
    sampler = s.sampler or cfg.default_sampler
    try:
        get_sampler(sampler)
    except KeyError as e:
        raise EvaluationError(f"protocol {protocol.label}: {str(e).strip(chr(39))}") from None
    n_steps = steps or s.steps or cfg.default_steps
    overrides = {k: v for k, v in (("objects", objects), ("steps", steps), ("guidance", guidance),
                                   ("resolution", resolution),
                                   ("input_views", None if views is None else list(views[0])),
                                   ("target_views", None if views is None else list(views[1]))) if v is not None}
    if guidance is None:
        guidance = cfg.default_guidance if s.guidance is None else s.guidance
    try:
        guidance_text, guidance_record = describe_guidance(method, guidance)
    except ValueError as e:
        raise EvaluationError(str(e)) from None
    choice = _strategy(method, protocol, guidance)
    strategy, strategy_name = choice.strategy, choice.name
    ds = open_protocol_dataset(protocol, data, res)
    picked = select_objects(ds, protocol, objects)
    view_list = (_read_view_list(protocol.input_views["view_list"])
                 if isinstance(protocol.input_views, dict) and "view_list" in protocol.input_views else None)
    out.mkdir(parents=True, exist_ok=True)
    _clear_generated(out, previous)
    seeds, k_samples = protocol.sample_seeds(), protocol.samples_per_target
    log(f"model: {method.name} from {folder} ({sum(p.numel() for p in method.parameters()) / 1e6:.2f}M parameters, "
        f"{res}x{res}), device {device}")
    if sr is not None:
        log(f"super-resolution: {sr_folder} ({cfg.resolution} -> {res} px, {sr.config.default_sampler} x "
            f"{sr.config.default_steps} steps)")
    log(f"protocol {protocol.label}: {len(picked)} object(s), {sampler} x {n_steps} steps, guidance {guidance_text}, "
        f"strategy {strategy_name}{'' if s.max_context is None else f' (max_context {s.max_context})'}, order "
        f"{s.order}, {'autoregressive' if s.autoregressive else 'fixed views'}, {k_samples} sample(s) per target")
    notes: list[str] = []
    if overrides:
        notes.append(f"protocol overridden ({', '.join(f'{k}={v}' for k, v in overrides.items())}): the numbers are "
                     f"not comparable with full {protocol.label} results")
    baseline: dict[str, Path] = {}  # the copy-the-nearest-input baseline of every target
    sources: dict[str, Path] = {}  # the source view of every target for the joint metrics: the first input
    skipped_objects, per_object_run, consistency, adjacent = [], [], [], []
    nfe, sr_nfe, sr_seconds, t_sampling = 0, 0, 0.0, 0.0
    bar = picked
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(picked, desc="objects", unit="object")
    for i in bar:
        name = ds.scene_name(i)
        ids = _view_ids(ds, i)
        inputs, targets, why = choose_views(protocol, name, ids, view_list)
        if why:
            skipped_objects.append({"object": name, "reason": why})
            continue
        pos = {v: p for p, v in enumerate(ids)}
        try:
            views = ds.load(i, views=[pos[v] for v in inputs + targets])
        except (DatasetError, IndexError) as e:
            raise EvaluationError(f"object '{name}': {e}") from None
        views = _on_background(fit_resolution(views, res, notes), protocol.background, notes)
        k_in = len(inputs)
        given, truth = views.select(list(range(k_in))), views.select(list(range(k_in, len(views))))
        obj_seeds = [sample_seed(sd, i) for sd in seeds]
        options = {**choice.options, "keep_first": k_in} if strategy_name == "genvs-pooled" else choice.options
        low = at_resolution(given, cfg.resolution) if sr is not None else given  # the base model's size
        cams = truth.cameras if sr is None else truth.cameras.resize(cfg.resolution, cfg.resolution)
        result = autoregressive_orbit(method, [low] * k_samples, cams,
                                      strategy=strategy, order=s.order, sampler=sampler, steps=n_steps,
                                      guidance=guidance, seed=obj_seeds, device=device,
                                      autoregressive=s.autoregressive, strategy_options=options)
        gen = result.images.cpu()
        if sr is not None:
            t_sr = time.perf_counter()
            gen, calls = super_resolve_targets(sr, gen, given, truth.cameras, obj_seeds)
            sr_nfe, sr_seconds = sr_nfe + calls, sr_seconds + time.perf_counter() - t_sr
        if not torch.isfinite(gen).all():
            bad = [targets[t] for t in range(len(targets)) if not torch.isfinite(gen[:, t]).all()]
            raise EvaluationError(f"the model produced NaN or infinite values for object '{name}', target view(s) "
                                  f"{bad[:8]}; nothing was scored")
        # what is scored is what is saved: a sampler's raw output may overshoot [-1, 1] (EDM samplers do not clip
        # x̂0), and the PNGs, the metrics and the 3D consistency fit all see the image clamped to the valid range
        gen = gen.clamp(-1, 1)
        nfe, t_sampling = nfe + result.nfe, t_sampling + result.seconds
        sub = _folder_name(name)
        in_paths = _save(given.images, out / "inputs" / sub, inputs)
        _save(truth.images, out / "gt" / sub, targets)
        for k in range(k_samples):
            _save(gen[k], out / "pred" / (f"sample-{k:02d}/" if k_samples > 1 else "") / sub, targets)
        near = nearest_inputs(given.cameras, truth.cameras)
        baseline.update({f"{sub}/{v:06d}": in_paths[j] for v, j in zip(targets, near)})
        sources.update({f"{sub}/{v:06d}": in_paths[0] for v in targets})
        per_object_run.append({"object": name, "folder": sub, "inputs": inputs, "targets": len(targets),
                               "seeds": obj_seeds, "nfe": result.nfe, "seconds": round(result.seconds, 3)})
        if protocol.metrics.consistency is not None:
            consistency.append(_consistency(name, given, truth, gen[0], protocol, device, notes))
        if protocol.metrics.adjacent_views:
            adjacent.append(_adjacent(name, truth, gen[0]))
    if not per_object_run:
        raise EvaluationError("no object could be evaluated; skipped: "
                              + "; ".join(x["reason"] for x in skipped_objects[:3]))
    if skipped_objects:
        notes.append(f"{len(skipped_objects)} object(s) skipped for missing views (listed in metrics.json)")
    joint = source_metrics(protocol.metrics.names)
    if joint and any(len(o["inputs"]) > 1 for o in per_object_run):
        notes.append(f"{', '.join(SET_METRIC_LABELS[m] for m in joint)}: each target is paired with the first input "
                     f"view of its object as its source")

    log(f"scoring {sum(p['targets'] for p in per_object_run) * k_samples} generated view(s)")
    scorer = Scorer(protocol.metrics, device)
    per_sample = []
    for k in range(k_samples):
        pred = out / "pred" / (f"sample-{k:02d}" if k_samples > 1 else "")
        per_sample.append(evaluate_folders(pred, out / "gt", settings=protocol.metrics, background=protocol.background,
                                           baseline=baseline, sources=sources, scorer=scorer, device=device,
                                           progress=progress))
    if k_samples == 1:
        result = per_sample[0]
    else:
        result = combine_samples(per_sample, out / "pred", out / "gt", protocol.metrics.average)
    result["notes"] = notes + result["notes"]
    extra: dict[str, Any] = {"run": {
        "checkpoint": str(folder), "method": method.name,
        "data": str(data) if data is not None else protocol.dataset.spec,
        "device": device, "sampler": sampler, "sampler_options": sampler_options_for(cfg, sampler), "steps": n_steps,
        **{"guide": None, **guidance_record}, "strategy": strategy_name, "order": s.order,
        "autoregressive": s.autoregressive,
        "samples_per_target": k_samples, "seeds": seeds,
        "overrides": overrides, "objects": per_object_run, "skipped_objects": skipped_objects, "nfe": nfe,
        "seconds_sampling": round(t_sampling, 3), "seconds_total": round(time.perf_counter() - t_start, 3)}}
    if sr is not None:
        extra["run"]["sr"] = {"checkpoint": str(sr_folder), "resolution": res, "base_resolution": cfg.resolution,
                              "sampler": sr.config.default_sampler, "steps": sr.config.default_steps,
                              "nfe_per_view": sr_nfe // max(len(per_object_run), 1),
                              "seconds": round(sr_seconds, 3)}  # not in seconds_sampling (the base model's)
    scored = [c for c in consistency if c is not None]
    if scored:
        mean = {m: sum(c[m] for c in scored) / len(scored) for m in ("psnr", "ssim", "ceiling_psnr", "ceiling_ssim")}
        extra["consistency"] = {"settings": dict(vars(protocol.metrics.consistency)),
                                "views": "the input view(s) and the generated targets (sample 0) of each object",
                                "mean": {"psnr": mean["psnr"], "ssim": mean["ssim"]},
                                "ceiling": {"psnr": mean["ceiling_psnr"], "ssim": mean["ceiling_ssim"]},
                                "per_object": scored}
    rows = [a for a in adjacent if a is not None]
    if rows:
        extra["adjacent_views"] = {
            "pairs": "each generated target with the target whose camera centre is nearest (unordered, once)",
            "views": "the generated targets (sample 0); ground_truth: the same pairs of true views",
            "reprojection": ("mean absolute colour difference ([0, 1] units) after reprojection through the true "
                             "depth, visible pixels only" if any("reprojection_mae" in r["generated"] for r in rows)
                             else "not computed: the data has no depth"),
            **_mean_adjacent(rows), "per_object": rows}
    elif protocol.metrics.adjacent_views:
        result["notes"].append("adjacent-view scores need at least 2 targets per object: not scored")
    files = write_report(out, result, settings=protocol.metrics, mode="checkpoint", protocol=protocol,
                         background=protocol.background, extra=extra)
    return {"result": result, "files": ["pred/", "gt/", "inputs/"] + files, "extra": extra}
