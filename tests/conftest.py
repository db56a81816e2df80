"""Shared test fixtures."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture
def single_thread():
    """Run a test with one intra-op thread (tiny tensors: OpenMP hand-off costs dominate on small CPUs)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
