"""Natural compression in Triton (natural, natural_round), psgd.compress.natural's wire: d binary32
exponent fields (the exponent of |x_i|, plus 1 when rounding up), then d packed sign bits
(signbit: -0.0 gives 1), with psgd.kernels.natural's signatures.

Rounding up: C_nat iff u(i) 2^23 < mantissa (probability mantissa / 2^23), natural rounding iff
mantissa >= 2^22. Decode: +-(field << 23) read as binary32.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from psgd.kernels.rng import split
from psgd.kernels.triton import BLOCK
from psgd.kernels.triton.bits import block_rows, grid, load_codes, store_codes
from psgd.kernels.triton.rng import uniform_at


@triton.jit(do_not_specialize=["k0", "k1"])  # 1 would become a constant
def _encode(x_ptr, field_ptr, sign_ptr, top_ptr, n, k0, k1, STOCHASTIC: tl.constexpr, BLOCK: tl.constexpr):
    rows, offs = block_rows(BLOCK)
    inside = offs < n
    bits = tl.load(x_ptr + offs, mask=inside, other=0.0).to(tl.float32).to(tl.int32, bitcast=True)
    tl.store(top_ptr + tl.program_id(0), tl.max(tl.max(bits & 0x7FFFFFFF, axis=1), axis=0))  # max |x_i|, as bits
    mantissa = bits & 0x7FFFFF
    up = uniform_at(k0, k1, offs) * 8388608.0 < mantissa.to(tl.float32) if STOCHASTIC else mantissa >= 0x400000
    field = ((bits >> 23) & 0xFF) + up.to(tl.int32)
    tl.store(field_ptr + offs, field.to(tl.uint8), mask=inside)
    store_codes(sign_ptr, (bits < 0) & inside, rows, tl.cdiv(n, 8), 1)


def natural_encode(x: torch.Tensor, key: int | None, body: torch.Tensor) -> float:
    """Write the body of x's message into body (d + ceil(d/8) bytes): C_nat with the uniforms of
    key, or natural rounding when key is None. x: a contiguous fp32, fp16 or bf16 vector. Returns
    max |x_i|: the caller refuses x that rounds beyond its range (the body is then meaningless)."""
    n = x.numel()
    k0, k1 = split(key or 0)
    g = grid(n, BLOCK)
    top = torch.empty(g[0], dtype=torch.int32, device=x.device)
    _encode[g](x, body, body[n:], top, n, k0, k1, STOCHASTIC=key is not None, BLOCK=BLOCK)
    return float(top.max().view(torch.float32))


@triton.jit
def _natural_into(body_ptr, out_ptr, n, weight, ADD: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    inside = offs < n
    field = tl.load(body_ptr + offs, mask=inside, other=0).to(tl.int32)
    magnitude = (field << 23).to(tl.float32, bitcast=True)
    v = tl.where(load_codes(body_ptr + n, offs, tl.cdiv(n, 8), 1) != 0, -magnitude, magnitude)
    if ADD:
        v = tl.load(out_ptr + offs, mask=inside) + weight * v
    tl.store(out_ptr + offs, v, mask=inside)


def natural_into(body: torch.Tensor, out: torch.Tensor, weight: float, add: bool) -> None:
    """out = C(x) (add False) or out += weight C(x) (add True) from a natural body; out a contiguous
    fp32 vector of d elements. weight 1: the floats of out + C(x)."""
    n = out.numel()
    _natural_into[grid(n, BLOCK)](body, out, n, weight, ADD=add, BLOCK=BLOCK, enable_fp_fusion=False)
