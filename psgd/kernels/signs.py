"""Sign bits with per-block l1 scales (sign, scaled_sign, block_sign): pack, decode, accumulate.

The vector splits into consecutive blocks ending at ``ends`` (one block for sign and scaled_sign).
Bit i of the packed body (byte i // 8, bit i % 8, little-endian) is 1 where x_i >= 0 (so -0 and +0
give 1). A block's value is +p_b where the bit is 1 and -p_b where it is 0.

    pack:       bits and l1_b = sum_{i in b} |x_i| in float64 (one read of x; an fp32 sum could overflow)
    decode:     out_i = +-p_b
    accumulate: out_i += +-p_b, with p_b = fp32(weight * scale_b) rounded once, so weight 1 gives
                exactly out + decode(m)
    pair:       out_i = (out_i + +-pa_b) + +-pb_b (or +-pa_b + +-pb_b): two messages, each with its own
                scales, in one pass over out (the server's aggregate), the floats of the two above

The compiled l1 adds the |x_i| in float64 vector lanes; the reference's float64 sum takes another
order. Both are within a few float64 ulps, so the fp32 scale agrees unless the float64 sum lands
within those ulps of an fp32 rounding boundary (far below one case in a million for random data).
"""

from __future__ import annotations

import numpy as np
import torch

from psgd.kernels import cpu, device_fn, np_view, run
from psgd.kernels import triton as gpu
from psgd.wire.bits import pack_bits, unpack_bits


