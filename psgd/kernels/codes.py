"""Variable-length bit codes (psgd.wire.codes) and sparse dithering's body as compiled CPU kernels.

A stream is an array of uint64 words: bit j is bit j % 64 of word j // 64, which on a
little-endian machine is bit j % 8 of byte j // 8, the layout of psgd.wire.bits. Writers append
at bit ``nbits`` of a word buffer, keep the bits above ``nbits`` of the last word zero, grow the
buffer by doubling and return (buffer, new nbits). Readers take the stream in words with the bits
past its end zero and one zero word more (``words_of``); those that can meet malformed contents
return a status, which the caller turns into the reference's FrameError.

Prefix codes are split as the reference writes them: all unary parts, then all fixed-width parts.
A writer puts the unary parts in the stream and the fixed-width parts in a scratch buffer that it
appends at the end; a reader finds where the unary parts end (popcounts), then walks both parts
at once: one pass over the values either way.

Sparse dithering's coordinates are too many for a loop per code: its kernels work on vectors
through portable LLVM intrinsics (vector compress and expanding loads, reductions), which LLVM
turns into AVX-512 instructions where the CPU has them and into scalar code elsewhere.
"""

from __future__ import annotations

import numpy as np
import torch

from psgd.kernels import cpu, device_fn, numba
from psgd.kernels.rng import uniform_at

