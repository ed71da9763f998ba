"""A counter-based random generator: the draw for coordinate i is a pure function of (key, i).

Any implementation (the torch reference here, the numba and Triton kernels) and any order of
evaluation gives the same draws, so a message is the same bytes on every device. The key is one
64-bit draw from the caller's ``torch.Generator`` (``draw_key``), i.e. from (seed, rank, round,
purpose) in a job. One multiply round per draw, the key's own mixing hoisted per block of 2^16
counters:

    h(i)  = mix(i xor K(i >> 16) xor k1),  k0, k1 the low and high 32 bits of the key,
    K(b)  = k0 xor (mix(mix(b xor k0)) and 0xFFFF), the block key (two rounds, once per block),
    mix   = the lowbias32 integer hash (a bijection of 32-bit words: x ^= x >> 16; x *= 0x7feb352d;
            x ^= x >> 15; x *= 0x846ca68b; x ^= x >> 16),
    u(i)  = (h(i) >> 8) 2^-24, exactly representable in fp32, on {0, 2^-24, ..., 1 - 2^-24}.

Why this is enough (tests/test_kernels_rng.py checks each):
- Each u(i) is exactly uniform over a uniform 64-bit key: given k0, K is fixed and the argument
  of mix is i xor const xor k1, uniform in k1; mix is a bijection. So unbiasedness and the
  variance bounds of the dithering codecs, which need only each coordinate's marginal, hold exactly.
- Distinct counters get distinct h (below 2^32, not only within a block): the argument's high
  half is b xor (k0 xor k1) >> 16, one per block, its low half i xor a constant of the block.
- All 64 key bits act on every draw: k0 through each block's random offset of the low half
  (mix(mix(.)), so blocks are not shifted copies of one another), k1 inside the last round.
- Integer arithmetic on 32-bit words only: the same bytes from torch, numba and Triton.

For float64 data, u64(i) = ((h(2i) >> 5) 2^26 + (h(2i + 1) >> 6)) 2^-53 takes 53 bits (its top 27
bits exactly uniform; the two halves are distinct draws of one block). Coordinates are counted as
32-bit words (d < 2^32, 2^31 for float64 data).

hash_ref is the definition. CPU kernels draw with ``random24_in`` (h(i) >> 8 in 32-bit lanes, which
vectorise: one xor and one mix with kb = block_key(k0, start) for the counters of start's block),
``random24``, ``hash32`` or ``uniform_at`` (any counter: the block key recomputed, three rounds);
CUDA kernels with psgd.kernels.triton.rng, which ``uniform`` launches for CUDA tensors.
"""

from __future__ import annotations

import numpy as np
import torch

from psgd.kernels import device_fn, numba
from psgd.kernels import triton as gpu

M32 = 0xFFFFFFFF
C1, C2 = 0x7FEB352D, 0x846CA68B
BLOCK_BITS = 16  # counters i with the same i >> BLOCK_BITS share a block key
OFFSET = (1 << BLOCK_BITS) - 1  # the bits of a block key's random offset


def draw_key(generator: torch.Generator | None) -> int:
    """One 64-bit key from the generator (the global CPU generator when None)."""
    device = generator.device if generator is not None else "cpu"
    return int(torch.randint(-(2**63), 2**63 - 1, (), dtype=torch.int64, generator=generator, device=device)) % 2**64


def split(key: int) -> tuple[int, int]:
    return key & M32, (key >> 32) & M32


def mix_ref(v: torch.Tensor) -> torch.Tensor:
    """lowbias32 on int64 lanes holding 32-bit values (products masked back to 32 bits)."""
    v = v ^ (v >> 16)
    v = (v * C1) & M32
    v = v ^ (v >> 15)
    v = (v * C2) & M32
    return v ^ (v >> 16)


def block_keys_ref(k0: int, b: torch.Tensor) -> torch.Tensor:
    """K(b) for int64 block numbers b."""
    return k0 ^ (mix_ref(mix_ref(b ^ k0)) & OFFSET)


def hash_ref(key: int, i: torch.Tensor) -> torch.Tensor:
    """h(i) for int64 counters i (32-bit values) as int64: the block keys computed once per block
    spanned, then gathered."""
    k0, k1 = split(key)
    if i.numel() == 0:
        return i.clone()
    b = i >> BLOCK_BITS
    first, last = int(b.min()), int(b.max())
    keys = block_keys_ref(k0, torch.arange(first, last + 1, dtype=torch.int64, device=i.device))
    return mix_ref(i ^ keys[b - first] ^ k1)


