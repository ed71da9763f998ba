"""Selecting coordinates for sparse codecs: exact top-k of |x|, the coordinates at or above a
threshold, and one coordinate drawn with probability |x_i| / ||x||_1.

Top-k is a radix select on the IEEE bits: for finite x the bits of |x| (the sign bit cleared),
read as an unsigned integer, grow with |x|. One pass counts the keys' top 16 bits (2^16 bins:
the exponent and 7 mantissa bits); the bin holding the k-th largest key follows from the counts.
A second pass keeps every coordinate of that bin or above (ascending); the low 15 bits of that
bin's candidates, counted, fix the k-th largest key T exactly. Keeping the keys above T
and the first ties at T gives k coordinates, ascending, without sorting.

For n >= 2^17 a strided sample of 2^15 keys first sets a floor a little below the k-th largest
key; one pass keeps the keys above it (a few more than k), and the select runs on those alone.
Any floor gives the same result: the sample only saves the counting pass over all of x.

Tie rule: among coordinates whose |x_i| equals the k-th largest |x| (+0 and -0 are equal), the
lowest indices win. The torch reference (CUDA and other dtypes) selects the same set.
"""

from __future__ import annotations

import numpy as np
import torch

from psgd import kernels
from psgd.kernels import cpu, device_fn, np_view
from psgd.kernels import triton as gpu

_LOW = 15  # the low bits of the 31-bit key counted in the refining histogram; 2^16 bins above them
_FEW = 64  # below n / _FEW kept coordinates a branch per coordinate beats writing every one (measured)
_BLOCK = 4096  # coordinates per block of inverse_cdf's sums


@device_fn
def _compact(bits, floor, cap, exact):
    """(count, indices, value bits) of the keys >= floor, ascending; the arrays hold the first cap
    (all of them when cap is the exact count)."""
    n = bits.size
    idx = np.empty(cap + 1, np.int64)
    val = np.empty(cap + 1, np.uint32)
    j = 0
    if not exact or _FEW * cap < n:  # few kept: a well-predicted branch
        for i in range(n):
            if (bits[i] & 0x7FFFFFFF) >= floor:
                if j < cap:
                    idx[j] = i
                    val[j] = bits[i]
                j += 1
    else:  # many kept: write every coordinate, move on past a kept one (no branch to mispredict)
        for i in range(n):
            idx[j] = i
            val[j] = bits[i]
            j += (bits[i] & 0x7FFFFFFF) >= floor
    return j, idx, val


@device_fn
def _radix_select(bits, k):
    """(positions ascending, value bits) of the k largest keys bits & 0x7FFFFFFF, lowest position first among ties."""
    high = np.zeros(1 << 16, np.int32)  # fewer than 2^31 keys
    for i in range(bits.size):
        high[(bits[i] & 0x7FFFFFFF) >> _LOW] += 1
    above, b = 0, (1 << 16) - 1
    while above + high[b] < k:
        above += high[b]
        b -= 1
    kept, idx, val = _compact(bits, b << _LOW, above + high[b], True)  # bin b and above
    low = np.zeros(1 << _LOW, np.int64)
    for i in range(kept):
        key = val[i] & 0x7FFFFFFF
        if key >> _LOW == b:
            low[key & ((1 << _LOW) - 1)] += 1
    need, t = k - above, (1 << _LOW) - 1
    while low[t] < need:
        need -= low[t]
        t -= 1
    threshold = (b << _LOW) | t  # the k-th largest key; `need` of its ties are kept
    j = 0
    for i in range(kept):
        key = val[i] & 0x7FFFFFFF
        if key == threshold and need > 0:
            need -= 1
        elif key <= threshold:
            continue
        idx[j] = idx[i]
        val[j] = val[i]
        j += 1
    return idx[:k], val[:k]


@cpu
def _top_k(bits, k):
    """(indices ascending, value bits) of the k largest keys bits & 0x7FFFFFFF, lowest index first among ties.

    Where a sample of the keys at a fixed stride puts a floor F with at least k keys >= F but few
    more, one pass keeps those candidates and the radix select runs on them alone; otherwise (or
    when the guess misses) on all of x."""
    n = bits.size
    if n >= 1 << 17:
        stride = n >> 15
        m = n // stride
        high = np.zeros(1 << 16, np.int64)
        for i in range(m):
            high[(bits[i * stride] & 0x7FFFFFFF) >> _LOW] += 1
        r = k * m / n  # the k-th largest key's expected rank in the sample; aim 4 sigma + 16 below it
        q = r + 4 * np.sqrt(r) + 16
        above, b = 0, (1 << 16) - 1
        while above + high[b] < q and b > 0:
            above += high[b]
            b -= 1
        c = above + high[b]  # sampled keys >= the floor: c * stride expected in x, 4 sigma + 16 allowed
        cap = int((c + 4 * np.sqrt(c) + 16) * stride)
        if b > 0 and 32 * cap < n:  # a branchy pass over x beats counting it
            found, idx, val = _compact(bits, b << _LOW, cap, False)
            if k <= found <= cap:
                pos, top = _radix_select(val[:found], k)
                return idx[pos], top
    return _radix_select(bits, k)


