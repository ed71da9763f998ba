"""Where compressors get randomness from a caller's ``torch.Generator``.

Per-coordinate uniforms come from the counter-based generator of ``psgd.kernels.rng``, keyed by
one 64-bit draw from the generator: the same key gives the same draws on every device and in
every kernel, so a CPU generator (what the runtime's ``Context.rng`` hands out, on every device)
gives byte-identical messages for CPU and CUDA inputs. With ``generator=None`` the global CPU
generator is used. Shared randomness (Rand-k indices) is rebuilt by the decoder from a 32-bit
seed, keying the same counter-based generator (``seed_key``), so it never depends on the device either.
"""

from __future__ import annotations

import torch

from psgd.kernels import rng
from psgd.kernels.rng import draw_key

__all__ = ["draw_key", "uniform", "normal", "draw_seed", "seed_key", "hash_key", "block_seed", "hash_normal"]


def uniform(n: int, like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """n draws of U[0, 1) on like's device (float64 with 53 random bits for float64 data, fp32
    with 24 otherwise): the counter-based reference, keyed by one 64-bit draw from generator.
    Fused kernels take ``draw_key(generator)`` themselves and reproduce these draws."""
    return rng.uniform(draw_key(generator), n, like)


def normal(shape: tuple[int, ...], like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Standard normal draws on like's device (float32 at least)."""
    dtype = torch.float64 if like.dtype == torch.float64 else torch.float32
    if generator is None:
        return torch.randn(shape, dtype=dtype, device=like.device)
    return torch.randn(shape, dtype=dtype, device=generator.device, generator=generator).to(like.device)


def draw_seed(generator: torch.Generator | None) -> int:
    """A fresh 32-bit seed from the generator (the global CPU generator when None)."""
    device = generator.device if generator is not None else "cpu"
    return int(torch.randint(0, 2**32, (1,), generator=generator, device=device))


_M32 = 0xFFFFFFFF
_GOLDEN = 0x9E3779B9


def seed_key(seed: int) -> int:
    """The counter generator's 64-bit key that a shared 32-bit seed stands for: two chained hashes
    of it, so that seeds differing in a few bits key unrelated draws."""
    k0 = rng.mix_ref(seed & _M32)
    return k0 | rng.mix_ref(k0 ^ _GOLDEN) << 32


def hash_key(seed: int, *keys: torch.Tensor) -> torch.Tensor:
    """Counter-based randomness: a 32-bit hash state of (seed, key1, key2, ...), keys being int64
    tensors of values < 2^32 that broadcast together. The same keys give the same state on
    every device and in any order, so a decoder can regenerate any single draw."""
    h = rng.mix_ref(torch.tensor(seed & _M32, dtype=torch.int64, device=keys[0].device))
    for k in keys:
        h = rng.mix_ref(h ^ k)
    return h


def block_seed(seed: int, block: int) -> int:
    """The 32-bit seed of block ``block`` of a message whose one shared seed is ``seed``."""
    return rng.mix_ref(rng.mix_ref(seed & _M32) ^ block)  # hash_key(seed, block), on host ints


def hash_normal(state: torch.Tensor, coord: torch.Tensor) -> torch.Tensor:
    """Standard normals (float64) for hash states and coordinate counters, by Box-Muller."""
    u1 = (rng.mix_ref(state ^ (2 * coord)) + 0.5) / 2.0**32
    u2 = rng.mix_ref(state ^ (2 * coord + 1)) / 2.0**32
    return torch.sqrt(-2 * torch.log(u1)) * torch.cos(2 * torch.pi * u2)
