"""Training pairs made from single images by small camera rotations, and their mixing with multi-view pairs.

VIVID's single-view training (Elata et al. 2024, "Novel View Synthesis with Pixel-Space Diffusion Models",
arXiv 2411.07765): a camera that only *rotates* sees no parallax, so the view of a rotated camera is an exact
warp of the original image by the homography ``H = K R K⁻¹`` (for a pinhole camera ``K`` and the rotation ``R``
from the first camera's frame to the rotated one's: the pure-rotation homography of Hartley & Zisserman,
"Multiple View Geometry").
Any photo then gives a (source, target) pair with a known relative pose: zero translation, rotation ``R``.

How a pair is made from one image (all cameras OpenCV axes, pixel intrinsics with pixel centres at +0.5; see
``docs/cameras.md``):

1. the image is centre-cropped to a square and resized (antialiased) to side ``M ≈ R/crop``: the "full"
   camera, focal ``focal·R`` pixels, principal point at its centre;
2. the *source* view is the central ``R x R`` crop of it: the original camera, ``c2w = I`` (the world frame is
   the source camera's frame);
3. the *target* view is the view of the same camera rotated by ``R = R_z(roll)·R_x(pitch)·R_y(yaw)`` (each
   angle uniform in ``±max``; pitch about the camera's x axis, yaw about its y axis, roll about its optical
   axis): ``w2c_target = [R | 0]``, so ``c2w_target = [Rᵀ | 0]``. A target pixel ``q`` shows the full
   image at ``K_full Rᵀ K⁻¹ q``; equivalently a source pixel ``p`` appears in the target at ``H p`` with
   ``H = K R K⁻¹`` (``K`` the ``R x R`` views' intrinsics). Sampling is bilinear, from the resized full image.
4. target pixels whose ray leaves the image are filled with ``fill`` (default −1, black: what the reference
   code's warp (zero padding) gives); ``meta["inside"]`` holds the ``(1, 1, R, R)`` bool map of the pixels
   inside the image and ``meta["inside_fraction"]`` its mean. With the default ``crop = 0.6`` (the views
   see the central 60% of the image's width) and angles the whole target stays inside the image at every
   rotation in range (the margin covers the largest one), as the reference's centre crop after the warp
   intends; larger crops or angles leave filled pixels at the corners.

The defaults: ``focal = 0.9`` (focal length in units of the view's side: the mean of the RealEstate10K
statistics VIVID standardises with, 57.7 px at 64 px, so the camera vector of these pairs lies inside the
multi-view data's range); angles up to 8.3° pitch and yaw and 3.5° roll (the larger of the two ranges of the
reference code, which also uses 5.5°, 5.5°, 0° for half of the images).

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

__all__ = ["rotation_matrix", "rotation_homography", "view_intrinsics", "single_image_pair", "SingleImagePairs",
           "MixedPairs"]

_SALT = 0x51D6  # separates the rotation draws from other uses of (seed, epoch, index)


def rotation_matrix(pitch: float | Tensor, yaw: float | Tensor, roll: float | Tensor) -> Tensor:
    """``(3, 3)`` rotation ``R_z(roll)·R_x(pitch)·R_y(yaw)`` (radians) in OpenCV camera axes (x right, y down,
    z forward): pitch about x, yaw about y, roll about the optical axis z. It maps source-camera coordinates to
    the rotated camera's (``x_target = R x_source``)."""
    p, y, r = (torch.as_tensor(a, dtype=torch.float64) for a in (pitch, yaw, roll))
    one, zero = torch.ones((), dtype=torch.float64), torch.zeros((), dtype=torch.float64)
    rx = torch.stack([one, zero, zero, zero, p.cos(), -p.sin(), zero, p.sin(), p.cos()]).reshape(3, 3)
    ry = torch.stack([y.cos(), zero, y.sin(), zero, one, zero, -y.sin(), zero, y.cos()]).reshape(3, 3)
    rz = torch.stack([r.cos(), -r.sin(), zero, r.sin(), r.cos(), zero, zero, zero, one]).reshape(3, 3)
    return (rz @ rx @ ry).float()


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
    q = torch.stack([u, v, torch.ones_like(u)], -1)  # (R, R, 3) target pixels
    P = K_full.double() @ R.double().T @ torch.linalg.inv(K.double())  # target pixel -> full-image pixel
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
                      fill: float = -1.0, angles_deg: Sequence[float] | None = None,
                      name: str = "", index: int = 0) -> Pair:
    """A (source, target) :class:`Pair` from one image ``(3, H, W)`` in [-1, 1] (see the module docstring).

    Args:
        resolution: side ``R`` of both views.
        generator: draws the angles (pitch, yaw, roll in that order, each uniform in ``±max_deg``).
        focal: focal length of the views in units of ``R``.
        crop: the views' side as a fraction of the square-cropped image's side.
        max_deg: largest ``(pitch, yaw, roll)`` in degrees.
        fill: value of target pixels outside the image.
        angles_deg: explicit ``(pitch, yaw, roll)`` instead of random ones.
    Returns:
        A :class:`Pair` with ``cond`` the source ``(1, 3, R, R)`` and ``target`` the rotated view; the target's
        ``meta`` has ``rotation`` (3, 3), ``inside`` (1, 1, R, R) bool and ``inside_fraction``.
    """
    if image.ndim != 3 or image.shape[0] != 3:
        raise ValueError(f"single_image_pair needs an image (3, H, W), got {tuple(image.shape)}")
    if not 0 < crop <= 1 or not focal > 0:
        raise ValueError(f"need 0 < crop <= 1 and focal > 0, got crop={crop}, focal={focal}")
    h, w = image.shape[-2:]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    m = resolution + 2 * max(0, round((resolution / crop - resolution) / 2))  # M - R even: the source is exact
    full = resize_maps(image[None, :, top:top + side, left:left + side].float(), (m, m))[0]
    K = view_intrinsics(resolution, focal)
    K_full = K.clone()
    K_full[:2, 2] = m / 2
    if angles_deg is None:
        u = torch.rand(3, generator=generator) * 2 - 1
        angles_deg = [float(a) * float(b) for a, b in zip(u, max_deg)]
    rot = rotation_matrix(*(math.radians(a) for a in angles_deg))
    src, _ = _sample(full, K_full, K, torch.eye(3), resolution, fill)
    tgt, inside = _sample(full, K_full, K, rot, resolution, fill)
    c2w_t = torch.eye(4)
    c2w_t[:3, :3] = rot.T
    cams = Cameras(torch.stack([torch.eye(4), c2w_t]), K.expand(2, 3, 3), resolution, resolution)
    meta = {"format": "single_image", "posed": True, "rotation": rot, "angles_deg": list(angles_deg),
            "inside": inside[None], "inside_fraction": float(inside.float().mean())}
    return Pair(cond=ObjectViews(images=src[None], cameras=cams[[0]], name=name, meta={"format": "single_image"}),
                target=ObjectViews(images=tgt[None], cameras=cams[[1]], view_ids=torch.tensor([1]), name=name,
                                   meta=meta),
                scene_index=index, target_in_cond=False)


