"""PSNR and SSIM against scikit-image's values (fixture ssim_psnr) and basic properties."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from vantage.eval import psnr, ssim, to_unit

FIXTURE = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "reference" / "ssim_psnr.safetensors"


@pytest.fixture(scope="module")
def ref():
    if not FIXTURE.exists():
        pytest.skip(f"reference fixtures not found at {FIXTURE} (../shared is absent in user checkouts)")
    from safetensors.torch import load_file

    return load_file(str(FIXTURE))


def test_ssim_and_psnr_match_scikit_image(ref):
    a, b = ref["image_a"], ref["image_b"]
    assert torch.allclose(ssim(a, b), ref["ssim_wang"], atol=1e-5)
    assert torch.allclose(ssim(a, b, window="uniform"), ref["ssim_default"], atol=1e-5)
    assert torch.allclose(psnr(a, b), ref["psnr"], atol=1e-4)
    smap = ssim(a, b, return_map=True)
    assert torch.allclose(smap, ref["ssim_wang_map"][..., 5:-5, 5:-5].double(), atol=1e-5)
    # the two windows differ: the test would notice a swapped convention
    assert (ssim(a, b) - ssim(a, b, window="uniform")).abs().max() > 1e-3


def test_range_convention_and_identity(ref):
    a, b = ref["image_a"], ref["image_b"]
    # vantage images in [-1, 1] go through to_unit; PSNR is shift-invariant, SSIM is not
    a2, b2 = a * 2 - 1, b * 2 - 1
    assert torch.allclose(ssim(to_unit(a2), to_unit(b2)), ssim(a, b), atol=1e-6)
    assert torch.allclose(psnr(a2, b2, data_range=2.0), psnr(a, b), atol=1e-4)
    assert (ssim(a2, b2, data_range=2.0) - ssim(a, b)).abs().max() > 1e-3
    assert torch.allclose(ssim(a, a), torch.ones(6), atol=1e-6)
    assert torch.isinf(psnr(a, a)).all()


def test_bad_input():
    with pytest.raises(ValueError, match="same shape"):
        psnr(torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 9))
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        ssim(torch.zeros(3, 16, 16), torch.zeros(3, 16, 16))
    with pytest.raises(ValueError, match="smaller than the 11x11"):
        ssim(torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 8))
    with pytest.raises(ValueError, match="window must be"):
        ssim(torch.zeros(1, 3, 16, 16), torch.zeros(1, 3, 16, 16), window="box")