def top_k_ref(x: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(indices ascending, x at them) of the k largest |x_i|, lowest indices first among ties: torch on any device."""
    a = x.abs()
    t = torch.topk(a, k, sorted=False).values.min()
    above = a > t
    ties = a == t
    keep = above | (ties & (torch.cumsum(ties, 0) <= k - above.sum()))
    idx = torch.nonzero(keep).view(-1)
    return idx, x[idx]


def top_k(x: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(indices ascending, x at them) of the k largest |x_i| (1 <= k <= d, x finite), lowest indices
    first among ties."""
    if x.dtype != torch.float32 or x.numel() >= 2**31:
        return top_k_ref(x, k)
    if gpu.available(x):
        from psgd.kernels.triton import topk

        return topk.top_k(x.contiguous(), k)

    def fast():
        idx, val = _top_k(np_view(x.contiguous()).view(np.uint32), k)
        return torch.from_numpy(idx), torch.from_numpy(val.view(np.float32))

    return kernels.run(_top_k, (x,), fast=fast, reference=lambda: top_k_ref(x, k))


@cpu
def _count_at_least(x, lam):
    kept = 0
    for i in range(x.size):
        if abs(x[i]) >= lam:
            kept += 1
    return kept


@cpu
def _at_least(x, lam, idx, val):
    """Fill idx and val (one spare slot) with the indices and values of the x_i with |x_i| >= lam."""
    n = x.size
    j = 0
    if _FEW * (idx.size - 1) < n:  # few kept: a well-predicted branch
        for i in range(n):
            if abs(x[i]) >= lam:
                idx[j] = i
                val[j] = x[i]
                j += 1
    else:  # many kept: write every coordinate, move on past a kept one
        for i in range(n):
            idx[j] = i
            val[j] = x[i]
            j += abs(x[i]) >= lam


def at_least_ref(x: torch.Tensor, lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(indices ascending, x at them) of the |x_i| >= lam (lam rounded to x's dtype, as torch compares)."""
    idx = torch.nonzero(x.abs() >= lam).view(-1)
    return idx, x[idx]


def at_least(x: torch.Tensor, lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(indices ascending, x at them) of the coordinates with |x_i| >= lam, lam rounded to x's dtype."""
    if x.dtype not in (torch.float32, torch.float64):
        return at_least_ref(x, lam)
    a = np_view(x.contiguous()) if x.device.type == "cpu" else None

    def fast():
        kept = _count_at_least(a, a.dtype.type(lam))
        idx, val = torch.empty(kept + 1, dtype=torch.int64), torch.empty(kept + 1, dtype=x.dtype)
        _at_least(a, a.dtype.type(lam), np_view(idx), np_view(val))
        return idx[:kept], val[:kept]

    return kernels.run(_at_least, (x,), fast=fast, reference=lambda: at_least_ref(x, lam))


@cpu
def _inverse_cdf(x, u, block):
    """The first i with cdf_i > u cdf_total (0 when x = 0); see inverse_cdf_ref for the cdf."""
    n = x.size
    nb = (n + block - 1) // block
    sums = np.zeros(nb, np.float64)
    for b in range(0, nb - 1 - (nb - 1) % 4, 4):  # four whole blocks at once: four independent sums
        s0 = s1 = s2 = s3 = 0.0
        for i in range(b * block, (b + 1) * block):
            s0 += abs(np.float64(x[i]))
            s1 += abs(np.float64(x[i + block]))
            s2 += abs(np.float64(x[i + 2 * block]))
            s3 += abs(np.float64(x[i + 3 * block]))
        sums[b], sums[b + 1], sums[b + 2], sums[b + 3] = s0, s1, s2, s3
    for i in range((nb - 1 - (nb - 1) % 4) * block, n):
        sums[i // block] += abs(np.float64(x[i]))
    total = 0.0
    for b in range(nb):
        total += sums[b]
    if total == 0:
        return 0
    target = u * total
    start, b = 0.0, 0
    while b < nb - 1 and start + sums[b] <= target:  # cdf in block b <= fl(start + sums[b])
        start += sums[b]
        b += 1
    run = 0.0
    for i in range(b * block, n):
        run += abs(np.float64(x[i]))
        if start + run > target:
            return i
    return n - 1


def inverse_cdf_ref(x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """[first i with cdf_i > u cdf_total] ([0] for x = 0) on x's device, where, in float64 with
    x cut in blocks of _BLOCK, cdf_i = (sum of the earlier blocks' sums, added in order) + (the
    running sum of |x| within i's block): the blocks' sums are independent, so the kernel adds
    four at once instead of waiting on one running sum."""
    n = x.numel()
    a = x.abs().to(torch.float64)
    blocks = torch.cat([a, a.new_zeros(-n % _BLOCK)]).view(-1, _BLOCK)
    within = torch.cumsum(blocks, 1)
    ends = torch.cumsum(within[:, -1], 0)
    if float(ends[-1]) == 0:
        return torch.zeros(1, dtype=torch.int64, device=x.device)
    cdf = (torch.cat([ends.new_zeros(1), ends[:-1]]).unsqueeze(1) + within).view(-1)[:n]
    return torch.searchsorted(cdf, u * ends[-1], right=True).clamp_(max=n - 1)


def inverse_cdf(x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """One index drawn with probability |x_i| / ||x||_1 by the float64 uniform u (shape [1]), as a [1] tensor."""
    if x.dtype not in (torch.float32, torch.float64):
        return inverse_cdf_ref(x, u)

    def fast():
        return torch.tensor([_inverse_cdf(np_view(x.contiguous()), float(u), _BLOCK)], dtype=torch.int64)

    return kernels.run(_inverse_cdf, (x,), fast=fast, reference=lambda: inverse_cdf_ref(x, u))
