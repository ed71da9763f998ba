"""Sparse dithering's body (psgd/compress/sparse_dither.py) as compiled CPU kernels.

Body: gamma (31 bits) and n0 (ceil(log2(d + 1)) bits), then for each k_i > 0 in order its unary
code (k_i - 1 zeros and a one), then the sign bits of the non-zeros in order (1 for s_i < 0), then
the support: the non-zero flags of the last d mod 16 coordinates raw, and the rANS code of the
others, 16 a symbol (psgd.kernels.rans); no support when n0 is 0 or d.

The encoder makes one pass over x in blocks: k_i (vectorised, random draws included), the unary
codes straight into the body (their start is fixed), the support as a bitmap and the signs
compacted into their own stream (vector compress); the caller then codes the bitmap backwards
(rANS) and appends signs and support. The decoder checks the unary codes (where they end gives
the signs' start), decodes the support into a bitmap, and spreads k_i, signed by the sign bits,
over the bitmap's ones 16 at a time (vector expand). Coordinates are too many for a loop per
code: the kernels work on vectors through portable LLVM intrinsics, which LLVM turns into AVX-512
instructions where the CPU has them and into scalar code elsewhere.
"""

from __future__ import annotations

import numpy as np

from psgd.kernels import cpu, device_fn, numba
from psgd.kernels.codes import (
    _ONE,
    _ZERO,
    OK,
    RANGE,
    UNARY_END,
    _after_ones,
    _bits_at,
    _close,
    _mask,
    _push,
    _room,
    _zeros_one,
    popcount,
    unary_gaps,
)
from psgd.kernels.rng import block_key, random24_in

if numba is not None:
    from llvmlite import ir
    from numba.core import cgutils, types
    from numba.cpython.unsafe.numbers import leading_zeros, trailing_zeros
    from numba.extending import intrinsic

    from psgd.kernels.codes import _at, _lanes

    def _bytes64(context, builder, sig, arr, first):
        """The 64 bytes of arr from first as <64 x i8>."""
        return builder.load(_at(context, builder, sig, arr, first, 64), align=1)

    @intrinsic
    def nonzero64(typingctx, b, first):
        """Bit t set where byte b[first + t] != 0, t < 64 (a vector compare)."""

        def codegen(context, builder, sig, args):
            v = _bytes64(context, builder, sig.args[0], args[0], args[1])
            ne = builder.icmp_unsigned("!=", v, ir.Constant(v.type, None))
            return builder.bitcast(ne, ir.IntType(64))

        return types.uint64(b, first), codegen

    @intrinsic
    def compress64(typingctx, b, first, mask):
        """The bits b[first + t] != 0 of the lanes t set in mask, packed from bit 0 (a vector
        compress, like pext; LLVM 19 and later, as unary_gaps)."""

        def codegen(context, builder, sig, args):
            i8 = ir.IntType(8)
            v8 = ir.VectorType(i8, 64)
            fn = cgutils.get_or_insert_function(
                builder.module,
                ir.FunctionType(v8, [v8, ir.VectorType(ir.IntType(1), 64), v8]),
                "llvm.experimental.vector.compress.v64i8",
            )
            v = _bytes64(context, builder, sig.args[0], args[0], args[1])
            packed = builder.call(fn, [v, _lanes(builder, args[2], 64), ir.Constant(v8, None)])
            return builder.bitcast(builder.icmp_unsigned("!=", packed, ir.Constant(v8, None)), ir.IntType(64))

        return types.uint64(b, first, mask), codegen

    @intrinsic
    def expand16(typingctx, out, i, k, r, nz, sg, gamma, weight, add):
        """out[i .. i + 15] (+)= weight v: lane t takes the next k (k[r], k[r + 1], ...) and the next
        sign bit (bit 0, 1, ... of sg) where bit t of nz is set, else 0 and +; v = float32(k) gamma,
        negated where the sign bit is 1 (as float32(-k) gamma: rounding is symmetric), fp32
        arithmetic as the scalar loop does it (LLVM's masked.expandload: vpexpandd with AVX-512,
        scalar code elsewhere; the sign bits are spread as lanes through a stack slot)."""

        def codegen(context, builder, sig, args):
            out_, i_, k_, r_, nz_, sg_, gamma_, weight_, add_ = args
            f32, i32 = ir.FloatType(), ir.IntType(32)
            vf, vi = ir.VectorType(f32, 16), ir.VectorType(i32, 16)
            fn = cgutils.get_or_insert_function(
                builder.module,
                ir.FunctionType(vi, [ir.PointerType(i32), ir.VectorType(ir.IntType(1), 16), vi]),
                "llvm.masked.expandload.v16i32",
            )
            mask = _lanes(builder, nz_, 16)
            kp = builder.bitcast(_at(context, builder, sig.args[2], k_, r_, 16), ir.PointerType(i32))
            ks = builder.call(fn, [kp, mask, ir.Constant(vi, None)])

            def splat(x, vt):
                return builder.shuffle_vector(
                    builder.insert_element(ir.Constant(vt, None), x, ir.Constant(i32, 0)),
                    ir.Constant(vt, None),
                    ir.Constant(vi, [0] * 16),
                )

            bits = builder.lshr(splat(builder.trunc(sg_, i32), vi), ir.Constant(vi, list(range(16))))
            slot = cgutils.alloca_once(builder, vi)
            builder.store(builder.and_(bits, ir.Constant(vi, [1] * 16)), slot)
            signs = builder.call(fn, [builder.bitcast(slot, ir.PointerType(i32)), mask, ir.Constant(vi, None)])
            v = builder.fmul(builder.sitofp(ks, vf), splat(gamma_, vf))
            negative = builder.icmp_unsigned("!=", signs, ir.Constant(vi, None))
            v = builder.select(negative, builder.fsub(ir.Constant(vf, [-0.0] * 16), v), v)
            op = _at(context, builder, sig.args[0], out_, i_, 16)
            with builder.if_then(add_):
                w = splat(weight_, vf)
                builder.store(builder.fadd(builder.load(op, align=4), builder.fmul(w, v)), op, align=4)
            with builder.if_then(builder.not_(add_)):
                builder.store(v, op, align=4)
            return context.get_dummy_value()

        return types.void(out, i, k, r, nz, sg, gamma, weight, add), codegen


