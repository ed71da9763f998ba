"""A support (which of d coordinates are non-zero) at its enumerative count, log2 C(d, n0) + O(1) bits.

Sparse dithering's support (SPEC 2.11), 16 coordinates per symbol: a 16-bit pattern, bit t set
where coordinate 16 i + t is non-zero. A static model: every pattern with c ones has frequency
F[c] ~ 2^32 q^c p^(16 - c), p = n0/d the share of zeros and q = 1 - p, so the support costs
d H(p) bits, within (1/2) log2(2 pi d p q) <= 13 bits of log2 C(d, n0) (Stirling), with no
adaptive counts. The tables come from n0 and d with IEEE +, *, / in float64 only (no pow, exp
or log), the same on every machine. A pattern's slot interval starts at base[c] + rank F[c],
rank its index among the C(16, c) patterns with c ones (RANK, and PAT to invert it).

rANS (Duda, "Asymmetric numeral systems", 2013): 64-bit states in [2^48, 2^64), 16-bit words,
total frequency 2^32. The state stays 2^16 times the total, so the rounding of x / F costs under
2^-16 of a bit per symbol (with states in [2^32, 2^64) it cost ~0.1% of the support). Two
interleaved states (symbol i on state
i mod 2) halve the decoder's dependency chain. The encoder runs backwards; its words are written
from the end of its buffer, so they come out in the decoder's order. x / F (encoder) and
(slot - base) / F (decoder) take the high word of a product with floor((2^64 - 1) / F) and one
correction: the quotient is below 2^32, so the estimate is off by at most one. Whether a state
sheds or takes words, and the correction, are data: selects, never branches (a branch on them
mispredicts about every other symbol).

Stream: the min(S, 2) final encoder states in 64 bits each (state 0 first), then the words,
S = d // 16 symbols (the last d mod 16 coordinates are the caller's, as raw bits). The decoder
must end with every state back at 2^48: a free check of the words. Each F[c] >= 1 and
sum_c C(16, c) F[c] <= 2^32, so every pattern is codable and no slot belongs to two.
"""

from __future__ import annotations

import math

import numpy as np

from psgd.kernels import cpu, device_fn, numba, run

if numba is not None:
    from llvmlite import ir
    from numba.core import types
    from numba.extending import intrinsic

    from psgd.kernels.codes import popcount

    @intrinsic
    def mulhi(typingctx, a, b):
        """The high 64 bits of the 128-bit product of two uint64."""

        def codegen(context, builder, sig, args):
            wide = ir.IntType(128)
            p = builder.mul(builder.zext(args[0], wide), builder.zext(args[1], wide))
            return builder.trunc(builder.lshr(p, ir.Constant(wide, 64)), ir.IntType(64))

        return types.uint64(types.uint64, types.uint64), codegen

    @intrinsic
    def below(typingctx, bounds, s):
        """How many of the 16 uint32 bounds[0:16] are <= s < 2^32: one vector compare and a
        popcount (a loop of compares adds them one after another, on the decoder's chain)."""

        def codegen(context, builder, sig, args):
            i32 = ir.IntType(32)
            vt = ir.VectorType(i32, 16)
            data = context.make_array(sig.args[0])(context, builder, args[0]).data
            v = builder.load(builder.bitcast(data, vt.as_pointer()), align=4)
            one = builder.insert_element(ir.Constant(vt, None), builder.trunc(args[1], i32), i32(0))
            splat = builder.shuffle_vector(one, ir.Constant(vt, None), ir.Constant(vt, [0] * 16))
            le = builder.bitcast(builder.icmp_unsigned("<=", v, splat), ir.IntType(16))
            return builder.zext(builder.ctpop(le), ir.IntType(64))

        return types.uint64(bounds, s), codegen


SYMBOL = 16  # coordinates per symbol
M = 2**32  # total frequency
L = 2**48  # a state's lower bound and every state's start
OK, OUT_OF_RANGE, BAD_STATE, ENDS_EARLY, UNREAD = range(5)
STATUS = {
    OUT_OF_RANGE: "support code out of range",
    BAD_STATE: "support code's states do not return to 2^48",
    ENDS_EARLY: "body ends inside the support code",
    UNREAD: "unread support words",
}

