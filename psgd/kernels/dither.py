"""Random dithering (qsgd, terngrad, natural_dither: psgd.compress.dithering, SPEC 2.6 and 2.8) as
compiled CPU kernels, beside the plain-torch references (the CUDA path).

y_i = min(|x_i| inv, 1) in the work dtype, inv = 1 / the fp32 wire norm (0 for norm 0), computed by
the caller. Levels with the uniforms u(i) of key: uniform, floor(s y) + (u < s y - floor(s y));
natural, j + s for 2^(j-1) <= y < 2^j plus (u < y 2^(1-j) - 1), or (u < y 2^(s-1)) below 2^(1-s);
both capped at s. code_i = level_i << 1 | (x_i < 0).

    fixed-length: the codes packed at width w = 1 + uint_width(s) (psgd.wire.bits.pack_uint)
    Elias:        the nonzero levels' position gaps, signs and levels, for psgd.wire.codes
    decode:       out_i (+)= weight * (+-table[level_i]), table[j] the value of level j

The compiled kernels take fp32 x and codes up to 8 bits wide (s <= 127; Elias: s < 2^24); wider
codes and other dtypes go through the references. They draw the uniforms in 32-bit lanes
(``random24``): the same words as psgd.kernels.rng.uniform_at, whose 64-bit arithmetic does not
vectorise.
"""

from __future__ import annotations

import numpy as np
import torch

from psgd.kernels import cpu, device_fn, np_view, numba, rng, run
from psgd.wire.bits import pack_uint, unpack_uint

CHUNK = 4096  # elements per block (a multiple of 8): the level loop vectorises into a cache-resident buffer
MAX_WIDTH = 8
MAX_ELIAS_S = 2**24  # levels and s exact in fp32
TWO_M24 = np.float32(2.0**-24)

if numba is not None:
    from llvmlite import ir
    from numba.core import types
    from numba.extending import intrinsic

    _I32 = ir.IntType(32)

    def _word(builder, value, ty):
        """An integer argument as a 32-bit word (its low 32 bits)."""
        if ty.bitwidth > 32:
            return builder.trunc(value, _I32)
        return builder.zext(value, _I32) if ty.bitwidth < 32 else value

    def _mix(builder, v):
        """lowbias32 (psgd.kernels.rng.mix) on a 32-bit word."""
        v = builder.xor(v, builder.lshr(v, _I32(16)))
        v = builder.mul(v, _I32(rng.C1))
        v = builder.xor(v, builder.lshr(v, _I32(15)))
        v = builder.mul(v, _I32(rng.C2))
        return builder.xor(v, builder.lshr(v, _I32(16)))

    @intrinsic
    def random24(typingctx, k0, k1, i):
        """r(i) = h(i) >> 8 = u(i) 2^24 (uint32) for integer k0, k1, i: psgd.kernels.rng's draw in
        32-bit arithmetic."""

        def codegen(context, builder, sig, args):
            a, b, c = (_word(builder, v, t) for v, t in zip(args, sig.args, strict=True))
            h = _mix(builder, builder.xor(_mix(builder, builder.xor(c, a)), b))
            return builder.lshr(h, _I32(8))

        return types.uint32(k0, k1, i), codegen

else:
    random24 = None


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
def _codes(x, inv, s, natural, k0, k1, start, out):
    """out[j] = level << 1 | (x_j < 0) for the block of x starting at coordinate start."""
    sf = np.float32(s)
    first = np.float32(2.0 ** (1 - s))
    below = np.float32(2.0 ** (s - 1))
    for j in range(x.size):
        v = x[j]
        y = min(abs(v) * inv, np.float32(1.0))
        r = random24(k0, k1, start + j)
        if natural:
            bits = np.float32(y).view(np.uint32)
            small = y < first
            lower = 0 if small else np.int64(bits >> 23) - 127 + s
            up = np.float32(r) * TWO_M24 < y * below if small else r < 2 * (bits & 0x7FFFFF)
            level = min(lower + up, s)
        else:
            sy = y * sf
            low = np.floor(sy)
            level = min(np.int64(low) + (np.float32(r) * TWO_M24 < sy - low), s)
        out[j] = (level << 1) | (v < 0)


