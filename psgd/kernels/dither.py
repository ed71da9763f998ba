"""Random dithering (qsgd, terngrad, natural_dither: psgd.compress.dithering, SPEC 2.6 and 2.8) as
compiled CPU kernels, beside the plain-torch references (the CUDA path).

y_i = min(|x_i| inv, 1) in the work dtype, inv = 1 / the fp32 wire norm (0 for norm 0), computed by
the caller. Levels with the uniforms u(i) of key: uniform, floor(s y) + (u < s y - floor(s y));
natural, j + s for 2^(j-1) <= y < 2^j plus (u < y 2^(1-j) - 1), or (u < y 2^(s-1)) below 2^(1-s);
both capped at s. code_i = level_i << 1 | (x_i < 0).

    fixed-length: the codes packed at width w = 1 + uint_width(s) (psgd.wire.bits.pack_uint), and
                  C(x) from each block's codes where asked (error feedback: no second read of the body)
    Elias:        the nonzero levels' position gaps, signs and levels, for psgd.wire.codes
    decode:       out_i (+)= weight * (+-table[level_i]), table[j] the value of level j; two bodies a, b in
                  one pass over out, out_i = (out_i +) a_i + b_i (the server's aggregate, pair by pair)

The compiled kernels take fp32 x and codes up to 8 bits wide (s <= 127; Elias: s < 2^24); wider
codes and other dtypes go through the references, CUDA tensors through psgd.kernels.triton.dither.
They work on blocks of CHUNK coordinates in passes that vectorise: the codes of a block as bytes
(the draws in 32-bit lanes, psgd.kernels.rng.random24_in, each rounding up as a carry into the
level), each eight bytes merged into one word of 8 w bits by shifts (_merge), then the words stored
w bytes apart; decode reverses it (_spread)
and computes the values, level * norm / s or 2^(level - s) * norm, instead of looking them up.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from psgd.kernels import cpu, device_fn, np_view, rng, run
from psgd.kernels import triton as gpu
from psgd.kernels.rng import block_key, random24_in
from psgd.wire.bits import pack_uint, unpack_uint

# elements per block (a multiple of 8 dividing 2^16: one block_key each); each pass of a block
# vectorises over a cache-resident buffer
CHUNK = 4096
LOW_COUNTER = np.int32(CHUNK - 1)  # j & LOW_COUNTER = j within a chunk (see _chunk_key)
MAX_WIDTH = 8
MAX_ELIAS_S = 2**24  # levels and s exact in fp32
TWO_24, TWO_M24 = np.float32(2.0**24), np.float32(2.0**-24)
FLIP = np.uint32(0xFFFFFF)  # r ^ FLIP = 2^24 - 1 - r (see _carry)
LANES = 64  # interleaved float64 sums of the norm kernel: eight AVX-512 registers
HALVES_AND_FP32 = (torch.float32, torch.float16, torch.bfloat16)  # the Triton kernels' inputs
LOW8, HIGH8 = np.uint64(0x00FF00FF00FF00FF), np.uint64(0xFF00FF00FF00FF00)
LOW16, HIGH16 = np.uint64(0x0000FFFF0000FFFF), np.uint64(0xFFFF0000FFFF0000)
LOW32, HIGH32 = np.uint64(0x00000000FFFFFFFF), np.uint64(0xFFFFFFFF00000000)
EVERY16, EVERY32 = np.uint64(0x0001000100010001), np.uint64(0x0000000100000001)


# ---------------------------------------------------------------- the norm


@cpu
def sum_squares_kernel(x):
    """sum_i x_i^2 of fp32 x in float64, as LANES interleaved sums (one chain of adds would wait on itself)."""
    acc = np.zeros(LANES, np.float64)
    for i in range(0, x.size, LANES):
        block = x[i : i + LANES]
        for j in range(block.size):
            v = np.float64(block[j])
            acc[j] += v * v
    return acc.sum()


@cpu
def max_abs_kernel(x):
    """max_i |x_i| of fp32 x, NaN when x holds a NaN."""
    top = np.zeros(LANES, np.float32)
    nan = np.zeros(LANES, np.float32)
    for i in range(0, x.size, LANES):
        block = x[i : i + LANES]
        for j in range(block.size):
            a = abs(block[j])
            top[j] = max(top[j], a)
            nan[j] += a * np.float32(0.0)  # NaN from a NaN on (or an infinity, which is the max anyway)
    return np.float64(top.max()) + nan.sum()


def vector_norm(x: torch.Tensor, p: float, work: torch.dtype = torch.float64) -> torch.Tensor:
    """||x||_p (p = 2 or inf) as a 0-dim tensor of dtype work, never -0. For p = 2 in float64 the
    rounding of the sum (in any order: the kernel's, torch's on each device) changes the fp32 wire
    norm only when the norm lies within ~1e-13 of an fp32 rounding boundary."""
    inf = p == math.inf

    def compiled():
        n = max_abs_kernel(np_view(x)) if inf else np.sqrt(sum_squares_kernel(np_view(x)))
        return torch.tensor(n, dtype=work)

    def reference():
        if inf:  # the extremes: one cheap pass (vector_norm's max is 50x slower on the CPU)
            lo, hi = torch.aminmax(x)
            return torch.maximum(-lo, hi).abs().to(work)
        return torch.linalg.vector_norm(x, ord=p, dtype=work)

    fast = x.dtype == torch.float32 and work == torch.float64 and x.is_contiguous() and x.numel() > 0
    return run(max_abs_kernel if inf else sum_squares_kernel, (x,), compiled, reference) if fast else reference()


# ---------------------------------------------------------------- references


def magnitudes_ref(x: torch.Tensor, inv: torch.Tensor) -> torch.Tensor:
    """y = min(|x| inv, 1) in inv's dtype."""
    return (x.abs().to(inv.dtype) * inv).clamp_(max=1)


