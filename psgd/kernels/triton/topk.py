"""Exact top-k of |x| in Triton, as psgd.kernels.topk selects: the k largest keys bits(x_i) & 0x7FFFFFFF
(for finite x they grow with |x|; +0 and -0 are equal), the lowest indices first among the ties at
the k-th largest key T, indices ascending.

A radix select over four 8-bit digits of the key: each pass histograms the next digit of the keys
that share the digits chosen so far (256 bins per program, added into one histogram), and the
counts from the top fix T's digit and how many ties at T are still to keep. Then one pass counts
per program the keys above T and at T, and one pass writes each kept coordinate at its rank (a scan
within the program, prefix sums of the counts across programs). Everything stays on the device.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from psgd.kernels.triton import BLOCK
from psgd.kernels.triton.bits import grid


@triton.jit
def _keys(x_ptr, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    inside = offs < n
    key = tl.load(x_ptr + offs, mask=inside, other=0.0).to(tl.int32, bitcast=True) & 0x7FFFFFFF
    return offs, inside, tl.where(inside, key, -1)  # -1: below every key


@triton.jit
def _histogram(x_ptr, prefix_ptr, hist_ptr, n, SHIFT: tl.constexpr, BLOCK: tl.constexpr):
    _, inside, key = _keys(x_ptr, n, BLOCK)
    if SHIFT < 24:
        inside &= (key >> (SHIFT + 8)) == tl.load(prefix_ptr)
    digit = (key >> SHIFT) & 0xFF
    tl.atomic_add(hist_ptr + tl.arange(0, 256), tl.histogram(digit, 256, mask=inside))


@triton.jit
def _count(x_ptr, t_ptr, above_ptr, ties_ptr, n, BLOCK: tl.constexpr):
    _, _, key = _keys(x_ptr, n, BLOCK)
    t = tl.load(t_ptr)
    tl.store(above_ptr + tl.program_id(0), tl.sum((key > t).to(tl.int32), axis=0))
    tl.store(ties_ptr + tl.program_id(0), tl.sum((key == t).to(tl.int32), axis=0))


@triton.jit
def _write(x_ptr, t_ptr, need_ptr, ties_before_ptr, kept_before_ptr, idx_ptr, val_ptr, n, BLOCK: tl.constexpr):
    offs, inside, key = _keys(x_ptr, n, BLOCK)
    t = tl.load(t_ptr)
    tie = (key == t).to(tl.int32)
    tie_rank = tl.load(ties_before_ptr + tl.program_id(0)) + tl.cumsum(tie, axis=0) - tie
    keep = ((key > t) | ((tie != 0) & (tie_rank < tl.load(need_ptr)))).to(tl.int32)
    at = tl.load(kept_before_ptr + tl.program_id(0)) + tl.cumsum(keep, axis=0) - keep
    tl.store(idx_ptr + at, offs.to(tl.int64), mask=keep != 0)
    tl.store(val_ptr + at, tl.load(x_ptr + offs, mask=inside), mask=keep != 0)


def _exclusive(counts: torch.Tensor) -> torch.Tensor:
    return torch.cumsum(counts, 0) - counts


def top_k(x: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(indices ascending, x at them) of the k largest |x_i| of a contiguous finite fp32 vector
    (1 <= k <= d), lowest indices first among ties: psgd.kernels.topk.top_k's selection."""
    n = x.numel()
    g = grid(n, BLOCK)
    prefix = torch.zeros((), dtype=torch.int32, device=x.device)  # T's digits chosen so far
    need = torch.full((), k, dtype=torch.int32, device=x.device)  # keys still to take under that prefix
    hist = torch.empty(256, dtype=torch.int32, device=x.device)
    for shift in (24, 16, 8, 0):
        hist.zero_()
        _histogram[g](x, prefix, hist, n, SHIFT=shift, BLOCK=BLOCK)
        at_least = torch.flip(torch.cumsum(torch.flip(hist, (0,)), 0), (0,))  # keys with digit >= b
        digit = (at_least >= need).sum(dtype=torch.int32) - 1
        need = need - torch.cat([at_least[1:], at_least.new_zeros(1)])[digit]
        prefix = prefix * 256 + digit
    above = torch.empty(g[0], dtype=torch.int32, device=x.device)
    ties = torch.empty_like(above)
    _count[g](x, prefix, above, ties, n, BLOCK=BLOCK)
    ties_before = _exclusive(ties)
    kept = above + (need - ties_before).clamp(min=0).minimum(ties)
    idx = torch.empty(k, dtype=torch.int64, device=x.device)
    val = torch.empty(k, dtype=torch.float32, device=x.device)
    _write[g](x, prefix, need, ties_before, _exclusive(kept), idx, val, n, BLOCK=BLOCK)
    return idx, val
