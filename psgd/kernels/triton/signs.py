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
def _signs_into(bits_ptr, scale_ptr, out_ptr, n, weight, SCALED: tl.constexpr, ADD: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    inside = offs < n
    s = tl.load(scale_ptr) if SCALED else 1.0
    v = tl.where(load_codes(bits_ptr, offs, tl.cdiv(n, 8), 1) != 0, s, -s)
    if ADD:
        v = tl.load(out_ptr + offs, mask=inside) + weight * v
    tl.store(out_ptr + offs, v, mask=inside)


def signs_into(bits: torch.Tensor, out: torch.Tensor, scale: torch.Tensor | None, weight: float, add: bool) -> None:
    """out = v (add False) or out += weight v (add True), v_i = +s if bit i else -s, s the fp32 0-dim
    tensor scale (1 when None); out a contiguous fp32 vector. weight 1: the floats of out + v."""
    n = out.numel()
    _signs_into[grid(n, BLOCK)](
        bits,
        out if scale is None else scale,
        out,
        n,
        weight,
        SCALED=scale is not None,
        ADD=add,
        BLOCK=BLOCK,
        enable_fp_fusion=False,
    )
