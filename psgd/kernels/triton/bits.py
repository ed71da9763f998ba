"""Packing inside Triton kernels, in psgd.wire.bits' layout: n codes of w bits take ceil(n w / 8)
bytes, code i in bits [i w, i w + w), least significant bit first (w = 1: bit j of byte b is code 8b + j).

A program works on a block of rows of 8 codes; the 8 codes of a row fill exactly w bytes, so
rows pack independently and a block of BLOCK codes writes BLOCK w / 8 bytes. Codes up to w = 8 bits:
a row is one 64-bit word.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def block_rows(BLOCK: tl.constexpr):
    """(rows, offsets): this program's BLOCK // 8 row numbers and its coordinates as a (rows, 8) grid."""
    rows = tl.program_id(0) * (BLOCK // 8) + tl.arange(0, BLOCK // 8)
    return rows, rows[:, None] * 8 + tl.arange(0, 8)[None, :]


@triton.jit
def store_codes(out_ptr, codes, rows, nbytes, WIDTH: tl.constexpr):
    """Write a (rows, 8) grid of WIDTH-bit codes (zero past the end) as bytes rows * WIDTH + t."""
    shifts = (tl.arange(0, 8) * WIDTH).to(tl.uint64)
    word = tl.sum(codes.to(tl.uint64) << shifts[None, :], axis=1)  # disjoint bit ranges: sum = or
    t = tl.arange(0, 8)
    byte = ((word[:, None] >> (t * 8).to(tl.uint64)[None, :]) & 0xFF).to(tl.uint8)
    at = rows.to(tl.int64)[:, None] * WIDTH + t[None, :]
    tl.store(out_ptr + at, byte, mask=(t[None, :] < WIDTH) & (at < nbytes))


@triton.jit
def load_codes(packed_ptr, offs, nbytes, WIDTH: tl.constexpr):
    """The WIDTH-bit codes at coordinates offs (int32)."""
    bit = offs.to(tl.int64) * WIDTH
    b = bit >> 3
    lo = tl.load(packed_ptr + b, mask=b < nbytes, other=0).to(tl.int32)
    hi = tl.load(packed_ptr + b + 1, mask=b + 1 < nbytes, other=0).to(tl.int32)
    return ((lo | (hi << 8)) >> (bit & 7).to(tl.int32)) & ((1 << WIDTH) - 1)


def grid(n: int, block: int) -> tuple[int]:
    return (max(1, triton.cdiv(n, block)),)
