"""Local weight files for the perceptual metrics (LPIPS, FID/KID, FD-DINOv2): where they are looked for and checked.

vantage never downloads anything. The networks behind LPIPS, FID/KID and FD-DINOv2 need published
weights that the user puts in place once; :data:`WEIGHT_FILES` lists them (file name, where to get
it, SHA-256), and :func:`find_weights` looks for one in this order:

1. an explicit ``path`` argument (the file itself, or a folder holding it);
2. the folder named by the environment variable ``VANTAGE_WEIGHTS``;
3. ``~/.cache/vantage/weights``.

A missing file or a wrong checksum raises :class:`WeightsUnavailable` (checksum: its subclass
:class:`WeightsChecksumError`) whose message says which file to put where and where to download
it; ``vantage evaluate`` catches it to skip only the metrics that need that file.

Checksums. Every file is verified against its full SHA-256 before use:

* torchvision's ImageNet weights and pytorch-fid's Inception name files ``<name>-<first 8 hex digits
  of the SHA-256>.pth`` (the torch.hub convention); the full digests below start with those digits
  and agree with the values recorded by several independent projects that pin these files;
* the LPIPS v0.1 linear layers were hashed from the files as committed in richzhang/PerceptualSimilarity
  (unchanged since July 2018; the ``lpips`` wheel ships the same files);
* DINOv2's ``dinov2_vitl14_pretrain.pth`` carries no digest in its name and Meta publishes none: its
  SHA-256 is the one recorded, with the same byte count (1,217,586,395, the ``Content-Length`` of
  the download), by several unrelated public projects that pin this file. It was not computed
  here (the file was not available); docs/metrics.md says how to check a copy.

Hashing a 500 MB file takes a second or two; a verified file is remembered (by path, size and
modification time) for the rest of the process.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

__all__ = [
    "ENV_VAR",
    "WEIGHT_FILES",
    "WeightFile",
    "WeightsChecksumError",
    "WeightsUnavailable",
    "default_weights_dir",
    "find_weights",
    "load_state_dict",
    "sha256_file",
    "verify_checksum",
]

ENV_VAR = "VANTAGE_WEIGHTS"


class WeightsUnavailable(RuntimeError):
    """A weight file a metric needs is missing or unusable; the message says which file to put where.

    Attributes: ``name`` (the key in :data:`WEIGHT_FILES`) and ``path`` (where it was looked for).
    """

    def __init__(self, message: str, name: str = "", path: Path | None = None) -> None:
        super().__init__(message)
        self.name = name
        self.path = path


class WeightsChecksumError(WeightsUnavailable):
    """The file is there but its SHA-256 is not the published one (truncated download, other file)."""


@dataclass(frozen=True)
class WeightFile:
    """One expected weight file.

    ``relpath`` is the path below the weights folder; ``sha256`` the full hex digest (a shorter
    string is accepted as a prefix); ``size`` the byte count, when known (informational).
    """

    name: str
    relpath: str
    url: str
    sha256: str
    size: int | None
    used_by: str
    source: str


WEIGHT_FILES: dict[str, WeightFile] = {
    f.name: f
    for f in (
        WeightFile(
            name="vgg16",
            relpath="vgg16-397923af.pth",
            url="https://download.pytorch.org/models/vgg16-397923af.pth",
            sha256="397923af8e79cdbb6a7127f12361acd7a2f83e06b05044ddf496e83de57a5bf0",
            size=553_433_881,
            used_by="LPIPS (net='vgg'): torchvision VGG16 ImageNet weights (IMAGENET1K_V1)",
            source="torchvision",
        ),
        WeightFile(
            name="alexnet",
            relpath="alexnet-owt-7be5be79.pth",
            url="https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",
            sha256="7be5be791159472b1fbf3c69796f7cb30dca7ad8466c2df70058c37116cdee02",
            size=244_408_911,
            used_by="LPIPS (net='alex'): torchvision AlexNet ImageNet weights (IMAGENET1K_V1)",
            source="torchvision",
        ),
        WeightFile(
            name="lpips_vgg",
            relpath="lpips_v0.1/vgg.pth",
            url="https://github.com/richzhang/PerceptualSimilarity/raw/master/lpips/weights/v0.1/vgg.pth",
            sha256="a78928a0af1e5f0fcb1f3b9e8f8c3a2a5a3de244d830ad5c1feddc79b8432868",
            size=7_289,
            used_by="LPIPS (net='vgg'): learned linear layers, v0.1",
            source="richzhang/PerceptualSimilarity (also in the lpips wheel: lpips/weights/v0.1/vgg.pth)",
        ),
        WeightFile(
            name="lpips_alex",
            relpath="lpips_v0.1/alex.pth",
            url="https://github.com/richzhang/PerceptualSimilarity/raw/master/lpips/weights/v0.1/alex.pth",
            sha256="df73285e35b22355a2df87cdb6b70b343713b667eddbda73e1977e0c860835c0",
            size=6_009,
            used_by="LPIPS (net='alex'): learned linear layers, v0.1",
            source="richzhang/PerceptualSimilarity (also in the lpips wheel: lpips/weights/v0.1/alex.pth)",
        ),
        WeightFile(
            name="fid_inception",
            relpath="pt_inception-2015-12-05-6726825d.pth",
            url="https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/"
            "pt_inception-2015-12-05-6726825d.pth",
            sha256="6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb9129b2",
            size=95_628_359,
            used_by="FID/KID/joint FID: the TensorFlow FID Inception-v3 (2015-12-05) ported by pytorch-fid",
            source="pytorch-fid (torch-fidelity re-hosts the same bytes as weights-inception-2015-12-05-6726825d.pth)",
        ),
        WeightFile(
            name="dinov2_vitl14",
            relpath="dinov2_vitl14_pretrain.pth",
            url="https://dl.fbaipublicfiles.com/dinov2/dinov2_vitl14/dinov2_vitl14_pretrain.pth",
            sha256="d5383ea8f4877b2472eb973e0fd72d557c7da5d3611bd527ceeb1d7162cbf428",
            size=1_217_586_395,
            used_by="FD-DINOv2: the DINOv2 ViT-L/14 backbone (LVD-142M, without registers)",
            source="facebookresearch/dinov2 (the file torch.hub.load('facebookresearch/dinov2', 'dinov2_vitl14') "
                   "downloads to ~/.cache/torch/hub/checkpoints/)",
        ),
    )
}

_VERIFIED: set[tuple[str, int, int, str]] = set()


def default_weights_dir() -> Path:
    """The folder searched when no explicit path is given: ``$VANTAGE_WEIGHTS`` or ``~/.cache/vantage/weights``."""
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "vantage" / "weights"


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _spec(name: str) -> WeightFile:
    if name not in WEIGHT_FILES:
        raise KeyError(f"unknown weight file '{name}'; known: {', '.join(WEIGHT_FILES)}")
    return WEIGHT_FILES[name]


def _how_to_get(spec: WeightFile, target: Path) -> str:
    return (f"download {spec.url}\n  and save it as {target}\n  (sha256 {spec.sha256}; used by {spec.used_by}). "
            f"Or set {ENV_VAR} to a folder holding '{spec.relpath}', or pass its path explicitly.")


def find_weights(name: str, path: str | Path | None = None, *, verify: bool = True) -> Path:
    """Locate (and by default checksum) the weight file ``name`` (a key of :data:`WEIGHT_FILES`).

    ``path`` may be the file itself or a folder holding ``spec.relpath``; without it the folder is
    :func:`default_weights_dir`. Raises :class:`WeightsUnavailable` naming the expected file and
    folder, or :class:`WeightsChecksumError` when the SHA-256 differs from the published one.
    """
    spec = _spec(name)
    if path is not None:
        path = Path(path).expanduser()
        target = path / spec.relpath if path.is_dir() else path
        where = "the path given"
    else:
        folder = default_weights_dir()
        target = folder / spec.relpath
        where = f"folder from ${ENV_VAR}" if os.environ.get(ENV_VAR) else "default folder"
    if not target.is_file():
        raise WeightsUnavailable(f"weight file '{spec.relpath}' not found at {target} ({where});\n  "
                                 + _how_to_get(spec, target), name=name, path=target)
    if verify:
        verify_checksum(name, target)
    return target


def verify_checksum(name: str, path: str | Path) -> None:
    """Raise :class:`WeightsChecksumError` unless ``path``'s SHA-256 matches ``WEIGHT_FILES[name].sha256``."""
    spec, path = _spec(name), Path(path)
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns, spec.sha256)
    if key in _VERIFIED:
        return
    digest = sha256_file(path)
    if not digest.startswith(spec.sha256.lower()):
        size = f", expected {spec.size} bytes" if spec.size else ""
        raise WeightsChecksumError(
            f"weight file {path} has sha256 {digest} ({st.st_size} bytes{size}), expected {spec.sha256}: "
            f"a truncated download or a different file.\n  Replace it: " + _how_to_get(spec, path),
            name=name, path=path)
    _VERIFIED.add(key)


def load_state_dict(name: str, path: str | Path | None = None, *, verify: bool = True) -> dict[str, Tensor]:
    """Find, verify and load the weight file ``name`` as a flat ``{key: tensor}`` dict on the CPU.

    Loaded with ``torch.load(weights_only=True)``: no code from the file is run.
    """
    file = find_weights(name, path, verify=verify)
    try:
        sd = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt / not a torch file
        raise WeightsUnavailable(f"weight file {file} could not be read as a PyTorch state dict: {e}",
                                 name=name, path=file) from e
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict) or not all(isinstance(v, Tensor) for v in sd.values()):
        raise WeightsUnavailable(f"weight file {file} does not hold a flat state dict of tensors "
                                 f"(got {type(sd).__name__})", name=name, path=file)
    return dict(sd)
