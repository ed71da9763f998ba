"""psgd: compressed-communication distributed SGD on an MPI parameter server, every byte counted."""

import os

__version__ = "0.1.0"

# torch's CPU allocator backs large tensors with transparent huge pages when this is set (read at
# allocation time): a fresh 45 MB buffer then costs ~1.5 copies instead of ~5 in page faults. A
# user's own setting wins.
os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")


def __getattr__(name: str):
    """``psgd.simulate`` (from psgd.simulation) is imported on first use: ``import psgd`` stays cheap."""
    if name == "simulate":
        from psgd.simulation import simulate

        globals()["simulate"] = simulate
        return simulate
    raise AttributeError(f"module 'psgd' has no attribute {name!r}")


__all__ = ["simulate"]