def uniform_levels(y: torch.Tensor, s: int, u: torch.Tensor) -> torch.Tensor:
    """Unbiased rounding of s*y to an integer level in [0, s] (overwrites y)."""
    sy = y.mul_(s)
    low = sy.floor()
    return low.add_(u < sy.sub_(low)).clamp_(max=s).to(torch.int32)


def natural_levels(y: torch.Tensor, s: int, u: torch.Tensor) -> torch.Tensor:
    """Unbiased rounding of y in [0, 1] to level j in [0, s], level j > 0 standing for 2^(j - s)."""
    first = 2.0 ** (1 - s)
    mant, e = torch.frexp(y)  # y = mant 2^e: between 2^(e-1) and 2^e when y >= 2^(1-s)
    small = y < first
    lower = torch.where(small, 0, e - 1 + s)
    frac = torch.where(small, y / first, 2 * mant - 1)
    return (lower + (u < frac)).clamp_(max=s).to(torch.int32)


def natural_level_values(j: torch.Tensor, s: int, dtype: torch.dtype) -> torch.Tensor:
    return torch.where(j > 0, torch.exp2((j - s).to(dtype)), 0)


def levels_ref(x: torch.Tensor, inv: torch.Tensor, key: int, s: int, natural: bool) -> torch.Tensor:
    """The int32 levels of x with the uniforms of key (53-bit ones for float64 work)."""
    y = magnitudes_ref(x, inv)
    return (natural_levels if natural else uniform_levels)(y, s, rng.uniform(key, x.numel(), y))


def width(s: int) -> int:
    """Bits of a fixed-length code: a sign bit and the level, 1 + uint_width(s)."""
    return 1 + max(1, s.bit_length())


def _compiled(x: torch.Tensor, inv: torch.Tensor, s: int, top: int) -> bool:
    return x.dtype == inv.dtype == torch.float32 and x.is_contiguous() and s <= top


# ---------------------------------------------------------------- encode