GAMMA_BITS = 31
LIMIT = np.float32(127.0)  # _levels' clamp on z_i: ceil(z_i 2^24) < 2^31, an int32 lane
TWO_24 = np.float32(2.0**24)
BLOCK = 2048  # coordinates per block of the encoder (a multiple of 64: bitmap words; divides 2^16) and per
# round of the decoder's unary reading (32 bitmap words, 128 vectors of 16)


def header_bits(d: int) -> int:
    """gamma's 31 bits and n0's ceil(log2(d + 1)) (the paper's log d): where the unary codes start."""
    return GAMMA_BITS + d.bit_length()


@device_fn
def _dither(z, random, kb, k1, i):
    """k_i from z_i: round(z_i) (half to even), or with ``random`` floor(z_i) + (u_i < z_i - floor(z_i))
    (kb: i's block key, rng.block_key). The definition, one coordinate at a time (_levels is its
    vectorised form below 2^7)."""
    if random:
        low = np.floor(z)
        return np.int32(low) + np.int32(np.float32(random24_in(kb, k1, i)) * np.float32(2**-24) < z - low)
    return np.int32(np.rint(z))


@device_fn
def _levels(xs, inv, random, kb, k1, start, small, neg):
    """min(k_i, LIMIT) (bytes in small) and x_i < 0 (bytes in neg) of the block xs starting at
    coordinate start; their max, which is LIMIT where a k_i may be above it. In 32-bit lanes (16 a
    vector): z_i = min(|x_i| inv, LIMIT) in fp32, and with ``random`` the draw's compare as a
    carry, k_i = (ceil(z_i 2^24) + 2^24 - 1 - r_i) >> 24 (r_i = u_i 2^24 an integer: z_i 2^24 is
    exact, floor(z_i) 2^24 + ceil(frac 2^24), and r_i < ceil(frac 2^24) iff u_i < frac), as _dither.
    The block lies in one block of the generator's counters (BLOCK divides 2^16): one block key kb."""
    hi = np.uint32(0)
    at = np.int32(start)  # int32 counters: the draw reads their low 32 bits
    for t in range(np.int32(xs.size)):
        v = xs[t]
        z = min(abs(v) * inv, LIMIT)
        if random:
            q = np.uint32(np.int32(np.ceil(z * TWO_24)))
            k = np.uint32(np.uint32(q + np.uint32(random24_in(kb, k1, at + t) ^ np.uint32(0xFFFFFF))) >> np.uint32(24))
        else:
            k = np.uint32(np.int32(np.rint(z)))
        small[t] = np.uint8(k)
        neg[t] = v < 0
        hi = max(hi, k)
    return hi


