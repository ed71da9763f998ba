"""Rand-k's index set S, a pure function of (key, d, k): the same indices on every device.

Candidates are c_j = min(floor(u53(j) d), d - 1), j = 0, 1, 2, ..., with u53(j) the counter-based
53-bit uniform of ``psgd.kernels.rng`` (hashes of counters 2j and 2j + 1) and one float64 multiply,
which IEEE arithmetic rounds alike on every device. S is the first k distinct candidates, returned
ascending: the first k distinct values of an i.i.d. uniform sequence are a uniformly random k-subset
(every ordered k-tuple of distinct values is equally likely). Where k > d/2, the first d - k distinct
candidates are the coordinates left out, so a draw never needs more than about d ln 2 candidates
(not the d ln d of collecting nearly all of them).

The compiled kernel marks candidates in a bitmap of d bits, then emits the set bits in order; the
torch reference (also the CUDA path) dedupes batches of candidates with a stable sort.
"""

from __future__ import annotations

import numpy as np
import torch

from psgd import kernels
from psgd.kernels import cpu, device_fn, np_view
from psgd.kernels.rng import hash32, hash_ref, split

TWO_M53 = 2.0**-53
CHUNK = 512
# bit b of a 64-bit word w with only that bit set: DEBRUIJN_POS[((w * DEBRUIJN) >> 58) & 63] = b
DEBRUIJN = 0x03F79D71B4CB0A89
DEBRUIJN_POS = np.zeros(64, dtype=np.int64)
DEBRUIJN_POS[[((2**b * DEBRUIJN) % 2**64) >> 58 for b in range(64)]] = np.arange(64)


def candidates_ref(key: int, start: int, n: int, d: int, device: torch.device | str) -> torch.Tensor:
    """c_start, ..., c_(start + n - 1) as int64."""
    j = torch.arange(start, start + n, dtype=torch.int64, device=device)
    r = ((hash_ref(key, 2 * j) >> 5) << 26) + (hash_ref(key, 2 * j + 1) >> 6)
    return (r.to(torch.float64) * TWO_M53 * float(d)).to(torch.int64).clamp_(max=d - 1)


def first_distinct(v: torch.Tensor) -> torch.Tensor:
    """The distinct values of v, each at its first occurrence, in v's order."""
    s, order = torch.sort(v, stable=True)
    first = torch.ones_like(s, dtype=torch.bool)
    first[1:] = s[1:] != s[:-1]
    keep = torch.zeros_like(first)
    keep[order[first]] = True
    return v[keep]


def subset_ref(key: int, d: int, k: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """S ascending (int64), in torch: batches of candidates, deduped, until m = min(k, d - k) are distinct."""
    m = min(k, d - k)
    drawn, start = torch.empty(0, dtype=torch.int64, device=device), 0
    while drawn.numel() < m:
        n = (m - drawn.numel()) * d // (d - m) + 64  # enough on average while fewer than m are taken
        drawn = first_distinct(torch.cat([drawn, candidates_ref(key, start, n, d, device)]))[:m]
        start += n
    if m == k:
        return drawn.sort().values
    keep = torch.ones(d, dtype=torch.bool, device=device)
    keep[drawn] = False
    return keep.nonzero().view(-1)


@device_fn
def candidate(k0, k1, j, d):
    hi = np.int64(hash32(k0, k1, 2 * j)) >> 5
    lo = np.int64(hash32(k0, k1, 2 * j + 1)) >> 6
    return min(int(((hi << 26) + lo) * TWO_M53 * d), d - 1)


@cpu
def subset_kernel(k0, k1, d, out):
    """Writes S ascending into out (k = out.size int64s)."""
    k = out.size
    m = min(k, d - k)
    words = (d + 63) >> 6
    bitmap = np.zeros(words, dtype=np.int64)
    batch = np.empty(CHUNK, dtype=np.int64)
    found, j = 0, 0
    while found < m:  # candidates in batches: the bitmap's random reads then overlap
        for t in range(CHUNK):
            batch[t] = candidate(k0, k1, j + t, d)
        t = 0
        while t < CHUNK and found < m:
            c = batch[t]
            bit = np.int64(1) << (c & 63)
            word = bitmap[c >> 6]
            bitmap[c >> 6] = word | bit
            found += (word & bit) == 0
            t += 1
        j += t
    if m < k:  # the set bits are the coordinates left out
        for w in range(words):
            bitmap[w] = ~bitmap[w]
        if d & 63:
            bitmap[words - 1] &= (np.int64(1) << (d & 63)) - 1
    n = 0
    for w in range(words):
        if n == k:
            break
        word = bitmap[w]
        low = word & -word  # the first set bit without a branch (written, not counted, when word is 0)
        out[n] = (w << 6) + DEBRUIJN_POS[((low * DEBRUIJN) >> 58) & 63]
        n += word != 0
        word ^= low
        while word != 0:
            low = word & -word
            out[n] = (w << 6) + DEBRUIJN_POS[((low * DEBRUIJN) >> 58) & 63]
            n += 1
            word ^= low


def subset(key: int, d: int, k: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """S ascending (int64, on device): compiled on the CPU, the torch reference elsewhere."""
    out = torch.empty(k, dtype=torch.int64, device=device)

    def fast():
        subset_kernel(*split(key), d, np_view(out))
        return out

    return kernels.run(subset_kernel, (out,), fast=fast, reference=lambda: subset_ref(key, d, k, device))
