"""Natural compression (natural, natural_round: psgd.compress.natural, SPEC 2.7) as compiled CPU
kernels, beside the plain-torch references (the CUDA path).

Body: d binary32 exponent fields of C(x) (the field of |x_i|, plus 1 when rounding up; 0 stands
for zero), then d sign bits (signbit(x_i), bit i % 8 of byte i // 8). With fp32 bits
|x_i| = 2^(e-127)(1 + m 2^-23): C_nat rounds up iff u(i) 2^23 < m, i.e. r(i) < 2m for the 24
random bits r(i) = u(i) 2^24 of the counter-based generator; natural rounding iff m >= 2^22.
Subnormals (e = 0) round between 0 and 2^-126 by the same rule. Decode: +-(field << 23) as binary32.

    encode:     one pass over x: fields, sign bits and max |x_i| (for the caller's range check),
                and C(x)_i = (field_i << 23) | signbit(x_i) as binary32 where asked (error feedback)
    decode:     out_i = +-2^(field_i - 127)
    accumulate: out_i += weight * (+-2^(field_i - 127)): with weight 1 the floats of out + decode
    add pair:   out_i = va_i + vb_i, or (out_i + va_i) + vb_i, from two bodies in one pass over out:
                the floats of decode (accumulate) of a then accumulate of b (the server's aggregate)
"""

from __future__ import annotations

import math

import numpy as np
import torch

from psgd.kernels import cpu, device_fn, np_view, rng, run
from psgd.kernels import triton as gpu
from psgd.kernels.dither import put_ref
from psgd.kernels.rng import block_key, random24_in
from psgd.wire.bits import pack_bits, unpack_bits

# elements per block (dividing 2^16: one block_key each): the field loop vectorises, then the
# block's sign bytes while x is in cache
CHUNK = 4096
_MIN_EXP = -126  # the smallest binary32 normal exponent
_BIAS = 127
_TRITON_ENCODE = (torch.float32, torch.float16, torch.bfloat16)  # the dtypes the Triton encoder reads


