"""GeNVS's sampling side (Chan et al. 2023, autoregressive sampling), split from :mod:`vantage.methods.genvs`:

* :class:`GeNVSDenoiser`: ``D(x (B, 3, H, W), σ, cond) -> x̂0`` for ``cond`` a :class:`ViewCond` (one input
  view per sample, as the strategies of :mod:`vantage.sampling` give) or a :class:`ViewSetCond` (a set per
  sample). The feature image of a (view set, target) pair does not change across denoising steps, so it is
  rendered once and kept in a small cache keyed by the *content* of the conditioning (images, valid mask,
  cameras, target cameras; compared with ``torch.equal`` against stored copies, so a buffer modified in place
  never gives a stale hit). A sampling loop therefore runs the encoder and the renderer once.
* :class:`VolumeCache`: the encoded frustum volumes, cached per *sample* by the content of its valid input views
  (images, cameras), separately from the per-target render: fixed input views with several targets (sampling
  without the autoregressive set, ``write_field_renders``, evaluation with fixed inputs, a batch holding the same
  set several times) run the encoder once per distinct set; only the cheap render runs per target.
* :class:`GeNVSPooled` (strategy ``"genvs-pooled"``): the paper's autoregressive conditioning: every denoiser
  call conditions on the first view of the set (the input), up to ``max_views − 2`` earlier views drawn at random
  once per strategy (per orbit step) and the latest view, each with its own frustum volume, mean-pooled in the
  field. With :func:`vantage.sampling.autoregressive_orbit` the set holds the inputs first and the generated
  views in generation order, so "first" is the input and "last" the latest generated view; ``keep_first=K``
  keeps ``K`` input views, at most ``max_views − 1`` of them so that the latest view always stays (with more
  inputs than that, a warning says which are kept).
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from vantage.cameras import Cameras
from vantage.data.views import ViewSet
from vantage.diffusion.denoisers import Denoiser
from vantage.diffusion.noise import GeneratorLike, check_generator
from vantage.methods.base import ViewCond
from vantage.nn.frustum import FrustumVolumes
from vantage.sampling.strategies import Strategy, ViewSetCond, register_strategy

if TYPE_CHECKING:
    from vantage.methods.genvs import GeNVS

__all__ = ["as_view_set", "ContentCache", "VolumeCache", "GeNVSDenoiser", "GeNVSPooled"]


def as_view_set(cond: Any) -> tuple[ViewSet, Cameras, Tensor | None]:
    """``(views (B, N), target (B,), drop (B,) or None)`` of a :class:`ViewCond` (N = 1) or :class:`ViewSetCond`."""
    if isinstance(cond, ViewSetCond):
        return cond.views, cond.target, None
    if isinstance(cond, ViewCond):
        B = cond.images.shape[0]
        valid = torch.ones(B, 1, dtype=torch.bool, device=cond.images.device)
        views = ViewSet(images=cond.images[:, None], cameras=cond.source.reshape(B, 1), valid=valid,
                        view_ids=torch.zeros(B, 1, dtype=torch.long, device=valid.device))
        return views, cond.target, cond.drop
    raise TypeError(f"the GeNVS denoiser needs cond: ViewCond or ViewSetCond (posed input views and the target "
                    f"camera), got {type(cond).__name__}")


class ContentCache:
    """A small LRU map from tuples of tensors (compared by value) to values."""

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError(f"cache size must be >= 1, got {size}")
        self.size = size
        self.entries: list[tuple[tuple[Tensor, ...], Any]] = []

    @staticmethod
    def _same(a: tuple[Tensor, ...], b: tuple[Tensor, ...]) -> bool:
        return len(a) == len(b) and all(x.shape == y.shape and x.dtype == y.dtype and x.device == y.device
                                        and torch.equal(x, y) for x, y in zip(a, b))

    def get(self, key: tuple[Tensor, ...]) -> Any:
        for i, (k, v) in enumerate(self.entries):
            if self._same(k, key):
                self.entries.append(self.entries.pop(i))
                return v
        return None

    def put(self, key: tuple[Tensor, ...], value: Any) -> None:
        self.entries.append((tuple(t.detach().clone() for t in key), value))
        del self.entries[:-self.size]

    def clear(self) -> None:
        self.entries.clear()


class VolumeCache:
    """Frustum volumes of view sets, one entry per sample, keyed by the content of its valid input views.

    :meth:`volumes` ``(method, views (B, N)) -> FrustumVolumes`` (``B`` samples, the rows of the valid views)
    looks every sample up by ``(images (n, 3, H, W), c2w (n, 4, 4), K (n, 3, 3), (W, H))`` of its ``n`` valid
    views (padding slots do not matter), encodes the distinct sets it lacks in one encoder call, and keeps at
    most ``size`` sets (LRU). When every sample is new and distinct the whole batch is encoded in one call, as
    :meth:`GeNVS.encode` would, so the volumes are the same. ``encodes`` counts encoder calls. Like the render
    cache, it assumes fixed weights.
    """

    def __init__(self, size: int) -> None:
        self.cache = ContentCache(size)
        self.encodes = 0

    @staticmethod
    def key(views: ViewSet, b: int) -> tuple[Tensor, ...]:
        """The content key of sample ``b`` of ``views``."""
        v = views.valid[b].to(views.images.device)
        cams = views.cameras
        vc = v.to(cams.c2w.device)
        return (views.images[b][v], cams.c2w[b][vc], cams.K[b][vc], torch.tensor([cams.width, cams.height]))

    def volumes(self, method: GeNVS, views: ViewSet) -> FrustumVolumes:
        B = views.batch_size
        keys = [self.key(views, b) for b in range(B)]
        parts = [self.cache.get(k) for k in keys]
        missing = [b for b in range(B) if parts[b] is None]
        if not missing:
            return FrustumVolumes.cat(parts)
        firsts: list[int] = []  # the first sample of every distinct missing set
        owner: dict[int, int] = {}
        for b in missing:
            owner[b] = next((f for f in firsts if ContentCache._same(keys[f], keys[b])), b)
            if owner[b] == b:
                firsts.append(b)
        whole = len(firsts) == B
        vols = method.encode(views if whole else views.index(firsts))
        self.encodes += 1
        new = {}
        for j, f in enumerate(firsts):
            new[f] = vols.samples([j]) if len(firsts) > 1 else vols
            self.cache.put(keys[f], new[f])
        if whole:
            return vols
        for b in missing:
            parts[b] = new[owner[b]]
        return FrustumVolumes.cat(parts)

    def clear(self) -> None:
        self.cache.clear()


class GeNVSDenoiser(Denoiser):
    """``D(x, σ, cond: ViewCond | ViewSetCond) -> x̂0`` of a :class:`~vantage.methods.genvs.GeNVS` (σ-space, EDM).

    ``guidance`` ``w``: classifier-free guidance, ``D_u + (1 + w)(D_c − D_u)`` (= ``(1 + w)ε_c − wε_u``), the
    unconditional branch (zero feature image) in the same batched network call. ``ViewCond.drop`` zeroes the
    feature image of those rows. ``renders`` counts cache misses (renderer runs); :meth:`prepare`
    renders (or fetches) the conditioning explicitly. The frustum volumes come from ``volume_cache``
    (:class:`VolumeCache`, per view set, ``cache_size`` sets), so a new target with known input views renders
    without encoding. The caches assume the model's weights do not change while the denoiser is used (build a
    new one after training steps).
    """

    accepts_view_sets = True

    def __init__(self, method: GeNVS, guidance: float = 0.0, *, cache_size: int = 8) -> None:
        super().__init__()
        self.method = method
        self.guidance = float(guidance)
        self.sigma_min, self.sigma_max = float(method.config.sigma_min), float(method.config.sigma_max)
        self.cache = ContentCache(cache_size)
        self.volume_cache = VolumeCache(cache_size)
        self.renders = 0

    def prepare(self, cond: Any) -> Tensor:
        """``(B, F, H, W)`` rendered feature image of ``cond`` (before ``drop``), from the cache when possible."""
        views, target, _ = as_view_set(cond)
        key = (views.images, views.valid, views.cameras.c2w, views.cameras.K, target.c2w, target.K,
               torch.tensor([views.cameras.width, views.cameras.height, target.width, target.height]))
        hit = self.cache.get(key)
        if hit is not None:
            return hit
        self.method.check_inputs(views, target)
        vols = self.volume_cache.volumes(self.method, views)
        features = self.method.render(views, target, volumes=vols, check=False)["features"]
        self.renders += 1
        self.cache.put(key, features)
        return features

    def denoise(self, x: Tensor, sigma: Tensor, cond: Any) -> Tensor:
        _, _, drop = as_view_set(cond)
        feats = self.prepare(cond).to(x.device)
        if feats.shape[0] != x.shape[0]:
            raise ValueError(f"cond has {feats.shape[0]} samples but x has {x.shape[0]}")
        if drop is not None:
            feats = feats * (~drop.to(x.device)).to(feats.dtype)[:, None, None, None]
        edm = self.method.edm_denoiser()
        if not self.guidance:
            return edm(x, sigma, feats)
        both = edm(torch.cat([x, x]), torch.cat([sigma, sigma]), torch.cat([feats, torch.zeros_like(feats)]))
        d_c, d_u = both.chunk(2)
        return d_u + (1.0 + self.guidance) * (d_c - d_u)


@register_strategy
class GeNVSPooled(Strategy):
    """Strategy ``"genvs-pooled"``: condition on a pooled subset of the set (module docstring).

    Args:
        denoiser: a GeNVS denoiser (:meth:`GeNVS.single_view_denoiser`), which takes view sets itself.
        generator: ``None``, one generator, or one per sample (the orbit's); the random earlier views are drawn
            from it at the first call.
        max_views: views per sample (default: the model's ``sample_max_views``; ``vantage sample --max-cond-views``).
        keep_first: the first ``keep_first`` valid views are always kept (the inputs of an orbit), but at most
            ``max_views − 1`` of them when ``max_views >= 2``: the latest view is always kept too (a warning says
            so when the cap applies).

    ``last_index`` holds the ``(B, M)`` chosen positions (``-1``: padding) and ``last_cond`` the pooled
    :class:`ViewSetCond` of the latest call (e.g. for :meth:`GeNVS.render_conditioning` of a generated view).
    """

    name = "genvs-pooled"

    def __init__(self, denoiser: Any, generator: GeneratorLike = None, *, max_views: int | None = None,
                 keep_first: int = 1) -> None:
        super().__init__(denoiser)
        if not getattr(denoiser, "accepts_view_sets", False):
            raise TypeError("the genvs-pooled strategy needs the denoiser of a GeNVS model "
                            f"(GeNVS.single_view_denoiser()), got {type(denoiser).__name__}")
        self.max_views = int(max_views or denoiser.method.config.sample_max_views)
        if self.max_views < 1 or keep_first < 0:
            raise ValueError(f"need max_views >= 1 and keep_first >= 0, got {self.max_views}, {keep_first}")
        self.keep_first = int(keep_first)
        self.generator = generator
        self.last_index: Tensor | None = None
        self.last_cond: ViewSetCond | None = None
        self._valid: Tensor | None = None
        self._warned = False

    def _perm(self, b: int, n: int, B: int) -> Tensor:
        g = self.generator
        if g is None or n == 0:
            return torch.randperm(n)
        if not isinstance(g, torch.Generator):
            check_generator(g, B)
            g = g[b]
        return torch.randperm(n, generator=g, device=g.device).cpu()

    def select(self, valid: Tensor) -> Tensor:
        """``(B, M)`` long positions of the views to pool (``-1`` pads), ascending per sample."""
        valid = valid.cpu()
        B = valid.shape[0]
        rows = []
        keep = min(self.keep_first, self.max_views - 1 if self.max_views >= 2 else 1)  # room for the latest view
        for b in range(B):
            pos = valid[b].nonzero().flatten().tolist()
            if len(pos) > self.max_views:
                if keep < self.keep_first and self.max_views >= 2 and not self._warned:
                    self._warned = True
                    warnings.warn(f"genvs-pooled: keep_first={self.keep_first} input views but max_views="
                                  f"{self.max_views}: the first {keep} inputs and the latest view are kept "
                                  f"(raise --max-cond-views / sample_max_views to keep every input)", stacklevel=2)
                first = pos[:keep]
                last = [pos[-1]] if len(first) < self.max_views and pos[-1] not in first else []
                middle = [p for p in pos if p not in first and p not in last]
                room = self.max_views - len(first) - len(last)
                pick = [middle[i] for i in self._perm(b, len(middle), B)[:room].tolist()]
                pos = sorted(first + pick + last)
            rows.append(pos)
        M = max(len(r) for r in rows)
        return torch.tensor([r + [-1] * (M - len(r)) for r in rows], dtype=torch.long)

    def forward(self, x: Tensor, sigma: Tensor | float, cond: ViewSetCond) -> Tensor:
        if not isinstance(cond, ViewSetCond):
            raise TypeError(f"the genvs-pooled strategy needs cond: ViewSetCond, got {type(cond).__name__}")
        if cond.batch_size != x.shape[0]:
            raise ValueError(f"cond has {cond.batch_size} samples but x has {x.shape[0]}")
        valid = cond.views.valid
        if self.last_index is None or self._valid is None or not torch.equal(self._valid, valid.cpu()):
            self.last_index, self._valid = self.select(valid), valid.cpu().clone()  # drawn once per set
        idx = self.last_index.to(valid.device)
        keep = idx >= 0
        safe = idx.clamp_min(0)
        bi = torch.arange(idx.shape[0], device=valid.device)[:, None].expand_as(idx)
        v, cams = cond.views, cond.views.cameras
        sub = ViewSet(images=v.images[bi, safe] * keep[..., None, None, None].to(v.images.dtype),
                      cameras=Cameras(cams.c2w[bi, safe], cams.K[bi, safe], cams.width, cams.height), valid=keep,
                      view_ids=torch.where(keep, v.view_ids[bi, safe], torch.full_like(safe, -1)))
        self.calls += 1
        self.last_cond = ViewSetCond(sub, cond.target)
        return self.denoiser(x, sigma, self.last_cond)