if numba is not None:
    from llvmlite import ir
    from llvmlite.binding import llvm_version_info
    from numba.core import cgutils, types
    from numba.core.errors import TypingError
    from numba.cpython.unsafe.numbers import leading_zeros, trailing_zeros
    from numba.extending import intrinsic

    @intrinsic
    def popcount(typingctx, src):
        """Number of one bits of an integer (LLVM ctpop)."""
        return src(src), lambda context, builder, sig, args: builder.ctpop(args[0])

    def _at(context, builder, aty, arr, index, lanes):
        """A pointer to ``lanes`` elements of a numba array from ``index``."""
        data = context.make_array(aty)(context, builder, arr).data
        return builder.bitcast(builder.gep(data, [index]), ir.VectorType(data.type.pointee, lanes).as_pointer())

    def _lanes(builder, bits, n):
        """The n low bits of an integer as an <n x i1> mask."""
        return builder.bitcast(builder.trunc(bits, ir.IntType(n)), ir.VectorType(ir.IntType(1), n))

    @intrinsic
    def unary_gaps(typingctx, gaps, n, w):
        """gaps[n + j] = (position of the j-th one of the word w) - (that of the (j - 1)-th), for
        j = 1 .. popcount(w) - 1; gaps[n .. n + 63] are written (gaps[n] and those past the ones are
        garbage). One vector compress of the bit positions (LLVM lowers it to vpcompressb where
        the CPU has it, to scalar code elsewhere). LLVM 19 and later: with an older llvmlite the
        kernels that use it do not compile, and their callers run the references."""
        if llvm_version_info < (19,):
            raise TypingError("llvm.experimental.vector.compress needs LLVM 19 (a newer llvmlite)")

        def codegen(context, builder, sig, args):
            i8, i32 = ir.IntType(8), ir.IntType(32)
            v8, v32 = ir.VectorType(i8, 64), ir.VectorType(i32, 64)
            fn = cgutils.get_or_insert_function(
                builder.module,
                ir.FunctionType(v8, [v8, ir.VectorType(ir.IntType(1), 64), v8]),
                "llvm.experimental.vector.compress.v64i8",
            )
            iota = ir.Constant(v8, [ir.Constant(i8, j) for j in range(64)])
            ones = builder.call(fn, [iota, _lanes(builder, args[2], 64), ir.Constant(v8, None)])
            before = builder.shuffle_vector(ones, ones, ir.Constant(v32, [0, *range(63)]))
            diff = builder.zext(builder.sub(ones, before), v32)
            builder.store(diff, _at(context, builder, sig.args[0], args[0], args[1], 64), align=4)
            return context.get_dummy_value()

        return types.void(gaps, n, w), codegen

    @intrinsic
    def group29(typingctx, trits, first):
        """sum_t trits[first + t] 3^t over t < 29 (reads 32 bytes): the base-3 digits dotted with
        3^t in 32-bit lanes, in two parts that fit (t < 20: < 3^20 < 2^32; the rest times 3^20)."""

        def codegen(context, builder, sig, args):
            i32, i64 = ir.IntType(32), ir.IntType(64)
            vi = ir.VectorType(i32, 32)
            digits = builder.zext(builder.load(_at(context, builder, sig.args[0], args[0], args[1], 32), align=1), vi)
            fn = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(i32, [vi]), "llvm.vector.reduce.add.v32i32"
            )
            parts = []
            for low, high in ((0, 20), (20, 29)):
                weights = ir.Constant(vi, [3 ** (t - low) if low <= t < high else 0 for t in range(32)])
                parts.append(builder.zext(builder.call(fn, [builder.mul(digits, weights)]), i64))
            return builder.add(parts[0], builder.mul(parts[1], ir.Constant(i64, 3**20)))

        return types.uint64(trits, first), codegen

    @intrinsic
    def expand16(typingctx, out, i, k, r, nz, neg, gamma, weight, add):
        """out[i .. i + 15] (+)= weight v: lane t takes the next k (k[r], k[r + 1], ...) where bit t
        of nz is set, else 0; v = float32(k) gamma, negated where bit t of neg is set (as
        float32(-k) gamma: rounding is symmetric), fp32 arithmetic as the scalar loop does it
        (LLVM's masked.expandload: vpexpandd with AVX-512, scalar code elsewhere)."""

        def codegen(context, builder, sig, args):
            out_, i_, k_, r_, nz_, neg_, gamma_, weight_, add_ = args
            f32, i32 = ir.FloatType(), ir.IntType(32)
            vf, vi = ir.VectorType(f32, 16), ir.VectorType(i32, 16)
            fn = cgutils.get_or_insert_function(
                builder.module,
                ir.FunctionType(vi, [ir.PointerType(i32), ir.VectorType(ir.IntType(1), 16), vi]),
                "llvm.masked.expandload.v16i32",
            )
            kp = builder.bitcast(_at(context, builder, sig.args[2], k_, r_, 16), ir.PointerType(i32))
            ks = builder.call(fn, [kp, _lanes(builder, nz_, 16), ir.Constant(vi, None)])

            def splat(x):
                return builder.shuffle_vector(
                    builder.insert_element(ir.Constant(vf, None), x, ir.Constant(i32, 0)),
                    ir.Constant(vf, None),
                    ir.Constant(vi, [0] * 16),
                )

            v = builder.fmul(builder.sitofp(ks, vf), splat(gamma_))
            v = builder.select(_lanes(builder, neg_, 16), builder.fsub(ir.Constant(vf, [-0.0] * 16), v), v)
            op = _at(context, builder, sig.args[0], out_, i_, 16)
            with builder.if_then(add_):
                builder.store(builder.fadd(builder.load(op, align=4), builder.fmul(splat(weight_), v)), op, align=4)
            with builder.if_then(builder.not_(add_)):
                builder.store(v, op, align=4)
            return context.get_dummy_value()

        return types.void(out, i, k, r, nz, neg, gamma, weight, add), codegen


OK, EARLY, UNARY_END, RANGE, TRIT_RANGE, TRIT_PAD, UNREAD = range(7)
STATUS = {
    EARLY: "body ends early",
    UNARY_END: "body ends inside a unary code",
    RANGE: "code value out of range",
    TRIT_RANGE: "base-3 group out of range",
    TRIT_PAD: "non-zero base-3 padding",
}
UNARY, GAMMA, RICE = range(3)  # the codes read_codes and write_codes handle