def fields_ref(x: torch.Tensor, u: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(binary32 exponent field of C_nat(x) as int32, sign bit) with uniforms u, or of natural
    rounding when u is None; field 0 stands for zero. Plain torch, any device."""
    if x.dtype == torch.float64:
        return _fields_float64(x, u), torch.signbit(x)
    # |x| = 2^(e-127)(1 + m/2^23): round up with probability m/2^23; subnormals (e = 0,
    # |x| = 2^-126 m/2^23) round between 0 and 2^-126 by the same rule
    bits = x.float().view(torch.int32)
    mantissa = bits & 0x7FFFFF
    up = mantissa >= 2**22 if u is None else u.float() * 2.0**23 < mantissa
    return (bits >> 23).bitwise_and_(0xFF).add_(up), torch.signbit(x)


def _fields_float64(x: torch.Tensor, u: torch.Tensor | None) -> torch.Tensor:
    ax = x.abs()
    mant, e = torch.frexp(ax)  # ax = mant 2^e, mant in [0.5, 1)
    tiny = ax < 2.0**_MIN_EXP  # zero and subnormals: the two levels are 0 (field 0) and 2^-126 (field 1)
    lower = torch.where(tiny, -_BIAS, e - 1)
    frac = torch.where(tiny, ax * 2.0**-_MIN_EXP, 2 * mant - 1)
    up = frac >= 0.5 if u is None else u < frac
    return lower + up + _BIAS


def values_ref(field: torch.Tensor, negative: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """+-2^(field - 127) (0 for field 0), built from the binary32 bits."""
    magnitude = (field.to(torch.int32) << 23).view(torch.float32)
    return torch.where(negative, -magnitude, magnitude).to(dtype)


@cpu
def natural_encode_kernel(x, k0, k1, stochastic, body, values, feedback):
    """body = fields then sign bits of C(x), x the bits of an fp32 vector (uint32), and values =
    the bits of C(x) unless None; x <- x - C(x) unless feedback is None (a compile-time switch: any
    array; the store goes to x itself, which vectorises where a second array aliasing x would not);
    returns max |x_i| (bits)."""
    d = x.size
    top = np.uint32(0)
    for c in range(0, d, CHUNK):
        n = min(CHUNK, d - c)
        if stochastic:
            top = max(top, _fields_random(x[c : c + n], k0, k1, c, body[c : c + n]))
        else:
            top = max(top, _fields_nearest(x[c : c + n], body[c : c + n]))
        if values is not None:  # C(x) while x and the fields are in cache
            _values(x[c : c + n], body[c : c + n], values[c : c + n])
        _signs(x[c : c + n], body[d + c // 8 : d + (c + n + 7) // 8])
        if feedback is not None:  # after the signs, which read x
            _feedback(x[c : c + n], body[c : c + n])
    return top


# The helpers index slices from 0: provably non-negative indices let numba drop its wraparound
# checks, and the loops vectorise. Their arithmetic is cast back to uint32 at each step (numba
# widens integer arithmetic to 64 bits, halving the lanes); the counters are int32.
@device_fn
def _fields_random(x, k0, k1, start, out):
    """C_nat's fields: (|x_j| << 1) = e 2^24 + 2m, and adding 2^24 - 1 - r(j) carries into e iff
    r(j) < 2m (the field 255 + 1 of Inf/NaN wraps to 0, as in a byte)."""
    top = np.uint32(0)
    at, kb = np.int32(start), block_key(k0, start)  # int32 counters: the draw reads their low 32 bits
    for j in range(np.int32(x.size)):
        a = np.uint32(x[j] & np.uint32(0x7FFFFFFF))
        top = max(top, a)
        below = np.uint32(random24_in(kb, k1, at + j) ^ np.uint32(0xFFFFFF))  # 2^24 - 1 - r(j)
        out[j] = np.uint32(np.uint32(a << np.uint32(1)) + below) >> np.uint32(24)
    return top


@device_fn
def _fields_nearest(x, out):
    """Natural rounding's fields: a mantissa m >= 2^22 carries into e."""
    top = np.uint32(0)
    for j in range(np.int32(x.size)):
        a = np.uint32(x[j] & np.uint32(0x7FFFFFFF))
        top = max(top, a)
        out[j] = np.uint32(a + np.uint32(0x400000)) >> np.uint32(23)
    return top


@device_fn
def _values(x, fields, out):
    """The bits of C(x): the field as the exponent, x's sign bit (as decode reads them back)."""
    for j in range(np.int32(x.size)):
        out[j] = np.uint32(np.uint32(np.uint32(fields[j]) << np.uint32(23)) | np.uint32(x[j] & np.uint32(0x80000000)))


@device_fn
def _feedback(x, fields):
    """x <- x - C(x) in fp32, x and C(x) as bits (the floats of x + (-1) C(x), as accumulate gives)."""
    for j in range(np.int32(x.size)):
        v = np.uint32(x[j]).view(np.float32)
        c = _value(fields[j], np.uint32(x[j] & np.uint32(0x80000000)))
        x[j] = np.float32(v - c).view(np.uint32)


@device_fn
def _signs(x, out):
    full = x.size // 8
    for k in range(full):
        byte = np.uint32(0)
        for j in range(8):
            byte |= (x[8 * k + j] >> 31) << j
        out[k] = byte
    if x.size % 8:
        byte = np.uint32(0)
        for j in range(x.size % 8):
            byte |= (x[8 * full + j] >> 31) << j
        out[full] = byte


@cpu
def natural_into_kernel(body, out, weight, add):
    """out_i = +-2^(field_i - 127), or out_i += fp32(weight times it) with ``add`` (exact, as the
    reference's, for the weights 1, -1 and 1/2 a server and error feedback use)."""
    _into(body, None, out, weight, add)


@cpu
def natural_pair_kernel(a, b, out, add):
    """out_i = va_i + vb_i, or (out_i + va_i) + vb_i with ``add`` (v the +-2^(field_i - 127) of each
    body): natural_into_kernel of a (weight 1) then of b (weight 1, add), in one pass over out."""
    _into(a, b, out, np.float32(1.0), add)


@device_fn
def _into(body, other, out, weight, add):
    """out_i = +-2^(field_i - 127), or out_i += fp32(weight times it) with ``add``; where other (a
    second body) is not None, plus fp32(weight times its +-2^(field_i - 127)) after that, in the same
    pass over out. Without other its value is -0.0, which adds nothing (x + -0 = x for every x, -0
    too) and folds away, as do the reads of the body standing in for other's."""
    d = out.size
    w = np.float32(weight)
    second = _either(other, body)
    fields, signs, fields_other, signs_other = body[:d], body[d:], second[:d], second[d:]
    # ``add`` a constant in each call, which LLVM folds into its loop (tested every 32 coordinates,
    # the branch cost the single add 3-5% here)
    if add:
        _blocks(other, fields, signs, fields_other, signs_other, out, w, True)
    else:
        _blocks(other, fields, signs, fields_other, signs_other, out, w, False)


@device_fn
def _blocks(other, fields, signs, fields_other, signs_other, out, w, add):
    """_into over out, 32 coordinates a step (the last fewer), the arithmetic fp32: the loops vectorise."""
    words = out.size // 32
    for k in range(words):
        _block(other, fields, signs, fields_other, signs_other, k, 32, out, w, add)
    if out.size % 32:
        _block(other, fields, signs, fields_other, signs_other, words, out.size % 32, out, w, add)


@device_fn
def _block(other, fields, signs, fields_other, signs_other, k, n, out, w, add):
    """_into's coordinates 32k .. 32k + n - 1 (n <= 32). Their sign bits in one uint32 word, tested
    against a constant bit per lane, fill the vector registers in 32-bit lanes (a byte of 8 signs a
    step, or a shift by a per-lane count, left numba's loops in 64-bit lanes or scalar)."""
    c, m = 32 * k, (n + 7) // 8
    f, s, o = fields[c : c + n], _word(signs, k, m), out[c : c + n]
    g, t = fields_other[c : c + n], _word(signs_other, k, m)
    if add:
        for j in range(n):
            o[j] = (o[j] + w * _value(f[j], _bit(s, j))) + _second(other, g[j], _bit(t, j), w)
    else:
        for j in range(n):
            o[j] = _value(f[j], _bit(s, j)) + _second(other, g[j], _bit(t, j), w)


BIT = np.array([1 << j for j in range(32)], dtype=np.uint32)


@device_fn
def _bit(word, j):
    """Bit j of a sign word, as uint32 (numba's & gives 64 bits, which left the lane test in 64-bit lanes)."""
    return np.uint32(word & BIT[j])


@device_fn
def _word(signs, k, m):
    """Sign bytes 4k .. 4k + m - 1 (m <= 4) as one little-endian uint32."""
    w = np.uint32(0)
    for b in range(m):
        w |= np.uint32(np.uint32(signs[4 * k + b]) << np.uint32(8 * b))
    return w


@device_fn
def _either(other, body):
    """other, or body (read in its place, the values unused) where other is None."""
    if other is None:
        return body
    return other


@device_fn
def _second(other, field, bit, w):
    """fp32(w times the value) of the second body; -0.0 (nothing added) without one."""
    if other is None:
        return np.float32(-0.0)
    return w * _value(field, bit)


@device_fn
def _value(field, bit):
    """+-2^(field - 127) from an exponent field and a sign bit (negative where bit != 0)."""
    sign = np.uint32(0x80000000) if bit != np.uint32(0) else np.uint32(0)
    return np.uint32(np.uint32(np.uint32(field) << np.uint32(23)) | sign).view(np.float32)


def natural_encode(
    x: torch.Tensor, key: int | None, body: torch.Tensor, values: torch.Tensor | None = None, feedback: bool = False
) -> float:
    """Write the body of x's message into body (d + ceil(d/8) uint8): C_nat with the uniforms of key
    (``rng.uniform(key, d, x)``), natural rounding when key is None; and C(x), the body's decode,
    into ``values`` (x's dtype) where given; with ``feedback``, x <- x - C(x) in place (the floats of
    natural_into(body, x, -1, add=True)). Returns max |x_i|: the caller refuses x that rounds beyond
    its range (body, values and x are then meaningless: the run diverged)."""
    d = x.numel()
    if gpu.available(x, body) and x.dtype in _TRITON_ENCODE and x.is_contiguous() and body.is_contiguous():
        from psgd.kernels.triton import natural

        top = natural.natural_encode(x, key, body)
        if values is not None:
            natural_into(body, values, 1.0, add=False)
        if feedback:
            natural_into(body, x, -1.0, add=True)
        return top

    def compiled():
        k0, k1 = rng.split(key or 0)
        bits = None if values is None else np_view(values).view(np.uint32)
        xb = np_view(x).view(np.uint32)
        top = natural_encode_kernel(xb, k0, k1, key is not None, np_view(body), bits, xb if feedback else None)
        return float(np.uint32(top).view(np.float32))

    def reference():
        field, negative = fields_ref(x, None if key is None else rng.uniform(key, d, x))
        body[:d] = field
        body[d:] = pack_bits(negative)
        top = float(torch.linalg.vector_norm(x, ord=math.inf))
        if values is not None or feedback:
            c = values_ref(field, negative, x.dtype)
            if values is not None:
                values.copy_(c)
            if feedback:
                x.sub_(c)
        return top

    fast = x.dtype == torch.float32 and x.is_contiguous()
    fast = fast and (values is None or (values.dtype == torch.float32 and values.is_contiguous()))
    return run(natural_encode_kernel, (x, body), compiled, reference) if fast else reference()


def natural_into(body: torch.Tensor, out: torch.Tensor, weight: float, add: bool) -> None:
    """out = C(x) (add False) or out += weight C(x) (add True) from a natural body, in out's dtype."""
    if gpu.available(out, body) and out.dtype == torch.float32 and out.is_contiguous() and body.is_contiguous():
        from psgd.kernels.triton import natural

        natural.natural_into(body, out, weight, add)
        return

    def compiled():
        natural_into_kernel(np_view(body), np_view(out), np_view(out).dtype.type(weight), add)

    def reference():
        _into_ref(body, out, weight, add)

    fast = out.dtype in (torch.float32, torch.float64) and out.is_contiguous()
    run(natural_into_kernel, (body, out), compiled, reference) if fast else reference()


def natural_add_pair(a: torch.Tensor, b: torch.Tensor, out: torch.Tensor, start: bool) -> None:
    """out = C(a) + C(b) with ``start``, else (out + C(a)) + C(b), from two natural bodies: the floats
    of natural_into of a (weight 1, add = not start) then of b (weight 1, add), in one pass over out
    (fp32 on the CPU; the caller takes other dtypes and CUDA to natural_into), else those two adds
    by the references."""

    def compiled():
        natural_pair_kernel(np_view(a), np_view(b), np_view(out), not start)

    def reference():
        _into_ref(a, out, 1.0, not start)
        _into_ref(b, out, 1.0, True)

    fast = out.dtype == torch.float32 and out.is_contiguous()
    run(natural_pair_kernel, (a, b, out), compiled, reference) if fast else reference()


def _into_ref(body: torch.Tensor, out: torch.Tensor, weight: float, add: bool) -> None:
    """natural_into in plain torch (any device)."""
    d = out.numel()
    put_ref(values_ref(body[:d], unpack_bits(body[d:], d), out.dtype), out, weight, add)
