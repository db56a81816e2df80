"""What ``vantage serve`` writes, and where: a temporary folder of the server's own, never a user's folder.

:class:`ResultStore` creates ``<tmp>/vantage-serve-XXXX/`` (or uses a given root) and hands out one new
numbered folder per request (``000001/``, ``000002/``, ...; an existing one is never reused). Only the newest
``keep`` result folders are kept: older ones (folders this store created) are deleted, so that a server that
runs for days does not fill the disk. :meth:`ResultStore.cleanup` removes the root when the store created it.

:func:`write_result` fills one result folder and returns a :class:`GenerateResult`:

* ``frames/NNN.png``: every target view at the model's resolution (a target at the input camera is the
  input itself); ``input.png``: the preprocessed input;
* ``orbit.gif`` (two views or more; upscaled to at least 128 px, nearest neighbour);
* ``weights/`` (ViewFusion, composed strategy): :func:`vantage.sampling.save_weight_maps` (``NNN.png`` per
  generated view: the composed views and their per-pixel weights, mean over the denoising steps);
* ``result.json``: the settings, the notes, the timings and the PSNR against ground truth where it is known.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["ResultStore", "GenerateResult", "write_result"]

_NAME = re.compile(r"^\d{6}$")


class ResultStore:
    """Numbered result folders under one root.

    Args:
        root: the folder to use (created if missing); default: a new ``vantage-serve-*`` temporary folder.
        keep: how many result folders to keep (the newest); at least 1.
    """

    def __init__(self, root: str | Path | None = None, keep: int = 20) -> None:
        if keep < 1:
            raise ValueError(f"keep must be >= 1, got {keep}")
        self.owned = root is None
        self.root = Path(tempfile.mkdtemp(prefix="vantage-serve-")) if root is None else Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.keep = keep
        self._lock = threading.Lock()
        self._created: list[Path] = []

    def new(self) -> Path:
        """A new, empty result folder; prunes the oldest ones this store created beyond ``keep``."""
        with self._lock:
            taken = [int(p.name) for p in self.root.iterdir() if _NAME.match(p.name)]
            n = max(taken, default=0) + 1
            while True:
                folder = self.root / f"{n:06d}"
                try:
                    folder.mkdir()
                    break
                except FileExistsError:
                    n += 1
            self._created.append(folder)
            while len(self._created) > self.keep:
                shutil.rmtree(self._created.pop(0), ignore_errors=True)
            return folder

    def cleanup(self) -> None:
        """Remove the root folder if this store created it (else only the result folders it created)."""
        with self._lock:
            if self.owned:
                shutil.rmtree(self.root, ignore_errors=True)
            else:
                for folder in self._created:
                    shutil.rmtree(folder, ignore_errors=True)
            self._created.clear()


@dataclass
class GenerateResult:
    """What one generation made (files in ``folder``, a folder of the server's own).

    Attributes:
        frames: one PNG per target view, at the model's resolution (a target at the input camera is the input).
        captions: one line per frame (azimuth from the input, elevation, the input or the PSNR where known).
        input_image: the preprocessed input (PNG). gif: the orbit GIF (None for one view).
        weight_maps: ViewFusion's per-view weights of each generated view (composed strategy), else empty.
        notes: what was done to the input and to the targets. summary: the settings and timings (``result.json``).
    """

    folder: Path
    frames: list[Path]
    captions: list[str]
    input_image: Path
    gif: Path | None
    weight_maps: list[Path]
    notes: list[str]
    summary: dict

    def describe(self) -> str:
        """Markdown for the page: one line on the run, then the notes."""
        s = self.summary
        psnr = f", PSNR against the ground truth {s['psnr_mean']:.2f} dB" if s.get("psnr_mean") is not None else ""
        head = (f"**{s['method']}**: {s['generated']} view(s) generated with {s['sampler']} x {s['steps']} steps, "
                f"guidance {s['guidance']:g}, strategy {s['strategy']}, seed {s['seed']}, in {s['seconds']:.1f} s "
                f"on {s['device']}{psnr}.")
        return "\n".join([head, ""] + [f"- {n}" for n in self.notes])


def _wrap(deg: float) -> float:
    """Degrees wrapped to (-180, 180] (to a thousandth of a degree: -179.9999999 is 180)."""
    return 180.0 - (180.0 - round(deg, 3)) % 360.0


def write_result(folder: Path, *, inp: Any, result: Any, truth: list[int | None], recorder: Any, notes: list[str],
                 summary: dict) -> GenerateResult:
    """Write sample 0 of ``result`` (an :class:`~vantage.sampling.OrbitResult`) into ``folder`` (module docstring).

    ``inp``: the :class:`~vantage.sampling.inputs.SampleInput`; ``truth``: per frame the view of ``inp.views`` that
    is its ground truth, or None; ``recorder``: a :class:`~vantage.sampling.WeightRecorder` or None; ``summary``:
    the settings, completed here and written to ``result.json``."""
    from PIL import Image

    from vantage.sampling import save_weight_maps
    from vantage.sampling.targets import camera_entry
    from vantage.viz import save_gif, to_uint8

    frames, gen = result.images[0].float().cpu(), result.generated[0]
    (folder / "frames").mkdir()
    paths = []
    for i, img in enumerate(to_uint8(frames)):
        paths.append(folder / "frames" / f"{i:03d}.png")
        Image.fromarray(img).save(paths[-1])
    input_image = folder / "input.png"
    Image.fromarray(to_uint8(inp.inputs.images[0])).save(input_image)
    gif = save_gif(frames, folder / "orbit.gif", fps=6) if len(frames) > 1 else None
    cams = result.cameras[0].to("cpu")
    az_in = camera_entry(inp.views.cameras, inp.input_index)["azimuth_deg"]
    entries = [camera_entry(cams, i) for i in range(len(cams))]
    captions, scores = [], {}
    for i, e in enumerate(entries):
        text = f"#{i}: azimuth {_wrap(e['azimuth_deg'] - az_in):+.0f}°, elevation {e['elevation_deg']:.0f}°"
        if not gen[i]:
            text += " (the input)"
        elif truth[i] is not None:
            mse = float(((frames[i] - inp.views.images[truth[i]].float()) / 2).pow(2).mean())
            scores[i] = float("inf") if mse == 0 else -10 * math.log10(mse)
            text += f", PSNR {scores[i]:.1f} dB"
        captions.append(text)
    maps: list[Path] = []
    if recorder is not None and recorder.records:
        written = save_weight_maps(recorder.records, folder / "weights", mode="mean", fps=2.0,
                                   cameras_deg=[_wrap(e["azimuth_deg"] - az_in) for e in entries])
        maps = [folder / "weights" / f for f in written if f[0].isdigit()]
    summary = {**summary, "generated": int(gen.sum()), "notes": notes,
               "psnr": {str(i): round(v, 3) for i, v in scores.items()},
               "psnr_mean": round(sum(scores.values()) / len(scores), 3) if scores else None,
               "captions": captions}
    (folder / "result.json").write_text(json.dumps(summary, indent=1))
    return GenerateResult(folder, paths, captions, input_image, gif, maps, notes, summary)
