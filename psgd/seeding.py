"""Deterministic randomness: every random draw comes from a generator keyed by
(run seed, rank, round, purpose), so runs replay exactly under MPI and in one process.
"""

from __future__ import annotations

import hashlib

import torch

SHARED = -1  # the rank used for randomness every node must derive identically


def derive_seed(seed: int, rank: int, round: int, purpose: str) -> int:
    key = f"{seed}/{rank}/{round}/{purpose}".encode()
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little") >> 1


def generator(seed: int, rank: int, round: int, purpose: str, device: str | torch.device = "cpu") -> torch.Generator:
    """The generator of (seed, rank, round, purpose) on device. Compressors get CPU ones
    (``Context.rng``): they draw only keys and seeds from it, their per-coordinate draws being
    counter-based, so a GPU worker sends the bytes a CPU one would."""
    g = torch.Generator(device=device)
    g.manual_seed(derive_seed(seed, rank, round, purpose))
    return g
