"""Sign bits in Triton (sign, scaled_sign): bit j of byte b is 1 iff x_{8b+j} >= 0 (-0.0 included),
with ||x||_1 from the same pass; decode and accumulate turn bit into +s or -s.

||x||_1 is summed in float64, pairwise within a block, then over blocks: it can differ from the
CPU's sum in the last float64 bits, and so (about once in 10^7 messages) in the fp32 scale ||x||_1/d.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from psgd.kernels.triton import BLOCK
from psgd.kernels.triton.bits import block_rows, grid, load_codes, store_codes


@triton.jit
def _pack(x_ptr, bits_ptr, l1_ptr, n, L1: tl.constexpr, BLOCK: tl.constexpr):
    rows, offs = block_rows(BLOCK)
    inside = offs < n
    x = tl.load(x_ptr + offs, mask=inside, other=0.0)
    store_codes(bits_ptr, (x >= 0) & inside, rows, tl.cdiv(n, 8), 1)
    if L1:
        tl.store(l1_ptr + tl.program_id(0), tl.sum(tl.sum(tl.abs(x.to(tl.float64)), axis=1), axis=0))


def pack_signs(x: torch.Tensor, bits: torch.Tensor, l1: bool = False) -> torch.Tensor | None:
    """Write pack_bits(x >= 0) of a contiguous float vector x into the uint8 tensor bits
    (ceil(d/8) bytes); return ||x||_1 as a float64 0-dim tensor when l1, else None."""
    n = x.numel()
    g = grid(n, BLOCK)
    partial = torch.empty(g[0] if l1 else 1, dtype=torch.float64, device=x.device)
    _pack[g](x, bits, partial, n, L1=l1, BLOCK=BLOCK)
    return partial.sum() if l1 else None


@triton.jit
def _sign_values(bits_ptr, ends_ptr, p_ptr, out_ptr, n, nblocks, STEPS: tl.constexpr, ADD: tl.constexpr,
                 BLOCK: tl.constexpr):  # fmt: skip
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    inside = offs < n
    block = tl.zeros_like(offs)  # the first b with ends[b] > i, by binary search (STEPS = 0: one block)
    high = tl.zeros_like(offs) + nblocks
    for _ in tl.static_range(STEPS):
        mid = (block + high) // 2
        active = block < high
        right = tl.load(ends_ptr + mid, mask=inside & active, other=0) <= offs
        block = tl.where(active & right, mid + 1, block)
        high = tl.where(active & ~right, mid, high)
    p = tl.load(p_ptr + block, mask=inside, other=0.0)
    v = tl.where(load_codes(bits_ptr, offs, tl.cdiv(n, 8), 1) != 0, p, -p)
    if ADD:
        v += tl.load(out_ptr + offs, mask=inside)
    tl.store(out_ptr + offs, v, mask=inside)


def sign_values(
    bits: torch.Tensor, p: torch.Tensor, out: torch.Tensor, add: bool, ends: torch.Tensor | None = None
) -> None:
    """out_i (+)= p_b where bit i is 1, -p_b where it is 0, in place (psgd.kernels.signs.sign_values):
    p the fp32 values of the blocks (for accumulate already weight * scale, rounded once), ends the
    int64 ends of the blocks (None: one block); out a contiguous fp32 vector."""
    n = out.numel()
    steps = 0 if ends is None else max(1, p.numel()).bit_length()
    _sign_values[grid(n, BLOCK)](
        bits, p if ends is None else ends, p, out, n, p.numel(), STEPS=steps, ADD=add, BLOCK=BLOCK
    )