def uniform_ref(key: int, n: int, device: torch.device | str = "cpu", start: int = 0) -> torch.Tensor:
    """u(start), ..., u(start + n - 1) in fp32: the draws every kernel must reproduce."""
    i = torch.arange(start, start + n, dtype=torch.int64, device=device)
    return (hash_ref(key, i) >> 8).to(torch.float32) * 2.0**-24


def uniform64_ref(key: int, n: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """u64(0), ..., u64(n - 1) in float64 (53 random bits each)."""
    i = torch.arange(n, dtype=torch.int64, device=device)
    hi, lo = hash_ref(key, 2 * i) >> 5, hash_ref(key, 2 * i + 1) >> 6
    return ((hi << 26) + lo).to(torch.float64) * 2.0**-53


def uniform(key: int, n: int, like: torch.Tensor) -> torch.Tensor:
    """n uniforms on like's device: float64 (53 bits) for float64 data, fp32 otherwise."""
    if like.dtype == torch.float64:
        return uniform64_ref(key, n, like.device)
    if gpu.available(like):
        from psgd.kernels.triton import rng as triton_rng

        return triton_rng.uniform(key, n, like.device)
    return uniform_ref(key, n, like.device)


@device_fn
def mix(v):
    """lowbias32 of a 32-bit value held in a 64-bit integer (numba)."""
    v ^= v >> 16
    v = (v * 0x7FEB352D) & 0xFFFFFFFF
    v ^= v >> 15
    v = (v * 0x846CA68B) & 0xFFFFFFFF
    return v ^ (v >> 16)


@device_fn
def block_key(k0, start):
    """K(start >> 16), the kb of random24_in for the counters of start's block (numba)."""
    b = (start & 0xFFFFFFFF) >> 16
    return np.uint32(k0 ^ (mix(mix(b ^ k0)) & 0xFFFF))


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

    def _mix32(builder, v):
        """lowbias32 (mix) on a 32-bit word."""
        v = builder.xor(v, builder.lshr(v, _I32(16)))
        v = builder.mul(v, _I32(C1))
        v = builder.xor(v, builder.lshr(v, _I32(15)))
        v = builder.mul(v, _I32(C2))
        return builder.xor(v, builder.lshr(v, _I32(16)))

    def _hash32(builder, kb, k1, i):
        """h(i) = mix(i ^ kb ^ k1) for kb the block key of i."""
        return _mix32(builder, builder.xor(builder.xor(i, kb), k1))

    def _hash(builder, k0, k1, i):
        """h(i) with i's block key computed here (two rounds more)."""
        b = builder.lshr(i, _I32(BLOCK_BITS))
        offset = builder.and_(_mix32(builder, _mix32(builder, builder.xor(b, k0))), _I32(OFFSET))
        return _hash32(builder, builder.xor(k0, offset), k1, i)

    def _words(builder, sig, args):
        return (_word(builder, v, t) for v, t in zip(args, sig.args, strict=True))

    @intrinsic
    def hash32(typingctx, k0, k1, i):
        """h(i) as uint32 for integer k0, k1, i (numba), any counter."""

        def codegen(context, builder, sig, args):
            return _hash(builder, *_words(builder, sig, args))

        return types.uint32(k0, k1, i), codegen

    @intrinsic
    def random24(typingctx, k0, k1, i):
        """r(i) = h(i) >> 8 = u(i) 2^24 as uint32 for integer k0, k1, i (numba), any counter: in
        32-bit lanes, which vectorise (64-bit multiplies masked to 32 bits do not)."""

        def codegen(context, builder, sig, args):
            return builder.lshr(_hash(builder, *_words(builder, sig, args)), _I32(8))

        return types.uint32(k0, k1, i), codegen

    @intrinsic
    def random24_in(typingctx, kb, k1, i):
        """r(i) for kb = block_key(k0, start) and i in start's block (i >> 16 == start >> 16 as
        32-bit words): one xor (kb ^ k1 is loop-invariant) and one mix per draw (numba)."""

        def codegen(context, builder, sig, args):
            return builder.lshr(_hash32(builder, *_words(builder, sig, args)), _I32(8))

        return types.uint32(kb, k1, i), codegen

else:
    hash32 = random24 = random24_in = None


@device_fn
def uniform_at(k0, k1, i):
    """u(i) in fp32 for kernels: k0, k1 and i integers (numba)."""
    return np.float32(random24(k0, k1, i)) * np.float32(5.9604644775390625e-08)