@cpu
def dither_encode_kernel(x, inv, s, natural, k0, k1, w, body):
    """body = the codes of fp32 x packed at width w <= 8."""
    d = x.size
    codes = np.zeros(CHUNK, dtype=np.uint8)
    for c in range(0, d, CHUNK):
        n = min(CHUNK, d - c)
        _codes(x[c : c + n], inv, s, natural, k0, k1, c, codes)
        codes[n:] = 0
        _pack(codes, (n * w + 7) // 8, w, body[c // 8 * w :])


@device_fn
def _pack(codes, nbytes, w, out):
    """The first nbytes of codes packed at width w into out: eight codes fill w bytes. A group is
    stored as 8 bytes while they fit in out (the next group overwrites the excess)."""
    groups = (nbytes + w - 1) // w
    wide = min(groups, max(0, (out.size - 8) // w + 1))
    for g in range(groups):
        word = np.uint64(0)
        for j in range(8):
            word |= np.uint64(codes[8 * g + j]) << np.uint64(j * w)
        if g < wide:
            _store8(out, g * w, word)
        else:
            for b in range(min(w, nbytes - g * w)):
                out[g * w + b] = (word >> np.uint64(8 * b)) & np.uint64(0xFF)


@device_fn
def _store8(out, i, word):
    for b in range(8):  # unrolled and merged into one store by LLVM
        out[i + b] = (word >> np.uint64(8 * b)) & np.uint64(0xFF)


@device_fn
def _load8(codes, i):
    word = np.uint64(0)
    for b in range(8):  # unrolled and merged into one load by LLVM
        word |= np.uint64(codes[i + b]) << np.uint64(8 * b)
    return word


def dither_encode(x: torch.Tensor, inv: torch.Tensor, key: int, s: int, natural: bool, body: torch.Tensor) -> None:
    """Write the packed codes of x into body (ceil(d w / 8) uint8); inv the 0-dim 1/norm in the
    work dtype (0 for norm 0), key the draw for the uniforms u(0), ..., u(d - 1)."""

    def compiled():
        k0, k1 = rng.split(key)
        dither_encode_kernel(np_view(x), np.float32(inv), s, natural, k0, k1, width(s), np_view(body))

    def reference():
        codes = (levels_ref(x, inv, key, s, natural) << 1) | (x < 0)
        body.copy_(pack_uint(codes, width(s)))

    fast = _compiled(x, inv, s, 2 ** (MAX_WIDTH - 1) - 1)
    run(dither_encode_kernel, (x, body), compiled, reference) if fast else reference()


@cpu
def dither_sparse_kernel(x, inv, s, k0, k1, gaps, negative, levels):
    """The nonzero uniform levels of fp32 x: position gaps (the first from -1), signs and levels;
    returns how many."""
    d = x.size
    codes = np.empty(CHUNK, dtype=np.int64)
    nnz = 0
    last = -1
    for c in range(0, d, CHUNK):
        n = min(CHUNK, d - c)
        _codes(x[c : c + n], inv, s, False, k0, k1, c, codes)
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
def _wide(codes, d, w):
    """Groups of eight codes that can be read as 8 bytes without passing the body's end."""
    return min(d // 8, max(0, (codes.size - 8) // w + 1))


@cpu
def max_level_kernel(codes, d, w):
    """The largest level of d codes packed at width w <= 8."""
    mask = np.uint64((1 << w) - 1)
    top = np.uint64(0)
    wide = _wide(codes, d, w)
    for g in range(wide):
        word = _load8(codes, g * w)
        for j in range(8):
            top = max(top, (word >> np.uint64(j * w)) & mask)
    for g in range(wide, (d + 7) // 8):
        word = _load(codes, g, w)
        for j in range(min(8, d - 8 * g)):
            top = max(top, (word >> np.uint64(j * w)) & mask)
    return top >> np.uint64(1)


def max_level(codes: torch.Tensor, d: int, s: int) -> int:
    """The largest level of a fixed-length body's d codes (so the caller can refuse one above s)."""
    fast = width(s) <= MAX_WIDTH
    compiled = lambda: int(max_level_kernel(np_view(codes), d, width(s)))  # noqa: E731
    reference = lambda: int((unpack_uint(codes, d, width(s)) >> 1).max())  # noqa: E731
    return run(max_level_kernel, (codes,), compiled, reference) if fast else reference()


@cpu
def dither_into_kernel(codes, w, table, out, weight, add):
    """out_i = +-table[level_i], or out_i += weight times it with ``add``."""
    d = out.size
    mask = np.uint64((1 << w) - 1)
    wide = _wide(codes, d, w)
    for g in range(wide):
        word = _load8(codes, g * w)
        for j in range(8):
            _put(out, 8 * g + j, (word >> np.uint64(j * w)) & mask, table, weight, add)
    for g in range(wide, (d + 7) // 8):
        word = _load(codes, g, w)
        for j in range(min(8, d - 8 * g)):
            _put(out, 8 * g + j, (word >> np.uint64(j * w)) & mask, table, weight, add)


@device_fn
def _put(out, i, code, table, weight, add):
    v = table[code >> np.uint64(1)]
    if code & np.uint64(1):
        v = -v
    if add:
        out[i] += weight * v
    else:
        out[i] = v


def _like(t: torch.Tensor, value) -> np.generic:
    """value as a numpy scalar of t's dtype (what torch makes of a Python scalar in t's arithmetic)."""
    return np_view(t).dtype.type(float(value))


def _signed_ref(levels: torch.Tensor, negative: torch.Tensor, table: torch.Tensor, dtype: torch.dtype):
    v = table[levels]
    return torch.where(negative, -v, v).to(dtype)


def _put_ref(values: torch.Tensor, out: torch.Tensor, weight: float, add: bool) -> None:
    if not add:
        out.copy_(values)
    elif weight == 1.0:
        out.add_(values)
    else:
        out.add_(values, alpha=weight)


def dither_into(codes: torch.Tensor, s: int, table: torch.Tensor, out: torch.Tensor, weight: float, add: bool) -> None:
    """out = C(x) (add False) or out += weight C(x) (add True) from fixed-length codes whose levels
    are at most s; table[j] the value of level j for j < 2^(w-1), in the work dtype."""
    d = out.numel()

    def compiled():
        dither_into_kernel(np_view(codes), width(s), np_view(table), np_view(out), _like(out, weight), add)

    def reference():
        c = unpack_uint(codes, d, width(s))
        _put_ref(_signed_ref(c >> 1, (c & 1).bool(), table, out.dtype), out, weight, add)

    fast = width(s) <= MAX_WIDTH and out.dtype == table.dtype and out.is_contiguous()
    run(dither_into_kernel, (codes, out), compiled, reference) if fast else reference()


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
