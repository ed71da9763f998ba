"""Variable-length bit codes (psgd.wire.codes) as compiled CPU kernels, and the helpers and vector
intrinsics that sparse dithering's kernels (psgd.kernels.sparse_dither) build on.

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

unary_gaps reads a word's unary codes at once through a portable LLVM intrinsic (vector
compress), which LLVM turns into AVX-512 instructions where the CPU has them and into scalar
code elsewhere.
"""

from __future__ import annotations

import numpy as np
import torch

from psgd.kernels import cpu, device_fn, numba

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


OK, EARLY, UNARY_END, RANGE, UNREAD = range(5)
STATUS = {
    EARLY: "body ends early",
    UNARY_END: "body ends inside a unary code",
    RANGE: "code value out of range",
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


@device_fn
def _zeros_one(buf, j, acc, fill, q):
    """Append q zeros and a one, a unary code, at bit fill of acc (buf has room): (j, acc, fill)."""
    fill += q
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
            j, acc, fill = _zeros_one(buf, j, acc, fill, q)
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
