"""psgd.kernels.rng: the kernels' draws (random24, random24_in, hash32, uniform_at in numba; the
Triton generator that rng.uniform takes on CUDA) against the reference, bit for bit; the design's
claims (exact marginals, distinct draws) and statistical sanity across block boundaries."""

from __future__ import annotations

import os

import numba
import numpy as np
import pytest
import torch

from psgd.kernels import rng
from psgd.kernels.rng import block_key, hash32, random24, random24_in, uniform_at

KEYS = (0, 1, 2**64 - 1, 0xDEADBEEF12345678)
STARTS = (0, 2**16 - 2500, 2**31 - 3000, 2**32 - 5000)  # block boundaries, past int32, the last 32-bit word
BLOCK = 2**rng.BLOCK_BITS


@numba.njit
def draws(k0, k1, start, n):
    """(random24 2^-24, uniform_at, hash32) for counters start, ..., start + n - 1."""
    r, u, h = np.empty(n, np.float32), np.empty(n, np.float32), np.empty(n, np.int64)
    for i in range(n):
        r[i] = np.float32(random24(k0, k1, start + i)) * np.float32(2.0**-24)
        u[i] = uniform_at(k0, k1, start + i)
        h[i] = hash32(k0, k1, start + i)
    return r, u, h


@numba.njit
def block_draws(k0, k1, start, n):
    """random24_in 2^-24 for counters start, ..., start + n - 1 of one block, int32 counters as in
    the encode kernels."""
    r = np.empty(n, np.float32)
    at, kb = np.int32(start), block_key(k0, start)
    for j in range(n):
        r[j] = np.float32(random24_in(kb, k1, at + j)) * np.float32(2.0**-24)
    return r


@pytest.mark.parametrize("start", STARTS)
def test_numba_draws_are_the_reference(start):
    for key in KEYS:
        ref = rng.uniform_ref(key, 5000, start=start)
        r, u, h = draws(*rng.split(key), start, 5000)
        assert torch.equal(torch.from_numpy(r), ref) and torch.equal(torch.from_numpy(u), ref)
        assert torch.equal(torch.from_numpy(h), rng.hash_ref(key, torch.arange(start, start + 5000)))


def test_block_draws_are_the_reference():
    """random24_in with block_key is random24 for every counter of a block, first to last."""
    for key in KEYS:
        for start in (0, BLOCK, 2**31 - BLOCK, 2**32 - BLOCK):
            ref = rng.uniform_ref(key, BLOCK, start=start)
            assert torch.equal(torch.from_numpy(block_draws(*rng.split(key), start, BLOCK)), ref)


def test_reference_takes_any_counters():
    """hash_ref on scattered counters (several blocks, any order, a 0-dim tensor) is hash_ref on each."""
    i = torch.tensor([2**32 - 1, 5, BLOCK, BLOCK - 1, 7 * BLOCK + 3, 5])
    one_by_one = torch.stack([rng.hash_ref(KEYS[3], c) for c in i])
    assert torch.equal(rng.hash_ref(KEYS[3], i), one_by_one)
    assert rng.hash_ref(KEYS[3], i[:0]).numel() == 0


def unmix(h: torch.Tensor) -> torch.Tensor:
    """mix^-1 on int64 lanes: each step of lowbias32 undone in reverse order."""
    h = h ^ (h >> 16)
    h = (h * pow(rng.C2, -1, 2**32)) & rng.M32
    h = h ^ (h >> 15) ^ (h >> 30)
    h = (h * pow(rng.C1, -1, 2**32)) & rng.M32
    return h ^ (h >> 16)


def test_marginals_are_exactly_uniform():
    """Given k0, mix's argument is a fixed word xor k1: over a uniform k1, hence over a uniform
    64-bit key, each h(i) is exactly uniform (mix a bijection), and so each u(i) on the 24-bit grid."""
    i = torch.cat([torch.arange(0, 3000), torch.arange(BLOCK - 3000, BLOCK + 3000), torch.arange(2**32 - 3000, 2**32)])
    assert torch.equal(unmix(rng.mix_ref(i)), i)
    g = torch.Generator().manual_seed(0)
    for k0 in (0, 1, 0xFFFFFFFF, 0x12345678):
        base = unmix(rng.hash_ref(k0, i))  # k1 = 0
        for k1 in torch.randint(0, 2**32, (8,), generator=g).tolist():
            assert torch.equal(unmix(rng.hash_ref(k0 | k1 << 32, i)), base ^ k1)


