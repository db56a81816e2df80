"""Training pairs made from single images by small camera rotations, and their mixing with multi-view pairs.

VIVID's single-view training (Elata et al. 2024, "Novel View Synthesis with Pixel-Space Diffusion Models",
arXiv 2411.07765): a camera that only *rotates* sees no parallax, so the view of a rotated camera is an exact
warp of the original image by the homography ``H = K R K⁻¹`` (for a pinhole camera ``K`` and the rotation ``R``
from the first camera's frame to the rotated one's: the pure-rotation homography of Hartley & Zisserman,
"Multiple View Geometry").
Any photo then gives a (source, target) pair with a known relative pose: zero translation, rotation ``R``.

How a pair is made from one image (all cameras OpenCV axes, pixel intrinsics with pixel centres at +0.5; see
``docs/cameras.md``):

1. the image is centre-cropped to a square and resized (antialiased) to side ``M ≈ R/crop``: the "full" image
   of the photo's camera (rotation I), focal ``focal·R`` pixels, principal point at its centre;
2. a rotation range ``(max pitch, max yaw, max roll)`` is chosen for the pair (one range, or one of several
   by ``range_choice``: ``"random"`` per pair, or ``"alternate"`` by image index and epoch);
3. the *source* view is the ``R x R`` view of the photo's camera rotated by ``R_s`` and the *target* view that
   of the camera rotated by ``R_t`` (``rotation_matrix``: ``R_z(roll)·R_x(pitch)·R_y(yaw)``, each angle
   uniform in ``±max``; pitch about the camera's x axis, yaw about its y axis, roll about its optical axis).
   With ``rotate_source=False`` ``R_s = I`` (the source is the central crop itself, exactly). The world frame
   is the source camera's: ``c2w_source = I``, ``w2c_target = [R | 0]`` with the relative rotation
   ``R = R_t R_sᵀ`` (``x_target = R x_source``), zero translation. A source pixel ``p`` appears in the target
   at ``H p`` with ``H = K R K⁻¹`` (``K`` the ``R x R`` views' intrinsics). Both views are sampled bilinearly
   from the resized full image.
4. view pixels whose ray leaves the image are filled with ``fill`` (default −1, black: what the reference
   code's warp (zero padding) gives); not masked. ``meta["inside"]`` of each view holds the ``(1, 1, R, R)``
   bool map of the pixels inside the image and ``meta["inside_fraction"]`` its mean. With the default
   ``crop = 0.6`` (the views see the central 60% of the image's width) and ranges every view stays inside the
   image at every rotation in range (the margin covers the largest one), as the reference's centre crop after
   the warp intends; larger crops or angles leave filled pixels at the corners.

The defaults follow the VIVID reference code (apple/ml-vivid, ``datautils.py``, class ``SingleImages``), which
for each image picks one of two ranges with probability 1/2, ``(8.3°, 8.3°, 3.5°)`` or ``(5.5°, 5.5°, 0°)``
(pitch, yaw, roll), and rotates *both* views by independent draws in it (so the relative rotation reaches
twice the range): ``max_deg = REFERENCE_MAX_DEG``, ``range_choice = "random"``, ``rotate_source = True``. The
earlier behaviour of this module (one range ``(8.3, 8.3, 3.5)``, unrotated source) is ``max_deg=(8.3, 8.3,
3.5), rotate_source=False`` and gives the same pairs as before for the same seed. ``focal = 0.9`` (focal length
in units of the view's side) is ours: the mean of the RealEstate10K statistics VIVID standardises with (57.7 px
at 64 px), so the camera vector of these pairs lies inside the multi-view data's range; the reference assumes
``0.6 × width`` (``0.6 × height`` vertically) for the full photo instead. ``docs/vivid.md`` lists the remaining
differences.

:class:`SingleImagePairs` yields :class:`~vantage.data.pairs.Pair` s like
:class:`~vantage.data.pairs.PairDataset` (item ``(epoch, i)`` is a pure function of ``(seed, epoch, i)``);
:class:`MixedPairs` mixes them into a multi-view :class:`~vantage.data.pairs.PairDataset` with a given
fraction. ``vantage train ... -o single_images=DIR -o single_fraction=0.25`` builds both
(:func:`vantage.train.data.open_training_data`; ``docs/data-pipeline.md``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from vantage.cameras import Cameras
from vantage.data.formats.common import IMAGE_EXTENSIONS, DatasetError, list_files, load_image, resize_maps
from vantage.data.pairs import Pair, PairDataset, PairSampler, seeded_generator
from vantage.data.views import ObjectViews

__all__ = ["REFERENCE_MAX_DEG", "RANGE_CHOICES", "rotation_ranges", "rotation_matrix", "rotation_homography",
           "view_intrinsics", "single_image_pair", "SingleImagePairs", "MixedPairs"]

_SALT = 0x51D6  # separates the rotation draws from other uses of (seed, epoch, index)

#: The VIVID reference code's two rotation ranges, ``(max pitch, max yaw, max roll)`` in degrees (apple/ml-vivid,
#: ``datautils.py``, ``SingleImages.__getitem__``: one of them per image with probability 1/2).
REFERENCE_MAX_DEG: tuple[tuple[float, float, float], ...] = ((8.3, 8.3, 3.5), (5.5, 5.5, 0.0))
#: How a pair picks its range among several: ``"random"`` (uniformly, per pair, from the pair's seeded generator:
#: the reference's rule) or ``"alternate"`` (range ``(image index + epoch) mod n``: balanced, no draw).
RANGE_CHOICES = ("random", "alternate")


def _is_number(x: object) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def rotation_ranges(max_deg: object, field: str = "max_deg") -> tuple[tuple[float, float, float], ...]:
    """``max_deg`` as a tuple of ranges ``(max pitch, max yaw, max roll)`` in degrees: one range
    ``[pitch, yaw, roll]`` or a non-empty list of them, each angle in ``[0, 90)``. Anything else is a
    ``ValueError`` naming ``field`` (the option or argument the value came from)."""
    how = f"{field} must be [pitch, yaw, roll] or a list of such ranges, in degrees"
    if isinstance(max_deg, (str, bytes)) or not isinstance(max_deg, Sequence):
        raise ValueError(f"{how}; got {max_deg!r}")
    items = list(max_deg)
    if not items:
        raise ValueError(f"{field} is an empty list: give at least one range [pitch, yaw, roll] (degrees)")
    if all(_is_number(x) for x in items):
        items = [items]
    ranges = []
    for k, r in enumerate(items):
        if isinstance(r, (str, bytes)) or not isinstance(r, Sequence) or not all(_is_number(x) for x in r):
            raise ValueError(f"{how}; item {k} is {r!r}")
        if len(r) != 3:
            raise ValueError(f"{field}: each range has 3 angles (pitch, yaw, roll); range {k} {list(r)} has "
                             f"{len(r)}")
        if not all(0 <= x < 90 for x in r):
            raise ValueError(f"{field}: angles must be in [0, 90) degrees; range {k} is {list(r)}")
        ranges.append(tuple(float(x) for x in r))
    return tuple(ranges)


def _rotation64(pitch: float | Tensor, yaw: float | Tensor, roll: float | Tensor) -> Tensor:
    p, y, r = (torch.as_tensor(a, dtype=torch.float64) for a in (pitch, yaw, roll))
    one, zero = torch.ones((), dtype=torch.float64), torch.zeros((), dtype=torch.float64)
    rx = torch.stack([one, zero, zero, zero, p.cos(), -p.sin(), zero, p.sin(), p.cos()]).reshape(3, 3)
    ry = torch.stack([y.cos(), zero, y.sin(), zero, one, zero, -y.sin(), zero, y.cos()]).reshape(3, 3)
    rz = torch.stack([r.cos(), -r.sin(), zero, r.sin(), r.cos(), zero, zero, zero, one]).reshape(3, 3)
    return rz @ rx @ ry


def rotation_matrix(pitch: float | Tensor, yaw: float | Tensor, roll: float | Tensor) -> Tensor:
    """``(3, 3)`` rotation ``R_z(roll)·R_x(pitch)·R_y(yaw)`` (radians) in OpenCV camera axes (x right, y down,
    z forward): pitch about x, yaw about y, roll about the optical axis z. It maps source-camera coordinates to
    the rotated camera's (``x_target = R x_source``). (The reference composes ``R_z(roll)·R_y(yaw)·R_x(pitch)``;
    for the same angles the two differ by a rotation of about ``pitch·yaw`` radians about z.)"""
    return _rotation64(pitch, yaw, roll).float()


def rotation_homography(K: Tensor, R: Tensor) -> Tensor:
    """``(3, 3)`` ``H = K R K⁻¹``: where a pixel (homogeneous, centres at +0.5) of a camera with intrinsics ``K``
    lands after the camera rotates by ``R`` (``x_new = R x_old``) without moving."""
    return K.double() @ R.double() @ torch.linalg.inv(K.double())


def view_intrinsics(resolution: int, focal: float) -> Tensor:
    """``(3, 3)`` intrinsics of a ``resolution``-pixel square view with focal ``focal·resolution`` pixels."""
    f, c = focal * resolution, resolution / 2
    return torch.tensor([[f, 0.0, c], [0.0, f, c], [0.0, 0.0, 1.0]])


def _sample(full: Tensor, K_full: Tensor, K: Tensor, R: Tensor, resolution: int,
            fill: float) -> tuple[Tensor, Tensor]:
    """The ``(3, R, R)`` view of camera ``(K, rotation R)`` from the full image ``(3, M, M)`` of camera ``K_full``
    (rotation I), and the ``(1, R, R)`` bool map of pixels inside the full image."""
    m = full.shape[-1]
    v, u = torch.meshgrid(torch.arange(resolution, dtype=torch.float64) + 0.5,
                          torch.arange(resolution, dtype=torch.float64) + 0.5, indexing="ij")
    q = torch.stack([u, v, torch.ones_like(u)], -1)  # (R, R, 3) view pixels
    P = K_full.double() @ R.double().T @ torch.linalg.inv(K.double())  # view pixel -> full-image pixel
    p = q @ P.T
    uv = p[..., :2] / p[..., 2:].clamp(min=1e-9)
    grid = (2 * uv / m - 1).float()[None]  # align_corners=False: pixel centre j + 0.5 -> (2j + 1)/M - 1
    src = torch.cat([full, torch.ones_like(full[:1])])[None]
    out = F.grid_sample(src, grid, mode="bilinear", padding_mode="zeros", align_corners=False)[0]
    weight = out[3:]
    image = out[:3] + (1 - weight) * fill
    return image, weight > 1 - 1e-4


def single_image_pair(image: Tensor, resolution: int, generator: torch.Generator | None = None, *,
                      focal: float = 0.9, crop: float = 0.6, max_deg: Sequence[float] = (8.3, 8.3, 3.5),
                      fill: float = -1.0, rotate_source: bool = True, angles_deg: Sequence[float] | None = None,
                      source_angles_deg: Sequence[float] | None = None, name: str = "", index: int = 0) -> Pair:
    """A (source, target) :class:`Pair` from one image ``(3, H, W)`` in [-1, 1] (see the module docstring).

    Args:
        resolution: side ``R`` of both views.
        generator: draws the angles: the target's (pitch, yaw, roll in that order, each uniform in
            ``±max_deg``), then, with ``rotate_source``, the source's.
        focal: focal length of the views in units of ``R``.
        crop: the views' side as a fraction of the square-cropped image's side.
        max_deg: one range: largest ``(pitch, yaw, roll)`` in degrees (:class:`SingleImagePairs` chooses among
            several).
        fill: value of view pixels outside the image.
        rotate_source: rotate the source view too, by its own draw in the range (the reference's scheme);
            False: the source is the unrotated central crop.
        angles_deg: explicit target ``(pitch, yaw, roll)`` instead of random ones; then the source is rotated
            only by ``source_angles_deg`` (default none).
        source_angles_deg: explicit source ``(pitch, yaw, roll)``.
    Returns:
        A :class:`Pair` with ``cond`` the source ``(1, 3, R, R)`` and ``target`` the rotated view. The target's
        ``meta`` has ``rotation`` (3, 3) (relative: ``x_target = rotation · x_source``), ``angles_deg`` and
        ``source_angles_deg`` (each view's rotation from the photo's camera), ``max_deg``, ``inside``
        (1, 1, R, R) bool and ``inside_fraction``; the source's ``meta`` has its own ``inside`` and
        ``inside_fraction``.
    """
    if image.ndim != 3 or image.shape[0] != 3:
        raise ValueError(f"single_image_pair needs an image (3, H, W), got {tuple(image.shape)}")
    if not 0 < crop <= 1 or not focal > 0:
        raise ValueError(f"need 0 < crop <= 1 and focal > 0, got crop={crop}, focal={focal}")
    ranges = rotation_ranges(max_deg)
    if len(ranges) != 1:
        raise ValueError(f"max_deg: single_image_pair takes one range (SingleImagePairs chooses among several), "
                         f"got {len(ranges)}")
    max_deg = ranges[0]
    for what, given in (("angles_deg", angles_deg), ("source_angles_deg", source_angles_deg)):
        if given is not None and len(given) != 3:
            raise ValueError(f"{what} must be 3 angles (pitch, yaw, roll), got {list(given)}")
    h, w = image.shape[-2:]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    m = resolution + 2 * max(0, round((resolution / crop - resolution) / 2))  # M - R even: the source is exact
    full = resize_maps(image[None, :, top:top + side, left:left + side].float(), (m, m))[0]
    K = view_intrinsics(resolution, focal)
    K_full = K.clone()
    K_full[:2, 2] = m / 2

    def draw() -> list[float]:
        u = torch.rand(3, generator=generator) * 2 - 1
        return [float(a) * float(b) for a, b in zip(u, max_deg)]

    if angles_deg is None:
        angles_deg = draw()
        if source_angles_deg is None and rotate_source:
            source_angles_deg = draw()
    angles_deg = [float(a) for a in angles_deg]
    source_angles_deg = [0.0, 0.0, 0.0] if source_angles_deg is None else [float(a) for a in source_angles_deg]
    rot_t = _rotation64(*(math.radians(a) for a in angles_deg))
    rot_s = _rotation64(*(math.radians(a) for a in source_angles_deg))
    rot = (rot_t @ rot_s.T).float()  # source camera -> target camera
    src, src_inside = _sample(full, K_full, K, rot_s.float(), resolution, fill)  # (float32 as before: same pixels)
    tgt, inside = _sample(full, K_full, K, rot_t.float(), resolution, fill)
    c2w_t = torch.eye(4)
    c2w_t[:3, :3] = rot.T
    cams = Cameras(torch.stack([torch.eye(4), c2w_t]), K.expand(2, 3, 3), resolution, resolution)
    meta = {"format": "single_image", "posed": True, "rotation": rot, "angles_deg": angles_deg,
            "source_angles_deg": source_angles_deg, "max_deg": max_deg, "inside": inside[None],
            "inside_fraction": float(inside.float().mean())}
    src_meta = {"format": "single_image", "inside": src_inside[None],
                "inside_fraction": float(src_inside.float().mean())}
    return Pair(cond=ObjectViews(images=src[None], cameras=cams[[0]], name=name, meta=src_meta),
                target=ObjectViews(images=tgt[None], cameras=cams[[1]], view_ids=torch.tensor([1]), name=name,
                                   meta=meta),
                scene_index=index, target_in_cond=False)


class SingleImagePairs(torch.utils.data.Dataset):
    """Pairs from a folder of images (``.png``/``.jpg``/``.jpeg``/``.webp``, any size), one per image and epoch.

    Item ``(epoch, i)`` (or ``i`` with :meth:`set_epoch`) is :func:`single_image_pair` of image ``i`` with
    the range and angles drawn from ``seeded_generator(seed, epoch, i, salt)``. RGBA images are composited on
    white.

    Args:
        folder: the image folder.
        resolution: side of the views.
        max_deg: one range ``(pitch, yaw, roll)`` (degrees) or a list of them (default: the reference's two,
            :data:`REFERENCE_MAX_DEG`); errors name it ``single_max_deg`` (its ``-o`` option).
        range_choice: with several ranges, how a pair picks one (:data:`RANGE_CHOICES`): ``"random"`` (the
            reference's rule: uniformly per pair) or ``"alternate"``.
        seed, focal, crop, fill, rotate_source: see :func:`single_image_pair`.
    """

    def __init__(self, folder: str | Path, resolution: int, *, seed: int = 0, focal: float = 0.9, crop: float = 0.6,
                 max_deg: Sequence[float] | Sequence[Sequence[float]] = REFERENCE_MAX_DEG,
                 range_choice: str = "random", rotate_source: bool = True, fill: float = -1.0) -> None:
        try:
            self.ranges = rotation_ranges(max_deg, "single_max_deg")
        except ValueError as e:
            raise DatasetError(str(e)) from None
        if range_choice not in RANGE_CHOICES:
            raise DatasetError(f"single_range_choice must be one of {', '.join(map(repr, RANGE_CHOICES))}, "
                               f"got {range_choice!r}")
        if not isinstance(rotate_source, bool):
            raise DatasetError(f"single_rotate_source must be true or false, got {rotate_source!r}")
        if not 0 < crop <= 1 or not focal > 0:
            raise DatasetError(f"need 0 < single_crop <= 1 and single_focal > 0, got {crop}, {focal}")
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise DatasetError(f"single_images: {self.folder} is not a folder of images")
        self.files = list_files(self.folder, IMAGE_EXTENSIONS, "single-image")
        if not self.files:
            raise DatasetError(f"single_images: no images in {self.folder} (expected {', '.join(IMAGE_EXTENSIONS)})")
        self.resolution, self.seed, self.epoch = int(resolution), int(seed), 0
        self.focal, self.crop, self.fill = float(focal), float(crop), fill
        self.max_deg = self.ranges[0] if len(self.ranges) == 1 else self.ranges
        self.range_choice, self.rotate_source = range_choice, rotate_source
        self.sampler = PairSampler(min_cond=1, max_cond=1)  # one source view (what build_loader pads to)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.files)

    def range_index(self, epoch: int, i: int, generator: torch.Generator | None = None) -> int:
        """Which range item ``(epoch, i)`` uses (``"random"`` draws it from ``generator``; one range: 0)."""
        n = len(self.ranges)
        if n == 1:
            return 0
        if self.range_choice == "alternate":
            return (i + epoch) % n
        return int(torch.randint(n, (1,), generator=generator))

    def __getitem__(self, index: int | tuple[int, int]) -> Pair:
        epoch, i = (int(index[0]), int(index[1])) if isinstance(index, tuple) else (self.epoch, int(index))
        if not 0 <= i < len(self):
            raise IndexError(f"SingleImagePairs has {len(self)} images, index {i} is out of range")
        image, _ = load_image(self.files[i])
        generator = seeded_generator(self.seed, epoch, i, _SALT)
        k = self.range_index(epoch, i, generator)
        pair = single_image_pair(image, self.resolution, generator, focal=self.focal, crop=self.crop,
                                 max_deg=self.ranges[k], fill=self.fill, rotate_source=self.rotate_source,
                                 name=self.files[i].name, index=i)
        pair.target.meta["range_index"] = k
        return pair


class MixedPairs(torch.utils.data.Dataset):
    """Multi-view pairs mixed with single-image pairs so that a fraction ``fraction`` of every epoch (and so, on
    average, of every batch) is single-image pairs.

    Items ``0 .. N-1`` are those of ``pairs`` (``N = len(pairs)``); items ``N .. N + S - 1`` with
    ``S = max(1, round(N·fraction/(1 − fraction)))`` are single-image pairs: item ``N + j`` of epoch ``e`` is image
    ``(j + e·S) mod len(singles)`` (so successive epochs walk through a large folder). The trainer's seeded
    permutation spreads them over the batches. A single-image pair's ``scene_index`` is ``-1 - image index``
    (negative: not a scene of the multi-view data).
    """

    def __init__(self, pairs: PairDataset, singles: SingleImagePairs, fraction: float) -> None:
        if not 0 < fraction < 1:
            raise DatasetError(f"single_fraction must be in (0, 1), got {fraction}")
        self.pairs, self.singles, self.fraction = pairs, singles, float(fraction)
        self.num_multi = len(pairs)
        self.num_single = max(1, round(self.num_multi * fraction / (1 - fraction)))
        self.sampler = pairs.sampler
        self.skipped = getattr(pairs, "skipped", [])
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.num_multi + self.num_single

    def is_single(self, index: int) -> bool:
        """Whether item ``index`` is a single-image pair."""
        return index >= self.num_multi

    def __getitem__(self, index: int | tuple[int, int]) -> Pair:
        epoch, i = (int(index[0]), int(index[1])) if isinstance(index, tuple) else (self.epoch, int(index))
        if not 0 <= i < len(self):
            raise IndexError(f"MixedPairs has {len(self)} items, index {i} is out of range")
        if i < self.num_multi:
            return self.pairs[(epoch, i)]
        j = (i - self.num_multi + epoch * self.num_single) % len(self.singles)
        pair = self.singles[(epoch, j)]
        pair.scene_index = -1 - j
        return pair
