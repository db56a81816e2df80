"""ViewFusion with more view rows than fit in memory (issue #5, bad input): at inference the rows are run in halved
chunks until they fit (same result, one warning, the fitted chunk kept); in training, or when one row does not fit,
the error says how many rows were asked for. Allocation failures are injected into the network's forward (the
thing under test is the chunking around it); both kinds torch raises are covered (CUDA's ``OutOfMemoryError`` and
the CPU allocator's ``RuntimeError``)."""

from __future__ import annotations

import warnings

import pytest
import torch
from test_viewfusion import _perturbed, _random_case, _targets, _tiny, _views

from vantage.methods.viewfusion_compose import RowRunner, is_out_of_memory

pytestmark = pytest.mark.usefixtures("single_thread")

CPU_OOM = "[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate memory: you tried"


def _limit_rows(m, limit: int, error: str = "cuda") -> list[int]:
    """Make ``m.net`` fail like an allocator for calls of more than ``limit`` rows; returns the call sizes."""
    sizes, forward = [], m.net.forward

    def limited(x, *args, **kwargs):
        sizes.append(x.shape[0])
        if x.shape[0] > limit:
            raise torch.OutOfMemoryError("CUDA out of memory.") if error == "cuda" else RuntimeError(CPU_OOM)
        return forward(x, *args, **kwargs)

    m.net.forward = limited
    return sizes


@pytest.mark.parametrize("error", ["cuda", "cpu"])
def test_rows_that_do_not_fit_are_chunked_with_the_same_result(error):
    m = _perturbed(_tiny())
    images, valid, x, sigma = _random_case()  # 3 samples, 4 slots: 7 valid rows
    views, target = _views(images, valid), _targets([1, 7, 13], 16)
    with torch.no_grad():
        ref = m.compose(x, sigma, views, target)
        sizes = _limit_rows(m, 2, error)
        with pytest.warns(UserWarning, match=r"7 view rows did not fit in memory on cpu.*ran 1 per call") as rec:
            got = m.compose(x, sigma, views, target)
        assert len(rec) == 1 and sizes == [7, 3] + [1] * 7 and m.rows.fitted == 1  # 7 -> 3 (fails) -> 1
        assert torch.allclose(got.eps, ref.eps, atol=1e-6) and torch.allclose(got.weights, ref.weights, atol=1e-6)
        sizes.clear()
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # the fitted chunk is kept: no search, no warning
            again = m.compose(x, sigma, views, target)
        assert sizes == [1] * 7 and torch.equal(again.eps, got.eps)


def test_training_and_single_rows_say_what_did_not_fit():
    m = _perturbed(_tiny())
    images, valid, x, sigma = _random_case()
    views, target = _views(images, valid), _targets([1, 7, 13], 16)
    _limit_rows(m, 3)
    with pytest.raises(RuntimeError, match=r"training on 7 view rows.*lower the batch.*max_views"):
        m.compose(x, sigma, views, target)  # gradients on: chunking would not save the activations
    _limit_rows(m, 0)
    with torch.no_grad(), pytest.raises(RuntimeError, match=r"even one of the 7 view rows"):
        m.compose(x, sigma, views, target)


def test_other_errors_pass_through_and_max_rows_bounds_the_chunk():
    m = _perturbed(_tiny(max_rows=2))
    images, valid, x, sigma = _random_case()
    views, target = _views(images, valid), _targets([1, 7, 13], 16)
    sizes = _limit_rows(m, 7)
    with torch.no_grad():
        m.compose(x, sigma, views, target)
    assert sizes == [2, 2, 2, 1]
    assert not is_out_of_memory(RuntimeError("shape mismatch")) and is_out_of_memory(RuntimeError(CPU_OOM))
    runner = RowRunner()

    def broken(x):
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")

    with torch.no_grad(), pytest.raises(RuntimeError, match="mat1 and mat2"):
        runner(broken, (torch.zeros(4, 1),), None)
    assert runner.fitted is None