@device_fn
def _exact_k(xs, inv, random, kb, k1, start, ks):
    """k_i of the block xs by _dither, as int32 in ks (for a block with a k_i at LIMIT or above)."""
    for t in range(xs.size):
        ks[t] = _dither(abs(xs[t]) * inv, random, kb, k1, start + t)


@device_fn
def _unary_codes(ks, buf, j, acc, fill):
    """Append k - 1 zeros and a one for each k > 0 of ks (buf has room): (j, acc, fill). One code at
    a time: for blocks with a k above 7 and the last ks.size % 32."""
    for t in range(ks.size):
        k = np.int64(ks[t])
        end = fill + k
        if end < 64:
            acc |= np.uint64(k > 0) << np.uint64((end - 1) & 63)
            fill = end
        else:
            j, acc, fill = _zeros_one(buf, j, acc, fill, k - 1)
    return j, acc, fill


@device_fn
def _octets(small, codes, lengths):
    """The unary codes of each eight k <= 7 (the bytes of small[o]) as one bit string codes[o] of
    lengths[o] bits. A multiply gives the prefix sums P_t = k_0 + ... + k_t in the bytes; the ones
    sit at P_t - 1: the string is (or_t 2^P_t) >> 1 (a k = 0 repeats the bit before it; leading
    ones at P = 0 fall off). Lane-wise arithmetic: the loop vectorises."""
    for o in range(small.size):
        p = small[o] * np.uint64(0x0101010101010101)
        bits = _ZERO
        for t in range(8):
            bits |= _ONE << ((p >> np.uint64(8 * t)) & np.uint64(63))
        codes[o] = bits >> _ONE
        lengths[o] = p >> np.uint64(56)


@device_fn
def _step(acc, fill, code, m):
    """Append the m <= 64 bits code at bit fill < 64 of acc, no branch: (the word to store at j, the
    new acc, 1 if that word is full else 0, the new fill)."""
    word = acc | (code << np.uint64(fill))
    spill = (code >> _ONE) >> np.uint64(63 - fill)  # the bits past this word
    end = fill + m
    full = end >> 6
    return word, spill if full else word, full, end & 63


