"""The benchmark harness's outputs: the hardware line, the comparison table and the BENCHMARKS.md block.

Used by ``bench/harness.py``. A result row is a plain dict (see :func:`harness.evaluate_row`):
``preset``, ``method``, ``parameters``, ``kimg``, ``images_per_s``, ``precision``, ``protocol``,
``psnr``, ``ssim``, ``lpips``, ``lpips_skipped`` (why LPIPS has no value), ``consistency_psnr``,
``consistency_ceiling_psnr``, ``sampling``, ``nfe_per_view``, ``seconds_per_view``, ``deterministic``,
``baseline`` (the copy-the-input means) and ``error`` (a failed method).
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import re
from pathlib import Path
from typing import Any

import torch

__all__ = ["BEGIN", "END", "hardware", "hardware_line", "markdown_table", "render_block", "replace_block",
           "write_result", "views_sheet", "BlockError"]

BEGIN = "<!-- harness:begin -->"
END = "<!-- harness:end -->"


class BlockError(ValueError):
    """BENCHMARKS.md has unbalanced or repeated markers of a block."""


# --------------------------------------------------------------------------------------- hardware
def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def hardware(device: str) -> dict[str, Any]:
    """What the numbers were measured on: CPU model, cores, torch, threads, device (GPU name on CUDA)."""
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count() or 0
    info = {"cpu": _cpu_model(), "cores": os.cpu_count() or 0, "usable_cores": usable,
            "torch": torch.__version__, "threads": torch.get_num_threads(), "python": platform.python_version(),
            "machine": platform.machine(), "device": device}
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return info


def hardware_line(hw: dict[str, Any]) -> str:
    """``AMD EPYC (2 cores, 2 usable), x86_64, torch 2.13.0+cpu (2 threads), Python 3.11.7, device cpu``."""
    dev = hw["device"] + (f" ({hw['gpu']})" if hw.get("gpu") else "")
    return (f"{hw['cpu']} ({hw['cores']} cores, {hw['usable_cores']} usable), {hw['machine']}, torch {hw['torch']} "
            f"({hw['threads']} threads), Python {hw['python']}, device {dev}")


# --------------------------------------------------------------------------------------- table
def _num(v: float | None, digits: int) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


def _params(n: int | None) -> str:
    return "–" if n is None else f"{n / 1e6:.2f}M"


def _lpips(value: float | None, skipped: str | None) -> str:
    """The LPIPS cell: the value, or why there is none (``skipped``: the evaluation's reason)."""
    if value is not None:
        return f"{value:.3f}"
    why = (skipped or "").lower()
    if "weight" in why:
        return "n/a (weights absent)"
    return "n/a" + (f" ({why.split(':')[0][:40]})" if why else "")


def _rate(v: float | None) -> str:
    if v is None:
        return "–"
    return f"{v:.1f}" if v >= 10 else f"{v:.2f}"


def markdown_table(rows: list[dict[str, Any]], *, consistency: bool) -> str:
    """The comparison table: one row per method, then the copy-the-input baseline (one row per protocol)."""
    head = ["method", "preset", "parameters", "training", "train images/s", "PSNR (dB) ↑", "SSIM ↑", "LPIPS ↓"]
    if consistency:
        head.append("3D consistency PSNR (ceiling)")
    head += ["sampling", "NFE / view", "s / view"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * 2 + "---:|" * (len(head) - 2)]
    for r in rows:
        if r.get("error"):
            cells = [r.get("method") or "?", r["preset"], _params(r.get("parameters")), "failed (see notes)"]
            cells += ["–"] * (len(head) - len(cells))
            lines.append("| " + " | ".join(cells) + " |")
            continue
        cells = [r["method"], r["preset"], _params(r["parameters"]),
                 f"{r['kimg']:g} kimg" + (f", {r['precision']}" if r.get("precision") else "")
                 if r.get("kimg") is not None else "–",
                 _rate(r.get("images_per_s")), _num(r.get("psnr"), 2), _num(r.get("ssim"), 3),
                 _lpips(r.get("lpips"), r.get("lpips_skipped"))]
        if consistency:
            cp, cc = r.get("consistency_psnr"), r.get("consistency_ceiling_psnr")
            cells.append("–" if cp is None else f"{cp:.2f} ({_num(cc, 2)})")
        nfe = "1 (one forward)" if r.get("deterministic") else _num(r.get("nfe_per_view"), 1)
        cells += [r.get("sampling") or "–", nfe, _num(r.get("seconds_per_view"), 3)]
        lines.append("| " + " | ".join(cells) + " |")
    seen: set[str] = set()
    several = len({x.get("protocol") for x in rows if not x.get("error")}) > 1
    for r in rows:
        b = r.get("baseline")
        if r.get("error") or not b or r["protocol"] in seen:
            continue
        seen.add(r["protocol"])
        label = "copy the input view" + (f" ({r['protocol']})" if several else "")
        cells = [label, "–", "0", "–", "–", _num(b.get("psnr"), 2), _num(b.get("ssim"), 3),
                 _lpips(b.get("lpips"), r.get("lpips_skipped"))]
        if consistency:
            cells.append("–")
        cells += ["copy", "0", "–"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------- pictures
def _numeric_key(name: str) -> tuple[int, str]:
    return (int(name), name) if name.isdigit() else (1 << 30, name)


def views_sheet(rows: list[dict[str, Any]], *, objects: int = 2, views: int = 6):
    """A contact sheet (PIL image) of what each method generated: for each of the first ``objects`` evaluated
    objects, a row "truth" (the input view, then ``views`` target views evenly spread over the protocol's
    targets) and one row per method with its generated views at the same targets (the input cell left white).
    Read from the rows' evaluation folders (``eval_dir``: ``inputs/``, ``gt/``, ``pred/``; the first sample
    when there are several). ``None`` when no row has an evaluation."""
    from vantage.eval.evaluate import list_images, load_rgb
    from vantage.viz import contact_sheet

    done = [r for r in rows if not r.get("error") and r.get("eval_dir")]
    if not done:
        return None
    first = Path(done[0]["eval_dir"])
    names = sorted({k.rsplit("/", 1)[0] for k in list_images(first / "gt")})[:objects]
    sheet_rows, labels = [], []
    for obj in names:
        targets = sorted((p.stem for p in (first / "gt" / obj).iterdir() if p.is_file()), key=_numeric_key)
        pick = [targets[round(i * (len(targets) - 1) / max(views - 1, 1))] for i in range(min(views, len(targets)))]
        pick = list(dict.fromkeys(pick))
        inputs = sorted((first / "inputs" / obj).iterdir(), key=lambda q: _numeric_key(q.stem))
        truth = [load_rgb(inputs[0])] + [load_rgb(_image(first / "gt" / obj, v)) for v in pick]
        sheet_rows.append(torch.stack(truth))
        labels.append(f"{obj}: input, truth")
        blank = torch.ones_like(truth[0])
        for r in done:
            pred = Path(r["eval_dir"]) / "pred"
            if (pred / "sample-00").is_dir():
                pred = pred / "sample-00"
            sheet_rows.append(torch.stack([blank] + [load_rgb(_image(pred / obj, v)) for v in pick]))
            labels.append(r["preset"])
    return contact_sheet(sheet_rows, labels)


def _image(folder: Path, stem: str) -> Path:
    """The image file ``folder/stem.*`` (errors name what is missing)."""
    found = sorted(q for q in folder.glob(f"{stem}.*") if q.is_file())
    if not found:
        raise FileNotFoundError(f"no image '{stem}' in {folder}")
    return found[0]


def render_block(rows: list[dict[str, Any]], *, hw: dict[str, Any], command: str, settings: dict[str, Any],
                 notes: list[str], date: str | None = None, figure: str | None = None) -> str:
    """The Markdown the harness prints and puts between the markers (markers included)."""
    date = date or datetime.date.today().isoformat()
    protocols = sorted({r["protocol"] for r in rows if r.get("protocol")})
    consistency = bool(settings.get("consistency"))
    budget = (f"{settings['kimg']:g} kimg per method trained here (global batch {settings['batch']}, AdamW lr "
              f"{settings['lr']:g} constant after {settings['warmup']} warm-up steps, {settings['precision']} "
              f"autocast, seed 0, the synthetic training split rendered on the fly)")
    over = [f"{k} {v}" for k, v in (("objects", settings.get("objects")), ("sampling steps", settings.get("steps")))
            if v is not None]
    lines = [BEGIN, "### Harness results", "",
             f"Measured {date} on {hardware_line(hw)}.", "",
             f"Protocol {', '.join(protocols) or '–'}"
             + (f" (overridden: {', '.join(over)}; not comparable with full runs)" if over else "") + ". "
             f"Training budget: {budget}. NFE = network calls per generated view (a guided step in one batched "
             f"call counts once); s / view = sampling wall time per generated view.", "",
             "```", command, "```", "", markdown_table(rows, consistency=consistency)]
    if notes:
        lines += [""] + [f"* {n}" for n in notes]
    if figure:
        lines += ["", "What each method generated for the first evaluated objects (top row of each object: its input "
                  "view, then the ground truth at evenly spread targets):", "", f"![harness views]({figure})"]
    lines.append(END)
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------- BENCHMARKS.md
def replace_block(path: str | Path, block: str, *, begin: str = BEGIN, end: str = END) -> str:
    """Put ``block`` (with its markers ``begin`` / ``end``; default: the harness's) into ``path`` in place of the
    text between those markers, markers included; append it at the end when the file has none. Returns
    ``"replaced"`` or ``"appended"``. Other marker pairs (another script's block) are left alone.

    Raises :class:`BlockError` for a file with unbalanced, repeated or out-of-order markers (nothing is written).
    """
    path = Path(path)
    if not block.startswith(begin) or not block.rstrip().endswith(end):
        raise ValueError("the block must start with the begin marker and end with the end marker")
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    begins = [m.start() for m in re.finditer(re.escape(begin), text)]
    ends = [m.start() for m in re.finditer(re.escape(end), text)]
    if not begins and not ends:
        sep = "" if not text else ("\n" if text.endswith("\n\n") else ("\n\n" if not text.endswith("\n") else "\n"))
        path.write_text(text + sep + block, encoding="utf-8")
        return "appended"
    if len(begins) != 1 or len(ends) != 1 or ends[0] < begins[0]:
        raise BlockError(f"{path}: expected one '{begin}' followed by one '{end}', found {len(begins)} begin and "
                         f"{len(ends)} end marker(s); fix the file by hand")
    stop = ends[0] + len(end)
    if text[stop:stop + 1] == "\n":
        stop += 1
    path.write_text(text[:begins[0]] + block + text[stop:], encoding="utf-8")
    return "replaced"


def write_result(out: str | Path, stem: str, result: dict[str, Any], block: str) -> Path:
    """Write a bench script's ``result`` as ``out/<stem>.json`` and its Markdown ``block`` as ``out/<stem>.md``
    (``out`` created); returns ``out``. The scripts refuse an existing ``<stem>.json`` before any work."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.json").write_text(json.dumps(result, indent=2))
    (out / f"{stem}.md").write_text(block)
    return out
