"""Fixtures shared by the single-process tests."""

import pytest
import torch


@pytest.fixture
def one_thread():
    """One torch intra-op thread, as each MPI rank and python -m psgd.train run: the same floats,
    and no thread contention on a busy 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
