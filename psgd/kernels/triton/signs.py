"""Sign bits in Triton (sign, scaled_sign, block_sign), with psgd.kernels.signs' signatures and results:
bit j of byte b is 1 iff x_{8b+j} >= 0 (-0.0 included); the vector splits into blocks of the given
sizes, each with its float64 l1 on encode and one fp32 value p_b on decode (out_i (+)= +-p_b).

l1 is summed in float64, pairwise within 1024 coordinates, then over those partial sums: it can
differ from the CPU's sum in the last float64 bits, so (far below once in 10^6 messages) the fp32
scale l1/d_b on the wire may differ by one ulp.
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


@triton.jit
def _block_l1(x_ptr, ends_ptr, partial_ptr, chunks, BLOCK: tl.constexpr):
    """Program p sums chunk p % chunks of block p // chunks (0 past the block's end)."""
    b = tl.program_id(0) // chunks
    start = tl.load(ends_ptr + b - 1, mask=b > 0, other=0)
    offs = start + (tl.program_id(0) % chunks) * BLOCK + tl.arange(0, BLOCK)
    x = tl.load(x_ptr + offs, mask=offs < tl.load(ends_ptr + b), other=0.0)
    tl.store(partial_ptr + tl.program_id(0), tl.sum(tl.abs(x.to(tl.float64)), axis=0))


def _ends(sizes: list[int], device: torch.device) -> torch.Tensor:
    return torch.tensor(sizes, dtype=torch.int64).cumsum(0).to(device)


def pack_signs(x: torch.Tensor, sizes: list[int], bits: torch.Tensor, l1: bool) -> torch.Tensor | None:
    """Write pack_bits(x >= 0) of a contiguous float vector x into the uint8 tensor bits (ceil(d/8)
    bytes); return the float64 l1 of each block (sizes summing to d) when l1, else None."""
    n = x.numel()
    g = grid(n, BLOCK)
    one = l1 and len(sizes) == 1  # one block: its l1 from the packing pass
    partial = torch.empty(g[0] if one else 1, dtype=torch.float64, device=x.device)
    _pack[g](x, bits, partial, n, L1=one, BLOCK=BLOCK)
    if not l1:
        return None
    if one:
        return partial.sum().reshape(1)
    chunks = triton.cdiv(max(sizes), BLOCK)
    partial = torch.empty(len(sizes), chunks, dtype=torch.float64, device=x.device)
    _block_l1[(len(sizes) * chunks,)](x, _ends(sizes, x.device), partial, chunks, BLOCK=BLOCK)
    return partial.sum(1)


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


def sign_values(bits: torch.Tensor, sizes: list[int], p: torch.Tensor, out: torch.Tensor, add: bool) -> None:
    """out_i (+)= p_b where bit i is 1, -p_b where it is 0, i in block b, in place: p the fp32 value
    of each block (for accumulate already weight * scale, rounded once), out a contiguous fp32 vector."""
    n = out.numel()
    one = len(sizes) == 1
    _sign_values[grid(n, BLOCK)](
        bits, p if one else _ends(sizes, out.device), p, out, n, len(sizes),
        STEPS=0 if one else len(sizes).bit_length(), ADD=add, BLOCK=BLOCK,
    )  # fmt: skip
