"""Where compressors get randomness from a caller's ``torch.Generator``.

Draws happen on the generator's own device and move to the data's device, so one
generator gives the same message for a CPU and a CUDA input. With ``generator=None``
the device's default generator is used. Shared randomness (Rand-k indices) is rebuilt
by the decoder from a 32-bit seed through a CPU generator, so it never depends on the
device either.
"""

from __future__ import annotations

import torch


def uniform(n: int, like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """n draws of U[0, 1) on like's device, float64 for float64 data and float32 otherwise."""
    dtype = torch.float64 if like.dtype == torch.float64 else torch.float32
    if generator is None:
        return torch.rand(n, dtype=dtype, device=like.device)
    return torch.rand(n, dtype=dtype, device=generator.device, generator=generator).to(like.device)


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


def seeded(seed: int) -> torch.Generator:
    """The CPU generator a shared seed stands for."""
    return torch.Generator().manual_seed(seed)