_ONES = np.array([bin(v).count("1") for v in range(2**SYMBOL)], dtype=np.int64)
PAT = np.argsort(_ONES, kind="stable").astype(np.uint16)  # the patterns by number of ones, then value
COUNT = np.array([math.comb(SYMBOL, c) for c in range(SYMBOL + 1)], dtype=np.uint64)
OFFSET = np.concatenate([[0], np.cumsum(COUNT)]).astype(np.int64)  # PAT[OFFSET[c]:OFFSET[c + 1]]: c ones
RANK = np.empty(2**SYMBOL, dtype=np.uint16)  # 128 KB: stays in L2 beside the data
RANK[PAT] = np.arange(2**SYMBOL) - OFFSET[_ONES[PAT]]
del _ONES

_ZERO = np.uint64(0)
_ONE = np.uint64(1)
_TWO = np.uint64(2)
_M = np.uint64(M)
_M16 = np.uint64(0xFFFF)
_M32 = np.uint64(M - 1)
_S16 = np.uint64(16)
_S32 = np.uint64(32)
_L = np.uint64(L)


def model(n0: int, d: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(F, base, magic) of the static model of a support with n0 zeros in d (0 < n0 < d): F[c] =
    max(1, floor(2^32 q^c p^(16 - c))), the slots left over (or missing, from the max) given to
    the most likely pattern; base[c] = sum_{c' < c} C(16, c') F[c'] (base[17] <= 2^32);
    magic[c] = floor((2^64 - 1) / F[c]) for the divisions."""
    p, q = n0 / d, (d - n0) / d
    pp, qq = [1.0], [1.0]
    for _ in range(SYMBOL):
        pp.append(pp[-1] * p)
        qq.append(qq[-1] * q)
    f = [max(1, int(qq[c] * pp[SYMBOL - c] * M)) for c in range(SYMBOL + 1)]
    top = max(range(SYMBOL + 1), key=lambda c: f[c])
    f[top] += (M - sum(int(COUNT[c]) * f[c] for c in range(SYMBOL + 1))) // int(COUNT[top])
    base = np.concatenate([[0], np.cumsum(COUNT * np.array(f, dtype=np.uint64))]).astype(np.uint64)
    return np.array(f, dtype=np.uint64), base, np.array([(2**64 - 1) // v for v in f], dtype=np.uint64)


@device_fn
def _divide(x, f, magic):
    """(x // f, x % f) for x < f 2^32: the high word of x magic (a multiply, no divide) is the
    quotient or one less (magic = floor((2^64 - 1) / f) errs by under x / 2^64 < f / 2^32 <= 1)."""
    q = mulhi(x, magic)
    r = x - q * f
    up = r >= f
    return q + np.uint64(up), r - (f if up else _ZERO)


@device_fn
def _code(x, f, cum, magic):
    """Code the slot interval [cum, cum + f) of 2^32 into state x, with no branch (whether a state
    sheds words is data: a branch on it mispredicts): shed its low 16 bits once or twice first,
    while x >= f 2^32 (x >> 16 >= f 2^32 needs x >= f 2^48: both tests on x at once). (new x, the
    32 bits the shed words come from, low word first, how many words: 0, 1 or 2)."""
    limit = f << _S32
    e = np.uint64(x >= limit) + np.uint64((x >> _S16) >= limit)
    w = x
    x >>= e << np.uint64(4)
    q = mulhi(x, magic)  # x // f or one less (see _divide)
    r = x - q * f
    short = (_M - f) if r >= f else _ZERO  # q + 1 and r - f: (q + 1) 2^32 + r - f
    return (q << _S32) + r + cum + short, w, e


@device_fn
def _code_at(x, v, freq, base, magic, out, o):
    """Code pattern v into state x, its shed words written below out[o] (unsigned indices: no
    wraparound code): (new x, new o)."""
    c = popcount(np.uint32(v))
    f = freq[c]
    x, w, e = _code(x, f, base[c] + np.uint64(RANK[v]) * f, magic[c])
    out[o - _ONE] = np.uint16(w)
    out[o - _TWO] = np.uint16(w >> _S16)
    return x, o - e


@cpu
def encode(patterns, freq, base, magic, out):
    """Code the patterns (uint16) into out (uint16 words, room for 2 patterns.size + 8): returns
    the first word of the stream out[first:] (the final states, then the words in the decoder's
    order). Symbols n - 1 down to 0, symbol i on state i mod 2: two chains in flight."""
    n = patterns.size
    x0, x1 = _L, _L  # the states of the even and of the odd symbols
    o = np.uint64(out.size)
    pairs = n // 2
    if n % 2:
        x0, o = _code_at(x0, patterns[n - 1], freq, base, magic, out, o)
    for j in range(pairs):
        i = np.uint64(2 * (pairs - 1 - j))
        x1, o = _code_at(x1, patterns[i + _ONE], freq, base, magic, out, o)
        x0, o = _code_at(x0, patterns[i], freq, base, magic, out, o)
    for s in range(min(n, 2) - 1, -1, -1):
        x = x1 if s else x0
        for t in range(4):
            out[o - np.uint64(4 - t)] = np.uint16((x >> np.uint64(48 - 16 * t)) & _M16)
        o -= np.uint64(4)
    return np.int64(o)


@device_fn
def _take(x, i, bounds, freq, base, magic, src, pos, nw, out):
    """Undo the symbol on top of state x into out[i] (its pattern, clamped into its class), then
    refill x from src[min(pos, nw):] while below 2^48 (two words at most, no branch): (the state
    before the symbol was coded, the new pos, the symbol's ones, whether its rank was beyond its
    class)."""
    s = x & _M32
    c = below(bounds, s)  # the class: how many of base[1:17] the slot reaches
    f = freq[c]
    q, r = _divide(s - base[c], f, magic[c])
    x = f * (x >> _S32) + r  # >= 2^16, as x >= 2^48
    n = np.uint64(x < _L) + np.uint64(x < _M)
    p = np.uint64(min(pos, nw))
    w = (np.uint64(src[p]) << _S16) | np.uint64(src[p + _ONE])
    x = (x << (n << np.uint64(4))) | (w >> (_S32 - (n << np.uint64(4))))
    out[i] = PAT[OFFSET[c] + min(np.int64(q), np.int64(COUNT[c]) - 1)]
    return x, pos + np.int64(n), np.int64(c), q >= COUNT[c]


@cpu
def decode(src, nw, freq, base, magic, out):
    """Decode out.size patterns (uint16) from the stream src[:nw] (uint16 words, two zero words at
    src[nw:]): (status, number of zeros). Reads nothing past src[nw + 1]; a rank beyond its class,
    a state that does not return to 2^48, or words left over or missing are reported, never trusted.
    Symbols in pairs, one on each state: two chains in flight."""
    n = out.size
    states = min(n, 2)
    if nw < 4 * states:
        return ENDS_EARLY, 0
    x0, x1 = _L, _L
    for s in range(states):
        x = _ZERO
        for t in range(4):
            x = (x << _S16) | np.uint64(src[4 * s + t])
        if s:
            x1 = x
        else:
            x0 = x
    if x0 < _L or x1 < _L:
        return BAD_STATE, 0
    bounds = np.empty(SYMBOL, np.uint32)  # base[1:17] < 2^32 (base[17] - base[16] >= 1)
    for j in range(SYMBOL):
        bounds[j] = base[j + 1]
    pos = 4 * states
    bad = False
    ones = 0
    for j in range(n // 2):
        i = np.uint64(2 * j)
        x0, pos, c, wrong = _take(x0, i, bounds, freq, base, magic, src, pos, nw, out)
        ones += c
        bad |= wrong
        x1, pos, c, wrong = _take(x1, i + _ONE, bounds, freq, base, magic, src, pos, nw, out)
        ones += c
        bad |= wrong
    if n % 2:
        x0, pos, c, wrong = _take(x0, np.uint64(n - 1), bounds, freq, base, magic, src, pos, nw, out)
        ones += c
        bad |= wrong
    if bad:
        return OUT_OF_RANGE, 0
    if pos > nw:
        return ENDS_EARLY, 0
    if x0 != _L or x1 != _L:
        return BAD_STATE, 0
    if pos < nw:
        return UNREAD, 0
    return OK, SYMBOL * n - ones


def encode_reference(patterns: np.ndarray, n0: int, d: int) -> np.ndarray:
    """encode in plain Python integers (exact division): the definition the kernel must match."""
    freq, base, _ = (t.tolist() for t in model(n0, d))
    n = patterns.size
    x, words = [L, L], []
    for i in range(n - 1, -1, -1):
        v = int(patterns[i])
        c = bin(v).count("1")
        f = freq[c]
        s = i & 1
        while x[s] >= f << 32:
            words.append(x[s] & 0xFFFF)
            x[s] >>= 16
        x[s] = (x[s] // f << 32) + x[s] % f + base[c] + int(RANK[v]) * f
    for s in range(min(n, 2) - 1, -1, -1):
        words += [x[s] >> 16 * t & 0xFFFF for t in range(4)]
    return np.array(words[::-1], dtype=np.uint16)


def decode_reference(src: np.ndarray, n0: int, d: int, out: np.ndarray) -> tuple[int, int]:
    """decode in plain Python integers, words past the end read as zeros: (status, number of zeros)."""
    freq, base, _ = (t.tolist() for t in model(n0, d))
    words = src.tolist()
    n = out.size
    states = min(n, 2)
    if len(words) < 4 * states:
        return ENDS_EARLY, 0
    x = [sum(words[4 * s + t] << 16 * (3 - t) for t in range(4)) for s in range(states)] + [L] * (2 - states)
    if min(x) < L:
        return BAD_STATE, 0
    pos, zeros, bad = 4 * states, 0, False
    for i in range(n):
        s = i & 1
        slot = x[s] & (M - 1)
        c = sum(slot >= base[j] for j in range(1, SYMBOL + 1))
        q, r = divmod(slot - base[c], freq[c])
        bad |= q >= COUNT[c]
        out[i] = PAT[OFFSET[c] + min(q, int(COUNT[c]) - 1)]
        zeros += SYMBOL - c
        x[s] = freq[c] * (x[s] >> 32) + r
        while x[s] < L:
            x[s] = x[s] << 16 | (words[pos] if pos < len(words) else 0)
            pos += 1
    if bad:
        return OUT_OF_RANGE, 0
    if pos > len(words):
        return ENDS_EARLY, 0
    if x != [L, L]:
        return BAD_STATE, 0
    return (UNREAD, 0) if pos < len(words) else (OK, zeros)


def encode_words(patterns: np.ndarray, n0: int, d: int) -> tuple[np.ndarray, int]:
    """The stream of the patterns of a support with n0 zeros in d as (out, first), compiled: its
    uint16 words are out.view(np.uint16)[first:-4], in uint64 words so that they can be copied 64
    bits at a time, with one word of slack after them for a reader of whole words."""
    out = np.empty(patterns.size // 2 + 4, dtype=np.uint64)  # 4 (n // 2 + 3) >= 2 n + 8 uint16, then the slack
    return out, encode(patterns, *model(n0, d), out.view(np.uint16)[:-4])


def encode_support(patterns: np.ndarray, n0: int, d: int) -> np.ndarray:
    """The stream (uint16 words) of the patterns of a support with n0 zeros in d: compiled where
    numba runs (on host arrays, whatever the message's device), else encode_reference."""

    def fast():
        out, first = encode_words(patterns, n0, d)
        return out.view(np.uint16)[first:-4]

    return run(encode, (), fast, lambda: encode_reference(patterns, n0, d))


def decode_support(src: np.ndarray, nw: int, n0: int, d: int, out: np.ndarray) -> tuple[int, int]:
    """(status, number of zeros) of decoding out.size patterns from src[:nw] (two zero words after)."""
    return run(decode, (), lambda: decode(src, nw, *model(n0, d), out), lambda: decode_reference(src[:nw], n0, d, out))