_ZERO = np.uint64(0)
_ONE = np.uint64(1)
_ALL = np.uint64(2**64 - 1)


def words_of(body: torch.Tensor, nbits: int) -> np.ndarray:
    """The first nbits of a packed uint8 body as words, the bits past nbits zero, one zero word more."""
    words = np.zeros(nbits // 64 + 2, dtype=np.uint64)
    nbytes = -(-nbits // 8)
    raw = words.view(np.uint8)
    raw[:nbytes] = body[:nbytes].numpy()
    if nbits % 8:
        raw[nbytes - 1] &= (1 << (nbits % 8)) - 1
    return words


def new_words(nbits: int) -> np.ndarray:
    """An empty word buffer with room for about nbits. Buffers and outputs come from numpy, never
    from the kernels: numpy asks for huge pages, and fresh memory is faulted in 4x faster."""
    return np.empty(nbits // 64 + 2, dtype=np.uint64)


# ---------------------------------------------------------------- writing


@device_fn
def _room(buf, n):
    """buf with at least n words (its capacity doubled when short). Kernels make room before a
    run of writes; helpers called per value never take arrays (numba would count references to
    them at every call, 10x the cost of the write)."""
    if n <= buf.size:
        return buf
    new = np.empty(max(2 * buf.size, n), dtype=np.uint64)
    new[: buf.size] = buf
    return new


@device_fn
def _mask(n):
    """The n low bits set, 0 <= n <= 64 (no branch: widths vary from value to value)."""
    return ((_ONE << np.uint64(n & 63)) - _ONE) | (_ZERO - np.uint64(n >> 6))


@device_fn
def _push(acc, fill, v, n):
    """Append the n low bits of v (0 <= n <= 64, the higher bits of v zero) to ``fill`` < 64
    pending bits in acc: (acc, fill, a full word to store, whether there is one)."""
    word = acc | (v << np.uint64(fill))
    fill += n
    if fill < 64:
        return word, fill, word, False
    fill -= 64
    return ((v >> np.uint64(n - fill)) if fill else _ZERO), fill, word, True


@device_fn
def _bits_at(lo, hi, s, n):
    """The n <= 64 bits from bit s < 64 of the 128-bit hi:lo (no branch: (hi << 1) << (63 - s) is
    hi << (64 - s), and 0 for s = 0)."""
    return ((lo >> np.uint64(s)) | ((hi << _ONE) << np.uint64(63 - s))) & _mask(n)


@device_fn
def _open(buf, nbits):
    """(j, acc, fill) of a writer at bit nbits of buf: the next word to store, the pending bits."""
    fill = nbits & 63
    return nbits >> 6, buf[nbits >> 6] if fill else _ZERO, fill


@device_fn
def _close(buf, j, acc, fill):
    """Store the pending bits; the bit count."""
    if fill:
        buf[j] = acc
    return 64 * j + fill


@device_fn
def _append(buf, j, acc, fill, src, nbits):
    """Append the first nbits of the word stream src (buf has room)."""
    for k in range(-(-nbits >> 6)):
        n = min(64, nbits - 64 * k)
        acc, fill, word, full = _push(acc, fill, src[k] & _mask(n), n)
        if full:
            buf[j] = word
            j += 1
    return j, acc, fill


@cpu
def write_bits(buf, nbits, b):
    """Append the booleans b, one bit each."""
    n = b.size
    buf = _room(buf, (nbits + n) // 64 + 1)
    j, acc, fill = _open(buf, nbits)
    for k in range(-(-n >> 6)):
        v = _ZERO
        for t in range(min(64, n - 64 * k)):
            v |= np.uint64(b[64 * k + t]) << np.uint64(t)
        acc, fill, word, full = _push(acc, fill, v, min(64, n - 64 * k))
        if full:
            buf[j] = word
            j += 1
    return buf, _close(buf, j, acc, fill)


@cpu
def write_uints(buf, nbits, values, width):
    """Append each value's ``width`` low bits, least significant first."""
    buf = _room(buf, (nbits + values.size * width) // 64 + 1)
    j, acc, fill = _open(buf, nbits)
    m = _mask(width)
    for i in range(values.size):
        acc, fill, word, full = _push(acc, fill, np.uint64(values[i]) & m, width)
        if full:
            buf[j] = word
            j += 1
    return buf, _close(buf, j, acc, fill)


@cpu
def write_varuints(buf, nbits, values, widths):
    """Append value i's widths[i] low bits (0 <= widths[i] <= 64)."""
    buf = _room(buf, (nbits + np.int64(widths.sum())) // 64 + 1)
    j, acc, fill = _open(buf, nbits)
    for i in range(values.size):
        w = np.int64(widths[i])
        acc, fill, word, full = _push(acc, fill, np.uint64(values[i]) & _mask(w), w)
        if full:
            buf[j] = word
            j += 1
    return buf, _close(buf, j, acc, fill)


@cpu
def write_codes(buf, nbits, values, r, code, low):
    """Append split prefix codes of the values: every unary part, then every fixed-width part.
    UNARY: v >= 0 as v zeros and a one. GAMMA: v >= 1 of bit length L as unary(L - 1), then its
    L - 1 low bits. RICE: v >= 0 as unary(v >> r), then its r low bits. ``low``: scratch words."""
    buf = _room(buf, nbits // 64 + 2)
    j, acc, fill = _open(buf, nbits)
    lj, lacc, lfill = 0, _ZERO, 0
    i = 0
    need = j + 2
    while i < values.size:
        buf = _room(buf, need)  # grown out here: arrays reassigned inside the loop cost a count per value
        low = _room(low, lj + 2)
        while i < values.size:
            v = np.uint64(values[i])
            if code == UNARY:
                q, w = np.int64(v), 0
            elif code == GAMMA:
                w = 63 - np.int64(leading_zeros(v))
                q = w
            else:
                q, w = np.int64(v >> np.uint64(r)), r
            need = j + (q >> 6) + 2
            if need > buf.size or lj + 2 > low.size:
                break
            fill += q  # q zeros
            while fill >= 64:
                buf[j] = acc
                j += 1
                acc = _ZERO
                fill -= 64
            acc, fill, word, full = _push(acc, fill, _ONE, 1)
            if full:
                buf[j] = word
                j += 1
            lacc, lfill, word, full = _push(lacc, lfill, v & _mask(w), w)
            if full:
                low[lj] = word
                lj += 1
            i += 1
    lbits = _close(low, lj, lacc, lfill)
    buf = _room(buf, (64 * j + fill + lbits) // 64 + 1)
    j, acc, fill = _append(buf, j, acc, fill, low, lbits)
    return buf, _close(buf, j, acc, fill)


@cpu
def write_trits(buf, nbits, trits, tight):
    """Append base-3 digits 29 to a 46-bit integer; the last m < 29 in 46 bits, or with ``tight``
    in ceil(m log2 3) bits."""
    full, m = divmod(trits.size, 29)
    buf = _room(buf, (nbits + 46 * (full + 1)) // 64 + 1)
    j, acc, fill = _open(buf, nbits)
    for k in range(full + (m > 0)):
        size = 29 if k < full else m
        g = np.int64(0)
        for t in range(size):
            g += np.int64(trits[29 * k + t]) * _POW3[t]
        n = 46 if size == 29 or not tight else _GROUP_BITS[size]
        acc, fill, word, full_word = _push(acc, fill, np.uint64(g), n)
        if full_word:
            buf[j] = word
            j += 1
    return buf, _close(buf, j, acc, fill)


@cpu
def write_packed(buf, nbits, src, n):
    """Append the first n bits of the packed bytes src."""
    buf = _room(buf, (nbits + n) // 64 + 1)
    j, acc, fill = _open(buf, nbits)
    for k in range(-(-n >> 6)):
        v = _ZERO
        for t in range(min(8, len(src) - 8 * k)):
            v |= np.uint64(src[8 * k + t]) << np.uint64(8 * t)
        size = min(64, n - 64 * k)
        acc, fill, word, full = _push(acc, fill, v & _mask(size), size)
        if full:
            buf[j] = word
            j += 1
    return buf, _close(buf, j, acc, fill)


# ---------------------------------------------------------------- reading


@device_fn
def _peek(words, p, n):
    """The n <= 64 bits at bit p (not for per-value loops: it takes the array)."""
    return _bits_at(words[p >> 6], words[(p >> 6) + 1], p & 63, n)


@device_fn
def _after_ones(words, pos, nbits, n):
    """The bit after the n-th one at or after pos, or -1 when the stream has fewer."""
    if n == 0:
        return pos
    i = pos >> 6
    w = words[i] & ~_mask(pos & 63)
    seen = 0
    last = (nbits + 63) >> 6
    while True:
        c = np.int64(popcount(w))
        if seen + c >= n:
            for _ in range(n - seen - 1):
                w &= w - _ONE
            return 64 * i + np.int64(trailing_zeros(w)) + 1
        seen += c
        i += 1
        if i >= last:
            return -1
        w = words[i]


@cpu
def read_codes(words, pos, nbits, out, max_q, r, code):
    """out.size split prefix codes (see write_codes) from bit pos into out: (new pos, status). The
    unary parts must hold out.size ones (else UNARY_END), each q <= max_q (else RANGE), then the
    fixed-width parts must fit (else EARLY). One loop per code, checks folded into a max and a flag."""
    n = out.size
    end = _after_ones(words, pos, nbits, n)
    if end < 0:
        return pos, UNARY_END
    low, early, qmax = end, False, 0
    i = pos >> 6
    w = words[i] & ~_mask(pos & 63)
    p = pos
    for k in range(n):
        while w == 0:
            i += 1
            w = words[i]
        one = 64 * i + np.int64(trailing_zeros(w))
        w &= w - _ONE
        q = one - p
        p = one + 1
        qmax = max(qmax, q)
        if code == UNARY:
            out[k] = q
        else:
            width = min(q, 64) if code == GAMMA else r
            if low + width > nbits:  # read nothing past the stream
                early, width = True, 0
            v = _bits_at(words[low >> 6], words[(low >> 6) + 1], low & 63, width)
            low += width
            head = _ONE << np.uint64(q & 63) if code == GAMMA else np.uint64(q) << np.uint64(r)
            out[k] = np.int64(head | v)
    if qmax > max_q:
        return pos, RANGE
    return (pos, EARLY) if early else (low, OK)


@cpu
def read_bits(words, pos, out):
    """out[i] = bit pos + i."""
    n = out.size
    for k in range(-(-n >> 6)):
        p = pos + 64 * k
        v = _bits_at(words[p >> 6], words[(p >> 6) + 1], p & 63, 64)
        for t in range(min(64, n - 64 * k)):
            out[64 * k + t] = (v >> np.uint64(t)) & _ONE


@cpu
def read_uints(words, pos, out, width):
    """out[i] = the width bits at pos + i width."""
    for i in range(out.size):
        p = pos + i * width
        out[i] = np.int64(_bits_at(words[p >> 6], words[(p >> 6) + 1], p & 63, width))


@cpu
def read_varuints(words, pos, widths, out):
    """out[i] = the widths[i] bits that follow those of out[:i]."""
    for i in range(widths.size):
        w = np.int64(widths[i])
        out[i] = np.int64(_bits_at(words[pos >> 6], words[(pos >> 6) + 1], pos & 63, w))
        pos += w


@cpu
def read_packed(words, pos, out, n):
    """The n bits at pos packed into out (ceil(n / 8) bytes, the padding bits zero)."""
    for k in range(-(-n >> 6)):
        p = pos + 64 * k
        v = _bits_at(words[p >> 6], words[(p >> 6) + 1], p & 63, min(64, n - 64 * k))
        for t in range(min(8, out.size - 8 * k)):
            out[8 * k + t] = np.uint8((v >> np.uint64(8 * t)) & np.uint64(255))


@cpu
def read_trits(words, pos, out, tight):
    """Base-3 digits as write_trits packs them (the bits are there): status TRIT_RANGE for a group
    >= 3^m, TRIT_PAD for a non-zero digit in a padded last group."""
    full, m = divmod(out.size, 29)
    for k in range(full + (m > 0)):
        size = 29 if k < full else m
        p = pos + 46 * k
        g = np.int64(
            _bits_at(words[p >> 6], words[(p >> 6) + 1], p & 63, 46 if size == 29 or not tight else _GROUP_BITS[size])
        )
        if g >= _POW3[size if tight else 29]:
            return TRIT_RANGE
        for t in range(size):
            out[29 * k + t] = g % 3
            g //= 3
        if g:
            return TRIT_PAD
    return OK


_POW3 = np.array([3**j for j in range(30)], dtype=np.int64)
_GROUP_BITS = np.array([(3**m - 1).bit_length() for m in range(30)], dtype=np.int64)


# ---------------------------------------------------------------- sparse dithering's body
# gamma in 31 bits, base-3 signs (0, +, -) 29 to 46 bits (the last m in ceil(m log2 3)), then
# k_i - 1 zeros and a one for each k_i > 0 (psgd/compress/sparse_dither.py)

GAMMA_BITS = 31
_DIGITS10 = np.array([[(c // 3**t) % 3 for t in range(10)] for c in range(3**10)], dtype=np.int64)
# ten base-3 digits per table look-up: the non-zero ones in bits 0-9, the negative ones (2) in bits 16-25
_MASKS10 = ((_DIGITS10 > 0) << np.arange(10)).sum(1) | ((_DIGITS10 == 2) << np.arange(16, 26)).sum(1)
_MASKS10 = _MASKS10.astype(np.uint32)
del _DIGITS10


def unary_start(d: int) -> int:
    """First bit of the unary magnitudes: after gamma and the d base-3 signs."""
    full, m = divmod(d, 29)
    return GAMMA_BITS + 46 * full + (3**m - 1).bit_length()


@device_fn
def _dither(z, random, k0, k1, i):
    """k_i from z_i: round(z_i) (half to even), or with ``random`` floor(z_i) + (u_i < z_i - floor(z_i))."""
    if random:
        low = np.floor(z)
        return np.int32(low) + np.int32(uniform_at(k0, k1, i) < z - low)
    return np.int32(np.rint(z))


@device_fn
def _block_k(xs, inv, random, k0, k1, start, ks, small, trits):
    """k_i (ks; as bytes min(k_i, 255) in small) and the signs (0, 1 for +, 2 for -) of the block xs
    starting at coordinate start; max k_i. Its own function over a slice (indices known >= 0), with
    an integer max: the loop vectorises."""
    hi = np.int32(0)
    for t in range(xs.size):
        v = xs[t]
        k = _dither(abs(v) * inv, random, k0, k1, start + t)
        ks[t] = k
        small[t] = np.uint8(min(k, np.int32(255)))
        trits[t] = (k > 0) * (1 + (v < 0))
        hi = max(hi, k)
    return hi


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
            fill += k - 1
            while fill >= 64:
                buf[j] = acc
                j += 1
                acc = _ZERO
                fill -= 64
            acc, fill, word, full = _push(acc, fill, _ONE, 1)
            if full:
                buf[j] = word
                j += 1
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


@device_fn
def _group_block(trits, buf, j, acc, fill):
    """Append the base-3 groups of 29 trits (the last may be shorter, in ceil(m log2 3) bits): (j, acc, fill).
    trits has 3 readable bytes past its end (group29 reads 32)."""
    n = trits.size - trits.size % 29
    for first in range(0, n, 29):
        acc, fill, word, full = _push(acc, fill, group29(trits, first), 46)
        if full:  # not stored at every step: the last word is the unary codes' first
            buf[j] = word
            j += 1
    if n < trits.size:
        g = np.int64(0)
        for t in range(trits.size - n):
            g += np.int64(trits[n + t]) * _POW3[t]
        acc, fill, word, full = _push(acc, fill, np.uint64(g), _GROUP_BITS[trits.size - n])
        if full:
            buf[j] = word
            j += 1
    return j, acc, fill


@cpu
def sparse_dither_encode(x, inv, random, k0, k1, k_cap, gamma_bits, buf, upos, ks, small, trits, codes, lengths):
    """Sparse dithering's body for fp32 x into buf (grown as needed): k_i from z_i = |x_i| inv in
    fp32 (see _dither), inv finite and |x_i| inv <= k_cap - 1. Returns (buf, nbits, max k_i), or
    nbits = -1 when a k_i is above k_cap.
    Blocks of ks.size = 29 b coordinates, in flat loops: k_i and the signs (vectorised, random draws
    included), the unary codes (as strings of eight, joined up to 64 bits, where the block's k_i are at most 7), then
    the base-3 groups (29 digits dotted with 3^t in vector lanes). small, codes, lengths: ks.size / 8
    uint64."""
    d = x.size
    acc, fill, j = np.uint64(gamma_bits), GAMMA_BITS, 0
    uj, uacc, ufill = upos >> 6, _ZERO, upos & 63  # the signs' last bits share uj: or-ed in at the end
    kmax = 0
    room = ks.size * ((k_cap >> 6) + 2) + 2  # words a block may add
    start = 0
    while start < d:
        buf = _room(buf, uj + 2 * room)  # grown out here: arrays reassigned inside the loop cost a count per value
        while start < d and uj + room <= buf.size:
            n = min(ks.size, d - start)
            hi = _block_k(x[start : start + n], inv, random, k0, k1, start, ks, small.view(np.uint8), trits)
            if hi > k_cap:
                return buf, -1, hi
            kmax = max(kmax, hi)
            if hi <= 7:
                uj, uacc, ufill = _unary_block(ks[:n], small, buf, uj, uacc, ufill, codes, lengths)
            else:
                uj, uacc, ufill = _unary_codes(ks[:n], buf, uj, uacc, ufill)
            j, acc, fill = _group_block(trits[:n], buf, j, acc, fill)
            start += n
    nbits = _close(buf, uj, uacc, ufill)
    if fill:  # the unary part wrote this word (its first bits, or zero when empty)
        buf[j] |= acc
    return buf, nbits, kmax


@device_fn
def _group_masks(g):
    """(non-zero digits, digits equal to 2) of the base-3 integer g < 3^29 as 29-bit masks."""
    u = np.uint64(g)  # unsigned: division by a constant without the sign fix-ups of Python's floor division
    ten, twenty = u // np.uint64(3**10), u // np.uint64(3**20)  # independent multiplies
    a = _MASKS10[u - ten * np.uint64(3**10)]
    b, c = _MASKS10[ten - twenty * np.uint64(3**10)], _MASKS10[twenty]
    low = np.uint64(1023)
    nz = np.uint64(a) & low | (np.uint64(b) & low) << np.uint64(10) | (np.uint64(c) & low) << np.uint64(20)
    neg = np.uint64(a >> 16) | np.uint64(b >> 16) << np.uint64(10) | np.uint64(c >> 16) << np.uint64(20)
    return nz, neg


@cpu
def sparse_dither_check(words, nbits, max_q, nonzero, negative, d):
    """(status, end) of a sparse dithering body of d coordinates, its signs written as bitmaps
    (zeroed, with a word to spare): bit i of ``nonzero`` for s_i != 0, of ``negative`` for s_i < 0
    (29 bits per group, appended in registers).
    Every sign group in range, then one unary code per non-zero sign, each with at most max_q
    zeros, the last ending at ``end`` == nbits."""
    full, m = divmod(d, 29)
    nz = 0
    j, fill, acc_nz, acc_neg = 0, 0, _ZERO, _ZERO  # the bitmaps' words in the making, stored at every step
    top = _POW3[29]
    for grp in range(full + (m > 0)):
        p = GAMMA_BITS + 46 * grp
        last = grp == full  # the short group
        g = np.int64(_bits_at(words[p >> 6], words[(p >> 6) + 1], p & 63, _GROUP_BITS[m] if last else 46))
        if g >= (_POW3[m] if last else top):
            return TRIT_RANGE, 0
        a, b = _group_masks(g)
        nz += np.int64(popcount(a))
        word_nz, acc_nz, _, _ = _step(acc_nz, fill, a, 29)
        word_neg, acc_neg, spill, fill = _step(acc_neg, fill, b, 29)
        nonzero[j] = word_nz
        negative[j] = word_neg
        j += spill
    nonzero[j] = acc_nz
    negative[j] = acc_neg
    upos = GAMMA_BITS + 46 * full + _GROUP_BITS[m]
    end = _after_ones(words, upos, nbits, nz)
    if end < 0:
        return UNARY_END, 0
    # the longest run of zeros before each of the nz ones: across words only, unless max_q < 63
    last_one = upos - 1
    seen = 0
    i = upos >> 6
    w = words[i] & ~_mask(upos & 63)
    while seen < nz:
        if w:
            if 64 * i + np.int64(trailing_zeros(w)) - last_one - 1 > max_q:
                return RANGE, 0
            c = np.int64(popcount(w))
            if max_q < 63 or seen + c > nz:
                while w and seen < nz:
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
    return (OK if end == nbits else UNREAD), end


BLOCK = 1024  # coordinates per round of unary reading: 16 bitmap words, 64 vectors of 16


@cpu
def sparse_dither_values(words, nonzero, negative, gamma, weight, out, add, k):
    """out_i = s_i k_i gamma (fp32), or with ``add`` out_i += weight (s_i k_i gamma), from a checked
    body and its sign bitmaps. Blocks of BLOCK coordinates: the k_i of the block's non-zero signs
    are read from the unary codes a word at a time (vector compress of the ones' positions), then
    spread over the coordinates 16 at a time (vector expand); ``k``: scratch of 2 BLOCK int32 (a block
    reads up to BLOCK + 63 codes, and writes 64 past the last)."""
    d = out.size
    full, m = divmod(d, 29)
    upos = GAMMA_BITS + 46 * full + _GROUP_BITS[m]
    i = upos >> 6
    w = words[i] & ~_mask(upos & 63)
    last_one = upos - 1
    have = 0  # codes read into k, not yet used
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
            j, s = v >> 6, np.uint64(v & 63)
            nz = (nonzero[j] >> s) & np.uint64(0xFFFF)
            expand16(out, v, k, r, nz, (negative[j] >> s) & np.uint64(0xFFFF), gamma, weight, add)
            r += np.int64(popcount(nz))
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
            k[have] = 64 * i + np.int64(trailing_zeros(w)) - last_one
            last_one += k[have]
            w &= w - _ONE
            have += 1
        q = np.int64(k[r]) * np.int64(nz)
        neg = (negative[n >> 6] >> np.uint64(n & 63)) & _ONE
        x = np.float32(q) * gamma
        x = -x if neg else x
        r += np.int64(nz)
        if add:
            out[n] += weight * x
        else:
            out[n] = x
