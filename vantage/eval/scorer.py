"""Scoring image batches: per-image metrics, and the features behind the set metrics (:class:`Scorer`).

:class:`Scorer` takes ``(B, 3, H, W)`` batches of predictions and their truths in [-1, 1] (and, for
the joint metrics, the source view of each target) and returns one record per image; the set
metrics are computed at the end from the features it has collected. :mod:`vantage.eval.evaluate`
feeds it the images of two folders; :mod:`vantage.eval.evaluate_model` reuses one scorer for every
sample of a checkpoint evaluation.

* Per image (:data:`PER_IMAGE_METRICS`): PSNR (peak ``psnr_data_range``, identical images count as
  :data:`PSNR_CAP` dB so that means stay finite), SSIM (``"gaussian"`` 11x11 σ 1.5 or
  ``"uniform7"``), LPIPS (``lpips_net``).
* Over the whole set (:data:`SET_METRICS`), from the features of one network per family:
  Inception-v3 (:data:`INCEPTION_METRICS`: FID, KID, the joint FID ``jfid``) and DINOv2 ViT-L/14
  (:data:`DINOV2_METRICS`: FD-DINOv2, the joint FD-DINOv2 ``jfd_dinov2``). The joint metrics
  (:data:`SOURCE_METRICS`, VIVID's: :func:`vantage.eval.fid.joint_fid`,
  :func:`vantage.eval.fid.joint_fd_dinov2`) pair each target with its source (input) view, so they
  need the source images too.

A network is built once, when one of its metrics is asked for; a missing weight file puts the
metrics that need it in ``skipped`` (the message names the file) instead of failing.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import Tensor

from vantage.eval.metrics import psnr, ssim, to_unit
from vantage.eval.protocol import MetricSettings

__all__ = ["EvaluationError", "Scorer", "PER_IMAGE_METRICS", "SET_METRICS", "INCEPTION_METRICS", "DINOV2_METRICS",
           "SOURCE_METRICS", "SET_METRIC_LABELS", "PSNR_CAP", "source_metrics", "describe_metrics"]

PER_IMAGE_METRICS = ("psnr", "ssim", "lpips")
INCEPTION_METRICS = ("fid", "kid", "jfid")  # over the whole set, from Inception features
DINOV2_METRICS = ("fd_dinov2", "jfd_dinov2")  # over the whole set, from DINOv2 ViT-L/14 features
SET_METRICS = INCEPTION_METRICS + DINOV2_METRICS
SOURCE_METRICS = ("jfid", "jfd_dinov2")  # joint metrics: each target paired with its source (input) view
# how reports and messages name the set metrics (keys of ``set_metrics``; KID is reported as its mean)
SET_METRIC_LABELS = {"fid": "FID", "kid_mean": "KID", "jfid": "joint FID", "fd_dinov2": "FD-DINOv2",
                     "jfd_dinov2": "joint FD-DINOv2"}
PSNR_CAP = 100.0
_FAMILIES = {"inception": INCEPTION_METRICS, "dinov2": DINOV2_METRICS}  # Scorer attribute -> its metrics
_SHOW = 5  # names listed in an error before "... (N in all)"


class EvaluationError(ValueError):
    """Inputs that cannot be scored (missing, extra or mismatched images, NaN); the message names them."""


def _listing(names: Sequence[str]) -> str:
    more = f", ... ({len(names)} in all)" if len(names) > _SHOW else ""
    return ", ".join(names[:_SHOW]) + more


def source_metrics(names: Iterable[str]) -> tuple[str, ...]:
    """The metrics among ``names`` that pair each target with its source (input) view (:data:`SOURCE_METRICS`)."""
    names = tuple(names)
    return tuple(m for m in SOURCE_METRICS if m in names)


def describe_metrics(metrics: Sequence[str]) -> str:
    """``"the joint FID (jfid)"``, ``"the joint FID (jfid) and the joint FD-DINOv2 (jfd_dinov2)"``: for messages."""
    return " and ".join(f"the {SET_METRIC_LABELS.get(m, m)} ({m})" for m in metrics)


def _verb(metrics: Sequence[str], one: str, several: str) -> str:
    return one if len(metrics) == 1 else several


def _no_features() -> dict[str, dict[str, list[Tensor]]]:
    """Empty feature lists per network family: ``pred``, ``gt`` and ``source`` (the joint metrics' sources)."""
    return {family: {"pred": [], "gt": [], "source": []} for family in _FAMILIES}


class Scorer:
    """Per-image metrics of ``(B, 3, H, W)`` batches in [-1, 1], plus the features of the set metrics.

    Inception features for FID/KID/joint FID, DINOv2 features for FD-DINOv2/joint FD-DINOv2. The
    LPIPS, Inception and DINOv2 networks are built once, when their metrics are asked for; a missing
    weight file puts the metrics that need it in ``skipped`` (with the message naming the file)
    instead of failing. Features accumulate over :meth:`score` calls until :meth:`reset_features`.
    """

    def __init__(self, settings: MetricSettings | None = None, device: str | torch.device = "cpu") -> None:
        from vantage.eval.weights import WeightsUnavailable

        settings = settings or MetricSettings()
        self.settings, self.device = settings, torch.device(device)
        self.skipped: dict[str, str] = {}
        self.notes: list[str] = []
        self.lpips = self.inception = self.dinov2 = None
        self.features = _no_features()
        if "lpips" in settings.names:
            from vantage.eval.lpips import LPIPS

            try:
                self.lpips = LPIPS(settings.lpips_net).to(self.device)
            except WeightsUnavailable as e:
                self.skipped["lpips"] = str(e)
        for family, metrics in _FAMILIES.items():
            if not set(metrics) & set(settings.names):
                continue
            try:
                if family == "inception":  # imported here: tests replace the classes in their modules
                    from vantage.eval.inception import FIDInceptionV3

                    self.inception = FIDInceptionV3().to(self.device)
                else:
                    from vantage.eval.dinov2 import DINOv2Features

                    self.dinov2 = DINOv2Features().to(self.device)
            except WeightsUnavailable as e:
                self.skipped.update({m: str(e) for m in metrics if m in settings.names})

    def reset_features(self) -> None:
        """Forget the features collected so far (the set metrics of the next images only: a shared scorer)."""
        self.features = _no_features()

    def _note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)

    def _networks(self) -> dict[str, torch.nn.Module]:
        """The loaded feature networks, by family."""
        return {family: net for family in _FAMILIES if (net := getattr(self, family)) is not None}

    def joint_metrics(self) -> tuple[str, ...]:
        """The joint metrics asked for whose network is loaded: those that need ``source`` in :meth:`score`."""
        nets = self._networks()
        return tuple(m for m in source_metrics(self.settings.names)
                     if any(m in metrics for family, metrics in _FAMILIES.items() if family in nets))

    @torch.no_grad()
    def score(self, names: Sequence[str], pred: Tensor, gt: Tensor, *, features: bool = True,
              source: Tensor | None = None) -> list[dict[str, Any]]:
        """One record per image: ``{"image", "object", "psnr", "ssim", "lpips"}`` (``None`` when not computed).

        ``source`` ``(B, 3, H', W')`` in [-1, 1]: the source (input) view of each target, for the joint
        metrics; needed with ``features`` when ``jfid`` or ``jfd_dinov2`` is asked for and its network is
        loaded (:meth:`joint_metrics`).
        """
        if pred.shape != gt.shape or pred.ndim != 4 or pred.shape[1] != 3:
            raise EvaluationError(f"prediction and truth batches must both be (B, 3, H, W), got {tuple(pred.shape)} "
                                  f"and {tuple(gt.shape)} for {_listing(list(names))}")
        joint = self.joint_metrics() if features else ()
        if joint and source is None:
            raise EvaluationError(f"{describe_metrics(joint)} {_verb(joint, 'needs', 'need')} the source (input) view "
                                  f"of every target; none was given for {_listing(list(names))}")
        if source is not None and (source.ndim != 4 or source.shape[:2] != pred.shape[:2]):
            raise EvaluationError(f"source batch must be (B, 3, H', W') with B = {pred.shape[0]}, got "
                                  f"{tuple(source.shape)} for {_listing(list(names))}")
        checks = (("prediction", pred), ("ground truth", gt)) + ((("source", source),) if source is not None else ())
        for which, t in checks:
            bad = [n for n, ok in zip(names, torch.isfinite(t).flatten(1).all(1).tolist()) if not ok]
            if bad:
                raise EvaluationError(f"{which} image(s) with NaN or infinite values: {_listing(bad)}")
        s = self.settings
        a, b = to_unit(pred.float()), to_unit(gt.float())
        h, w = pred.shape[-2:]
        cols: dict[str, list[Any]] = {m: [None] * len(names) for m in PER_IMAGE_METRICS}
        if "psnr" in s.names:
            cols["psnr"] = psnr(a, b, s.psnr_data_range).clamp(max=PSNR_CAP).tolist()
        if "ssim" in s.names:
            window = 11 if s.ssim_window == "gaussian" else 7
            if min(h, w) >= window:
                kw = {"window": "gaussian"} if s.ssim_window == "gaussian" else {"window": "uniform", "size": 7}
                cols["ssim"] = ssim(a, b, **kw).tolist()
            else:
                self._note(f"SSIM not computed for {w}x{h} images (smaller than the {window}x{window} window)")
        if self.lpips is not None:
            need = 16 if s.lpips_net == "vgg" else 32
            if min(h, w) >= need:
                cols["lpips"] = self.lpips(self._on_device(pred), self._on_device(gt)).cpu().tolist()
            else:
                self._note(f"LPIPS-{s.lpips_net} not computed for {w}x{h} images (needs at least {need}x{need})")
        if features:
            for family, net in self._networks().items():
                store = self.features[family]
                store["pred"].append(net(self._on_device(pred)).cpu())
                store["gt"].append(net(self._on_device(gt)).cpu())
                if any(m in joint for m in _FAMILIES[family]):
                    store["source"].append(net(self._on_device(source)).cpu())
        return [{"image": n, "object": n.rpartition("/")[0], **{m: cols[m][i] for m in PER_IMAGE_METRICS}}
                for i, n in enumerate(names)]

    def _on_device(self, x: Tensor) -> Tensor:
        return x.to(self.device).float().clamp(-1, 1)

    def set_metrics(self) -> dict[str, float]:
        """The set metrics asked for, between all predictions and truths scored with ``features=True``.

        Keys: ``fid``, ``kid_mean``/``kid_std``, ``jfid``, ``fd_dinov2``, ``jfd_dinov2`` (those asked for
        whose network is loaded) and ``set_size``. The joint metrics pair each image's features with its
        source's (:func:`vantage.eval.fid.joint_fid`, :func:`vantage.eval.fid.joint_fd_dinov2`).
        """
        from vantage.eval.fid import fd_dinov2, fid, joint_fd_dinov2, joint_fid, kid

        stored = {family: f for family, f in self.features.items() if f["pred"]}
        n = max((sum(len(t) for t in f["pred"]) for f in stored.values()), default=0)
        if n == 0:
            return {}
        if n < 2:
            asked = [SET_METRIC_LABELS.get(m, m.upper()) for m in SET_METRICS if m in self.settings.names]
            self._note(f"{'/'.join(asked)} need at least 2 images: not computed")
            return {}
        names, out = self.settings.names, {}

        def arrays(family: str, *keys: str) -> list:
            return [torch.cat(stored[family][k]).double().numpy() for k in keys]

        if "inception" in stored:
            fp, fg = arrays("inception", "pred", "gt")
            if "fid" in names:
                out["fid"] = fid(fp, fg)
            if "kid" in names:
                out["kid_mean"], out["kid_std"] = kid(fp, fg)
            if "jfid" in names:
                out["jfid"] = joint_fid(fp, fg, *arrays("inception", "source"))
        if "dinov2" in stored:
            dp, dg = arrays("dinov2", "pred", "gt")
            if "fd_dinov2" in names:
                out["fd_dinov2"] = fd_dinov2(dp, dg)
            if "jfd_dinov2" in names:
                out["jfd_dinov2"] = joint_fd_dinov2(dp, dg, *arrays("dinov2", "source"))
        out["set_size"] = n
        return out
