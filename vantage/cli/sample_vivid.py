"""VIVID parts of ``vantage sample``: ``--guide`` (guidance by a second network), what the guidance that ran
was, and ``--sr-checkpoint`` (chaining the super-resolution stage, :mod:`vantage.methods.vivid_sr`).

VIVID's ``--guidance`` is the weight ``w`` of ``D̃ = D_g + w·(D − D_g)`` with a guide network ``D_g`` (1 = none),
not a classifier-free guidance weight; :func:`guidance_summary` says which ran, so that ``sample.json`` never
records a weight that had no effect.

With ``--sr-checkpoint SR``, every generated frame of the base model (``r x r``) is super-resolved to the SR
model's ``R x R``, conditioned on the first input view loaded again at ``R`` and the frame's camera; frames copied
from an input view are that input at ``R``. Everything written (frames, GIF, contact sheet, cameras) is then at
``R``; the base model's frames are kept in ``frames_base/``. Each frame is drawn from its own generator seeded by
``(seed, frame)``, so a frame does not depend on the others.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

__all__ = ["apply_guide", "guidance_summary", "load_sr", "super_resolve"]

_SR_SALT = 0x5125


def apply_guide(method: Any, guide: Path | None) -> None:
    """``--guide CHECKPOINT``: make it the vivid model's guide network (an error for other methods)."""
    from vantage.cli.main import UserError

    if guide is None:
        return
    if method.name != "vivid":
        raise UserError(f"--guide gives VIVID's guide network; '{method.name}' has none (its --guidance is "
                        f"classifier-free guidance)")
    method.config.guide_checkpoint = str(guide)


def guidance_summary(method: Any, guidance: float) -> tuple[str, dict[str, Any]]:
    """``(text to print, sample.json entries)`` of the guidance that will run with weight ``guidance``
    (:func:`vantage.eval.evaluate_vivid.describe_guidance`; its errors as one-line command errors)."""
    from vantage.cli.main import UserError
    from vantage.eval.evaluate_vivid import describe_guidance

    try:
        return describe_guidance(method, guidance)
    except ValueError as e:
        raise UserError(str(e).replace("(--sr-checkpoint)", "with --sr-checkpoint")) from None


def load_sr(path: Path, base: Any, device: str) -> tuple[Any, Path]:
    """The SR model of ``--sr-checkpoint`` and its folder; an error unless it upsamples the base model's size."""
    from vantage.cli.main import UserError
    from vantage.cli.sample import load_method

    sr, folder = load_method(path, device)
    if sr.name != "vivid-sr":
        raise UserError(f"--sr-checkpoint {path}: a '{sr.name}' model, not VIVID's super-resolution stage (vivid-sr)")
    r, b = sr.config.low_resolution, base.config.resolution
    if r != b:
        raise UserError(f"--sr-checkpoint {folder} upsamples {r}x{r} images to {sr.config.resolution}x"
                        f"{sr.config.resolution}, but --checkpoint's model generates {b}x{b}: they do not chain")
    return sr.eval(), folder


def super_resolve(sr: Any, args: argparse.Namespace, inp_hr: Any, result: Any, out: Path) -> Any:
    """The orbit ``result`` with every frame at the SR resolution (see the module docstring); writes the base
    frames to ``out/frames_base/``."""
    import torch
    from PIL import Image

    from vantage.data.pairs import seeded_generator
    from vantage.viz import to_uint8

    R = sr.config.resolution
    frames, gen, cams = result.images[0], result.generated[0], result.cameras[0]
    (out / "frames_base").mkdir(exist_ok=True)
    for i, img in enumerate(to_uint8(frames.cpu())):
        Image.fromarray(img).save(out / "frames_base" / f"{i:03d}.png")
    inputs = inp_hr.inputs
    src, src_cam = inputs.images[:1], inputs.cameras[:1]
    hr = torch.zeros(len(frames), 3, R, R)
    for i in range(len(frames)):
        if not gen[i]:  # a copy of an input view: that view at R
            gap = (inputs.cameras.c2w - cams.c2w[i].to(inputs.cameras.c2w)).flatten(1).abs().amax(1)
            hr[i] = inputs.images[int(gap.argmin())]
            continue
        g = seeded_generator(args.seed, i, _SR_SALT)
        hr[i] = sr.upsample(frames[i:i + 1], src, src_cam, cams[i:i + 1], generator=g)[0].cpu()
    big = cams.resize(R, R)
    big = type(big)(big.c2w[None], big.K[None], R, R)
    return dataclasses.replace(result, images=hr[None].to(result.images.dtype), cameras=big)
