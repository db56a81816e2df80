"""Where the shared reference fixtures live, and loading them (skip only when ../shared is absent)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

SHARED = Path(__file__).resolve().parents[2] / "shared"
REF = SHARED / "fixtures" / "reference"
REAL = SHARED / "fixtures" / "real"


def load_reference(name: str) -> dict[str, torch.Tensor]:
    """Tensors of ``fixtures/reference/<name>.safetensors``; skips the test when ../shared is absent."""
    if not REF.is_dir():
        pytest.skip(f"reference fixtures not found at {REF} (../shared is absent in user checkouts)")
    from safetensors.torch import load_file

    return load_file(str(REF / f"{name}.safetensors"))