@device_fn
def _uniform_codes(x, inv, s, k0, k1, start, out):
    """out[j] = level << 1 | (x_j < 0) of uniform dithering for the chunk of x starting at coordinate
    start (see _chunk_key). Levels stay at most s uncapped: s y = s has no fraction. (r < f 2^24 for
    u < f, both exact: 30 AVX-512 instructions for 16 coordinates.)"""
    sf = np.float32(s)
    kc = _chunk_key(k0, start)
    for j in range(np.int32(x.size)):
        v = x[j]
        sy = min(abs(v) * inv, np.float32(1.0)) * sf
        low = np.floor(sy)
        level = np.int32(low) + np.int32(np.float32(random24_in(kc, k1, j & LOW_COUNTER)) < (sy - low) * TWO_24)
        out[j] = level + level + np.int32(v < 0)


@device_fn
def _carry(z, flip, kc, k1, j, negative):
    """The code level << 1 | negative, level = (z + (r(start + j) ^ flip)) >> 24 (mod 2^32), flip = 2^24 - 1
    (r ^ flip = 2^24 - 1 - r) plus a bias in the top byte (xor adds it: r < 2^24); the sign by a select
    (one masked or; a zero-extended compare took three instructions)."""
    level = np.uint32(z + np.uint32(random24_in(kc, k1, j & LOW_COUNTER) ^ flip)) >> np.uint32(24)
    code = np.uint32(level + level)
    return code | np.uint32(1) if negative else code


@device_fn
def _chunk_key(k0, start):
    """The kb of random24_in for the counter j & LOW_COUNTER standing for start + j, start a multiple of
    CHUNK and j < CHUNK: start + j = start ^ j, so block_key(k0, start) ^ start. The mask, a no-op,
    tells LLVM that j has no bits from 12 up: mix's first step (v ^= v >> 16) then leaves the loop,
    and counter, key and that step take one vector instruction instead of five."""
    return np.uint32(block_key(k0, start) ^ np.uint32(start))


@device_fn
def _uniform_bytes(x, inv, s, k0, k1, start, out, values, feedback, step):
    """_uniform_codes for s < 128 with a carry for the draw: Q = s y 2^24 (fp32 s y scaled exactly:
    where s y is subnormal both round to level 0 or 1, up iff r = 0), and floor(Q 2^-24) +
    (r < Q mod 2^24) = (ceil(Q) + 2^24 - 1 - r) >> 24, in 32-bit lanes (Q < 2^31). The cap after
    the scaling, min(|x| inv scale, scale) = min(y, 1) scale for scale > 0 (rounding is monotone),
    is one vminps (before it, LLVM made a compare and a select); the sign a masked or. The flip is
    FLIP made from s (s >> 31 = 0) so that LLVM, not knowing it, makes r's last xor and the flip one
    vpternlogd, as in _natural_bytes (the constant became a not and an xor). 22 AVX-512 instructions
    for 16 coordinates, 512-bit (psgd/kernels/width.py). values as in _bytes."""
    scale = np.float32(s) * TWO_24
    flip = FLIP | np.uint32(np.uint32(s >> 31) << np.uint32(24))
    kc = _chunk_key(k0, start)
    for j in range(np.int32(x.size)):
        v = x[j]
        q = np.uint32(np.int32(np.ceil(min(abs(v) * inv * scale, scale))))
        out[j] = _carry(q, flip, kc, k1, j, v < 0)
        if values is not None:
            values[j] = _value(out[j], np.int32(0), False, step)
        if feedback is not None:
            x[j] = v - _value(out[j], np.int32(0), False, step)


