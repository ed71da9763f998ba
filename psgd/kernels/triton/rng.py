"""The counter-based uniforms of psgd.kernels.rng in Triton: u(i) = (mix(i ^ K(i >> 16) ^ k1) >> 8) 2^-24,
K(b) = k0 ^ (mix(mix(b ^ k0)) & 0xFFFF), mix = lowbias32 on uint32 lanes (products wrap mod 2^32 as
the reference's masks do). The block key is computed in every lane: a GPU waits on memory, not on
the three rounds."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from psgd.kernels.rng import split
from psgd.kernels.triton import BLOCK


@triton.jit
def mix(v):
    """lowbias32 of uint32 lanes."""
    v ^= v >> 16
    v *= tl.full((), 0x7FEB352D, tl.uint32)
    v ^= v >> 15
    v *= tl.full((), 0x846CA68B, tl.uint32)
    return v ^ (v >> 16)


@triton.jit
def uniform_at(k0, k1, i):
    """u(i) in fp32 for int32 counters i; k0, k1 the key's two 32-bit halves."""
    i, k0 = i.to(tl.uint32), k0.to(tl.uint32)
    kb = k0 ^ (mix(mix((i >> 16) ^ k0)) & 0xFFFF)
    h = mix(i ^ kb ^ k1.to(tl.uint32))
    return (h >> 8).to(tl.float32) * 5.9604644775390625e-08


@triton.jit(do_not_specialize=["k0", "k1"])  # 1 would become a constant
def _uniform(out_ptr, n, start, k0, k1, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    tl.store(out_ptr + offs, uniform_at(k0, k1, offs + start), mask=offs < n)


def uniform(key: int, n: int, device: torch.device | str, start: int = 0) -> torch.Tensor:
    """u(start), ..., u(start + n - 1) in fp32: rng.uniform_ref's draws."""
    out = torch.empty(n, dtype=torch.float32, device=device)
    k0, k1 = split(key)
    _uniform[(triton.cdiv(n, BLOCK),)](out, n, start, k0, k1, BLOCK=BLOCK)
    return out
