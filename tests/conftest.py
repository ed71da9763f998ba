"""Fixtures shared by the single-process tests."""

import pytest
import torch

from psgd import kernels


@pytest.fixture
def one_thread():
    """One torch intra-op thread, as each MPI rank and python -m psgd.train run: the same floats,
    and no thread contention on a busy 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def kernels_compile():
    """Fail the test in which a numba kernel failed to compile: the codec then runs its reference
    with only a warning, and every compiled-versus-reference comparison would pass trivially."""
    yield
    broken = [k.fn.__name__ for k in kernels.KERNELS if k.broken]
    assert not broken, f"numba could not compile {broken}: the compiled path did not run"
