"""FID and KID from feature vectors, and reusable feature statistics (npz).

* FID (M. Heusel, H. Ramsauer, T. Unterthiner, B. Nessler, S. Hochreiter, "GANs Trained by a Two
  Time-Scale Update Rule Converge to a Local Nash Equilibrium", NeurIPS 2017): the Fréchet
  distance between Gaussians fitted to two feature sets,
  ``||mu1 - mu2||² + Tr(S1 + S2 - 2 (S1 S2)^½)``, means and unbiased (N-1) covariances in float64.
  ``(S1 S2)^½`` is ``scipy.linalg.sqrtm`` when scipy is installed (as pytorch-fid), else the
  trace is taken from the eigenvalues of the symmetric ``S1^½ S2 S1^½`` (same value, no scipy).
* KID (M. Bińkowski, D. J. Sutherland, M. Arbel, A. Gretton, "Demystifying MMD GANs", ICLR 2018):
  the unbiased estimator of the squared MMD with the cubic polynomial kernel
  ``k(x, y) = (x·y / d + 1)³``, averaged over random subsets (torch-fidelity's defaults: 100
  subsets of 1000, seed 2020; the subset size is clipped to the smaller set). Reported as
  (mean, std over subsets).
* Joint FID (N. Elata et al., "Novel View Synthesis with Pixel-Space Diffusion Models" (VIVID),
  arXiv 2411.07765, 2024): the FID of *pairs*. Each sample is the feature vector of a
  target image (generated, or the ground truth) concatenated with the feature vector of its source
  (conditioning) image, ``[f(target) ‖ f(source)]`` (2·D dimensions, 4096 for Inception), and the
  Fréchet distance is taken between the generated pairs and the ground-truth pairs, which share the
  same sources. Images are not pasted side by side: the two Inception vectors are concatenated, as
  the reference implementation does (``apple/ml-vivid``, ``calculate_metrics.py``: the
  ``joint_fid`` statistics accumulate ``torch.cat([features, src_features], -1)``). A model whose
  images look right but do not belong to their source keeps a low FID and gets a high joint FID.

* FD-DINOv2 (G. Stein et al., "Exposing flaws of generative model evaluation metrics and their
  unfair treatment of diffusion models", NeurIPS 2023): the same Fréchet distance on the 1024-d
  DINOv2 ViT-L/14 features of :class:`~vantage.eval.dinov2.DINOv2Features` (:func:`fd_dinov2`).
  VIVID's joint FD-DINOv2 (its ``joint_fd_dinov2`` statistics) pairs them as the joint FID pairs
  Inception features: ``[DINOv2(target) ‖ DINOv2(source)]``, 2048-d (:func:`joint_fd_dinov2`).

Features are ``(N, D)`` arrays or tensors (for FID/KID: the 2048-d pool3 features of
:class:`~vantage.eval.inception.FIDInceptionV3`). Both metrics are only comparable between numbers
computed with the same extractor, preprocessing and number of images (FID is biased: it grows
as N shrinks; KID is unbiased).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

__all__ = ["FID_EXTRACTOR", "FeatureStats", "fd_dinov2", "feature_stats", "fid", "frechet_distance", "joint_features",
           "joint_fd_dinov2", "joint_fid", "kid", "load_stats", "mmd2_unbiased", "polynomial_kernel", "save_stats"]

FID_EXTRACTOR = "pt_inception-2015-12-05/pool3/bilinear299"

ArrayLike = np.ndarray | torch.Tensor


def _as_features(x: ArrayLike, name: str) -> np.ndarray:
    a = x.detach().cpu().double().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, dtype=np.float64)
    if a.ndim != 2:
        raise ValueError(f"{name} must be a (N, D) feature array, got shape {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError(f"{name} holds non-finite values")
    return a


@dataclass
class FeatureStats:
    """Gaussian statistics of a feature set: ``mu`` ``(D,)``, ``sigma`` ``(D, D)`` (float64), ``n`` images.

    ``features`` ``(N, D)`` is kept when available (KID needs it); ``extractor`` names the feature
    extractor so that statistics from different networks are not compared by mistake.
    """

    mu: np.ndarray
    sigma: np.ndarray
    n: int | None
    features: np.ndarray | None = None
    extractor: str = FID_EXTRACTOR


def feature_stats(features: ArrayLike, *, keep_features: bool = True, extractor: str = FID_EXTRACTOR) -> FeatureStats:
    """Mean and unbiased covariance (``np.cov``, N-1) of ``(N, D)`` features, N >= 2."""
    f = _as_features(features, "features")
    if f.shape[0] < 2:
        raise ValueError(f"feature statistics need at least 2 samples, got {f.shape[0]}")
    return FeatureStats(mu=f.mean(axis=0), sigma=np.cov(f, rowvar=False), n=f.shape[0],
                        features=f.astype(np.float32) if keep_features else None, extractor=extractor)


def save_stats(path: str | Path, stats: FeatureStats, *, overwrite: bool = False) -> Path:
    """Write ``stats`` to an ``.npz`` (keys ``mu``, ``sigma``, ``n``, ``extractor``, and ``features`` if kept).

    The ``mu``/``sigma`` keys are those of pytorch-fid's statistics files. Refuses to replace an
    existing file unless ``overwrite``; written to a temporary file first, then renamed.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"statistics file {path} already exists; pass overwrite=True to replace it")
    arrays: dict[str, np.ndarray] = {
        "mu": np.asarray(stats.mu, np.float64), "sigma": np.asarray(stats.sigma, np.float64),
        "n": np.asarray(-1 if stats.n is None else stats.n, np.int64), "extractor": np.asarray(stats.extractor)}
    if stats.features is not None:
        arrays["features"] = np.asarray(stats.features)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        np.savez(fh, **arrays)
    os.replace(tmp, path)
    return path


