"""psgd.kernels.rng: the kernels' draws (random24, uniform_at in numba; the Triton generator that
rng.uniform takes on CUDA) against the reference uniform_ref, bit for bit."""

from __future__ import annotations

import os

import numba
import numpy as np
import pytest
import torch

from psgd.kernels import rng
from psgd.kernels.rng import random24, uniform_at

KEYS = (0, 1, 2**64 - 1, 0xDEADBEEF12345678)
STARTS = (0, 2**31 - 3000, 2**32 - 5000)  # counters past int32 and up to the last 32-bit word


@numba.njit
def draws(k0, k1, start, n):
    """(random24 2^-24, uniform_at) for counters start, ..., start + n - 1."""
    r, u = np.empty(n, np.float32), np.empty(n, np.float32)
    for i in range(n):
        r[i] = np.float32(random24(k0, k1, start + i)) * np.float32(2.0**-24)
        u[i] = uniform_at(k0, k1, start + i)
    return r, u


@pytest.mark.parametrize("start", STARTS)
def test_numba_draws_are_the_reference(start):
    for key in KEYS:
        ref = rng.uniform_ref(key, 5000, start=start)
        r, u = draws(*rng.split(key), start, 5000)
        assert torch.equal(torch.from_numpy(r), ref) and torch.equal(torch.from_numpy(u), ref)


def test_draws_are_uniform_24_bit_words():
    u = rng.uniform_ref(KEYS[3], 100_000)
    assert float(u.min()) >= 0 and float(u.max()) < 1
    assert torch.equal(u * 2**24, torch.floor(u * 2**24))  # exactly 24 bits
    assert abs(float(u.mean()) - 0.5) < 0.005


def test_uniform_takes_the_triton_generator_on_cuda(monkeypatch):
    """On CUDA rng.uniform launches psgd.kernels.triton.rng; without a GPU that runs in Triton's
    interpreter on CPU tensors, available() forced."""
    if not torch.cuda.is_available():
        os.environ.setdefault("TRITON_INTERPRET", "1")  # read when the kernels are defined
    pytest.importorskip("triton")
    from psgd.kernels import triton as gpu

    device = "cuda" if torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1" else "cpu"
    if device == "cpu":
        monkeypatch.setattr(gpu, "available", lambda t: True)
    for key in KEYS:
        for n in (1, 1000, 2049):
            u = rng.uniform(key, n, torch.empty(0, device=device))
            assert u.device.type == device and torch.equal(u.cpu(), rng.uniform_ref(key, n))
    u64 = rng.uniform(KEYS[3], 100, torch.empty(0, dtype=torch.float64, device=device))
    assert torch.equal(u64.cpu(), rng.uniform64_ref(KEYS[3], 100))  # float64 data: 53 bits, the reference
