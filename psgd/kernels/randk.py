"""Rand-k's index set S, a pure function of (key, d, k): the same indices on every device.

Candidates are c_j = min(floor(u53(j) d), d - 1), j = 0, 1, 2, ..., with u53(j) the counter-based
53-bit uniform of ``psgd.kernels.rng`` (hashes of counters 2j and 2j + 1) and one float64 multiply,
which IEEE arithmetic rounds alike on every device. S is the first k distinct candidates, returned
ascending: the first k distinct values of an i.i.d. uniform sequence are a uniformly random k-subset
(every ordered k-tuple of distinct values is equally likely). Where k > d/2, the first d - k distinct
candidates are the coordinates left out, so a draw never needs more than about d ln 2 candidates
(not the d ln d of collecting nearly all of them).

The compiled kernel marks candidates in a bitmap of d bits, then emits the set bits in order; the
torch reference (also the CUDA path) dedupes one batch of candidates with a stable sort and
compacts by running counts, with one read of the device per draw (rand-k's parse draws a shared
seed's set once: psgd.compress.randk.random_subset).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from psgd import kernels
from psgd.kernels import cpu, device_fn, np_view
from psgd.kernels.rng import BLOCK_BITS, block_keys_ref, hash32, mix_ref, split

TWO_M53 = 2.0**-53
CHUNK = 512
# bit b of a 64-bit word w with only that bit set: DEBRUIJN_POS[((w * DEBRUIJN) >> 58) & 63] = b
DEBRUIJN = 0x03F79D71B4CB0A89
DEBRUIJN_POS = np.zeros(64, dtype=np.int64)
DEBRUIJN_POS[[((2**b * DEBRUIJN) % 2**64) >> 58 for b in range(64)]] = np.arange(64)


def hashes(key: int, i: torch.Tensor) -> torch.Tensor:
    """h(i) of psgd.kernels.rng for int64 counters i, each counter's block key computed beside it:
    hash_ref's values without its read of i's range (a device sync), for two rounds more a draw."""
    k0, k1 = split(key)
    return mix_ref(i ^ block_keys_ref(k0, i >> BLOCK_BITS) ^ k1)


def candidates_ref(key: int, start: int, n: int, d: int, device: torch.device | str) -> torch.Tensor:
    """c_start, ..., c_(start + n - 1) as int64."""
    j = torch.arange(start, start + n, dtype=torch.int64, device=device)
    r = ((hashes(key, 2 * j) >> 5) << 26) + (hashes(key, 2 * j + 1) >> 6)
    return (r.to(torch.float64) * TWO_M53 * float(d)).to(torch.int64).clamp_(max=d - 1)


def compact(mask: torch.Tensor, v: torch.Tensor, n: int) -> torch.Tensor:
    """The first n of v's values where mask holds, in v's order, in n slots (those past the
    count unspecified): a scatter by the running count, not a boolean index (which reads the
    count to size its output)."""
    rank = torch.cumsum(mask, 0) - 1
    slot = torch.where(mask & (rank < n), rank, n)  # slot n takes the rest
    return v.new_empty(n + 1).scatter_(0, slot, v)[:n]


def first_distinct(v: torch.Tensor, m: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(v's first m distinct values in v's order, the number of distinct values of v as a 0-dim
    tensor): the first slots are exact when that number is >= m."""
    s, order = torch.sort(v, stable=True)  # equal values in v's order: the first of a run came first
    new = torch.ones_like(s, dtype=torch.bool)
    new[1:] = s[1:] != s[:-1]
    first = torch.empty_like(new)
    first[order] = new
    return compact(first, v, m), new.sum()


def enough(d: int, m: int) -> int:
    """Candidates that hold m distinct values for all but a vanishing fraction of keys: the mean
    number needed, d (H_d - H_(d - m)) <= d ln(d / (d - m)), plus 8 bounds on its standard
    deviation (variance sum_(i < m) i d / (d - i)^2 <= m^2 d / (2 (d - m)^2)), plus 64."""
    return math.ceil(d * math.log(d / (d - m)) + 8 * m * math.sqrt(d / 2) / (d - m)) + 64


def subset_ref(key: int, d: int, k: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """S ascending (int64), in torch, in fixed-size steps: the first ``enough`` candidates deduped,
    one read of the device to see that m = min(k, d - k) are distinct (twice as many candidates
    again where not). No fixed number of candidates suffices for every key, so the read stays."""
    m = min(k, d - k)
    n, drawn = enough(d, m), torch.empty(0, dtype=torch.int64, device=device)
    while m:
        drawn, distinct = first_distinct(candidates_ref(key, 0, n, d, device), m)
        if int(distinct) >= m:
            break
        n *= 2
    if m == k:
        return drawn.sort().values
    keep = torch.ones(d, dtype=torch.bool, device=device)
    keep[drawn] = False
    return compact(keep, torch.arange(d, device=device), k)


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
