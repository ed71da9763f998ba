"""A counter-based random generator: the draw for coordinate i is a pure function of (key, i).

Any implementation (the torch reference here, the numba and Triton kernels) and any order of
evaluation gives the same draws, so a message is the same bytes on every device. The key is one
64-bit draw from the caller's ``torch.Generator`` (``draw_key``), i.e. from (seed, rank, round,
purpose) in a job.

    h(i) = mix(mix(i xor k0) xor k1),  k0, k1 the low and high 32 bits of the key,
    mix  = the lowbias32 integer hash (a bijection of 32-bit words: x ^= x >> 16; x *= 0x7feb352d;
           x ^= x >> 15; x *= 0x846ca68b; x ^= x >> 16),
    u(i) = (h(i) >> 8) 2^-24, exactly representable in fp32, uniform on {0, 2^-24, ..., 1 - 2^-24}.

For float64 data, u64(i) = ((h(2i) >> 5) 2^26 + (h(2i + 1) >> 6)) 2^-53 takes 53 bits.
Coordinates are counted as 32-bit words (d < 2^32, 2^31 for float64 data).

uniform_ref is the definition. CPU kernels draw with ``random24`` (h(i) >> 8 in 32-bit lanes, which
vectorise), ``random24_in`` (the same within a block of 2^16 counters, one step hoisted) or
``uniform_at``; CUDA kernels with psgd.kernels.triton.rng, which ``uniform`` launches for CUDA
tensors.
"""

from __future__ import annotations

import numpy as np
import torch

from psgd.kernels import device_fn, numba
from psgd.kernels import triton as gpu

M32 = 0xFFFFFFFF
C1, C2 = 0x7FEB352D, 0x846CA68B


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


def hash_ref(key: int, i: torch.Tensor) -> torch.Tensor:
    """h(i) for int64 counters i (32-bit values) as int64."""
    k0, k1 = split(key)
    return mix_ref(mix_ref(i ^ k0) ^ k1)


def uniform_ref(key: int, n: int, device: torch.device | str = "cpu", start: int = 0) -> torch.Tensor:
    """u(start), ..., u(start + n - 1) in fp32: the reference every kernel must reproduce."""
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
        return _mix32_rest(builder, builder.xor(v, builder.lshr(v, _I32(16))))

    def _mix32_rest(builder, v):
        """mix after its first step v ^= v >> 16."""
        v = builder.mul(v, _I32(C1))
        v = builder.xor(v, builder.lshr(v, _I32(15)))
        v = builder.mul(v, _I32(C2))
        return builder.xor(v, builder.lshr(v, _I32(16)))

    def _words(builder, sig, args):
        return (_word(builder, v, t) for v, t in zip(args, sig.args, strict=True))

    @intrinsic
    def random24(typingctx, k0, k1, i):
        """r(i) = h(i) >> 8 = u(i) 2^24 as uint32 for integer k0, k1, i (numba): the draw in 32-bit
        lanes, which vectorise (64-bit multiplies masked to 32 bits do not)."""

        def codegen(context, builder, sig, args):
            a, b, c = _words(builder, sig, args)
            h = _mix32(builder, builder.xor(_mix32(builder, builder.xor(c, a)), b))
            return builder.lshr(h, _I32(8))

        return types.uint32(k0, k1, i), codegen

    @intrinsic
    def random24_in(typingctx, kb, k1, i):
        """r(i) for kb = block_key(k0, start), i in start's block (numba): the inner mix's first step
        is one xor with kb (two instructions fewer per draw than random24)."""

        def codegen(context, builder, sig, args):
            a, b, c = _words(builder, sig, args)
            h = _mix32(builder, builder.xor(_mix32_rest(builder, builder.xor(c, a)), b))
            return builder.lshr(h, _I32(8))

        return types.uint32(kb, k1, i), codegen

else:
    random24 = random24_in = None


@device_fn
def block_key(k0, start):
    """The key of random24_in for the counters i of start's block (i >> 16 == start >> 16, as
    32-bit words): v = i ^ k0 has the same v >> 16 throughout, so mix's first step v ^ (v >> 16) is
    i ^ block_key (numba)."""
    return np.uint32((k0 ^ (((start ^ k0) & 0xFFFFFFFF) >> 16)) & 0xFFFFFFFF)


@device_fn
def uniform_at(k0, k1, i):
    """u(i) in fp32 for kernels: k0, k1 and i integers (numba)."""
    return np.float32(random24(k0, k1, i)) * np.float32(5.9604644775390625e-08)