@device_fn
def _unary_block(ks, small, buf, j, acc, fill, codes, lengths):
    """Append the unary codes of ks (see _unary_codes) when every k <= 7 (``small``: the k as bytes,
    read eight at a time): the strings of eights (_octets), then one branch-free step per 32 codes
    when they fit in 64 bits (else one per eight). codes, lengths: scratch of ks.size / 8."""
    n = ks.size - ks.size % 32
    _octets(small[: n // 8], codes, lengths)
    for o in range(0, n // 8, 4):
        m0, m1, m2, m3 = (
            np.int64(lengths[o]),
            np.int64(lengths[o + 1]),
            np.int64(lengths[o + 2]),
            np.int64(lengths[o + 3]),
        )
        if m0 + m1 + m2 + m3 <= 64:
            code = codes[o] | (codes[o + 1] << np.uint64(m0))
            code |= (codes[o + 2] | (codes[o + 3] << np.uint64(m2))) << np.uint64((m0 + m1) & 63)
            word, acc, full, fill = _step(acc, fill, code, m0 + m1 + m2 + m3)
        else:
            for u in range(3):
                word, acc, full, fill = _step(acc, fill, codes[o + u], np.int64(lengths[o + u]))
                buf[j] = word
                j += full
            word, acc, full, fill = _step(acc, fill, codes[o + 3], m3)
        buf[j] = word
        j += full
    return _unary_codes(ks[n:], buf, j, acc, fill)


@cpu
def sparse_dither_encode(x, inv, random, k0, k1, k_cap, head, buf, nonzero, signs, ks, small, neg, codes, lengths):
    """One pass over fp32 x: k_i from z_i = |x_i| inv in fp32 (see _dither), inv finite and
    |x_i| inv <= k_cap - 1. The unary codes go into buf (grown as needed) after gamma's bits and
    the n0 field (head: (gamma's bits, header_bits(d)); n0 left zero), the support into the
    bitmap nonzero (d / 64 + 1 words), the sign bits of the non-zeros into signs (as many
    words). Returns (buf, nbits, max k_i, number of non-zeros), or nbits = -1 when a k_i is above
    k_cap. Blocks of ks.size (a multiple of 64) coordinates: k_i as bytes and x_i < 0 (_levels,
    vectorised; the k_i again as int32 in ks where the block reaches LIMIT), the unary codes (as
    strings of eight, joined up to 64 bits, where the block's k_i are at most 7), then 64 at a
    time the bitmap word (vector compare) and the compacted signs (vector compress).
    small, codes, lengths: ks.size / 8 uint64 (small with 8 more); neg: ks.size bytes."""
    d = x.size
    uj, uacc, ufill = 0, np.uint64(head[0]), head[1]  # header_bits(d) <= 63: the unary codes start in word 0
    sj, sacc, sfill = 0, _ZERO, 0
    kmax, nnz = 0, 0
    room = ks.size * ((k_cap >> 6) + 2) + 2  # words a block may add
    sb = small.view(np.uint8)
    start = 0
    while start < d:
        buf = _room(buf, uj + 2 * room)  # grown out here: arrays reassigned inside the loop cost a count per value
        while start < d and uj + room <= buf.size:
            n = min(ks.size, d - start)
            kb = block_key(k0, start)
            hi = np.int64(_levels(x[start : start + n], inv, random, kb, k1, start, sb, neg))
            exact = hi >= LIMIT  # a k_i may be above the bytes' LIMIT: the block's k_i again, as int32
            if exact:
                _exact_k(x[start : start + n], inv, random, kb, k1, start, ks)
                hi = np.int64(max(ks[:n]))
            if hi > k_cap:
                return buf, -1, hi, 0
            kmax = max(kmax, hi)
            if hi <= 7:
                uj, uacc, ufill = _unary_block(sb[:n], small, buf, uj, uacc, ufill, codes, lengths)
            elif exact:
                uj, uacc, ufill = _unary_codes(ks[:n], buf, uj, uacc, ufill)
            else:
                uj, uacc, ufill = _unary_codes(sb[:n], buf, uj, uacc, ufill)
            sb[n : n + 64] = 0
            for t in range(0, n, 64):
                m = nonzero64(sb, t)
                nonzero[(start + t) >> 6] = m
                c = np.int64(popcount(m))
                nnz += c
                sacc, sfill, word, full = _push(sacc, sfill, compress64(neg, t, m), c)
                if full:
                    signs[sj] = word
                    sj += 1
            start += n
    signs[sj] = sacc
    return buf, _close(buf, uj, uacc, ufill), kmax, nnz


@device_fn
def _copy_bits(buf, at, src, first, n):
    """buf's bits from at = the n bits of src from bit first, buf's bits below at kept (buf has
    room for whole words; src a word past the last it reads). A word at a time by one funnel
    shift (_bits_at) of two source words, no branch: the loop vectorises."""
    j, s = at >> 6, at & 63
    buf[j] = (buf[j] & _mask(s)) | (_bits_at(src[first >> 6], src[(first >> 6) + 1], first & 63, 64) << np.uint64(s))
    p = first + 64 - s  # the source bit of buf[j + 1]'s bit 0
    m = max((s + n - 1) >> 6, 0)
    _funnel(buf[j + 1 : j + 1 + m], src[p >> 6 : (p >> 6) + m + 1], np.uint64(p & 63))


@device_fn
def _funnel(out, src, s):
    """out[w] = the 64 bits of src from bit 64 w + s. Over slices (indices known >= 0: no
    wraparound code, so the loop vectorises)."""
    for w in range(out.size):
        out[w] = _bits_at(src[w], src[w + 1], s, 64)


@cpu
def append_parts(buf, nbits, signs, nsigns, support, first, nsupport, tail, ntail):
    """Append the first nsigns bits of the word stream signs, the nsupport bits of support from
    its bit first, then the ntail < 64 bits of tail: (buf, nbits)."""
    buf = _room(buf, (nbits + nsigns + nsupport + ntail) // 64 + 2)
    _copy_bits(buf, nbits, signs, 0, nsigns)
    _copy_bits(buf, nbits + nsigns, support, first, nsupport)
    end = nbits + nsigns + nsupport
    j, fill = end >> 6, end & 63
    acc, fill, word, full = _push(buf[j] & _mask(fill), fill, np.uint64(tail), ntail)
    if full:
        buf[j] = word
        j += 1
    return buf, _close(buf, j, acc, fill)


@cpu
def sparse_dither_check(words, nbits, upos, nnz, max_q):
    """(status, end) of the nnz unary codes from bit upos: each with at most max_q zeros, the
    last one ending at bit end - 1 <= nbits (UNARY_END if the stream has too few ones, RANGE for
    a longer run of zeros). Runs are checked across words only, unless max_q < 63."""
    end = _after_ones(words, upos, nbits, nnz)
    if end < 0:
        return UNARY_END, 0
    last_one = upos - 1
    seen = 0
    i = upos >> 6
    w = words[i] & ~_mask(upos & 63)
    while seen < nnz:
        if w:
            if 64 * i + np.int64(trailing_zeros(w)) - last_one - 1 > max_q:
                return RANGE, 0
            c = np.int64(popcount(w))
            if max_q < 63 or seen + c > nnz:
                while w and seen < nnz:
                    one = 64 * i + np.int64(trailing_zeros(w))
                    if one - last_one - 1 > max_q:
                        return RANGE, 0
                    last_one = one
                    w &= w - _ONE
                    seen += 1
            else:
                seen += c
                last_one = 64 * i + 63 - np.int64(leading_zeros(w))
        i += 1
        w = words[i]
    return OK, end


@cpu
def sparse_dither_values(words, nonzero, upos, spos, gamma, weight, out, add, k):
    """out_i = s_i k_i gamma (fp32), or with ``add`` out_i += weight (s_i k_i gamma), from a checked
    body (unary codes from upos, sign bits from spos) and its support bitmap. Blocks of BLOCK
    coordinates: the k_i of the block's non-zeros are read from the unary codes a word at a time
    (vector compress of the ones' positions), then spread over the coordinates 16 at a time with
    their sign bits (vector expand); ``k``: scratch of 2 BLOCK int32 (a block reads
    up to BLOCK + 63 codes, and writes 64 past the last)."""
    d = out.size
    i = upos >> 6
    w = words[i] & ~_mask(upos & 63)
    last_one = upos - 1
    have = 0  # codes read into k, not yet used
    sp = spos  # the sign bit of the next code used
    for start in range(0, d - d % 16, BLOCK):
        size = min(BLOCK, d - d % 16 - start)
        need = 0
        for j in range(start >> 6, (start + size + 63) >> 6):
            need += np.int64(popcount(nonzero[j]))
        while have < need:
            c = np.int64(popcount(w))
            unary_gaps(k, have, w)
            k[have] = 64 * i + np.int64(trailing_zeros(w)) - last_one
            last_one = 64 * i + 63 - np.int64(leading_zeros(w)) if c else last_one
            have += c
            i += 1
            w = words[i]
        r = 0
        for v in range(start, start + size, 16):
            nz = (nonzero[v >> 6] >> np.uint64(v & 63)) & np.uint64(0xFFFF)
            sg = _bits_at(words[sp >> 6], words[(sp >> 6) + 1], sp & 63, 16)
            expand16(out, v, k, r, nz, sg, gamma, weight, add)
            c = np.int64(popcount(nz))
            r += c
            sp += c
        for t in range(have - r):
            k[t] = k[r + t]
        have -= r
    r = 0
    for n in range(d - d % 16, d):  # the last coordinates one at a time
        nz = (nonzero[n >> 6] >> np.uint64(n & 63)) & _ONE
        if nz and r == have:
            while w == 0:
                i += 1
                w = words[i]
            one = 64 * i + np.int64(trailing_zeros(w))
            k[have] = one - last_one
            last_one = one
            w &= w - _ONE
            have += 1
        q = k[r] * np.int32(nz)
        x = np.float32(q) * gamma
        if nz and _bits_at(words[sp >> 6], words[(sp >> 6) + 1], sp & 63, 1):
            x = -x
        r += np.int64(nz)
        sp += np.int64(nz)
        if add:
            out[n] += weight * x
        else:
            out[n] = x
