"""psgd: compressed-communication distributed SGD on an MPI parameter server, every byte counted."""

__version__ = "0.1.0"


def __getattr__(name: str):
    """``psgd.simulate`` (from psgd.simulation) is imported on first use: ``import psgd`` stays cheap."""
    if name == "simulate":
        from psgd.simulation import simulate

        globals()["simulate"] = simulate
        return simulate
    raise AttributeError(f"module 'psgd' has no attribute {name!r}")


__all__ = ["simulate"]