def test_distinct_counters_get_distinct_hashes():
    """i -> h(i) is one-to-one on 32-bit counters, across blocks too."""
    i = torch.cat([torch.arange(0, 3 * BLOCK), torch.arange(2**32 - 2 * BLOCK, 2**32)])
    for key in KEYS:
        assert torch.unique(rng.hash_ref(key, i)).numel() == i.numel()


def chi_square(counts: torch.Tensor) -> float:
    expected = counts.sum() / counts.numel()
    return float(((counts - expected) ** 2 / expected).sum())


def bins(u: torch.Tensor, b: int) -> torch.Tensor:
    """The top b bits of fp32 uniforms, as int64."""
    return (u.double() * 2**b).long()


def test_draws_are_uniform_24_bit_words():
    u = rng.uniform_ref(KEYS[3], 100_000)
    assert float(u.min()) >= 0 and float(u.max()) < 1
    assert torch.equal(u * 2**24, torch.floor(u * 2**24))  # exactly 24 bits
    assert abs(float(u.mean()) - 0.5) < 0.005


# chi-square bounds: 255 degrees of freedom have mean 255, standard deviation 22.6; 15 have 15 and 5.5
CHI255, CHI15 = 255 + 6 * 22.6, 15 + 6 * 5.5


@pytest.mark.parametrize("key", KEYS)
def test_draws_look_independent_along_the_counters(key):
    """Over 2^20 counters (16 blocks): u's top 8 bits are flat, adjacent pairs (u(i), u(i + 1)) and
    pairs a block apart (u(i), u(i + 2^16)) fill a 16 x 16 grid evenly, their correlations near 0
    (standard error 2^-10)."""
    n = 2**20
    u = rng.uniform_ref(key, n + BLOCK, start=2**31 - 8 * BLOCK).double()
    assert chi_square(torch.bincount(bins(u[:n].float(), 8), minlength=256).double()) < CHI255
    for lag in (1, BLOCK):
        a, b = u[:n], u[lag : lag + n]
        cells = torch.bincount(16 * (a * 16).long() + (b * 16).long(), minlength=256).double()
        assert chi_square(cells) < CHI255
        assert abs(float(torch.corrcoef(torch.stack([a, b]))[0, 1])) < 6 * 2**-10


def test_draws_look_independent_across_keys():
    """At fixed counters (each side of block boundaries, the first and last) over 4096 keys, u is
    flat in 16 bins, and the pair on each side of a boundary fills a 16 x 16 grid evenly; keys that
    differ only in k1 give uncorrelated sequences."""
    i = torch.tensor([0, 1, BLOCK - 1, BLOCK, 2**31 - 1, 2**31, 2**32 - 1])
    g = torch.Generator().manual_seed(1)
    keys = [rng.draw_key(g) for _ in range(4096)]
    u = torch.stack([rng.hash_ref(k, i) >> 8 for k in keys]).double() * 2**-24  # (keys, counters)
    for c in range(i.numel()):
        assert chi_square(torch.bincount((u[:, c] * 16).long(), minlength=16).double()) < CHI15
    for left in (2, 4):  # (BLOCK - 1, BLOCK), (2^31 - 1, 2^31)
        cells = torch.bincount(16 * (u[:, left] * 16).long() + (u[:, left + 1] * 16).long(), minlength=256)
        assert chi_square(cells.double()) < CHI255
    k0 = KEYS[3] & rng.M32
    for k1 in (0, 1, 2**31):
        a = rng.uniform_ref(k0 | k1 << 32, 2**18, start=BLOCK - 2**17).double()
        b = rng.uniform_ref(k0 | (k1 ^ 0x10000) << 32, 2**18, start=BLOCK - 2**17).double()
        assert abs(float(torch.corrcoef(torch.stack([a, b]))[0, 1])) < 6 * 2**-9


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
