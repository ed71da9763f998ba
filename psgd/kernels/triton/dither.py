"""Random dithering in Triton (qsgd, terngrad, natural_dither with fixed-length codes),
psgd.compress.dithering's wire: code_i = level_i << 1 | (x_i < 0), packed at width 1 + uint_width(s).

y_i = min(|x_i| inv, 1), inv = 1 / the fp32 wire norm (0 for x = 0), computed by the caller as the
reference does. Levels with u(i): uniform, floor(s y) + (u < s y - floor(s y)); natural, level
e + s for 2^(e-1) <= y < 2^e, plus (u < fraction), or (u < y 2^(s-1)) below 2^(1-s); both capped
at s. Widths up to 8 bits (s <= 127); wider codes go through the reference.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from psgd.kernels.rng import split
from psgd.kernels.triton import BLOCK
from psgd.kernels.triton.bits import block_rows, grid, load_codes, store_codes
from psgd.kernels.triton.rng import uniform_at

MAX_WIDTH = 8


def width(s: int) -> int:
    """Bits of a fixed-length code: a sign bit and the level, 1 + uint_width(s)."""
    return 1 + max(1, s.bit_length())


@triton.jit(do_not_specialize=["k0", "k1", "s"])  # 1 would become a constant
def _encode(x_ptr, inv_ptr, out_ptr, n, k0, k1, s, first, below, NATURAL: tl.constexpr, WIDTH: tl.constexpr,
            BLOCK: tl.constexpr):  # fmt: skip
    rows, offs = block_rows(BLOCK)
    inside = offs < n
    x = tl.load(x_ptr + offs, mask=inside, other=0.0).to(tl.float32)
    y = tl.minimum(tl.abs(x) * tl.load(inv_ptr), 1.0)
    u = uniform_at(k0, k1, offs)
    if NATURAL:
        bits = y.to(tl.int32, bitcast=True)
        small = y < first
        lower = tl.where(small, 0, (bits >> 23) - 127 + s)
        frac = tl.where(small, y * below, (bits & 0x7FFFFF).to(tl.float32) * 1.1920928955078125e-07)
        level = lower + (u < frac).to(tl.int32)
    else:
        sy = y * s.to(tl.float32)
        low = tl.floor(sy)
        level = low.to(tl.int32) + (u < sy - low).to(tl.int32)
    code = (tl.minimum(level, s) << 1) | (x < 0).to(tl.int32)
    store_codes(out_ptr, tl.where(inside, code, 0), rows, tl.cdiv(n * WIDTH, 8), WIDTH)


def dither_encode(x: torch.Tensor, inv: torch.Tensor, key: int, s: int, natural: bool, codes: torch.Tensor) -> None:
    """Write the packed codes of a contiguous fp32, fp16 or bf16 vector x into the uint8 tensor
    codes (ceil(d w / 8) bytes, w = 1 + uint_width(s) <= 8); inv the fp32 0-dim tensor 1/norm (0 for
    norm 0), key the draw for the uniforms u(0), ..., u(d - 1)."""
    n = x.numel()
    k0, k1 = split(key)
    _encode[grid(n, BLOCK)](
        x, inv, codes, n, k0, k1, s, 2.0 ** (1 - s), 2.0 ** (s - 1), NATURAL=natural, WIDTH=width(s), BLOCK=BLOCK,
        enable_fp_fusion=False,
    )  # fmt: skip


@triton.jit
def _dither_into(codes_ptr, table_ptr, out_ptr, n, weight, ADD: tl.constexpr, WIDTH: tl.constexpr,
                 BLOCK: tl.constexpr):  # fmt: skip
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    inside = offs < n
    code = load_codes(codes_ptr, offs, tl.cdiv(n * WIDTH, 8), WIDTH)
    v = tl.load(table_ptr + (code >> 1), mask=inside, other=0.0)
    v = tl.where((code & 1) != 0, -v, v)
    if ADD:
        v = tl.load(out_ptr + offs, mask=inside) + weight * v
    tl.store(out_ptr + offs, v, mask=inside)


def dither_into(codes: torch.Tensor, s: int, table: torch.Tensor, out: torch.Tensor, weight: float, add: bool) -> None:
    """out = C(x) (add False) or out += weight C(x) (add True) from fixed-length codes whose levels
    are at most s (the caller checked, max_level); table[j] the fp32 value of level j for j < 2^(w-1);
    out a contiguous fp32 vector. weight 1: the floats of out + C(x)."""
    n = out.numel()
    _dither_into[grid(n, BLOCK)](
        codes, table, out, n, weight, ADD=add, WIDTH=width(s), BLOCK=BLOCK, enable_fp_fusion=False
    )


@triton.jit
def _max_level(codes_ptr, top_ptr, n, WIDTH: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    code = load_codes(codes_ptr, offs, tl.cdiv(n * WIDTH, 8), WIDTH)
    tl.store(top_ptr + tl.program_id(0), tl.max(tl.where(offs < n, code >> 1, 0), axis=0))


def max_level(codes: torch.Tensor, d: int, s: int) -> int:
    """The largest level of a fixed-length body's d codes (so the caller can refuse one above s)."""
    g = grid(d, BLOCK)
    top = torch.empty(g[0], dtype=torch.int32, device=codes.device)
    _max_level[g](codes, top, d, WIDTH=width(s), BLOCK=BLOCK)
    return int(top.max())