@device_fn
def _natural_bytes(x, inv, s, k0, k1, start, out, values, feedback, norm):
    """out[j] = level << 1 | (x_j < 0) of natural dithering for s < 128, the draw a carry as in
    _uniform_bytes: below 2^(1-s), level (ceil(y 2^(s-1) 2^24) + 2^24 - 1 - r) >> 24 (both scalings
    exact); from 2^(1-s) (normal), with y = 2^(e-127)(1 + m 2^-23), level e - 127 + s + (r < 2m) =
    ((y's bits << 1) + (s - 127) 2^24 + 2^24 - 1 - r) >> 24 (mod 2^32). y = 1 has m = 0: no level above s.
    The bias (s - 127) 2^24 rides in _carry's flip (subtracted back below 2^(1-s)): a flip known only at
    run time makes r's last xor and the flip one vpternlogd (the constant 2^24 - 1 alone became a not
    before the shift, one instruction more). 25 AVX-512 instructions for 16 coordinates. values as in
    _bytes."""
    first = np.float32(2.0 ** (1 - s))
    below = np.float32(2.0 ** (s - 1))
    bias = np.uint32(np.int64(s - 127) & np.int64(0xFF)) << np.uint32(24)
    flip = FLIP | bias
    kc = _chunk_key(k0, start)
    for j in range(np.int32(x.size)):
        v = x[j]
        y = min(abs(v) * inv, np.float32(1.0))
        if y < first:
            z = np.uint32(np.uint32(np.int32(np.ceil(y * below * TWO_24))) - bias)
        else:
            z = np.uint32(np.float32(y).view(np.uint32) << np.uint32(1))
        out[j] = _carry(z, flip, kc, k1, j, v < 0)
        if values is not None:
            values[j] = _value(out[j], np.int32(127 - s), True, norm)
        if feedback is not None:
            x[j] = v - _value(out[j], np.int32(127 - s), True, norm)


@device_fn
def _bytes(x, inv, s, natural, k0, k1, start, out, values, feedback, scale):
    """The codes of a chunk as bytes; and values[j] = +-value(level_j) unless None, the floats of
    dither_into_kernel with scale, computed from each code as it is made (C(x) for error feedback);
    x_j <- x_j - C(x)_j unless feedback is None (a compile-time switch: any array turns it on; the
    store goes to x itself, which LLVM vectorises, where a second array aliasing x made it check at
    run time and fall back to scalar code, 4x slower)."""
    if natural:
        _natural_bytes(x, inv, s, k0, k1, start, out, values, feedback, scale)
    else:
        _uniform_bytes(x, inv, s, k0, k1, start, out, values, feedback, scale)


@device_fn
def _merge(v, w):
    """Eight w-bit codes, one in each byte of v, as the low 8w bits of one word (code j at bit j w)."""
    v = (v & LOW8) | ((v >> np.uint64(8 - w)) & (HIGH8 >> np.uint64(8 - w)))
    v = (v & LOW16) | ((v >> np.uint64(16 - 2 * w)) & (HIGH16 >> np.uint64(16 - 2 * w)))
    return (v & LOW32) | ((v >> np.uint64(32 - 4 * w)) & (HIGH32 >> np.uint64(32 - 4 * w)))


@device_fn
def _spread(v, w):
    """_merge undone: the low 8w bits of v as eight w-bit codes, one in each byte."""
    v &= ~np.uint64(0) >> np.uint64(64 - 8 * w)
    v = (v & ((np.uint64(1) << np.uint64(4 * w)) - np.uint64(1))) | ((v << np.uint64(32 - 4 * w)) & HIGH32)
    v = (v & ((np.uint64(1) << np.uint64(2 * w)) - np.uint64(1)) * EVERY32) | ((v << np.uint64(16 - 2 * w)) & HIGH16)
    return (v & ((np.uint64(1) << np.uint64(w)) - np.uint64(1)) * EVERY16) | ((v << np.uint64(8 - w)) & HIGH8)