@cpu
def pack_signs_kernel(x, ends, bits, l1):
    """bits[i // 8] bit i % 8 = (x_i >= 0); l1[b] = sum |x_i| over block b in float64 (no sums when l1 is None)."""
    n = x.size
    start = 0
    for b in range(ends.size):
        end = ends[b]
        first = min(end, (start + 7) // 8 * 8)
        last = max(first, end // 8 * 8)
        if l1 is None:
            _pack_bytes(x[first:last], bits[first // 8 : last // 8])
        else:
            l1[b] = _pack_bytes_l1(x[first:last], bits[first // 8 : last // 8]) + _l1(x[start:first]) + _l1(x[last:end])
        if start % 8:  # the byte that straddles the block start
            _pack_byte(x, start // 8, bits)
        start = end
    if n % 8:
        _pack_byte(x, n // 8, bits)


# The helpers index slices from 0: provably non-negative indices let numba drop its wraparound
# checks, and the loops vectorise.
@device_fn
def _pack_bytes(x, bits):
    for k in range(bits.size):
        byte = 0
        for j in range(8):
            byte |= np.uint8(x[8 * k + j] >= 0) << j
        bits[k] = byte


@device_fn(fastmath={"reassoc"})  # the float sum in vector lanes: eight times fewer dependent adds
def _pack_bytes_l1(x, bits):
    total = 0.0
    for k in range(bits.size):
        byte = 0
        for j in range(8):
            v = x[8 * k + j]
            byte |= np.uint8(v >= 0) << j
            total += abs(v)
        bits[k] = byte
    return total


@device_fn
def _l1(x):
    total = 0.0
    for i in range(x.size):
        total += abs(x[i])
    return total


@device_fn
def _pack_byte(x, k, bits):
    byte = 0
    for j in range(min(8, x.size - 8 * k)):
        byte |= np.uint8(x[8 * k + j] >= 0) << j
    bits[k] = byte


@cpu
def sign_values_kernel(bits, ends, p, out, add):
    """out_i (+)= p_b where bit i is 1, -p_b where it is 0, for i in block b."""
    _sign_blocks(bits, p, bits, p, ends, out, add, False)


@cpu
def sign_pair_kernel(bits_a, pa, bits_b, pb, ends, out, add):
    """out_i = (out_i (+) +-pa_b) + +-pb_b, the two messages' values in one pass over out: the floats of
    sign_values_kernel on a (add or not) then on b (add)."""
    _sign_blocks(bits_a, pa, bits_b, pb, ends, out, add, True)


# ``add`` and ``pair`` are constants where the kernels call these helpers (inlined into them): LLVM
# drops the branches on them before it vectorises, so each of the four loops is its own straight code.
@device_fn
def _sign_blocks(bits_a, pa, bits_b, pb, ends, out, add, pair):
    """Each block's coordinates: the bytes that straddle its ends one coordinate at a time, the
    whole bytes between them as words (_put_bytes)."""
    start = 0
    for b in range(ends.size):
        end = ends[b]
        first = min(end, (start + 7) // 8 * 8)
        last = max(first, end // 8 * 8)
        _put_edge(bits_a, pa[b], bits_b, pb[b], start, first, out, add, pair)
        whole_a, whole_b = bits_a[first // 8 : last // 8], bits_b[first // 8 : last // 8]
        if add:
            _put_bytes(whole_a, pa[b], whole_b, pb[b], out[first:last], True, pair)
        else:
            _put_bytes(whole_a, pa[b], whole_b, pb[b], out[first:last], False, pair)
        _put_edge(bits_a, pa[b], bits_b, pb[b], last, end, out, add, pair)
        start = end


@device_fn
def _put(out, i, bit_a, pa, bit_b, pb, add, pair):
    """out_i = (out_i if add) + (+pa if bit_a else -pa) (+ (+pb if bit_b else -pb) if pair): each
    sum rounded in that order, as the single adds one after the other round it."""
    v = pa if bit_a else -pa
    if add:
        v = out[i] + v
    if pair:
        v += pb if bit_b else -pb
    out[i] = v


# 64 coordinates per step, their bits in one uint64 word: the inner loop has 64 lanes to fill the
# vector registers (8 did not: half the speed); the bytes past the last whole word go one by one.
@device_fn
def _word(bits, k):
    w = np.uint64(0)
    for b in range(8):
        w |= np.uint64(bits[8 * k + b]) << np.uint64(8 * b)
    return w


@device_fn
def _put_bytes(bits_a, pa, bits_b, pb, out, add, pair):
    words = bits_a.size // 8
    for k in range(words):
        wa = _word(bits_a, k)
        wb = _word(bits_b, k) if pair else wa
        for j in range(64):
            s = np.uint64(j)
            _put(out, 64 * k + j, (wa >> s) & np.uint64(1), pa, (wb >> s) & np.uint64(1), pb, add, pair)
    for k in range(8 * words, bits_a.size):
        byte_a = bits_a[k]
        byte_b = bits_b[k] if pair else byte_a
        for j in range(8):
            _put(out, 8 * k + j, (byte_a >> j) & 1, pa, (byte_b >> j) & 1, pb, add, pair)


@device_fn
def _put_edge(bits_a, pa, bits_b, pb, start, end, out, add, pair):
    for i in range(start, end):
        _put(out, i, (bits_a[i >> 3] >> (i & 7)) & 1, pa, (bits_b[i >> 3] >> (i & 7)) & 1, pb, add, pair)


def pack_signs_ref(x: torch.Tensor, sizes: list[int], l1: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(pack_bits(x >= 0), float64 l1 of each block or None): the plain-torch reference (any device)."""
    if not l1:
        return pack_bits(x >= 0), None
    norms = [torch.linalg.vector_norm(b, 1, dtype=torch.float64) for b in x.split(sizes)]  # a loop over blocks
    return pack_bits(x >= 0), torch.stack(norms)


def sign_values_ref(bits: torch.Tensor, sizes: list[int], p: torch.Tensor) -> torch.Tensor:
    """+-p_b per coordinate as a dense tensor of p's dtype: the plain-torch reference."""
    value = p[0] if len(sizes) == 1 else torch.repeat_interleave(p, torch.tensor(sizes, device=p.device))
    return torch.where(unpack_bits(bits, sum(sizes)), value, -value)


def pack_signs(x: torch.Tensor, sizes: list[int], bits: torch.Tensor, l1: bool) -> torch.Tensor | None:
    """Write the sign bits of x into ``bits`` (ceil(d/8) uint8); return each block's float64 l1 when asked."""
    fast = x.dtype == torch.float32 and x.is_contiguous()
    if fast and gpu.available(x, bits) and bits.is_contiguous():
        from psgd.kernels.triton import signs

        return signs.pack_signs(x, sizes, bits, l1)

    def compiled():
        norms = torch.empty(len(sizes), dtype=torch.float64) if l1 else None
        pack_signs_kernel(np_view(x), np.cumsum(sizes), np_view(bits), None if norms is None else np_view(norms))
        return norms

    def reference():
        packed, norms = pack_signs_ref(x, sizes, l1)
        bits.copy_(packed)
        return norms

    return run(pack_signs_kernel, (x, bits), compiled, reference) if fast else reference()


def sign_values(bits: torch.Tensor, sizes: list[int], p: torch.Tensor, out: torch.Tensor, add: bool) -> None:
    """out (+)= +-p_b per coordinate, in place (p holds one value per block, in out's dtype)."""
    fast = out.dtype == p.dtype == torch.float32 and out.is_contiguous()
    if fast and gpu.available(out, bits, p) and bits.is_contiguous() and p.is_contiguous():
        from psgd.kernels.triton import signs

        signs.sign_values(bits, sizes, p, out, add)
        return

    def compiled():
        sign_values_kernel(np_view(bits), np.cumsum(sizes), np_view(p), np_view(out), add)

    def reference():
        put_values_ref(bits, sizes, p, out, add)

    run(sign_values_kernel, (bits, out), compiled, reference) if fast else reference()


def sign_pair(
    bits_a: torch.Tensor,
    pa: torch.Tensor,
    bits_b: torch.Tensor,
    pb: torch.Tensor,
    sizes: list[int],
    out: torch.Tensor,
    add: bool,
) -> None:
    """out (+)= +-pa_b, then out += +-pb_b, per coordinate in one pass over out: the floats of sign_values
    on message a (bits_a, pa) then on message b (add), two messages of one layout. Compiled for a
    contiguous fp32 out and fp32 p on the CPU; else (CUDA too) the two references one after the other."""

    def compiled():
        ends = np.cumsum(sizes)
        sign_pair_kernel(np_view(bits_a), np_view(pa), np_view(bits_b), np_view(pb), ends, np_view(out), add)

    def reference():
        put_values_ref(bits_a, sizes, pa, out, add)
        put_values_ref(bits_b, sizes, pb, out, True)

    fast = out.dtype == pa.dtype == pb.dtype == torch.float32 and out.is_contiguous()
    run(sign_pair_kernel, (bits_a, bits_b, pa, pb, out), compiled, reference) if fast else reference()


def put_values_ref(bits: torch.Tensor, sizes: list[int], p: torch.Tensor, out: torch.Tensor, add: bool) -> None:
    """sign_values by the plain-torch reference."""
    values = sign_values_ref(bits, sizes, p)
    if add:
        out.add_(values)
    else:
        out.copy_(values)