class SingleImagePairs(torch.utils.data.Dataset):
    """Pairs from a folder of images (``.png``/``.jpg``/``.jpeg``/``.webp``, any size), one per image and epoch.

    Item ``(epoch, i)`` (or ``i`` with :meth:`set_epoch`) is :func:`single_image_pair` of image ``i`` with
    angles drawn from ``seeded_generator(seed, epoch, i, salt)``. RGBA images are composited on white.

    Args:
        folder: the image folder.
        resolution: side of the views.
        seed, focal, crop, max_deg, fill: see :func:`single_image_pair`.
    """

    def __init__(self, folder: str | Path, resolution: int, *, seed: int = 0, focal: float = 0.9, crop: float = 0.6,
                 max_deg: Sequence[float] = (8.3, 8.3, 3.5), fill: float = -1.0) -> None:
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise DatasetError(f"single_images: {self.folder} is not a folder of images")
        self.files = list_files(self.folder, IMAGE_EXTENSIONS, "single-image")
        if not self.files:
            raise DatasetError(f"single_images: no images in {self.folder} (expected {', '.join(IMAGE_EXTENSIONS)})")
        if len(max_deg) != 3 or any(a < 0 for a in max_deg):
            raise DatasetError(f"single_max_deg must be 3 angles >= 0 (pitch, yaw, roll), got {list(max_deg)}")
        if not 0 < crop <= 1 or not focal > 0:
            raise DatasetError(f"need 0 < single_crop <= 1 and single_focal > 0, got {crop}, {focal}")
        self.resolution, self.seed, self.epoch = int(resolution), int(seed), 0
        self.focal, self.crop, self.max_deg, self.fill = float(focal), float(crop), tuple(map(float, max_deg)), fill
        self.sampler = PairSampler(min_cond=1, max_cond=1)  # one source view (what build_loader pads to)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int | tuple[int, int]) -> Pair:
        epoch, i = (int(index[0]), int(index[1])) if isinstance(index, tuple) else (self.epoch, int(index))
        if not 0 <= i < len(self):
            raise IndexError(f"SingleImagePairs has {len(self)} images, index {i} is out of range")
        image, _ = load_image(self.files[i])
        return single_image_pair(image, self.resolution, seeded_generator(self.seed, epoch, i, _SALT),
                                 focal=self.focal, crop=self.crop, max_deg=self.max_deg, fill=self.fill,
                                 name=self.files[i].name, index=i)


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