@cpu
def dither_encode_kernel(x, inv, s, natural, k0, k1, w, body, scale, values, feedback):
    """body = the codes of fp32 x packed at width w <= 8; and values = C(x) unless None, the floats
    dither_into_kernel gives with scale; x <- x - C(x) unless feedback is None (see _bytes)."""
    d = x.size
    codes = np.zeros(CHUNK, dtype=np.uint8)
    words = codes.view(np.uint64)
    for c in range(0, d, CHUNK):
        n = min(CHUNK, d - c)
        if values is not None:
            _bytes(x[c : c + n], inv, s, natural, k0, k1, c, codes, values[c : c + n], feedback, scale)
        else:
            _bytes(x[c : c + n], inv, s, natural, k0, k1, c, codes, None, feedback, scale)
        codes[n:] = 0
        for g in range(CHUNK // 8):
            words[g] = _merge(words[g], w)
        _store(words, (n * w + 7) // 8, w, body[c // 8 * w :])


@device_fn
def _store(words, nbytes, w, out):
    """The first nbytes of the merged words (w bytes each) into out. A word is stored as 8 bytes
    while they fit in out (the next word overwrites the excess)."""
    groups = (nbytes + w - 1) // w
    wide = min(groups, max(0, (out.size - 8) // w + 1))
    for g in range(wide):
        _store8(out, g * w, words[g])
    for g in range(wide, groups):
        for b in range(min(w, nbytes - g * w)):
            out[g * w + b] = (words[g] >> np.uint64(8 * b)) & np.uint64(0xFF)


@device_fn
def _store8(out, i, word):
    i = np.uint64(i)  # unsigned indices: no wraparound of negative ones, which would keep the bytes apart
    for b in range(8):  # unrolled and merged into one store by LLVM
        out[i + np.uint64(b)] = (word >> np.uint64(8 * b)) & np.uint64(0xFF)


@device_fn
def _load8(codes, i):
    i = np.uint64(i)  # as in _store8
    word = np.uint64(0)
    for b in range(8):  # unrolled and merged into one load by LLVM
        word |= np.uint64(codes[i + np.uint64(b)]) << np.uint64(8 * b)
    return word


def dither_encode(
    x: torch.Tensor, inv: torch.Tensor, key: int, s: int, natural: bool, body: torch.Tensor,
    table: torch.Tensor | None = None, values: torch.Tensor | None = None, feedback: bool = False,
) -> None:  # fmt: skip
    """Write the packed codes of x into body (ceil(d w / 8) uint8); inv the 0-dim 1/norm in the
    work dtype (0 for norm 0), key the draw for the uniforms u(0), ..., u(d - 1). Where values is
    given, also C(x) into it, the floats dither_into gives from table (error feedback's reconstruction);
    with ``feedback``, x <- x - C(x) in place (table given), the floats of dither_into(..., x, -1, add=True)."""
    if gpu.available(x) and x.dtype in HALVES_AND_FP32 and width(s) <= MAX_WIDTH and x.is_contiguous():
        from psgd.kernels.triton import dither as triton_dither

        triton_dither.dither_encode(x, inv, key, s, natural, body)
        if values is not None:
            dither_into(body, s, natural, table, values, 1.0, add=False)
        if feedback:
            dither_into(body, s, natural, table, x, -1.0, add=True)
        return

    def compiled():
        k0, k1 = rng.split(key)
        reconstructs = values is not None or feedback
        scale = _like(x, _scale(table, s, natural)) if reconstructs else np.float32(0.0)
        bits = None if values is None else np_view(values)
        args = np.float32(inv), s, natural, k0, k1, width(s), np_view(body), scale, bits
        dither_encode_kernel(np_view(x), *args, np_view(x) if feedback else None)

    def reference():
        levels, negative = levels_ref(x, inv, key, s, natural), x < 0
        body.copy_(pack_uint((levels << 1) | negative, width(s)))
        if values is not None or feedback:
            c = _signed_ref(levels, negative, table, x.dtype)
            if values is not None:
                values.copy_(c)
            if feedback:
                x.sub_(c)

    fast = _compiled(x, inv, s, 2 ** (MAX_WIDTH - 1) - 1)
    fast = fast and (values is None or (values.dtype == table.dtype == torch.float32 and values.is_contiguous()))
    fast = fast and (not feedback or table.dtype == torch.float32)
    run(dither_encode_kernel, (x, body), compiled, reference) if fast else reference()


@cpu
def dither_sparse_kernel(x, inv, s, k0, k1, gaps, negative, levels):
    """The nonzero uniform levels of fp32 x: position gaps (the first from -1), signs and levels;
    returns how many."""
    d = x.size
    codes = np.empty(CHUNK, dtype=np.int32)  # int32 stores keep the level loop as wide as dither_encode's
    nnz = 0
    last = -1
    for c in range(0, d, CHUNK):
        n = min(CHUNK, d - c)
        _uniform_codes(x[c : c + n], inv, s, k0, k1, c, codes)
        for j in range(n):
            code = codes[j]
            if code > 1:
                gaps[nnz] = c + j - last
                last = c + j
                negative[nnz] = code & 1
                levels[nnz] = code >> 1
                nnz += 1
    return nnz


def dither_sparse(
    x: torch.Tensor, inv: torch.Tensor, key: int, s: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(gaps between the positions of the nonzero levels, the first counted from -1, as int64; their
    signs x_i < 0; the levels as int32) of uniform dithering, with the arguments of dither_encode."""

    def compiled():
        k0, k1 = rng.split(key)
        d = x.numel()
        gaps, negative, levels = np.empty(d, np.int64), np.empty(d, np.bool_), np.empty(d, np.int32)
        nnz = dither_sparse_kernel(np_view(x), np.float32(inv), s, k0, k1, gaps, negative, levels)
        return tuple(torch.from_numpy(a[:nnz]) for a in (gaps, negative, levels))

    def reference():
        lv = levels_ref(x, inv, key, s, False)
        pos = torch.nonzero(lv).view(-1)
        return torch.diff(pos, prepend=pos.new_full((1,), -1)), x[pos] < 0, lv[pos]

    fast = _compiled(x, inv, s, MAX_ELIAS_S - 1)
    return run(dither_sparse_kernel, (x,), compiled, reference) if fast else reference()


# ---------------------------------------------------------------- decode


@device_fn
def _load(codes, g, w):
    """Group g of eight codes (w bytes, fewer at the end of the body) as one word."""
    word = np.uint64(0)
    for b in range(min(w, codes.size - g * w)):
        word |= np.uint64(codes[g * w + b]) << np.uint64(8 * b)
    return word


@device_fn
def _unpack(codes, w, c, n, words):
    """The codes of coordinates c, ..., c + n - 1 (c a multiple of 8), one in each byte of words."""
    wide = min((c + n) // 8, max(0, (codes.size - 8) // w + 1))  # groups readable as 8 bytes
    g0 = c // 8
    groups = (n + 7) // 8
    whole = max(0, min(groups, wide - g0))
    for g in range(whole):
        words[g] = _load8(codes, (g0 + g) * w)
    for g in range(whole, groups):
        words[g] = _load(codes, g0 + g, w)
    for g in range(groups):
        words[g] = _spread(words[g], w)


@cpu
def max_level_kernel(codes, d, w):
    """The largest level of d codes packed at width w <= 8."""
    buf = np.empty(CHUNK, dtype=np.uint8)
    words = buf.view(np.uint64)
    top = np.uint8(0)
    for c in range(0, d, CHUNK):
        n = min(CHUNK, d - c)
        _unpack(codes, w, c, n, words)
        for j in range(n):
            top = max(top, buf[j])
    return top >> 1


def max_level(codes: torch.Tensor, d: int, s: int) -> int:
    """The largest level of a fixed-length body's d codes (so the caller can refuse one above s)."""
    if gpu.available(codes) and width(s) <= MAX_WIDTH:
        from psgd.kernels.triton import dither as triton_dither

        return triton_dither.max_level(codes, d, s)
    fast = width(s) <= MAX_WIDTH
    compiled = lambda: int(max_level_kernel(np_view(codes), d, width(s)))  # noqa: E731
    reference = lambda: int((unpack_uint(codes, d, width(s)) >> 1).max())  # noqa: E731
    return run(max_level_kernel, (codes,), compiled, reference) if fast else reference()


@device_fn
def _value(code, bias, natural, scale):
    """+-(the value of level code >> 1): level * scale (uniform, scale = norm / s), or 2^(level - s) * scale
    for level > 0 (natural, scale = norm, bias = 127 - s), 2^(level - s) made from its exponent bits. The
    sign is the code's low bit xored into the float's (a negation), all in 32-bit lanes: 16 codes a vector
    (a select on code & 1 worked in 64-bit lanes; the decode loops ran about a fifth slower)."""
    c = np.uint32(code)
    level = np.int32(c >> np.uint32(1))
    if natural:
        power = np.uint32((level + bias) << np.int32(23)).view(np.float32)
        factor = power if level > 0 else np.float32(0.0)  # 0 * scale: -0 when the norm is -0, as the table
    else:
        factor = np.float32(level)
    v = np.float32(factor * scale)
    return np.uint32(v.view(np.uint32) ^ (c << np.uint32(31))).view(np.float32)


@device_fn
def _into(codes, other, w, s, natural, scale, scale_other, out, weight, add):
    """out_i = +-value(level_i), or out_i += weight times it with ``add``; where other (a second body) is
    not None, plus +-value(its level_i) (scale_other) after that, in the same pass over out. Returns the
    two bodies' largest codes (one vector max per 16 codes: the receiver's check of the levels, without
    a pass of its own). Without other its value is -0.0, which adds nothing (x + -0 = x for every x, -0
    too), and both the add and the max fold away."""
    d = out.size
    buf = np.empty(2 * CHUNK, dtype=np.uint8)  # the codes of this body's block, then of other's
    words = buf.view(np.uint64)
    mine, theirs = buf[:CHUNK], buf[CHUNK:]
    bias = np.int32(127 - s)
    top = np.uint8(0)
    top_other = np.uint8(0)
    for c in range(0, d, CHUNK):
        n = min(CHUNK, d - c)
        _unpack(codes, w, c, n, words[: CHUNK // 8])
        if other is not None:
            _unpack(other, w, c, n, words[CHUNK // 8 :])
        block = out[c : c + n]
        if add:
            for j in range(n):
                v = block[j] + weight * _value(mine[j], bias, natural, scale)
                block[j] = v + _second(other, theirs[j], bias, natural, scale_other)
                top = max(top, mine[j])
                top_other = max(top_other, _code(other, theirs[j]))
        else:
            for j in range(n):
                block[j] = _value(mine[j], bias, natural, scale) + _second(other, theirs[j], bias, natural, scale_other)
                top = max(top, mine[j])
                top_other = max(top_other, _code(other, theirs[j]))
    return top >> 1, top_other >> 1


@device_fn
def _second(other, code, bias, natural, scale):
    """+-value(code) of the second body; -0.0 (nothing added) without one."""
    if other is None:
        return np.float32(-0.0)
    return _value(code, bias, natural, scale)


@device_fn
def _code(other, code):
    """code of the second body; 0 without one."""
    if other is None:
        return np.uint8(0)
    return code


@cpu
def dither_into_kernel(codes, w, s, natural, scale, out, weight, add):
    """out_i = +-value(level_i), or out_i += weight times it with ``add``; returns the largest level."""
    return _into(codes, None, w, s, natural, scale, scale, out, weight, add)[0]


@cpu
def dither_pair_kernel(codes_a, codes_b, w, s, natural, scale_a, scale_b, out, add):
    """out_i = value_a_i + value_b_i, or (out_i + value_a_i) + value_b_i with ``add``: dither_into_kernel
    of a (weight 1) then of b (weight 1, add), in one pass over out; returns (a's, b's largest level)."""
    return _into(codes_a, codes_b, w, s, natural, scale_a, scale_b, out, np.float32(1.0), add)


def _like(t: torch.Tensor, value) -> np.generic:
    """value as a numpy scalar of t's dtype (what torch makes of a Python scalar in t's arithmetic)."""
    return np_view(t).dtype.type(float(value))


def _scale(table: torch.Tensor, s: int, natural: bool) -> torch.Tensor:
    """The scale of _value: the value of level s (the norm) with ``natural``, else of level 1 (norm / s)."""
    return table[s if natural else 1]


def _signed_ref(levels: torch.Tensor, negative: torch.Tensor, table: torch.Tensor, dtype: torch.dtype):
    v = table[levels]
    return torch.where(negative, -v, v).to(dtype)


def put_ref(values: torch.Tensor, out: torch.Tensor, weight: float, add: bool) -> None:
    """out = values, or out += weight values with ``add``: the references' last step."""
    if not add:
        out.copy_(values)
    elif weight == 1.0:
        out.add_(values)
    else:
        out.add_(values, alpha=weight)


def dither_into(
    codes: torch.Tensor, s: int, natural: bool, table: torch.Tensor, out: torch.Tensor, weight: float, add: bool
) -> int | None:
    """out = C(x) (add False) or out += weight C(x) (add True) from fixed-length codes; table[j] the
    value of level j for j < 2^(w-1), in the work dtype: level * (norm / s), or 2^(j - s) norm for
    j > 0 with ``natural``. Returns the largest level read (a receiver refuses one above s), None
    on the CUDA path (max_level tells)."""
    d = out.numel()
    fast = width(s) <= MAX_WIDTH and out.dtype == table.dtype == torch.float32 and out.is_contiguous()
    if fast and gpu.available(out):
        from psgd.kernels.triton import dither as triton_dither

        return triton_dither.dither_into(codes, s, table, out, weight, add)

    def compiled():
        scale = _like(out, _scale(table, s, natural))
        args = np_view(codes), width(s), s, natural, scale, np_view(out), _like(out, weight)
        return int(dither_into_kernel(*args, add))

    def reference():
        c = unpack_uint(codes, d, width(s))
        put_ref(_signed_ref(c >> 1, (c & 1).bool(), table, out.dtype), out, weight, add)
        return int((c >> 1).max())

    return run(dither_into_kernel, (codes, out), compiled, reference) if fast else reference()


def dither_pair_into(
    codes_a: torch.Tensor, codes_b: torch.Tensor, s: int, natural: bool, table_a: torch.Tensor,
    table_b: torch.Tensor, out: torch.Tensor, start: bool,
) -> tuple[int | None, int | None]:  # fmt: skip
    """out = C(a) + C(b) with ``start``, else (out + C(a)) + C(b), from two fixed-length bodies (tables as
    in dither_into, one per message's norm): the floats of dither_into of a (add = not start) then of b
    (add), in one pass over out where the compiled kernel takes them (fp32 on the CPU, w <= MAX_WIDTH),
    else those two calls. Returns each body's largest level (None on the CUDA path)."""
    fast = width(s) <= MAX_WIDTH and out.dtype == table_a.dtype == table_b.dtype == torch.float32
    fast = fast and out.is_contiguous()

    def compiled():
        scales = (_like(out, _scale(t, s, natural)) for t in (table_a, table_b))
        args = np_view(codes_a), np_view(codes_b), width(s), s, natural, *scales, np_view(out), not start
        return tuple(int(top) for top in dither_pair_kernel(*args))

    def reference():
        top_a = dither_into(codes_a, s, natural, table_a, out, 1.0, add=not start)
        return top_a, dither_into(codes_b, s, natural, table_b, out, 1.0, add=True)

    return run(dither_pair_kernel, (codes_a, codes_b, out), compiled, reference) if fast else reference()


@cpu
def scatter_into_kernel(pos, negative, levels, scale, out, weight, add):
    """out[pos_t] = +-levels_t scale, or out[pos_t] += weight times it with ``add``."""
    for t in range(pos.size):
        v = np.float32(levels[t]) * scale  # exact: levels < 2^24
        if negative[t]:
            v = -v
        if add:
            out[pos[t]] += weight * v
        else:
            out[pos[t]] = v


def scatter_into(
    pos: torch.Tensor, negative: torch.Tensor, levels: torch.Tensor, s: int, scale: torch.Tensor, out: torch.Tensor,
    weight: float, add: bool,
) -> None:  # fmt: skip
    """The uniform levels (at most s) at positions pos (ascending, < d) into out: out = C(x) where out is zero
    elsewhere (add False), or out[pos] += weight C(x)[pos] (add True); scale = norm / s in the work dtype."""

    def compiled():
        args = np_view(pos), np_view(negative), np_view(levels), _like(out, scale), np_view(out), _like(out, weight)
        scatter_into_kernel(*args, add)

    def reference():
        v = levels.to(scale.dtype) * scale
        v = torch.where(negative, -v, v).to(out.dtype)
        if not add:
            out[pos] = v
        elif weight == 1.0:
            out.index_add_(0, pos, v)
        else:
            out.index_add_(0, pos, v, alpha=weight)

    fast = out.dtype == scale.dtype and out.is_contiguous() and s < MAX_ELIAS_S
    run(scatter_into_kernel, (pos, out), compiled, reference) if fast else reference()