def load_stats(path: str | Path) -> FeatureStats:
    """Read statistics written by :func:`save_stats` (or a pytorch-fid ``.npz`` with ``mu`` and ``sigma``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"statistics file {path} not found")
    with np.load(path, allow_pickle=False) as z:
        missing = [k for k in ("mu", "sigma") if k not in z.files]
        if missing:
            raise ValueError(f"statistics file {path} lacks {missing} (has {z.files}); "
                             "expected mu (D,) and sigma (D, D)")
        mu, sigma = z["mu"].astype(np.float64), z["sigma"].astype(np.float64)
        n = int(z["n"]) if "n" in z.files else None
        features = z["features"] if "features" in z.files else None
        extractor = str(z["extractor"]) if "extractor" in z.files else ""
    d = mu.shape[0] if mu.ndim == 1 else -1
    if mu.ndim != 1 or sigma.shape != (d, d) or (features is not None and features.shape[1:] != (d,)):
        got = f"mu {mu.shape}, sigma {sigma.shape}" + (f", features {features.shape}" if features is not None else "")
        raise ValueError(f"statistics file {path}: expected mu (D,), sigma (D, D), features (N, D); got {got}")
    return FeatureStats(mu=mu, sigma=sigma, n=None if n is None or n < 0 else n, features=features, extractor=extractor)


def _sqrt_psd(a: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((a + a.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def _trace_sqrt_product(s1: np.ndarray, s2: np.ndarray, method: str) -> float:
    """``Tr((s1 s2)^½)`` for symmetric PSD ``s1``, ``s2``."""
    if method == "auto":
        try:
            import scipy.linalg  # noqa: F401
            method = "scipy"
        except ImportError:
            method = "eigh"
    if method == "scipy":
        import scipy.linalg

        covmean = scipy.linalg.sqrtm(s1 @ s2)
        if np.iscomplexobj(covmean):
            imag = np.abs(np.diagonal(covmean).imag).max()
            if imag > 1e-3:
                raise ValueError(f"sqrtm(S1 S2) has a large imaginary component ({imag:.3g}): "
                                 "covariances too ill-conditioned (too few samples?)")
            covmean = covmean.real
        return float(np.trace(covmean))
    if method == "eigh":  # S1 S2 is similar to S1^½ S2 S1^½ (symmetric PSD): same eigenvalues
        r = _sqrt_psd(s1)
        w = np.linalg.eigvalsh(r @ s2 @ r)
        return float(np.sqrt(np.clip(w, 0, None)).sum())
    raise ValueError(f"method must be 'auto', 'scipy' or 'eigh', got '{method}'")


def frechet_distance(mu1: ArrayLike, sigma1: ArrayLike, mu2: ArrayLike, sigma2: ArrayLike, *, eps: float = 1e-6,
                     method: str = "auto") -> float:
    """Squared Fréchet (2-Wasserstein) distance between N(mu1, sigma1) and N(mu2, sigma2).

    ``mu*``: ``(D,)``; ``sigma*``: ``(D, D)`` symmetric PSD. When the matrix square root is not
    finite (singular product), ``eps·I`` is added to both covariances, as pytorch-fid does.
    """
    m1, m2 = (np.atleast_1d(np.asarray(m, np.float64)) for m in (mu1, mu2))
    s1, s2 = (np.atleast_2d(np.asarray(s, np.float64)) for s in (sigma1, sigma2))
    if m1.shape != m2.shape or s1.shape != s2.shape or s1.shape != (m1.shape[0],) * 2:
        raise ValueError(f"Fréchet distance needs mu (D,) and sigma (D, D) of equal D; got mu {m1.shape} / "
                         f"{m2.shape}, sigma {s1.shape} / {s2.shape}")
    tr = _trace_sqrt_product(s1, s2, method)
    if not math.isfinite(tr):
        off = np.eye(s1.shape[0]) * eps
        tr = _trace_sqrt_product(s1 + off, s2 + off, method)
    diff = m1 - m2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * tr)


def _stats(x: FeatureStats | ArrayLike, name: str) -> FeatureStats:
    return x if isinstance(x, FeatureStats) else feature_stats(_as_features(x, name), keep_features=False)


def fid(a: FeatureStats | ArrayLike, b: FeatureStats | ArrayLike, *, method: str = "auto") -> float:
    """FID between two feature sets ``(N, D)`` or their :class:`FeatureStats` (e.g. from :func:`load_stats`)."""
    sa, sb = _stats(a, "features a"), _stats(b, "features b")
    if sa.extractor and sb.extractor and sa.extractor != sb.extractor:
        raise ValueError(f"statistics come from different feature extractors ('{sa.extractor}' vs '{sb.extractor}')")
    return frechet_distance(sa.mu, sa.sigma, sb.mu, sb.sigma, method=method)


def fd_dinov2(a: FeatureStats | ArrayLike, b: FeatureStats | ArrayLike, *, method: str = "auto") -> float:
    """FD-DINOv2 between two sets of DINOv2 features ``(N, 1024)`` or their :class:`FeatureStats`.

    The computation is :func:`fid`'s (means, unbiased covariances in float64, the same matrix square
    root); only the features differ (:class:`~vantage.eval.dinov2.DINOv2Features`). Statistics saved
    for reuse should name their extractor: ``feature_stats(f, extractor=FD_DINOV2_EXTRACTOR)``
    (:data:`vantage.eval.dinov2.FD_DINOV2_EXTRACTOR`), so that they are not compared with Inception ones.
    """
    return fid(a, b, method=method)


def joint_features(target: ArrayLike, source: ArrayLike) -> np.ndarray:
    """``[target ‖ source]``: row ``i`` of ``target`` ``(N, D)`` followed by row ``i`` of ``source`` ``(N, D_s)``.

    The sample of the joint FID (module docstring): one (target image, source image) pair per row,
    ``(N, D + D_s)`` float64.
    """
    t, s = _as_features(target, "target features"), _as_features(source, "source features")
    if t.shape[0] != s.shape[0]:
        raise ValueError(f"joint features pair row i of the targets with row i of the sources: got {t.shape[0]} "
                         f"target and {s.shape[0]} source feature vectors")
    return np.concatenate([t, s], axis=1)


def joint_fid(generated: ArrayLike, reference: ArrayLike, source: ArrayLike, *,
              reference_source: ArrayLike | None = None, method: str = "auto") -> float:
    """Joint FID (VIVID, module docstring): FID between ``[generated ‖ source]`` and ``[reference ‖ source]``.

    ``generated`` ``(N, D)``: features of the generated images; ``source`` ``(N, D_s)``: features of
    the source (conditioning) image of each, row for row. ``reference`` ``(M, D)``: features of the
    ground-truth targets, whose sources are ``reference_source`` ``(M, D_s)`` (default: ``source``,
    which needs M = N: the usual case, where the truth of target ``i`` has the same source as the
    generated image ``i``). Identical sets give 0 (up to the matrix square root's round-off); the
    same images paired with the wrong sources give more, while their plain FID does not change.
    """
    return _joint_distance(generated, reference, source, reference_source, method, "joint FID")


def _joint_distance(generated: ArrayLike, reference: ArrayLike, source: ArrayLike,
                    reference_source: ArrayLike | None, method: str, name: str) -> float:
    """:func:`joint_fid`'s computation; ``name`` is the metric its errors speak of."""
    gen, ref = _as_features(generated, "generated features"), _as_features(reference, "reference features")
    if gen.shape[1] != ref.shape[1]:
        raise ValueError(f"generated and reference features have different dimensions: {gen.shape[1]} and "
                         f"{ref.shape[1]}")
    if reference_source is None and ref.shape[0] != gen.shape[0]:
        raise ValueError(f"reference_source is needed when the reference set ({ref.shape[0]} images) is not paired "
                         f"with the same sources as the generated set ({gen.shape[0]} images)")
    src = _as_features(source, "source features")
    ref_src = src if reference_source is None else _as_features(reference_source, "reference source features")
    if src.shape[1] != ref_src.shape[1]:
        raise ValueError(f"source and reference source features have different dimensions: {src.shape[1]} and "
                         f"{ref_src.shape[1]}")
    a, b = joint_features(gen, src), joint_features(ref, ref_src)
    if a.shape[0] < 2 or b.shape[0] < 2:
        raise ValueError(f"{name} needs at least 2 pairs per set, got {a.shape[0]} and {b.shape[0]}")
    return fid(a, b, method=method)


def joint_fd_dinov2(generated: ArrayLike, reference: ArrayLike, source: ArrayLike, *,
                    reference_source: ArrayLike | None = None, method: str = "auto") -> float:
    """Joint FD-DINOv2 (VIVID, module docstring): :func:`joint_fid` on DINOv2 features ``(N, 1024)``.

    Each row of ``generated`` / ``reference`` is paired with its source's row of ``source`` /
    ``reference_source`` (default ``source``), ``[DINOv2(target) ‖ DINOv2(source)]`` (2048-d), and the
    Fréchet distance of :func:`fd_dinov2` is taken between the two sets of pairs. The computation,
    the arguments and the errors are :func:`joint_fid`'s; only the features differ
    (:class:`~vantage.eval.dinov2.DINOv2Features`).
    """
    return _joint_distance(generated, reference, source, reference_source, method, "joint FD-DINOv2")


def polynomial_kernel(x: np.ndarray, y: np.ndarray, degree: int = 3, gamma: float | None = None,
                      coef0: float = 1.0) -> np.ndarray:
    """``(gamma · x yᵀ + coef0) ** degree`` for ``x`` ``(N, D)``, ``y`` ``(M, D)`` -> ``(N, M)``; gamma: 1/D."""
    g = 1.0 / x.shape[1] if gamma is None else gamma
    return (x @ y.T * g + coef0) ** degree


def mmd2_unbiased(x: ArrayLike, y: ArrayLike, degree: int = 3, gamma: float | None = None, coef0: float = 1.0) -> float:
    """Unbiased MMD² estimate between samples ``x`` ``(m, D)`` and ``y`` ``(n, D)`` (m, n >= 2), polynomial kernel.

    ``Σ_{i≠j} k(x_i, x_j) / (m(m-1)) + Σ_{i≠j} k(y_i, y_j) / (n(n-1)) - 2 Σ_{i,j} k(x_i, y_j) / (mn)``
    (Gretton et al. 2012, Lemma 6; Bińkowski et al. 2018, Eq. 3 with m = n).
    """
    fx, fy = _as_features(x, "x"), _as_features(y, "y")
    m, n = fx.shape[0], fy.shape[0]
    if m < 2 or n < 2:
        raise ValueError(f"the unbiased MMD needs at least 2 samples per set, got {m} and {n}")
    kxx, kyy = polynomial_kernel(fx, fx, degree, gamma, coef0), polynomial_kernel(fy, fy, degree, gamma, coef0)
    kxy = polynomial_kernel(fx, fy, degree, gamma, coef0)
    return float((kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
                 - 2 * kxy.sum() / (m * n))


def kid(a: FeatureStats | ArrayLike, b: FeatureStats | ArrayLike, *, subset_size: int = 1000, num_subsets: int = 100,
        degree: int = 3, gamma: float | None = None, coef0: float = 1.0, seed: int = 2020) -> tuple[float, float]:
    """KID (mean, std over subsets) between feature sets ``(N_a, D)`` and ``(N_b, D)``.

    Each subset draws ``min(subset_size, N_a, N_b)`` features from each set without replacement
    (``np.random.RandomState(seed)``, first from ``a`` then from ``b``, as torch-fidelity does) and
    computes :func:`mmd2_unbiased`. ``a``/``b`` may be :class:`FeatureStats` holding ``features``.
    KID is commonly reported ×10³.
    """
    if isinstance(a, FeatureStats) and isinstance(b, FeatureStats) and a.extractor and b.extractor \
            and a.extractor != b.extractor:
        raise ValueError(f"features come from different feature extractors ('{a.extractor}' vs '{b.extractor}')")
    fa, fb = (_kid_features(v, name) for v, name in ((a, "a"), (b, "b")))
    if fa.shape[1] != fb.shape[1]:
        raise ValueError(f"feature dimensions differ: {fa.shape[1]} and {fb.shape[1]}")
    m = min(subset_size, fa.shape[0], fb.shape[0])
    if m < 2:
        raise ValueError(f"KID needs at least 2 features per set, got {fa.shape[0]} and {fb.shape[0]}")
    rng = np.random.RandomState(seed)
    vals = np.empty(num_subsets)
    for i in range(num_subsets):
        xa = fa[rng.choice(fa.shape[0], m, replace=False)]
        xb = fb[rng.choice(fb.shape[0], m, replace=False)]
        vals[i] = mmd2_unbiased(xa, xb, degree, gamma, coef0)
    return float(vals.mean()), float(vals.std())


def _kid_features(x: FeatureStats | ArrayLike, name: str) -> np.ndarray:
    if isinstance(x, FeatureStats):
        if x.features is None:
            raise ValueError(f"KID needs the features of set {name}, not only mean/covariance: keep them "
                             "(feature_stats(..., keep_features=True)) when saving the statistics")
        return _as_features(x.features, f"features of set {name}")
    return _as_features(x, f"features of set {name}")
